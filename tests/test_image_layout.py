"""Camera features declared channel-first (`[3, H, W]`, names `[channels, height, width]`)
read like LeRobot's own `[H, W, 3]` layout everywhere: validate, cache, per-sample
decoding, training, evaluation and conversion (issue 24, item 1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from dataset_helpers import FRONT, V21, V30, WRIST, declare_channel_first, edit_feature, writable_copy

from robotrain.data.dataset import LeRobotDataset
from robotrain.data.format import image_hwc, load_meta, validate_dataset
from robotrain.errors import DatasetError
from robotrain.policies.base import PolicyFeatures
from train_helpers import TINY_ACT_FLAGS as TINY_ACT


@pytest.fixture(params=[(V30, "channels"), (V21, "channel")], ids=["v30", "v21-channel"])
def channel_first(request, lerobot_fixtures: Path, tmp_path: Path) -> tuple[Path, Path]:
    """(original fixture, a copy whose cameras are declared channel-first)."""
    name, word = request.param
    root = writable_copy(lerobot_fixtures / name, tmp_path / "channel_first")
    declare_channel_first(root, (word, "height", "width"))
    return lerobot_fixtures / name, root


def test_image_hwc_reads_the_layout_from_names() -> None:
    assert image_hwc({"shape": [96, 128, 3], "names": ["height", "width", "channels"]}, "cam") == (96, 128, 3)
    assert image_hwc({"shape": [3, 96, 128], "names": ["channels", "height", "width"]}, "cam") == (96, 128, 3)
    assert image_hwc({"shape": [3, 96, 128], "names": ["channel", "height", "width"]}, "cam") == (96, 128, 3)
    assert image_hwc({"shape": [96, 128, 3], "names": ["height", "width", "channel"]}, "cam") == (96, 128, 3)
    assert image_hwc({"shape": [96, 128, 3], "names": None}, "cam") == (96, 128, 3)  # LeRobot's own layout


def test_channel_first_validates_and_reads_like_the_original(channel_first, tmp_path: Path) -> None:
    original, root = channel_first
    assert validate_dataset(root) == []
    meta = load_meta(root)
    assert meta.camera_shape(FRONT) == meta.camera_shape(WRIST) == (96, 128, 3)
    assert PolicyFeatures.from_meta(meta).image_shape == (3, 96, 128)
    for use_cache, size in ((True, (48, 64)), (False, None)):
        kwargs = dict(delta_timestamps={FRONT: [-1 / 30, 0.0]}, image_size=size, use_cache=use_cache,
                      cache_dir=tmp_path / "cache", progress=False)
        a, b = LeRobotDataset(original, **kwargs), LeRobotDataset(root, **kwargs)
        for i in (0, 50, len(a) - 1):
            x, y = a[i], b[i]
            assert torch.equal(x[FRONT], y[FRONT]) and torch.equal(x[WRIST], y[WRIST])
            assert y[WRIST].shape == (3, *(size or (96, 128)))


def test_cli_info_and_cache_on_channel_first(channel_first, tmp_path: Path) -> None:
    _, root = channel_first
    out = run_cli("dataset", "info", str(root))
    assert out.returncode == 0, out.stderr
    assert f"{FRONT:<28} 96x128" in out.stdout
    out = run_cli("dataset", "cache", str(root), "--size", "32x32", "--cache-dir", str(tmp_path / "c"))
    assert out.returncode == 0, out.stderr
    assert "frames x 32x32" in out.stdout


@pytest.mark.parametrize("names,shape,expected", [
    (["width", "height", "channels"], [128, 96, 3],
     "'features.observation.images.front.names' is ['width', 'height', 'channels']; expected "
     "['height', 'width', 'channels'] or ['channels', 'height', 'width']"),
    (["channels", "height", "width"], [4, 96, 128], "[4, 96, 128] with names ['channels', 'height', 'width']: "
                                                    "4 channels, expected 3"),
    (["height", "width", "channels"], [96, 128], "shape' is [96, 128]; a camera needs 3 entries"),
])
def test_layouts_we_cannot_read_are_refused(lerobot_fixtures: Path, tmp_path: Path, names, shape,
                                            expected: str) -> None:
    root = writable_copy(lerobot_fixtures / V30, tmp_path / "ds")
    edit_feature(root, FRONT, names=names, shape=shape)
    with pytest.raises(DatasetError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        load_meta(root)
    out = run_cli("dataset", "validate", str(root))
    assert out.returncode == 1 and expected in out.stderr


def test_conversion_of_a_channel_first_v21_writes_lerobots_layout(lerobot_fixtures: Path, tmp_path: Path) -> None:
    from robotrain.data.convert import convert_v21_to_v30

    src = writable_copy(lerobot_fixtures / V21, tmp_path / "v21")
    declare_channel_first(src, ("channel", "height", "width"))
    convert_v21_to_v30(src, tmp_path / "v30")
    info = json.loads((tmp_path / "v30" / "meta" / "info.json").read_text())
    assert info["features"][FRONT]["shape"] == [96, 128, 3]
    assert info["features"][FRONT]["names"] == ["height", "width", "channels"]
    assert validate_dataset(tmp_path / "v30") == []
    a = LeRobotDataset(src, use_cache=False)
    b = LeRobotDataset(tmp_path / "v30", use_cache=False)
    for i in (0, 60, 134):
        assert torch.equal(a[i][FRONT], b[i][FRONT])


@pytest.mark.slow
def test_train_and_eval_on_a_channel_first_dataset(lerobot_fixtures: Path, tmp_path: Path) -> None:
    root = writable_copy(lerobot_fixtures / V30, tmp_path / "ds")
    declare_channel_first(root)
    run_dir = tmp_path / "run"
    out = run_cli("train", "--dataset", str(root), *TINY_ACT, "--steps", "2", "--batch-size", "2",
                  "--num-workers", "0", "--log-freq", "1", "--eval-freq", "2", "--eval-max-samples", "4",
                  "--val-fraction", "0.34", "--output-dir", str(run_dir))
    assert out.returncode == 0, out.stderr[-2000:]
    config = json.loads((run_dir / "checkpoints" / "last" / "pretrained_model" / "config.json").read_text())
    assert config["input_features"][FRONT]["shape"] == [3, 96, 128]  # LeRobot's (C, H, W), as for any dataset
    out = run_cli("eval", "--checkpoint", str(run_dir / "checkpoints" / "last"), "--dataset", str(root),
                  "--episodes", "1", "--max-samples", "4", "--output", str(tmp_path / "eval.json"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "first action" in out.stdout
