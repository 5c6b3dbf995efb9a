"""`--episodes` reads only the selected episodes' files: a partially downloaded dataset
trains, caches, evaluates and converts on the episodes it has (issue 24, item 2)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from dataset_helpers import FRONT, V30, writable_copy
from test_convert import V21_DATA, V21_VIDEO, write_v21

from robotrain.constants import ACTION
from robotrain.data.cache import cache_key, ensure_cache
from robotrain.data.cache_admin import OK, list_caches
from robotrain.data.dataset import LeRobotDataset
from robotrain.data.format import load_frame_table, load_meta, validate_dataset
from robotrain.errors import ConfigError, DatasetError
from robotrain.training.config import parse_train_config
from robotrain.training.loop import LeRobotSource
from train_helpers import TINY_ACT_FLAGS as TINY_ACT

LENGTHS = (12, 15, 9, 10, 11)
CHUNK = [i / 30 for i in range(5)]


@pytest.fixture(scope="module")
def complete(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("complete") / "v21"
    write_v21(root, lengths=LENGTHS)
    return root


@pytest.fixture
def partial(complete: Path, tmp_path: Path) -> Path:
    """The v2.1 dataset as a download that stopped early: episode 1 has no parquet, episode
    3 no front-camera video."""
    root = writable_copy(complete, tmp_path / "partial")
    (root / V21_DATA.format(episode_chunk=0, episode_index=1)).unlink()
    (root / V21_VIDEO.format(episode_chunk=0, video_key=FRONT, episode_index=3)).unlink()
    return root


def test_a_partial_dataset_without_a_selection_names_the_missing_file(partial: Path) -> None:
    missing = partial / V21_DATA.format(episode_chunk=0, episode_index=1)
    with pytest.raises(DatasetError, match=re.escape(
            f"{missing}: data file is missing (episode 1); 2 of the 5 episodes lack files (a partial download?): "
            "--episodes can select the others")):
        load_meta(partial)


def test_selected_episodes_read_like_the_complete_dataset(complete: Path, partial: Path, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        meta = load_meta(partial, [4, 0, 2])
    assert "2 of the 5 episodes are unavailable (files missing: a partial download?)" in caplog.text
    assert [e.episode_index for e in meta.episodes] == [0, 2, 4] and meta.selection == (0, 2, 4)
    assert meta.total_frames == 12 + 9 + 11 and meta.total_episodes == 3
    assert [e.dataset_from_index for e in meta.episodes] == [0, 12, 21]  # rows of the selection
    assert [e.index_from for e in meta.episodes] == [0, 27, 46]  # the dataset's own `index`
    assert load_frame_table(meta)["index"].tolist() == [*range(0, 12), *range(27, 36), *range(46, 57)]

    full = LeRobotDataset(complete, {ACTION: CHUNK}, image_size=(24, 32), cache_dir=tmp_path / "c", progress=False)
    for use_cache in (True, False):
        sub = LeRobotDataset(partial, {ACTION: CHUNK}, episodes=[0, 2, 4], image_size=(24, 32), use_cache=use_cache,
                             cache_dir=tmp_path / "c", progress=False)
        assert len(sub) == 32 and sub.episodes == [0, 2, 4]
        for i, g in ((0, 0), (11, 11), (12, 27), (20, 35), (21, 46), (31, 56)):
            a, b = sub[i], full[g]
            assert a["index"].item() == g and a["episode_index"].item() == b["episode_index"].item()
            for key in (ACTION, "action_is_pad", FRONT, "observation.state"):
                assert torch.equal(a[key], b[key]), (i, key)


def test_a_missing_file_of_a_selected_episode_is_named(partial: Path) -> None:
    video = partial / V21_VIDEO.format(episode_chunk=0, video_key=FRONT, episode_index=3)
    with pytest.raises(DatasetError, match=re.escape(f"{video}: video file is missing (episode 3)")):
        load_meta(partial, [0, 3])
    with pytest.raises(ConfigError, match=re.escape("episodes [9] are not in the dataset (it has 5: 0..4)")):
        load_meta(partial, [0, 9])


def test_a_v30_selection_reads_only_its_rows_and_has_its_own_cache(lerobot_fixtures: Path, tmp_path: Path) -> None:
    root = lerobot_fixtures / V30
    full, meta = load_meta(root), load_meta(root, [2, 0])
    assert meta.total_frames == 41 + 40 and [e.index_from for e in meta.episodes] == [0, 83]
    table = load_frame_table(meta)
    whole = load_frame_table(full)
    np.testing.assert_array_equal(table[ACTION], np.concatenate([whole[ACTION][:41], whole[ACTION][83:]]))
    assert cache_key(meta, (32, 32), "resize") != cache_key(full, (32, 32), "resize")
    every = load_meta(root, [0, 1, 2])  # every episode selected: the whole dataset, and its cache
    assert every.selection is None and cache_key(every, None, "resize") == cache_key(full, None, "resize")
    cache, _ = ensure_cache(meta, (32, 32), cache_dir=tmp_path, progress=False)
    assert cache.shapes[FRONT] == (81, 3, 32, 32)
    assert [e.status for e in list_caches(tmp_path)] == [OK]


def test_held_out_episodes_are_drawn_from_the_selected_ones(partial: Path, tmp_path: Path) -> None:
    config = parse_train_config(["--dataset", str(partial), "--policy", "act", "--episodes", "0,2,4",
                                 "--val-fraction", "0.34", "--image-size", "24x32",
                                 "--output-dir", str(tmp_path / "run")])
    source = LeRobotSource(config)
    train, val = source.datasets({ACTION: CHUNK}, ((24, 32), "resize"))
    assert val is not None
    assert sorted(train.episodes + val.episodes) == [0, 2, 4] and len(val.episodes) == 1
    assert train.cache == val.cache  # one cache for both splits


def test_cli_cache_and_convert_take_episodes(partial: Path, tmp_path: Path) -> None:
    out = run_cli("dataset", "cache", str(partial), "--size", "24x32", "--cache-dir", str(tmp_path / "c"))
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and "data file is missing (episode 1)" in lines[0], out.stderr
    out = run_cli("dataset", "cache", str(partial), "--episodes", "0", "2", "4", "--size", "24x32",
                  "--cache-dir", str(tmp_path / "c"))
    assert out.returncode == 0, out.stderr
    assert f"{FRONT:<28} 32 frames x 24x32" in out.stdout
    assert "2 of the 5 episodes are unavailable" in out.stderr

    dest = tmp_path / "v30"
    out = run_cli("dataset", "convert", str(partial), "--out", str(dest), "--episodes", "0", "2", "4")
    assert out.returncode == 0, out.stderr
    assert "converted the 3 selected episodes as episodes 0..2; 2 other episode(s) lack files" in out.stdout
    assert validate_dataset(dest) == []
    meta = load_meta(dest)
    assert [e.length for e in meta.episodes] == [12, 9, 11]
    a = LeRobotDataset(partial, episodes=[0, 2, 4], use_cache=False)
    b = LeRobotDataset(dest, use_cache=False)
    for i in (0, 12, 31):
        x, y = a[i], b[i]
        assert y["index"].item() == i and y["episode_index"].item() == [0, 1, 2][(i >= 12) + (i >= 21)]
        for key in (ACTION, "observation.state", "timestamp", "frame_index", FRONT):
            assert torch.equal(x[key], y[key])


@pytest.mark.slow
def test_train_and_eval_on_the_episodes_a_partial_download_has(partial: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    out = run_cli("train", "--dataset", str(partial), *TINY_ACT, "--episodes", "0,2,4", "--steps", "2",
                  "--batch-size", "2", "--num-workers", "0", "--log-freq", "1", "--eval-freq", "2",
                  "--eval-max-samples", "4", "--val-fraction", "0.34", "--output-dir", str(run_dir))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "2 of the 5 episodes are unavailable" in out.stderr
    assert json.loads((run_dir / "config.json").read_text())["episodes"] == [0, 2, 4]
    out = run_cli("eval", "--checkpoint", str(run_dir / "checkpoints" / "last"), "--dataset", str(partial),
                  "--episodes", "4", "--output", str(tmp_path / "eval.json"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads((tmp_path / "eval.json").read_text())["num_samples"] == 11
    out = run_cli("eval", "--checkpoint", str(run_dir / "checkpoints" / "last"), "--dataset", str(partial),
                  "--episodes", "3")
    assert out.returncode == 2 and "video file is missing (episode 3)" in out.stderr
