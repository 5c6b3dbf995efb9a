"""ACTConfig: LeRobot's fields and defaults, validation, LeRobot config.json round trips."""

from __future__ import annotations

import json
import logging

import pytest

from robotrain.errors import ConfigError
from robotrain.policies import get_policy_class
from robotrain.policies.act.config import (
    LEROBOT_FIELDS,
    ACTConfig,
)
from robotrain.data.images import parse_image_size
from robotrain.policies.act.model import ACTPolicy
from robotrain.policies.base import PolicyFeatures

FIXTURE_CONFIG = "lerobot_act_checkpoint/pretrained_model/config.json"


def test_defaults_are_lerobots():
    cfg = ACTConfig()
    assert ACTConfig.type == "act"
    expected = dict(
        chunk_size=100, n_action_steps=100, n_obs_steps=1, vision_backbone="resnet18",
        pretrained_backbone_weights=None, replace_final_stride_with_dilation=False, pre_norm=False,
        dim_model=512, n_heads=8, dim_feedforward=3200, feedforward_activation="relu",
        n_encoder_layers=4, n_decoder_layers=1, use_vae=True, latent_dim=32, n_vae_encoder_layers=4,
        temporal_ensemble_coeff=None, dropout=0.1, kl_weight=10.0, optimizer_lr=1e-5,
        optimizer_weight_decay=1e-4, optimizer_lr_backbone=1e-5,
        image_size=None, resize_mode="resize", augment=False, l1_reduction="all",
    )  # fmt: skip
    for name, value in expected.items():
        assert getattr(cfg, name) == value, name
    assert cfg.normalization_mapping == {"VISUAL": "MEAN_STD", "STATE": "MEAN_STD", "ACTION": "MEAN_STD"}


def test_registry_finds_act():
    from robotrain.policies.act.model import ACTPolicy

    assert get_policy_class("act") is ACTPolicy
    assert ACTPolicy.config_class is ACTConfig


@pytest.mark.parametrize(
    "value,expected",
    [(None, None), ("240x320", (240, 320)), ("224", (224, 224)), (224, (224, 224)), ((96, 128), (96, 128)),
     ([96, 128], (96, 128)), ("native", None)],
)  # fmt: skip
def test_parse_image_size(value, expected):
    assert parse_image_size(value) == expected
    assert ACTConfig(image_size=value).image_size == expected


@pytest.mark.parametrize("value", ["240by320", "0x320", (1, 2, 3), -5, 2.5, "x"])
def test_bad_image_size(value):
    with pytest.raises(ConfigError, match="image_size"):
        ACTConfig(image_size=value)


@pytest.mark.parametrize(
    "field,value",
    [
        ("n_obs_steps", 2),
        ("vision_backbone", "resnet50"),
        ("dim_model", 0),
        ("n_heads", 3),  # does not divide 512
        ("feedforward_activation", "glu"),
        ("dropout", 1.5),
        ("kl_weight", -1.0),
        ("n_action_steps", 101),
        ("chunk_size", 0),
        ("resize_mode", "crop"),
        ("l1_reduction", "sum"),
        ("augment_hue", 0.7),
        ("augment_crop_scale", 0.0),
        ("augment_brightness", 1.0),
        ("optimizer_lr_backbone", -1.0),
        ("pretrained_backbone_weights", 3),
    ],
)
def test_bad_values_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        ACTConfig(**{field: value})


def test_temporal_ensembling_needs_one_action_step():
    with pytest.raises(ConfigError, match="n_action_steps"):
        ACTConfig(temporal_ensemble_coeff=0.01)
    assert ACTConfig(temporal_ensemble_coeff=0.01, n_action_steps=1).temporal_ensemble_coeff == 0.01


