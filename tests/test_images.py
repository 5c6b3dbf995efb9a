"""The one image path (`robotrain.data.images`): one fitting rule, one rounding rule, and a
rendered frame prepared for the rollout equals the cached frame of the same render."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from robotrain.data import cache as cache_mod
from robotrain.data.dataset import LeRobotDataset
from robotrain.data.format import load_meta
from robotrain.data.images import fit_float, fit_uint8, fitted_size, parse_image_size, prepare_frames, to_unit_float
from robotrain.data.writer import DatasetWriter
from robotrain.errors import ConfigError
from robotrain.evaluation.rollout import obs_to_batch
from robotrain.sim.env import SO101PickPlaceEnv

FRONT, WRIST = "observation.images.front", "observation.images.wrist"


def test_one_rounding_rule_for_padding() -> None:
    # 480x640 into 250x250: ratio 2.56, 480 / 2.56 = 187.5 -> 187 rows (LeRobot's int()).
    assert fitted_size(480, 640, (250, 250), "pad") == (187, 250)
    assert fitted_size(480, 640, (240, 320), "resize") == (240, 320)
    frame = torch.full((1, 3, 480, 640), 200, dtype=torch.uint8)
    out = fit_uint8(frame, (250, 250), "pad")
    assert out.shape == (1, 3, 250, 250)
    assert (out[:, :, : 250 - 187] == 0).all() and (out[:, :, 250 - 187 :] == 200).all()


def test_pad_keeps_aspect_and_pads_left_top() -> None:
    out = fit_float(torch.ones(1, 3, 24, 32), (16, 16), "pad")
    assert out.shape == (1, 3, 16, 16)
    assert (out[:, :, :4] == 0).all() and (out[:, :, 4:] == 1).all()  # 24x32 -> 12x16
    tall = fit_float(torch.ones(1, 3, 32, 16), (16, 16), "pad")
    assert (tall[..., :8] == 0).all() and (tall[..., 8:] == 1).all()


def test_frames_at_size_are_untouched_and_uint8_becomes_unit_float() -> None:
    frames = torch.randint(0, 256, (2, 3, 12, 16), dtype=torch.uint8)
    assert fit_uint8(frames, (12, 16), "pad") is not None and torch.equal(fit_uint8(frames, (12, 16), "pad"), frames)
    assert torch.equal(fit_uint8(frames, None), frames)
    unit = to_unit_float(frames)
    assert unit.dtype == torch.float32 and float(unit.max()) <= 1.0
    assert torch.equal(unit, frames.float() / 255.0)
    assert torch.equal(prepare_frames(frames.permute(0, 2, 3, 1).numpy(), None), unit)


def test_one_image_size_parser() -> None:
    assert parse_image_size("240x320") == (240, 320)
    assert parse_image_size("224") == (224, 224)
    assert parse_image_size((96, 128)) == (96, 128)
    assert parse_image_size("native") is None
    with pytest.raises(ConfigError, match="--render-size: expected HxW"):
        parse_image_size("big", "--render-size")
    with pytest.raises(ConfigError, match="two positive"):
        parse_image_size("0x320")
    with pytest.raises(ConfigError, match="mode"):
        fit_float(torch.zeros(1, 3, 4, 4), (2, 2), "crop")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    """Three sim frames rendered at 480x640 per camera, and a dataset recorded from them."""
    env = SO101PickPlaceEnv(image_size=(480, 640))
    try:
        obs, _ = env.reset(seed=3)
        frames = {FRONT: [obs[FRONT]], WRIST: [obs[WRIST]]}
        states = [obs["observation.state"]]
        for _ in range(2):
            obs, *_ = env.step(env.action_space.sample() * 0.0 + obs["observation.state"])
            frames[FRONT].append(obs[FRONT])
            frames[WRIST].append(obs[WRIST])
            states.append(obs["observation.state"])
    finally:
        env.close()
    images = {k: np.stack(v) for k, v in frames.items()}
    root = tmp_path_factory.mktemp("rendered") / "ds"
    state = np.stack(states).astype(np.float32)
    with DatasetWriter(root, camera_shapes={k: (480, 640) for k in images}) as writer:
        writer.add_episode("pick", state, state, images)
    return root, images


@pytest.mark.parametrize(("size", "mode"), [((250, 250), "pad"), ((240, 320), "resize"), ((96, 128), "resize")])
def test_rollout_frame_equals_cached_frame_of_the_same_render(
    rendered: tuple[Path, dict[str, np.ndarray]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    size: tuple[int, int], mode: str,
) -> None:
    """The cache is built from the rendered frames themselves (decoding is swapped for them,
    so video compression is out of the picture); what the rollout hands the policy must be
    the same tensor, bit for bit, and so must per-sample decoding's."""
    root, images = rendered
    by_video = {FRONT: images[FRONT], WRIST: images[WRIST]}

    def raw_frames(video, times, tolerance_s, threads=0):
        cam = FRONT if FRONT in str(video) else WRIST
        for j in range(len(times)):
            yield j, by_video[cam][j]

    monkeypatch.setattr(cache_mod, "iter_frames_at", raw_frames)
    meta = load_meta(root)
    cache = cache_mod.build_cache(meta, size, mode, cache_dir=tmp_path / "cache", num_workers=0, progress=False)
    batch = obs_to_batch({"observation.state": np.zeros((3, 6), np.float32), **images}, (FRONT, WRIST),
                         size, torch.device("cpu"), mode)
    for cam in (FRONT, WRIST):
        cached = torch.from_numpy(np.array(cache.open(cam)))  # (3, 3, H, W) uint8
        assert cached.shape == (3, 3, *size)
        assert torch.equal(batch[cam], to_unit_float(cached)), cam

    import robotrain.data.dataset as dataset_mod

    monkeypatch.setattr(dataset_mod, "decode_frames_at",
                        lambda path, times, tol: by_video[FRONT if FRONT in str(path) else WRIST][: len(times)])
    per_sample = LeRobotDataset(root, image_size=size, resize_mode=mode, use_cache=False)
    assert torch.equal(per_sample[0][FRONT], batch[FRONT][0])
