"""Dataset preview: against fake reader modules (the interface in COMMON.md), and against
the LeRobot fixture once `robotrain.data.dataset` exists."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from robotrain.constants import ACTION, OBS_STATE, SO101_JOINT_NAMES
from robotrain.errors import DatasetError
from robotrain.reports.preview import preview_episode

CAMS = ("observation.images.front", "observation.images.wrist")


@dataclass
class FakeMeta:
    root: Path
    fps: int = 30
    camera_keys: tuple[str, ...] = CAMS
    features: dict = field(default_factory=lambda: {OBS_STATE: {"names": list(SO101_JOINT_NAMES)}})
    episodes: list = field(default_factory=lambda: [
        {"episode_index": 0, "length": 20, "tasks": ["Pick"]},
        {"episode_index": 1, "length": 12, "tasks": ["Pick"]},
    ])


class FakeDataset:
    def __init__(self, root, episodes=None, use_cache=True, **kw) -> None:
        assert use_cache is False  # a preview writes no cache
        self.n = {0: 20, 1: 12}[episodes[0]]
        self.meta = FakeMeta(Path(root))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.n:
            raise IndexError(i)
        item = {OBS_STATE: torch.full((6,), float(i)), ACTION: torch.full((6,), float(i + 1)),
                "timestamp": torch.tensor(i / 30), "task": "Pick"}
        for k, cam in enumerate(CAMS):
            item[cam] = torch.full((3, 12, 16), (i / self.n + k) / 2)
        return item


@pytest.fixture
def fake_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    fmt = types.ModuleType("robotrain.data.format")
    fmt.load_meta = lambda root: FakeMeta(Path(root))
    dsm = types.ModuleType("robotrain.data.dataset")
    dsm.LeRobotDataset = FakeDataset
    monkeypatch.setitem(sys.modules, "robotrain.data.format", fmt)
    monkeypatch.setitem(sys.modules, "robotrain.data.dataset", dsm)


class FakeColumnarDataset(FakeDataset):
    """A reader with `column(key)`: trajectories then come without decoding any video."""

    decoded: list[int] = []

    def __getitem__(self, i: int) -> dict:
        self.decoded.append(i)
        return super().__getitem__(i)

    def column(self, key: str) -> np.ndarray:
        if key == "timestamp":
            return np.arange(self.n) / 30
        return np.repeat(np.arange(self.n, dtype=np.float32)[:, None] + (key == ACTION), 6, axis=1)


def _is_png(p: Path) -> bool:
    return p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_preview_with_fake_reader(fake_reader: None, tmp_path: Path) -> None:
    paths = preview_episode(tmp_path / "ds", 1, tmp_path / "out")
    assert paths["frames"].name == "episode_000001_frames.png"
    assert _is_png(paths["frames"]) and _is_png(paths["trajectories"])


def test_preview_decodes_only_picked_frames(fake_reader: None, tmp_path: Path) -> None:
    sys.modules["robotrain.data.dataset"].LeRobotDataset = FakeColumnarDataset
    FakeColumnarDataset.decoded = []
    paths = preview_episode(tmp_path / "ds", 0, tmp_path / "out", n_frames=4)
    assert FakeColumnarDataset.decoded == [0, 6, 13, 19]
    assert _is_png(paths["trajectories"])


def test_preview_unknown_episode(fake_reader: None, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"episode 5 is not in the dataset \(episodes 0..1\)"):
        preview_episode(tmp_path / "ds", 5, tmp_path / "out")


@pytest.mark.parametrize("name,episode", [("so101_fixture_v30", 0), ("so101_fixture_v21", 2)])
def test_preview_lerobot_fixture(lerobot_fixtures: Path, tmp_path: Path, name: str, episode: int) -> None:
    pytest.importorskip("robotrain.data.dataset")
    paths = preview_episode(lerobot_fixtures / name, episode, tmp_path)
    assert _is_png(paths["frames"]) and _is_png(paths["trajectories"])


def test_preview_cli_wiring(fake_reader: None, tmp_path: Path) -> None:
    import argparse

    from robotrain.cli._preview import register_preview

    parser = argparse.ArgumentParser()
    register_preview(parser.add_subparsers())
    args = parser.parse_args(["preview", str(tmp_path / "ds"), "--episode", "1", "--out", str(tmp_path / "o")])
    assert args.func(args) == 0
    assert (tmp_path / "o" / "episode_000001_trajectories.png").is_file()