def test_lerobot_fixture_config_loads(lerobot_fixtures, caplog):
    d = json.loads((lerobot_fixtures / FIXTURE_CONFIG).read_text())
    with caplog.at_level(logging.DEBUG, logger="robotrain.policies.act.config"):
        cfg = ACTConfig.from_lerobot_dict(d)
    assert (cfg.dim_model, cfg.n_heads, cfg.dim_feedforward, cfg.chunk_size) == (64, 4, 128, 10)
    assert (cfg.n_encoder_layers, cfg.n_vae_encoder_layers, cfg.n_action_steps) == (1, 1, 10)
    assert "ignoring LeRobot's fields" in caplog.text and "'device'" in caplog.text and "input_features" in caplog.text
    feats = PolicyFeatures.from_lerobot(d)
    assert feats.camera_keys == ("observation.images.front", "observation.images.wrist")
    assert feats.image_shape == (3, 96, 128) and feats.state_dim == 6 and feats.action_dim == 6
    # Writing it back gives LeRobot's file exactly.
    assert cfg.to_lerobot_dict(feats) == d
    assert list(cfg.to_lerobot_dict(feats)) == list(d)


def test_round_trips_keep_every_field():
    cfg = ACTConfig(image_size="240x320", resize_mode="pad", augment=True, dim_model=256, chunk_size=50,
                    n_action_steps=1, temporal_ensemble_coeff=0.01, l1_reduction="valid")  # fmt: skip
    again = ACTConfig.from_lerobot_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    lerobot = cfg.to_lerobot_dict()
    assert set(lerobot) - {"type", "device", "use_amp", "use_peft", "push_to_hub", "repo_id", "private", "tags",
                           "license", "pretrained_path"} == set(LEROBOT_FIELDS)  # fmt: skip
    assert ACTConfig.from_lerobot_dict(lerobot).chunk_size == 50


def test_gradient_checkpointing_is_ours(tmp_path):
    """Kept by our files (robotrain_config.json, --config, flags), never written to LeRobot's
    config.json, and a LeRobot config.json (which lacks it) leaves it off."""
    from robotrain.training.config import parse_train_config

    cfg = ACTConfig(gradient_checkpointing=True)
    assert "gradient_checkpointing" not in cfg.to_lerobot_dict()
    assert ACTConfig.from_lerobot_dict(json.loads(json.dumps(cfg.to_dict()))).gradient_checkpointing
    assert not ACTConfig.from_lerobot_dict(cfg.to_lerobot_dict()).gradient_checkpointing
    flags = parse_train_config(["--policy", "act", "--policy.gradient_checkpointing", "true"], check_paths=False)
    assert flags.policy.gradient_checkpointing
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps({"policy_type": "act", "policy": flags.policy.to_dict()}))
    assert parse_train_config(["--config", str(saved)], check_paths=False).policy.gradient_checkpointing


def test_local_weights_path_is_not_written_for_lerobot():
    cfg = ACTConfig(pretrained_backbone_weights="/data/resnet18.pth")
    assert cfg.to_lerobot_dict()["pretrained_backbone_weights"] is None
    assert cfg.to_dict()["pretrained_backbone_weights"] == "/data/resnet18.pth"


def test_torchvision_weights_name_resolves_offline(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    d = {"type": "act", "pretrained_backbone_weights": "ResNet18_Weights.IMAGENET1K_V1"}
    with caplog.at_level(logging.WARNING):
        assert ACTConfig.from_lerobot_dict(d).pretrained_backbone_weights is None
    assert "not available offline" in caplog.text
    cached = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    assert ACTConfig.from_lerobot_dict(d).pretrained_backbone_weights == str(cached)


def test_wrong_policy_type_and_bad_field_types():
    with pytest.raises(ConfigError, match="smolvla"):
        ACTConfig.from_lerobot_dict({"type": "smolvla"})
    with pytest.raises(ConfigError):
        ACTConfig.from_lerobot_dict({"type": "act", "dim_model": [1, 2]})


def test_features_need_a_camera():
    from act_testutils import stats

    no_camera = PolicyFeatures.from_lerobot(
        {"input_features": {"observation.state": {"type": "STATE", "shape": [6]}},
         "output_features": {"action": {"type": "ACTION", "shape": [6]}}})  # fmt: skip
    with pytest.raises(ConfigError, match="camera"):
        ACTPolicy(ACTConfig(), no_camera, stats())
    with pytest.raises(ConfigError, match="different shapes"):
        PolicyFeatures.from_lerobot(
            {"input_features": {"a": {"type": "VISUAL", "shape": [3, 4, 4]}, "b": {"type": "VISUAL", "shape": [3, 8, 8]}},
             "output_features": {"action": {"type": "ACTION", "shape": [6]}}})  # fmt: skip
