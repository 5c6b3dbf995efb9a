"""Test-only pieces for the training loop: a tiny MLP policy and a synthetic dataset.

`TinyPolicy` implements the Policy contract (normalises with `Normalizer`, L1 over
non-padded chunk steps) and is registered as "tiny_mlp" by `register()`.
`SyntheticSource` is a DataSource: LeRobot-style samples (state, one small camera,
action windows with `action_is_pad`, task, indices) from smooth synthetic episodes.

Run as a script it is `robotrain train` on synthetic data, so torchrun can launch it:
    python -m torch.distributed.run --nproc_per_node 2 tests/train_helpers.py --output-dir RUN --steps 4
"""

from __future__ import annotations

import dataclasses
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from robotrain.constants import ACTION, ACTION_IS_PAD, OBS_STATE, SO101_JOINT_NAMES
from robotrain.policies.normalize import MEAN_STD, Normalizer
from robotrain.policies import POLICY_CLASSES, Policy, PolicyConfig, PolicyFeatures

CAMERA = "observation.images.front"

TINY_ACT_FLAGS = ["--policy", "act", "--policy.dim_model", "32", "--policy.dim_feedforward", "64",
                  "--policy.n_heads", "2", "--policy.n_encoder_layers", "1", "--policy.n_vae_encoder_layers", "1",
                  "--policy.chunk_size", "5", "--policy.n_action_steps", "5", "--image-size", "32x32"]
"""`robotrain train` flags for an ACT small enough to train a few steps in a test (32x32 frames)."""


@dataclass
class TinyConfig(PolicyConfig):
    """A two-layer MLP from (state, per-camera channel means) to an action chunk."""

    type: ClassVar[str] = "tiny_mlp"

    chunk_size: int = 4
    n_action_steps: int = 4
    hidden_dim: int = 32
    """Width of the hidden layer."""
    dropout: float = 0.0
    """Dropout after the hidden layer (exercises the RNG in resume tests)."""
    image_size: tuple[int, int] | None = None
    """Frames' (H, W); set by --image-size."""
    resize_mode: str = "resize"
    """How frames are fitted to image_size; set by --resize-mode."""
    optimizer_lr: float = 1e-3
    normalization_mapping: dict[str, str] = field(
        default_factory=lambda: {"VISUAL": "IDENTITY", "STATE": "MEAN_STD", "ACTION": "MEAN_STD"})

    def image_input(self) -> tuple[tuple[int, int] | None, str]:
        return self.image_size, self.resize_mode

    def with_image_input(self, size: tuple[int, int] | None, mode: str | None) -> TinyConfig:
        return dataclasses.replace(self, image_size=size or self.image_size, resize_mode=mode or self.resize_mode)


class TinyPolicy(Policy):
    name = "tiny_mlp"
    config_class = TinyConfig

    def __init__(self, config: TinyConfig, features: PolicyFeatures, stats: Any) -> None:
        super().__init__(config, features, stats)
        self.normalizer = Normalizer(stats, {OBS_STATE: MEAN_STD, ACTION: MEAN_STD})
        in_dim = features.state_dim + 3 * len(features.camera_keys)
        self.net = nn.Sequential(nn.Linear(in_dim, config.hidden_dim), nn.ReLU(), nn.Dropout(config.dropout),
                                 nn.Linear(config.hidden_dim, config.chunk_size * features.action_dim))
        self._queue: deque[Tensor] = deque()

    def _predict(self, batch: Any) -> Tensor:
        state = self.normalizer.normalize(OBS_STATE, batch[OBS_STATE])  # (B, S)
        cams = [batch[k].mean(dim=(2, 3)) for k in self.features.camera_keys]  # (B, 3) each
        out = self.net(torch.cat([state, *cams], dim=-1))
        return out.view(-1, self.config.chunk_size, self.features.action_dim)  # (B, chunk, A), normalised

    def forward(self, batch: Any) -> tuple[Tensor, dict[str, float]]:
        pred = self._predict(batch)
        target = self.normalizer.normalize(ACTION, batch[ACTION])
        valid = (~batch[ACTION_IS_PAD]).unsqueeze(-1).float()  # (B, chunk, 1)
        l1 = ((pred - target).abs() * valid).sum() / (valid.sum() * pred.shape[-1])
        return l1, {"l1_loss": l1.item()}

    def predict_action_chunk(self, batch: Any) -> Tensor:
        return self.normalizer.unnormalize(ACTION, self._predict(batch))

    def select_action(self, batch: Any) -> Tensor:
        if not self._queue:
            self._queue.extend(self.predict_action_chunk(batch)[:, : self.config.n_action_steps].unbind(1))
        return self._queue.popleft()

    def reset(self) -> None:
        self._queue.clear()


def register() -> None:
    POLICY_CLASSES["tiny_mlp"] = "train_helpers:TinyPolicy"


# --- synthetic data ---------------------------------------------------------------------


@dataclass
class SyntheticMeta:
    """The DatasetMeta fields train() uses."""

    fps: int
    camera_keys: tuple[str, ...]
    state_dim: int
    action_dim: int
    features: dict[str, dict[str, Any]]
    stats: dict[str, dict[str, np.ndarray]]
    episodes: list[dict[str, int]]
    total_frames: int
    total_episodes: int
    tasks: list[str] = field(default_factory=lambda: ["pick"])
    root: Path = Path("synthetic")


