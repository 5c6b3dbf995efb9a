"""A damaged or hand-edited checkpoint is one line naming the file and the key: weights of
the wrong kind, config values of the wrong type, misspelt fields, statistics of the wrong
shape or NaN. Never a traceback, never NaN actions printed as a result."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from robotrain.checkpoints.store import load_policy, save_pretrained
from robotrain.constants import ACTION, OBS_STATE
from robotrain.errors import CheckpointError
from robotrain.policies.act.config import ACTConfig
from robotrain.policies.act.model import ACTPolicy
from robotrain.policies.base import PolicyFeatures

CAM = "observation.images.front"
STATS_FILES = ("policy_preprocessor_step_3_normalizer_processor.safetensors",
               "policy_postprocessor_step_0_unnormalizer_processor.safetensors")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = ACTConfig(dim_model=32, n_heads=2, dim_feedforward=64, n_encoder_layers=1, n_decoder_layers=1,
                    n_vae_encoder_layers=1, latent_dim=8, chunk_size=5, n_action_steps=5)
    feats = PolicyFeatures(6, 6, (CAM,), (3, 32, 32))

    def st(shape: tuple[int, ...]) -> dict[str, np.ndarray]:
        return {"mean": np.zeros(shape, np.float32), "std": np.ones(shape, np.float32)}

    stats = {OBS_STATE: st((6,)), ACTION: st((6,)), CAM: st((3, 1, 1))}
    root = tmp_path_factory.mktemp("ckpt") / "pretrained_model"
    root.mkdir()
    torch.manual_seed(0)
    save_pretrained(root, ACTPolicy(cfg, feats, stats), stats)
    return root


def edited(checkpoint: Path, tmp_path: Path, mutate: Callable[[Path], None]) -> Path:
    copy = tmp_path / "pretrained_model"
    shutil.copytree(checkpoint, copy)
    mutate(copy)
    return copy


def config_edit(**changes: object) -> Callable[[Path], None]:
    def mutate(d: Path) -> None:
        data = json.loads((d / "config.json").read_text())
        data.update(changes)
        (d / "config.json").write_text(json.dumps(data))
    return mutate


def stats_edit(key: str, value: torch.Tensor | None) -> Callable[[Path], None]:
    def mutate(d: Path) -> None:
        for name in STATS_FILES:
            tensors = load_file(d / name)
            if value is None:
                tensors = {k: v for k, v in tensors.items() if not k.startswith(key)}
            else:
                tensors[key] = value
            save_file(tensors, d / name)
    return mutate


def int_weights(d: Path) -> None:
    tensors = load_file(d / "model.safetensors")
    tensors["model.action_head.bias"] = tensors["model.action_head.bias"].to(torch.int32)
    save_file(tensors, d / "model.safetensors")


@pytest.mark.parametrize(("mutate", "file", "message"), [
    (int_weights, "model.safetensors", r"wrong kind.*action_head.bias \(torch.int32"),
    (config_edit(dim_model=32.5), "config.json", "32.5 for dim_model: expected an integer"),
    (config_edit(kl_weight=True), "config.json", "True for kl_weight: expected a number"),
    (config_edit(n_heads=[2]), "config.json", "for n_heads"),
    (config_edit(dim_modle=64), "config.json", "'dim_modle' \\(did you mean 'dim_model'\\?\\)"),
    (stats_edit("observation.state.mean", torch.zeros(7)), STATS_FILES[0], r"observation.state.mean has shape \[7\].*\[6\]"),
    (stats_edit("action.std", torch.full((6,), float("nan"))), STATS_FILES[0], "action.std holds NaN"),
    (stats_edit("action.", None), STATS_FILES[0], "lack .* for feature 'action'"),
], ids=["int-weights", "float-for-int", "bool-for-float", "list-for-int", "misspelt-field", "stats-shape",
        "stats-nan", "stats-missing"])
def test_bad_checkpoint_is_one_line_naming_file_and_key(checkpoint: Path, tmp_path: Path, mutate, file: str,
                                                         message: str) -> None:
    bad = edited(checkpoint, tmp_path, mutate)
    with pytest.raises(CheckpointError, match=message) as info:
        load_policy(bad)
    assert info.value.path == bad / file and "\n" not in str(info.value)


def test_a_whole_number_written_as_a_float_still_loads(checkpoint: Path, tmp_path: Path) -> None:
    policy = load_policy(edited(checkpoint, tmp_path, config_edit(chunk_size=5.0)))
    assert policy.config.chunk_size == 5 and isinstance(policy.config.chunk_size, int)


def test_the_lerobot_fixture_still_loads(lerobot_fixtures: Path) -> None:
    """LeRobot's own config.json keys (device, push_to_hub, ...) are not 'unknown'."""
    policy = load_policy(lerobot_fixtures / "lerobot_act_checkpoint" / "pretrained_model")
    assert policy.config.dim_model == 64
