"""A feature rename map (`--rename state=observation.state,actions=action,image=...`) for
datasets exported with other names: train, eval and cache read them under the policy's
names, and the map is saved with the run (issue 24, item 4)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from dataset_helpers import FRONT, V30, WRIST, rename_on_disk, writable_copy

from robotrain.constants import ACTION, OBS_STATE
from robotrain.data.cache import ensure_cache
from robotrain.data.dataset import LeRobotDataset
from robotrain.data.format import load_meta, validate_dataset
from robotrain.data.rename import parse_rename, rename_features
from robotrain.errors import ConfigError
from robotrain.training.config import parse_train_config
from robotrain.policies.base import PolicyFeatures
from robotrain.training.loop import LeRobotSource
from train_helpers import TINY_ACT_FLAGS as TINY_ACT

EXPORTED = {OBS_STATE: "state", ACTION: "actions", FRONT: "image", WRIST: "wrist_image"}
RENAME = {v: k for k, v in EXPORTED.items()}
RENAME_FLAG = "state=observation.state,actions=action,image=observation.images.front," \
              "wrist_image=observation.images.wrist"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, lerobot_fixtures: Path) -> Path:
    root = writable_copy(lerobot_fixtures / V30, tmp_path_factory.mktemp("exported") / "ds")
    rename_on_disk(root, EXPORTED)
    return root


def test_parse_rename_forms() -> None:
    assert parse_rename(RENAME_FLAG) == RENAME
    assert parse_rename('{"state": "observation.state"}') == {"state": OBS_STATE}
    with pytest.raises(ConfigError, match=re.escape("--rename") + ".*KEY=VALUE"):
        parse_rename("state:observation.state")
    config = parse_train_config(["--dataset", "x", "--rename", RENAME_FLAG], check_paths=False)
    assert config.rename == RENAME


def test_the_exported_dataset_is_valid_but_not_trainable_without_a_map(exported: Path, tmp_path: Path) -> None:
    assert validate_dataset(exported) == []
    config = parse_train_config(["--dataset", str(exported), "--output-dir", str(tmp_path / "run")])
    with pytest.raises(ConfigError, match=re.escape("the dataset has no 'action' feature (features: actions, "
                                                    "state") + r".*--rename NAME=action"):
        LeRobotSource(config)


def test_renamed_dataset_reads_like_the_original(exported: Path, lerobot_fixtures: Path, tmp_path: Path) -> None:
    original = load_meta(lerobot_fixtures / V30)
    meta = rename_features(load_meta(exported), RENAME)
    assert list(meta.features) == list(original.features) and meta.camera_keys == original.camera_keys
    assert meta.stored_name(FRONT) == "image" and meta.stored_name("timestamp") == "timestamp"
    assert set(meta.stats) == set(original.stats)
    assert PolicyFeatures.from_meta(meta) == PolicyFeatures.from_meta(original)
    for use_cache in (True, False):
        kwargs = dict(delta_timestamps={ACTION: [0.0, 1 / 30]}, image_size=(32, 32), use_cache=use_cache,
                      cache_dir=tmp_path / "c", progress=False)
        a, b = LeRobotDataset(original, **kwargs), LeRobotDataset(meta, **kwargs)
        for i in (0, 60, 122):
            x, y = a[i], b[i]
            assert set(x) == set(y)
            for key in (ACTION, OBS_STATE, FRONT, WRIST, "action_is_pad"):
                assert torch.equal(x[key], y[key]), key


def test_one_cache_with_or_without_the_map(exported: Path, tmp_path: Path) -> None:
    plain = load_meta(exported)
    _, built = ensure_cache(plain, (32, 32), cache_dir=tmp_path, progress=False)
    cache, built_again = ensure_cache(rename_features(plain, RENAME), (32, 32), cache_dir=tmp_path, progress=False)
    assert built and not built_again
    assert cache.file(FRONT).name == "image.npy" and cache.open(FRONT).shape == (123, 3, 32, 32)


@pytest.mark.parametrize("rename,expected", [
    ({"states": OBS_STATE}, "--rename states=observation.state: 'states' is not a feature of the dataset"),
    ({"timestamp": "time"}, "are LeRobot's own frame columns and keep their names"),
    ({"image": "front"}, "'image' is a camera; a camera is named observation.images.<name>"),
    ({"state": "observation.images.state"}, "'state' is not a camera; only cameras are named"),
    ({"state": "actions"}, "--rename: two features would be named 'actions'"),
])
def test_bad_maps_are_refused(exported: Path, rename: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(expected)):
        rename_features(load_meta(exported), rename)


def test_cli_cache_takes_the_map(exported: Path, tmp_path: Path) -> None:
    out = run_cli("dataset", "cache", str(exported), "--size", "32x32", "--rename", RENAME_FLAG,
                  "--cache-dir", str(tmp_path / "c"))
    assert out.returncode == 0, out.stderr
    assert f"{FRONT:<28} 123 frames x 32x32" in out.stdout


@pytest.mark.slow
def test_train_and_eval_with_the_map_saved_in_the_run(exported: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    out = run_cli("train", "--dataset", str(exported), *TINY_ACT, "--rename", RENAME_FLAG, "--steps", "2",
                  "--batch-size", "2", "--num-workers", "0", "--log-freq", "1", "--eval-freq", "0",
                  "--val-fraction", "0", "--output-dir", str(run_dir))
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads((run_dir / "config.json").read_text())["rename"] == RENAME
    pretrained = run_dir / "checkpoints" / "last" / "pretrained_model"
    assert json.loads((pretrained / "robotrain_config.json").read_text())["rename"] == RENAME
    assert set(json.loads((pretrained / "config.json").read_text())["input_features"]) == {OBS_STATE, FRONT, WRIST}
    out = run_cli("eval", "--checkpoint", str(run_dir / "checkpoints" / "last"), "--dataset", str(exported),
                  "--episodes", "1", "--max-samples", "4", "--output", str(tmp_path / "eval.json"))
    assert out.returncode == 0, out.stderr[-2000:]  # the checkpoint's map, without --rename
    assert json.loads((tmp_path / "eval.json").read_text())["rename"] == RENAME