def make_episodes(n_episodes: int = 4, length: int = 12, seed: int = 0) -> list[np.ndarray]:
    """Smooth 6-joint trajectories (T+1, 6): state is s[t], the action a[t] = s[t+1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(length + 1)[:, None]
    eps = []
    for _ in range(n_episodes):
        phase, freq = rng.uniform(0, 6, size=6), rng.uniform(0.1, 0.3, size=6)
        eps.append((30 * np.sin(freq * t + phase)).astype(np.float32))
    return eps


class SyntheticDataset(Dataset):
    """LeRobot-style samples of some episodes; action windows padded past an episode's end."""

    def __init__(self, trajectories: list[np.ndarray], episodes: list[int], meta: SyntheticMeta,
                 delta_timestamps: dict[str, list[float]], image_hw: tuple[int, int]) -> None:
        self.meta, self.traj = meta, trajectories
        self.chunk = len(delta_timestamps.get(ACTION, [0.0]))
        self.hw = image_hw
        self.items = [(e, f) for e in episodes for f in range(len(trajectories[e]) - 1)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        e, f = self.items[i]
        traj = self.traj[e]
        length = len(traj) - 1
        idx = np.minimum(np.arange(f, f + self.chunk), length - 1)
        state = torch.from_numpy(traj[f].copy())
        level = torch.sigmoid(state[:3] / 30).view(3, 1, 1)
        return {
            OBS_STATE: state,
            CAMERA: level.expand(3, *self.hw).clone(),  # (3, H, W) in [0, 1]
            ACTION: torch.from_numpy(traj[idx + 1].copy()),  # (chunk, 6)
            ACTION_IS_PAD: torch.from_numpy(np.arange(f, f + self.chunk) >= length),
            "task": "pick",
            "timestamp": torch.tensor(f / 30, dtype=torch.float32),
            "frame_index": torch.tensor(f),
            "episode_index": torch.tensor(e),
            "index": torch.tensor(self.meta.episodes[e]["dataset_from_index"] + f),
            "task_index": torch.tensor(0),
        }


class SyntheticSource:
    """A DataSource for train(): the last `n_val` episodes are held out."""

    def __init__(self, n_episodes: int = 4, length: int = 12, n_val: int = 1, image_hw: tuple[int, int] = (8, 8),
                 seed: int = 0) -> None:
        self.traj = make_episodes(n_episodes, length, seed)
        self.n_val = n_val
        states = np.concatenate([t[:-1] for t in self.traj])
        actions = np.concatenate([t[1:] for t in self.traj])
        stats = {
            OBS_STATE: {"mean": states.mean(0), "std": states.std(0), "min": states.min(0), "max": states.max(0)},
            ACTION: {"mean": actions.mean(0), "std": actions.std(0), "min": actions.min(0), "max": actions.max(0)},
            CAMERA: {"mean": np.full((3, 1, 1), 0.5, np.float32), "std": np.full((3, 1, 1), 0.2, np.float32)},
        }
        episodes, start = [], 0
        for e, traj in enumerate(self.traj):
            episodes.append({"episode_index": e, "length": len(traj) - 1, "dataset_from_index": start,
                             "dataset_to_index": start + len(traj) - 1})
            start += len(traj) - 1
        self.meta = SyntheticMeta(
            fps=30, camera_keys=(CAMERA,), state_dim=6, action_dim=6,
            features={CAMERA: {"dtype": "video", "shape": [*image_hw, 3], "names": ["height", "width", "channels"]},
                      ACTION: {"dtype": "float32", "shape": [6], "names": list(SO101_JOINT_NAMES)}},
            stats=stats, episodes=episodes, total_frames=start, total_episodes=n_episodes)
        self.image_hw = image_hw

    def datasets(self, delta_timestamps: dict[str, list[float]],
                 image_input: tuple[tuple[int, int] | None, str]) -> tuple[Dataset, Dataset | None]:
        image_size, _ = image_input
        hw = tuple(image_size) if image_size else self.image_hw
        n = len(self.traj)
        train = SyntheticDataset(self.traj, list(range(n - self.n_val)), self.meta, delta_timestamps, hw)
        val = SyntheticDataset(self.traj, list(range(n - self.n_val, n)), self.meta, delta_timestamps, hw)
        return train, (val if self.n_val else None)

    def full(self, delta_timestamps: dict[str, list[float]]) -> Dataset:
        return SyntheticDataset(self.traj, list(range(len(self.traj))), self.meta, delta_timestamps, self.image_hw)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    import json

    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if line.strip()]


def wait_for_metrics(proc: Any, run_dir: Path, lines: int, timeout: float = 120) -> None:
    """Block until the training subprocess `proc` has written `lines` metrics lines; fail
    with its stderr if it exits first, or after `timeout` seconds."""
    import time

    deadline = time.monotonic() + timeout
    metrics = Path(run_dir) / "metrics.jsonl"
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= lines):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.2)


def main(argv: list[str]) -> int:
    """`robotrain train` on SyntheticSource (flags as for the real command, no --dataset)."""
    import logging

    from robotrain.training.config import parse_train_config
    from robotrain.errors import TrainingStopped
    from robotrain.training.loop import train

    logging.basicConfig(level=logging.INFO)
    register()
    config = parse_train_config(["--policy", "tiny_mlp", *argv], check_paths=False)
    try:
        train(config, data=SyntheticSource())
    except TrainingStopped as exc:  # as the robotrain CLI reports it
        print(f"robotrain: stopped: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    import train_helpers  # re-import under its module name so the registry path resolves

    raise SystemExit(train_helpers.main(sys.argv[1:]))
