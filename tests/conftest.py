"""Shared test fixtures. Tests build their own tiny data; the files written by LeRobot
itself live in `tests/fixtures/` (README there), so a fresh clone runs every test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

REPO_ROOT = Path(__file__).resolve().parents[1]
LEROBOT_FIXTURES = REPO_ROOT / "tests" / "fixtures"


@pytest.fixture(scope="session", autouse=True)
def _private_frame_cache(tmp_path_factory: pytest.TempPathFactory):
    """Frame caches built by tests (CLI subprocesses included) go to a temporary dir, not
    the user's ~/.cache/robotrain/frames, where they would pile up run after run."""
    previous = os.environ.get("ROBOTRAIN_CACHE_DIR")
    os.environ["ROBOTRAIN_CACHE_DIR"] = str(tmp_path_factory.mktemp("frame_cache"))
    yield
    if previous is None:
        os.environ.pop("ROBOTRAIN_CACHE_DIR", None)
    else:
        os.environ["ROBOTRAIN_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def lerobot_fixtures() -> Path:
    """Files written by LeRobot itself (datasets v3.0/v2.1, an ACT and a SmolVLA checkpoint,
    a training log, the reference state-dict key lists)."""
    return LEROBOT_FIXTURES


KILLED_WORKER_MARKER = "KILLED_WORKER_MARKER"


def killed_by_the_system(*args: object) -> None:
    """Stands in for a pool's task function (the spawned worker imports it from here):
    leaves proof that a worker ran it, then dies the way the OOM killer kills."""
    Path(os.environ[KILLED_WORKER_MARKER]).touch()
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.fixture
def killed_worker_marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The file `killed_by_the_system` touches in the worker (outside tmp_path, which the
    test may check is empty)."""
    marker = tmp_path.parent / f"{tmp_path.name}.killed"
    monkeypatch.setenv(KILLED_WORKER_MARKER, str(marker))
    yield marker
    marker.unlink(missing_ok=True)


def run_cli(*args: str, timeout: float = 600) -> "subprocess.CompletedProcess[str]":
    """Run `python -m robotrain ARGS` in a subprocess against this checkout's sources."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT / "src"), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "robotrain", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def one_line_error(result: "subprocess.CompletedProcess[str]") -> str:
    """The one `robotrain: error:` line a failed command printed (after any INFO progress
    lines, e.g. the policy built before the data was read); asserts there is nothing else."""
    lines = [ln for ln in result.stderr.splitlines() if ln.strip() and not ln.startswith("INFO ")]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("robotrain: error:"), result.stderr[-3000:]
    return lines[0]
