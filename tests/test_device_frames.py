"""Frame cache in device memory (--frames-on-device): indices in, the same pixels out.

Runs on the CPU as the "device"; the gather is the same op on a GPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from dataset_helpers import FRONT, V30, WRIST

from robotrain.training.config import parse_train_config
from robotrain.constants import ACTION, OBS_IMAGES_PREFIX, frame_index_key
from robotrain.data.dataset import LeRobotDataset
from robotrain.data.device_frames import DeviceFrames
from robotrain.errors import ConfigError
from robotrain.evaluation.offline import batch_to_device
from robotrain.training.loop import train

CHUNK = [i / 30 for i in range(5)]


def _loader(ds: LeRobotDataset) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(ds, batch_size=7, num_workers=0, shuffle=True,
                                       generator=torch.Generator().manual_seed(0))


def test_indices_dataset_plus_device_frames_equals_pixels(lerobot_fixtures: Path, tmp_path: Path) -> None:
    root = lerobot_fixtures / V30
    kwargs = dict(image_size=(24, 32), cache_dir=tmp_path, progress=False, image_dtype="uint8")
    pixels = LeRobotDataset(root, {ACTION: CHUNK}, **kwargs)
    indices = LeRobotDataset(root, {ACTION: CHUNK}, frames="indices", **kwargs)
    item = indices[3]
    assert not any(k.startswith(OBS_IMAGES_PREFIX) for k in item)  # no pixels travel
    assert item[frame_index_key(FRONT)].dtype == torch.int64 and item[frame_index_key(FRONT)].dim() == 0
    frames = DeviceFrames(indices.cache, indices.camera_keys, torch.device("cpu"))
    assert frames.nbytes == 2 * pixels.meta.total_frames * 3 * 24 * 32
    for a, b in zip(_loader(pixels), _loader(indices)):
        got = batch_to_device(b, torch.device("cpu"), frames=frames)
        want = batch_to_device(a, torch.device("cpu"))
        assert set(got) == set(want)
        for key in (FRONT, WRIST, ACTION):
            assert got[key].dtype == torch.float32 and torch.equal(got[key], want[key]), key


def test_indices_follow_image_windows(lerobot_fixtures: Path, tmp_path: Path) -> None:
    """A camera with a temporal window gets (B, T) indices and (B, T, 3, H, W) frames."""
    root = lerobot_fixtures / V30
    window = {FRONT: [-1 / 30, 0.0], ACTION: CHUNK}
    kwargs = dict(image_size=(24, 32), cache_dir=tmp_path, progress=False, image_dtype="uint8")
    pixels = LeRobotDataset(root, window, **kwargs)
    indices = LeRobotDataset(root, window, frames="indices", **kwargs)
    frames = DeviceFrames(indices.cache, indices.camera_keys, torch.device("cpu"))
    a, b = next(iter(_loader(pixels))), next(iter(_loader(indices)))
    assert b[frame_index_key(FRONT)].shape == (7, 2)
    filled = frames.fill(b)
    assert filled[FRONT].shape == (7, 2, 3, 24, 32) and torch.equal(filled[FRONT], a[FRONT])


def test_bad_uses_are_clear(lerobot_fixtures: Path, tmp_path: Path) -> None:
    root = lerobot_fixtures / V30
    with pytest.raises(ConfigError, match="needs the frame cache"):
        LeRobotDataset(root, frames="indices", use_cache=False)
    with pytest.raises(ConfigError, match="frames must be"):
        LeRobotDataset(root, frames="gpu", cache_dir=tmp_path)
    pixels = LeRobotDataset(root, image_size=(24, 32), cache_dir=tmp_path, progress=False)
    frames = DeviceFrames(pixels.cache, pixels.camera_keys, torch.device("cpu"))
    with pytest.raises(ConfigError, match="frames='indices'"):
        frames.fill({FRONT: torch.zeros(1)})
    with pytest.raises(ConfigError, match="frames-on-device"):
        parse_train_config(["--policy", "act", "--dataset", str(root), "--frames-on-device",
                            "--use-cache", "false"]).validate()


@pytest.mark.slow
def test_training_with_frames_on_device_gives_the_same_losses(lerobot_fixtures: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROBOTRAIN_CACHE_DIR", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    tiny = ["--policy", "act", "--policy.dim_model", "16", "--policy.dim_feedforward", "32", "--policy.n_heads", "2",
            "--policy.n_encoder_layers", "1", "--policy.n_vae_encoder_layers", "1", "--policy.chunk_size", "5",
            "--policy.n_action_steps", "5", "--image-size", "32x32", "--steps", "3", "--batch-size", "4",
            "--num-workers", "0", "--log-freq", "1", "--save-freq", "0", "--eval-freq", "0",
            "--dataset", str(lerobot_fixtures / V30)]
    losses = []
    for name, extra in (("pixels", []), ("device", ["--frames-on-device"])):
        run_dir = train(parse_train_config([*tiny, *extra, "--output-dir", str(tmp_path / name)]))
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        losses.append([r["train/loss"] for r in records if "train/loss" in r])
    assert len(losses[0]) == 3 and losses[0] == losses[1]
