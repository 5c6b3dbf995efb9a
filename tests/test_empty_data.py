"""Empty data (issue 22, family 2): a dataset with no episodes or no frames is refused in
one line by validate, cache, train and eval; an episode of a single frame is sound (a
recording may be that short: its windows clamp and pad like any episode end) and works."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import one_line_error, run_cli
from dataset_helpers import V21, V30, writable_copy
from test_writer import write_dataset

from robotrain.data.format import load_frame_table, load_meta, validate_dataset
from train_helpers import TINY_ACT_FLAGS as TINY_ACT

NO_EPISODES = "the dataset has no episodes: nothing to train or evaluate on"
NO_FRAMES = "episode 0: field 'length' must be > 0, got 0"


def _no_episodes(root: Path) -> None:
    path = root / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    pq.write_table(pq.read_table(path).slice(0, 0), path)
    info = json.loads((root / "meta" / "info.json").read_text())
    info.update(total_episodes=0, total_frames=0, splits={})
    (root / "meta" / "info.json").write_text(json.dumps(info))


def _no_frames(root: Path) -> None:
    """v2.1, one episode of zero frames: an empty parquet and an episodes.jsonl length of 0."""
    data = root / "data" / "chunk-000" / "episode_000000.parquet"
    pq.write_table(pq.read_table(data).slice(0, 0), data)
    for ep in (1, 2):
        (root / "data" / "chunk-000" / f"episode_{ep:06d}.parquet").unlink()
    meta = root / "meta"
    first = json.loads((meta / "episodes.jsonl").read_text().splitlines()[0])
    (meta / "episodes.jsonl").write_text(json.dumps({**first, "length": 0}) + "\n")
    (meta / "episodes_stats.jsonl").write_text((meta / "episodes_stats.jsonl").read_text().splitlines()[0] + "\n")
    info = json.loads((meta / "info.json").read_text())
    info.update(total_episodes=1, total_frames=0)
    (meta / "info.json").write_text(json.dumps(info))


CASES = {"no_episodes": (V30, _no_episodes, NO_EPISODES), "no_frames": (V21, _no_frames, NO_FRAMES)}


@pytest.mark.parametrize("case", sorted(CASES))
def test_empty_datasets_are_one_line_errors(lerobot_fixtures: Path, tmp_path: Path, case: str) -> None:
    fixture, empty, text = CASES[case]
    root = writable_copy(lerobot_fixtures / fixture, tmp_path / "ds")
    empty(root)
    assert any(text in p for p in validate_dataset(root)), validate_dataset(root)
    out = run_cli("dataset", "validate", str(root))
    assert out.returncode == 1 and text in out.stderr and "Traceback" not in out.stderr
    checkpoint = lerobot_fixtures / "lerobot_act_checkpoint"
    for args in (("dataset", "cache", str(root), "--cache-dir", str(tmp_path / "c")),
                 ("train", "--dataset", str(root), "--policy", "act", "--steps", "1", "--num-workers", "0",
                  "--output-dir", str(tmp_path / "run")),
                 ("eval", "--checkpoint", str(checkpoint), "--dataset", str(root), "--output", str(tmp_path / "e"))):
        assert text in one_line_error(run_cli(*args)), args[0]


@pytest.fixture(scope="module")
def one_frame_episodes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("one_frame") / "ds"
    write_dataset(root, lengths=(1, 8, 1, 6))
    return root


def test_one_frame_episodes_validate_and_read(one_frame_episodes: Path, tmp_path: Path) -> None:
    from robotrain.data.dataset import LeRobotDataset

    assert validate_dataset(one_frame_episodes) == []
    meta = load_meta(one_frame_episodes)
    assert [e.length for e in meta.episodes] == [1, 8, 1, 6]
    assert load_frame_table(meta)["timestamp"][[0, 9]].tolist() == [0.0, 0.0]
    ds = LeRobotDataset(one_frame_episodes, {"action": [0.0, 1 / 30, 2 / 30]}, image_size=(24, 32),
                        cache_dir=tmp_path, progress=False)
    item = ds[0]  # a whole episode: its one action, the rest of the window padded
    assert item["action_is_pad"].tolist() == [False, True, True]
    assert np.array_equal(item["action"][1].numpy(), item["action"][0].numpy())


@pytest.mark.slow
def test_one_frame_episodes_cache_train_and_eval(one_frame_episodes: Path, tmp_path: Path) -> None:
    out = run_cli("dataset", "cache", str(one_frame_episodes), "--episodes", "0", "2", "--size", "32x32",
                  "--cache-dir", str(tmp_path / "c"))
    assert out.returncode == 0 and "2 frames x 32x32" in out.stdout, out.stderr
    run_dir = tmp_path / "run"
    out = run_cli("train", "--dataset", str(one_frame_episodes), *TINY_ACT, "--steps", "2", "--batch-size", "2",
                  "--num-workers", "0", "--log-freq", "1", "--eval-freq", "2", "--val-fraction", "0.25",
                  "--output-dir", str(run_dir))
    assert out.returncode == 0, out.stderr[-2000:]
    out = run_cli("eval", "--checkpoint", str(run_dir / "checkpoints" / "last"), "--dataset", str(one_frame_episodes),
                  "--episodes", "2", "--output", str(tmp_path / "eval.json"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads((tmp_path / "eval.json").read_text())["num_samples"] == 1
