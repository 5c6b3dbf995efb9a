"""LeRobotDataset: items like LeRobot's (values, windows, is_pad, subsets), cached vs decoded."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from dataset_helpers import FRONT, V21, V30, WRIST, corrupt, edit_feature, v30_video, writable_copy

from robotrain.constants import ACTION, ACTION_IS_PAD, OBS_STATE, pad_key
from robotrain.data.dataset import LeRobotDataset, split_episodes
from robotrain.data.format import load_meta
from robotrain.errors import ConfigError, DatasetError

CHUNK = [i / 30 for i in range(10)]
LEROBOT_KEYS = {"action", "observation.state", "timestamp", "frame_index", "episode_index", "index",
                "task_index", FRONT, WRIST, "task"}


def _rows(meta) -> list[dict]:
    rows = []
    for path in meta.data_files():
        rows += pq.read_table(path).to_pylist()
    return sorted(rows, key=lambda r: r["index"])


@pytest.fixture(params=[V30, V21])
def fixture_root(request, lerobot_fixtures: Path) -> Path:
    return lerobot_fixtures / request.param


def test_items_match_parquet(fixture_root: Path, tmp_path: Path) -> None:
    ds = LeRobotDataset(fixture_root, cache_dir=tmp_path, progress=False)
    rows = _rows(ds.meta)
    assert len(ds) == len(rows) == ds.meta.total_frames
    for i in (0, 1, len(ds) // 2, len(ds) - 1):
        item = ds[i]
        assert set(item) == LEROBOT_KEYS
        row = rows[i]
        assert torch.equal(item[ACTION], torch.tensor(row["action"], dtype=torch.float32))
        assert torch.equal(item[OBS_STATE], torch.tensor(row["observation.state"], dtype=torch.float32))
        assert item["timestamp"].dtype == torch.float32 and item["timestamp"].shape == ()
        assert item["timestamp"].item() == pytest.approx(row["timestamp"])
        for key in ("frame_index", "episode_index", "index", "task_index"):
            assert item[key].dtype == torch.int64 and item[key].item() == row[key]
        assert item["task"] == ds.meta.tasks[row["task_index"]]
        for cam in (FRONT, WRIST):
            img = item[cam]
            assert img.shape == (3, 96, 128) and img.dtype == torch.float32
            assert 0.0 <= img.min() and img.max() <= 1.0 and img.std() > 0.05  # a gradient, not blank
    assert ds[ds.meta.episodes[1].dataset_from_index]["task"] != ds[0]["task"]  # episode 1: other task
    assert not torch.equal(ds[0][FRONT], ds[20][FRONT])  # frames move


def test_windows_clamp_and_pad_at_episode_ends(lerobot_fixtures: Path, tmp_path: Path) -> None:
    delta = {ACTION: CHUNK, OBS_STATE: [-2 / 30, -1 / 30, 0.0], FRONT: [-1 / 30, 0.0]}
    ds = LeRobotDataset(lerobot_fixtures / V30, delta, cache_dir=tmp_path, progress=False)
    rows = _rows(ds.meta)
    actions = np.array([r["action"] for r in rows], dtype=np.float32)
    states = np.array([r["observation.state"] for r in rows], dtype=np.float32)

    last = ds[40]  # last frame of episode 0 (frames 0..40)
    assert last[ACTION].shape == (10, 6)
    assert last[ACTION_IS_PAD].dtype == torch.bool
    assert last[ACTION_IS_PAD].tolist() == [False] + [True] * 9
    assert torch.equal(last[ACTION], torch.from_numpy(np.repeat(actions[40:41], 10, axis=0)))  # clamped, not ep 1

    mid = ds[35]
    assert mid[ACTION_IS_PAD].tolist() == [False] * 6 + [True] * 4
    assert torch.equal(mid[ACTION][:6], torch.from_numpy(actions[35:41]))

    first = ds[41]  # first frame of episode 1: the state window must not reach into episode 0
    assert first[pad_key(OBS_STATE)].tolist() == [True, True, False]
    assert torch.equal(first[OBS_STATE], torch.from_numpy(np.repeat(states[41:42], 3, axis=0)))
    assert first[FRONT].shape == (2, 3, 96, 128)
    assert first[pad_key(FRONT)].tolist() == [True, False]
    assert torch.equal(first[FRONT][0], first[FRONT][1])
    assert first[WRIST].shape == (3, 96, 128)  # no window asked: a single frame

    inner = ds[60]
    assert not inner[ACTION_IS_PAD].any()
    assert torch.equal(inner[OBS_STATE], torch.from_numpy(states[58:61]))
    assert torch.equal(inner[FRONT][1], ds[60 - 0][FRONT][1]) and torch.equal(inner[FRONT][0], ds[59][FRONT][1])


def test_episode_subset_keeps_global_indexing(lerobot_fixtures: Path, tmp_path: Path) -> None:
    full = LeRobotDataset(lerobot_fixtures / V21, {ACTION: CHUNK}, cache_dir=tmp_path, progress=False)
    sub = LeRobotDataset(lerobot_fixtures / V21, {ACTION: CHUNK}, episodes=[2, 0], cache_dir=tmp_path,
                         progress=False)
    assert sub.episodes == [0, 2] and len(sub) == 48 + 34
    assert sub[48]["index"].item() == 101 and sub[48]["episode_index"].item() == 2
    for i, g in ((0, 0), (47, 47), (48, 101), (81, 134)):
        a, b = sub[i], full[g]
        assert torch.equal(a[ACTION], b[ACTION]) and torch.equal(a[ACTION_IS_PAD], b[ACTION_IS_PAD])
        assert torch.equal(a[FRONT], b[FRONT])
    assert sub[-1]["index"].item() == 134
    with pytest.raises(ConfigError, match="episodes"):
        LeRobotDataset(lerobot_fixtures / V21, episodes=[7], cache_dir=tmp_path, progress=False)


def test_index_out_of_range(lerobot_fixtures: Path, tmp_path: Path) -> None:
    ds = LeRobotDataset(lerobot_fixtures / V30, episodes=[1], cache_dir=tmp_path, progress=False)
    with pytest.raises(IndexError, match="out of range.*42 frames"):
        ds[42]
    with pytest.raises(IndexError):
        ds[-43]


def test_bad_arguments(lerobot_fixtures: Path, tmp_path: Path) -> None:
    root = lerobot_fixtures / V30
    with pytest.raises(ConfigError, match="multiples of 1/fps"):
        LeRobotDataset(root, {ACTION: [0.01]}, cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="not a feature"):
        LeRobotDataset(root, {"nope": [0.0]}, cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="resize_mode"):
        LeRobotDataset(root, resize_mode="crop", cache_dir=tmp_path)


@pytest.mark.parametrize("size,mode", [(None, "resize"), ((48, 64), "resize"), ((64, 64), "pad")])
def test_cached_matches_decoded(fixture_root: Path, tmp_path: Path, size, mode: str) -> None:
    kwargs = dict(delta_timestamps={FRONT: [-1 / 30, 0.0]}, image_size=size, resize_mode=mode)
    cached = LeRobotDataset(fixture_root, cache_dir=tmp_path, progress=False, **kwargs)
    decoded = LeRobotDataset(fixture_root, use_cache=False, **kwargs)
    assert cached.cache is not None and decoded.cache is None
    for i in (0, 17, 47, len(cached) - 1):
        a, b = cached[i], decoded[i]
        for cam in (FRONT, WRIST):
            assert a[cam].shape == b[cam].shape
            # the cache stores uint8: at most half a grey level from rounding after resize
            assert (a[cam] - b[cam]).abs().max().item() <= 0.5 / 255 + 1e-6
    if mode == "pad":  # 96x128 -> 48x64 inside 64x64, padded at the top with zeros
        img = cached[0][FRONT][1]
        assert img.shape == (3, 64, 64)
        assert img[:, :16].abs().max() == 0 and img[:, 16:].std() > 0.05


def test_uint8_images(lerobot_fixtures: Path, tmp_path: Path) -> None:
    root = lerobot_fixtures / V30
    f32 = LeRobotDataset(root, image_size=(48, 64), cache_dir=tmp_path, progress=False)
    u8 = LeRobotDataset(root, image_size=(48, 64), cache_dir=tmp_path, progress=False, image_dtype="uint8")
    dec = LeRobotDataset(root, image_size=(48, 64), use_cache=False, image_dtype="uint8")
    assert u8[5][FRONT].dtype == torch.uint8
    torch.testing.assert_close(u8[5][FRONT].float() / 255, f32[5][FRONT], atol=1e-6, rtol=0)
    assert (u8[5][FRONT].int() - dec[5][FRONT].int()).abs().max() <= 1


def test_dataloader_two_workers_share_the_memmap(lerobot_fixtures: Path, tmp_path: Path) -> None:
    ds = LeRobotDataset(lerobot_fixtures / V30, {ACTION: CHUNK}, image_size=(32, 32), cache_dir=tmp_path,
                        progress=False)
    ds[0]  # opens the memmap in this process
    assert len(pickle.dumps(ds)) < 200_000  # the frames never travel to workers
    loader = torch.utils.data.DataLoader(ds, batch_size=16, num_workers=2, shuffle=False)
    seen = 0
    for batch in loader:
        assert batch[FRONT].shape[1:] == (3, 32, 32) and batch[ACTION].shape[1:] == (10, 6)
        for j in (0, len(batch["index"]) - 1):
            ref = ds[int(batch["index"][j])]
            assert torch.equal(batch[FRONT][j], ref[FRONT]) and torch.equal(batch[ACTION_IS_PAD][j], ref[ACTION_IS_PAD])
        seen += len(batch["index"])
    assert seen == len(ds)


def test_corrupt_mp4_is_a_dataset_error(lerobot_fixtures: Path, tmp_path: Path) -> None:
    root = writable_copy(lerobot_fixtures / V30, tmp_path / "ds")
    corrupt(v30_video(root, WRIST))
    with pytest.raises(DatasetError, match="observation.images.wrist.*file-000.mp4"):
        LeRobotDataset(root, cache_dir=tmp_path / "cache", progress=False)
    ds = LeRobotDataset(root, use_cache=False)
    with pytest.raises(DatasetError, match="file-000.mp4"):
        ds[0]


def test_frames_of_another_size_than_declared_are_a_dataset_error(lerobot_fixtures: Path, tmp_path: Path) -> None:
    """Cached or decoded per sample, a video that disagrees with info.json is refused, not resized."""
    root = writable_copy(lerobot_fixtures / V30, tmp_path / "ds")
    info = json.loads((root / "meta" / "info.json").read_text())["features"][FRONT]["info"]
    edit_feature(root, FRONT, shape=[120, 160, 3], info={**info, "video.height": 120, "video.width": 160})
    declared = "decoded frames are 96x128 but info.json declares 120x160"
    with pytest.raises(DatasetError, match=declared):
        LeRobotDataset(root, image_size=(48, 64), cache_dir=tmp_path / "cache", progress=False)
    ds = LeRobotDataset(root, image_size=(48, 64), use_cache=False)
    with pytest.raises(DatasetError, match=declared):
        ds[0]


def test_split_episodes(lerobot_fixtures: Path) -> None:
    meta = load_meta(lerobot_fixtures / V30)
    train, val = split_episodes(meta, val_fraction=0.1, seed=0)
    assert len(val) == 1 and len(train) == 2 and sorted(train + val) == [0, 1, 2]
    assert split_episodes(meta, 0.1, seed=0) == (train, val)  # deterministic
    assert split_episodes(meta, 0.0) == ([0, 1, 2], [])
    assert len(split_episodes(meta, 0.9)[0]) == 1  # never all episodes in validation
    with pytest.raises(ConfigError):
        split_episodes(meta, 1.0)


def test_images_to_float(lerobot_fixtures: Path, tmp_path: Path) -> None:
    from robotrain.data.dataset import images_to_float

    u8 = LeRobotDataset(lerobot_fixtures / V30, {ACTION: CHUNK}, cache_dir=tmp_path, progress=False,
                        image_dtype="uint8")
    f32 = LeRobotDataset(lerobot_fixtures / V30, {ACTION: CHUNK}, cache_dir=tmp_path, progress=False)
    batch = torch.utils.data.default_collate([u8[3], u8[50]])
    out = images_to_float(batch, "cpu")
    ref = torch.utils.data.default_collate([f32[3], f32[50]])
    assert out[FRONT].dtype == torch.float32 and out[ACTION].dtype == torch.float32
    torch.testing.assert_close(out[FRONT], ref[FRONT], atol=1e-6, rtol=0)
    assert out["task"] == ref["task"]
