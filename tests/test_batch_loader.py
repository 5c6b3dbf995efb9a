"""`BatchedLoader` (data/batch_loader.py, `--loader batched`): the batches torch's DataLoader
makes from a `LeRobotDataset`, key for key, dtype for dtype, value for value."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from dataset_helpers import FRONT
from robotrain.constants import ACTION, OBS_STATE, SO101_TASK, frame_index_key
from robotrain.data.batch_loader import BatchedLoader
from robotrain.data.dataset import LeRobotDataset
from robotrain.data.writer import DatasetWriter
from robotrain.errors import ConfigError
from robotrain.training.config import parse_train_config
from robotrain.training.loop import infinite_batches

ACT_WINDOW = {ACTION: [i / 30 for i in range(100)]}  # ACT's 100-step chunk: padded past episode ends


def assert_same_batch(ours: dict, theirs: dict) -> None:
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        if isinstance(value, torch.Tensor):
            assert ours[key].dtype == value.dtype and ours[key].shape == value.shape, key
            assert torch.equal(ours[key], value), key
        else:
            assert ours[key] == value, key


def collated(ds: LeRobotDataset, positions) -> dict:
    return default_collate([ds[int(i)] for i in positions])


def positions_to_check(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [np.arange(min(n, 8)), np.array([n - 1, 0, n - 2, 1]), rng.permutation(n)[:16], np.array([3, 3, 7])]


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    """A dataset our writer produces: 3 episodes of different lengths, 2 cameras."""
    root = tmp_path_factory.mktemp("written") / "ds"
    rng = np.random.default_rng(1)
    cams = {"observation.images.front": (48, 64), "observation.images.wrist": (48, 64)}
    with DatasetWriter(root, fps=30, camera_shapes=cams) as writer:
        for length in (12, 7, 15):
            state = rng.normal(size=(length, 6)).astype(np.float32)
            images = {k: rng.integers(0, 256, size=(length, h, w, 3), dtype=np.uint8) for k, (h, w) in cams.items()}
            writer.add_episode(SO101_TASK, state, np.roll(state, -1, axis=0), images)
    return root


@pytest.mark.parametrize("windows", [ACT_WINDOW, {ACTION: [i / 30 for i in range(5)], OBS_STATE: [-2 / 30, 0.0],
                                                  FRONT: [-1 / 30, 0.0]}])
def test_lerobot_fixture_batches_equal_the_dataloaders(lerobot_fixtures: Path, tmp_path: Path, windows) -> None:
    ds = LeRobotDataset(lerobot_fixtures / "so101_fixture_v30", windows, image_size=(48, 64), cache_dir=tmp_path,
                        image_dtype="uint8", progress=False)
    loader = BatchedLoader(ds)
    for positions in positions_to_check(len(ds)):
        assert_same_batch(loader.gather(positions), collated(ds, positions))


def test_written_dataset_episode_subset_float_images_and_indices(written: Path, tmp_path: Path) -> None:
    for dtype, frames in (("uint8", "pixels"), ("float32", "pixels"), ("uint8", "indices")):
        ds = LeRobotDataset(written, ACT_WINDOW, episodes=[0, 2], cache_dir=tmp_path, image_dtype=dtype,
                            frames=frames, progress=False)
        loader = BatchedLoader(ds)
        for positions in positions_to_check(len(ds)):
            ours = loader.gather(positions)
            assert_same_batch(ours, collated(ds, positions))
        if frames == "indices":
            assert frame_index_key(FRONT) in ours and FRONT not in ours
        else:
            assert ours[FRONT].shape == (3, 3, 48, 64) and ours["action_is_pad"].shape == (3, 100)


def test_iterate_keeps_the_order_and_pins_nothing_on_cpu(written: Path, tmp_path: Path) -> None:
    ds = LeRobotDataset(written, ACT_WINDOW, cache_dir=tmp_path, image_dtype="uint8", progress=False)
    loader = BatchedLoader(ds)
    batches = [np.arange(i, i + 4) for i in range(0, 24, 4)]
    for threads in (1, 3):
        got = list(loader.iterate(iter(batches), threads=threads, prefetch=2))
        assert len(got) == len(batches)
        for batch, positions in zip(got, batches):
            assert_same_batch(batch, collated(ds, positions))


def test_refuses_what_it_cannot_load(written: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="frame cache"):
        BatchedLoader(LeRobotDataset(written, ACT_WINDOW, use_cache=False, progress=False))
    with pytest.raises(ConfigError, match="LeRobot dataset"):
        BatchedLoader([1, 2, 3])  # type: ignore[arg-type]
    loader = BatchedLoader(LeRobotDataset(written, cache_dir=tmp_path, progress=False))
    with pytest.raises(IndexError):
        loader.gather([len(loader)])
    with pytest.raises(ConfigError, match="--loader"):
        parse_train_config(["--loader", "batched", "--use-cache", "false"], check_paths=False)
    with pytest.raises(ConfigError, match="--loader"):
        parse_train_config(["--loader", "fast"], check_paths=False)


@pytest.mark.parametrize("start_step", [0, 5])
def test_training_gets_the_same_batches_either_way(written: Path, tmp_path: Path, start_step: int) -> None:
    """Same order (seed, epoch, resume offset), same contents: a drop-in for the loop."""
    ds = LeRobotDataset(written, ACT_WINDOW, cache_dir=tmp_path, image_dtype="uint8", progress=False)
    streams = []
    for loader, workers in (("dataloader", "0"), ("batched", "2")):
        config = parse_train_config(["--batch-size", "4", "--num-workers", workers, "--loader", loader, "--seed", "7"],
                                    check_paths=False)
        batches = infinite_batches(ds, config, rank=0, world=1, start_step=start_step, pin_memory=False)
        streams.append([next(batches) for _ in range(12)])  # past an epoch (34 frames / 4 = 8 batches)
        batches.close()
    for ours, theirs in zip(streams[1], streams[0]):
        assert_same_batch(ours, theirs)


def test_act_trains_identically_with_either_loader(lerobot_fixtures: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ROBOTRAIN_CACHE_DIR", str(tmp_path / "cache"))
    from robotrain.training.loop import train

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    losses = []
    try:
        for loader in ("dataloader", "batched"):
            config = parse_train_config(
                ["--dataset", str(lerobot_fixtures / "so101_fixture_v30"), "--policy", "act", "--policy.dim_model", "32",
                 "--policy.dim_feedforward", "64", "--policy.n_heads", "2", "--policy.n_encoder_layers", "1",
                 "--policy.n_vae_encoder_layers", "1", "--policy.chunk_size", "100", "--image-size", "32x32",
                 "--steps", "3", "--batch-size", "4", "--num-workers", "0", "--log-freq", "1", "--eval-freq", "0",
                 "--val-fraction", "0", "--save-freq", "0", "--loader", loader,
                 "--output-dir", str(tmp_path / loader)])
            run_dir = train(config)
            lines = (run_dir / "metrics.jsonl").read_text().splitlines()
            losses.append([json.loads(line)["train/loss"] for line in lines if "train/loss" in line])
    finally:
        torch.set_num_threads(before)
    assert len(losses[0]) == 3 and losses[0] == losses[1]
