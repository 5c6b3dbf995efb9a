"""Image normalisation like lerobot-train: ImageNet mean/std in place of the dataset's.

lerobot-train's default `dataset.use_imagenet_stats=true` replaces every camera's mean/std
before building the normaliser (its checkpoint, tests/fixtures/lerobot_act_checkpoint,
holds mean [0.485, 0.456, 0.406], std [0.229, 0.224, 0.225] for both cameras). robotrain
train must do the same by default, and save the stats it used.
"""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load_file

from robotrain.checkpoints.store import PREPROCESSOR_STATS
from robotrain.constants import IMAGENET_MEAN, IMAGENET_STD
from robotrain.training.config import parse_train_config
from robotrain.training.loop import train, training_stats

import train_helpers
from train_helpers import CAMERA, SyntheticSource


@pytest.fixture(autouse=True)
def _tiny_policy() -> None:
    train_helpers.register()


def _stats() -> dict[str, dict[str, np.ndarray]]:
    return {
        CAMERA: {"mean": np.full((3, 1, 1), 0.5, np.float32), "std": np.full((3, 1, 1), 1e-5, np.float32),
                 "min": np.zeros((3, 1, 1), np.float32)},
        "observation.state": {"mean": np.ones(6, np.float32), "std": np.full(6, 2.0, np.float32)},
    }


def test_imagenet_stats_replace_camera_mean_std_only() -> None:
    stats = _stats()
    out = training_stats(stats, (CAMERA,), use_imagenet_stats=True)
    np.testing.assert_array_equal(out[CAMERA]["mean"].reshape(3), np.float32(IMAGENET_MEAN))
    np.testing.assert_array_equal(out[CAMERA]["std"].reshape(3), np.float32(IMAGENET_STD))
    assert out[CAMERA]["mean"].shape == (3, 1, 1)
    np.testing.assert_array_equal(out[CAMERA]["min"], stats[CAMERA]["min"])  # other stats kept
    np.testing.assert_array_equal(out["observation.state"]["std"], stats["observation.state"]["std"])
    assert float(stats[CAMERA]["std"].max()) == pytest.approx(1e-5)  # the input is not modified


def test_dataset_stats_kept_when_disabled() -> None:
    stats = _stats()
    out = training_stats(stats, (CAMERA,), use_imagenet_stats=False)
    np.testing.assert_array_equal(out[CAMERA]["std"], stats[CAMERA]["std"])


@pytest.mark.parametrize("flag, expect_imagenet", [([], True), (["--use-imagenet-stats", "false"], False)])
def test_checkpoint_saves_the_stats_used(tmp_path, flag: list[str], expect_imagenet: bool) -> None:
    config = parse_train_config(["--policy", "tiny_mlp", "--output-dir", str(tmp_path / "run"), "--num-workers", "0",
                                 "--batch-size", "2", "--steps", "1", "--eval-freq", "0", *flag], check_paths=False)
    source = SyntheticSource(n_episodes=2, length=6, n_val=1)
    run_dir = train(config, data=source)
    saved = load_file(str(run_dir / "checkpoints" / "last" / "pretrained_model" / PREPROCESSOR_STATS))
    mean, std = saved[f"{CAMERA}.mean"].reshape(-1), saved[f"{CAMERA}.std"].reshape(-1)
    if expect_imagenet:
        np.testing.assert_allclose(mean, IMAGENET_MEAN, rtol=1e-6)
        np.testing.assert_allclose(std, IMAGENET_STD, rtol=1e-6)
    else:
        np.testing.assert_allclose(std, source.meta.stats[CAMERA]["std"].reshape(-1), rtol=1e-6)
