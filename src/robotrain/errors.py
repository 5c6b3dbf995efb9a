"""One exception family for everything a user can get wrong.

The CLI catches `RobotrainError` and prints it on one line (no traceback), so every
message must say *which file or flag* and *what is wrong with it*.
"""

from __future__ import annotations

from pathlib import Path

EXIT_USER_ERROR = 2
"""Exit status of a command that stopped on a `RobotrainError` (argparse's for a bad flag)."""


class RobotrainError(Exception):
    """An error the user can fix: a bad path, a corrupt file, a bad flag.

    `path` is the file or directory at fault (if any); `reason` says what is wrong.
    """

    def __init__(self, reason: str, path: str | Path | None = None) -> None:
        self.reason = reason
        self.path = Path(path) if path is not None else None
        super().__init__(f"{self.path}: {reason}" if self.path is not None else reason)


class DatasetError(RobotrainError):
    """A dataset on disk is missing, corrupt or inconsistent with its metadata."""


class ConfigError(RobotrainError):
    """A configuration value or command-line flag is invalid."""


class CheckpointError(RobotrainError):
    """A checkpoint is missing, incomplete or does not match the policy."""


class TrainingError(RobotrainError):
    """Training cannot go on (e.g. the loss became NaN); the last good checkpoint is kept."""


class Stopped(RobotrainError):
    """A command was asked to stop (SIGTERM: `kill`, a job scheduler's preemption, a time
    limit) and left things in a clean state. Exits with 143 (128 + SIGTERM), the code a
    shell gives a SIGTERM'd process, so scripts do not mistake it for a finished run."""

    exit_code = 143


class TrainingStopped(Stopped):
    """Training stopped on SIGTERM after saving a checkpoint at the step it had reached;
    `--resume` continues it exactly."""


class RecordingStopped(Stopped):
    """`sim record` stopped on SIGTERM: the half-written dataset and the temporary frames
    were removed, nothing else was touched."""


class SimulationError(RobotrainError):
    """The simulation cannot be built or rendered (missing assets, no GL context)."""
