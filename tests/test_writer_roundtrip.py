"""Round trip through the project's reader: what DatasetWriter and convert_v21_to_v30
write, `robotrain.data.dataset.LeRobotDataset` reads back (skipped until the reader is
merged into this branch)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from robotrain.data.convert import convert_v21_to_v30
from test_writer import CAMS, TASKS, write_dataset

dataset_mod = pytest.importorskip("robotrain.data.dataset")
format_mod = pytest.importorskip("robotrain.data.format")


def test_written_dataset_reads_back(tmp_path):
    root = tmp_path / "ds"
    episodes = write_dataset(root, lengths=(12, 15, 9))
    assert format_mod.validate_dataset(root) == []
    meta = format_mod.load_meta(root)
    assert meta.version == "v3.0" and meta.fps == 30 and meta.total_frames == 36 and meta.total_episodes == 3
    assert meta.camera_keys == tuple(sorted(CAMS)) and meta.state_dim == 6 and meta.action_dim == 6
    assert meta.tasks == TASKS and [e.length for e in meta.episodes] == [12, 15, 9]
    assert meta.stats["observation.images.front"]["mean"].shape == (3, 1, 1)
    for use_cache in (False, True):
        ds = dataset_mod.LeRobotDataset(root, use_cache=use_cache, cache_dir=tmp_path / "cache")
        assert len(ds) == 36
        for g, (ep, i) in enumerate([(0, 0), (0, 11), (1, 0), (1, 7), (2, 8)]):
            item = ds[[0, 11, 12, 19, 35][g]]
            state, action, images = episodes[ep]
            np.testing.assert_array_equal(item["observation.state"].numpy(), state[i])
            np.testing.assert_array_equal(item["action"].numpy(), action[i])
            assert item["task"] == TASKS[ep % 2] and int(item["episode_index"]) == ep
            assert int(item["frame_index"]) == i
            for key in CAMS:
                want = images[key][i].transpose(2, 0, 1) / 255.0  # (C, H, W)
                assert np.abs(item[key].numpy() - want).mean() < 8 / 255


def test_converted_fixture_reads_like_the_source(tmp_path, lerobot_fixtures):
    src = tmp_path / "v21"
    shutil.copytree(lerobot_fixtures / "so101_fixture_v21", src)
    convert_v21_to_v30(src, tmp_path / "v30")
    assert format_mod.validate_dataset(tmp_path / "v30") == []
    a = dataset_mod.LeRobotDataset(src, use_cache=False)
    b = dataset_mod.LeRobotDataset(tmp_path / "v30", use_cache=False)
    assert len(a) == len(b) == 135
    for i in (0, 47, 48, 100, 134):
        x, y = a[i], b[i]
        assert x["task"] == y["task"]
        for key in ("observation.state", "action", "timestamp", "index", "episode_index",
                    "observation.images.front", "observation.images.wrist"):
            np.testing.assert_array_equal(x[key].numpy(), y[key].numpy())  # stream copy: identical pixels
