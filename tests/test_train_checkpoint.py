"""Checkpoints: LeRobot layout and file names, exact round trip, strictness, atomicity."""

from __future__ import annotations

import json
import random
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from robotrain.checkpoints import store as ckpt
from robotrain.checkpoints.store import Checkpointer, load_policy
from robotrain.config.flags import to_dict
from robotrain.errors import CheckpointError, RobotrainError
from robotrain.training.optim import make_optimizer, make_scheduler
from robotrain.policies import PolicyFeatures

import train_helpers
from train_helpers import CAMERA, SyntheticSource, TinyConfig, TinyPolicy


@pytest.fixture(autouse=True)
def _tiny_policy() -> None:
    train_helpers.register()


def make(source: SyntheticSource, **cfg) -> TinyPolicy:
    torch.manual_seed(0)
    features = PolicyFeatures(state_dim=6, action_dim=6, camera_keys=(CAMERA,), image_shape=(3, 8, 8), fps=30)
    return TinyPolicy(TinyConfig(**cfg), features, source.meta.stats)


def save(tmp_path, step: int = 2, keep_last: int = 0, **cfg):
    source = SyntheticSource()
    policy = make(source, **cfg)
    optimizer = make_optimizer(policy)
    scheduler = make_scheduler(optimizer, policy.config)
    checkpointer = Checkpointer(tmp_path / "run", save_freq=2, total_steps=10, keep_last=keep_last)
    path = checkpointer.save(step, policy, optimizer, scheduler, source.meta.stats, {"steps": 10})
    return source, policy, optimizer, checkpointer, path


def test_layout_and_file_names_match_lerobot(tmp_path, lerobot_fixtures) -> None:
    _, policy, _, _, path = save(tmp_path)
    assert path.name == "000002"
    fixture = lerobot_fixtures / "lerobot_act_checkpoint" / "pretrained_model"
    ours = sorted(p.name for p in (path / "pretrained_model").iterdir())
    assert ours == sorted(p.name for p in fixture.iterdir())
    assert sorted(p.name for p in (path / "training_state").iterdir()) == sorted(ckpt.TRAINING_STATE_FILES)
    config = json.loads((path / "pretrained_model" / "config.json").read_text())
    lerobot_config = json.loads((fixture / "config.json").read_text())
    assert list(config)[:4] == list(lerobot_config)[:4] == ["type", "n_obs_steps", "input_features", "output_features"]
    assert config["input_features"][CAMERA] == {"type": "VISUAL", "shape": [3, 8, 8]}
    assert config["output_features"] == {"action": {"type": "ACTION", "shape": [6]}}
    pre = json.loads((path / "pretrained_model" / "policy_preprocessor.json").read_text())
    lerobot_pre = json.loads((fixture / "policy_preprocessor.json").read_text())
    assert [s["registry_name"] for s in pre["steps"]] == [s["registry_name"] for s in lerobot_pre["steps"]]
    stats = load_file(path / "pretrained_model" / ckpt.PREPROCESSOR_STATS)
    assert {"observation.state.mean", "action.std", f"{CAMERA}.mean"} <= set(stats)
    assert stats[f"{CAMERA}.mean"].shape == (3, 1, 1)
    assert set(load_file(path / "pretrained_model" / "model.safetensors")) == set(policy.state_dict())
    rng = load_file(path / "training_state" / "rng_state.safetensors")
    assert set(load_file(fixture.parent / "training_state" / "rng_state.safetensors")) <= set(rng)


def test_round_trip_gives_identical_outputs(tmp_path) -> None:
    source, policy, _, _, path = save(tmp_path, hidden_dim=16)
    loaded = load_policy(path / "pretrained_model")
    assert isinstance(loaded, TinyPolicy) and loaded.config == policy.config
    assert loaded.features == policy.features
    batch = torch.utils.data.default_collate([source.full(policy.delta_timestamps())[i] for i in range(5)])
    policy.eval()
    assert torch.equal(loaded.predict_action_chunk(batch), policy.predict_action_chunk(batch))
    # `last` and the step dir work too
    assert isinstance(load_policy(tmp_path / "run" / "checkpoints" / "last"), TinyPolicy)


def test_unknown_and_missing_keys_are_listed(tmp_path) -> None:
    _, _, _, _, path = save(tmp_path)
    weights_file = path / "pretrained_model" / "model.safetensors"
    weights = load_file(weights_file)
    weights["net.9.weight"] = torch.zeros(1)
    del weights["net.0.bias"]
    save_file(weights, weights_file)
    with pytest.raises(CheckpointError, match=r"missing keys \['net.0.bias'\].*unexpected keys \['net.9.weight'\]"):
        load_policy(path / "pretrained_model")


def test_missing_or_incomplete_checkpoint(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_policy(tmp_path / "nope")
    _, policy, optimizer, checkpointer, path = save(tmp_path)
    (path / "pretrained_model" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing file"):
        load_policy(path / "pretrained_model")
    with pytest.raises(CheckpointError, match="incomplete checkpoint"):
        checkpointer.resume(policy, optimizer, None)


def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch) -> None:
    source, policy, optimizer, checkpointer, first = save(tmp_path, step=2)

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt, "save_training_state", boom)
    with pytest.raises(Exception, match="no space"):
        checkpointer.save(4, policy, optimizer, None, source.meta.stats, {})
    names = sorted(p.name for p in checkpointer.dir.iterdir())
    assert names == ["000002", "last"]  # no partial 000004, no temp dir left
    assert checkpointer.last() == first.resolve()
    ckpt.check_complete(first)


def test_keep_last_never_deletes_the_last_pointer_target(tmp_path) -> None:
    source, policy, optimizer, checkpointer, _ = save(tmp_path, keep_last=1)
    for step in (4, 6):
        checkpointer.save(step, policy, optimizer, None, source.meta.stats, {})
    assert sorted(p.name for p in checkpointer.dir.iterdir()) == ["000006", "last"]


def test_last_pointer_file_when_symlinks_fail(tmp_path, monkeypatch) -> None:
    source, policy, optimizer, checkpointer, _ = save(tmp_path)

    def no_symlinks(*args, **kwargs):
        raise OSError("symlinks not supported")

    monkeypatch.setattr(ckpt.os, "symlink", no_symlinks)
    checkpointer.save(4, policy, optimizer, None, source.meta.stats, {})
    last = checkpointer.dir / "last"
    assert last.is_file() and not last.is_symlink() and last.read_text().strip() == "000004"
    assert checkpointer.last() == (checkpointer.dir / "000004").resolve()


@pytest.mark.parametrize("wording", [  # safetensors >= 0.5, then 0.4
    "Error while serializing: I/O error: No space left on device (os error 28)",
    'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })',
])
def test_a_full_disk_inside_safetensors_is_a_disk_error(tmp_path, monkeypatch, wording) -> None:
    """The Rust writer reports ENOSPC as a SafetensorError; it must read as a full disk."""
    from safetensors import SafetensorError

    from robotrain.system import files as io_utils

    source, policy, optimizer, checkpointer, first = save(tmp_path, step=2)

    def full(*args, **kwargs):
        raise SafetensorError(wording)

    monkeypatch.setattr("safetensors.torch.save_file", full)
    with pytest.raises(RobotrainError, match="no space left on device; nothing was overwritten"):
        checkpointer.save(4, policy, optimizer, None, source.meta.stats, {})
    assert sorted(p.name for p in checkpointer.dir.iterdir()) == ["000002", "last"]
    monkeypatch.setattr("safetensors.torch.save_file",
                        lambda *a, **k: (_ for _ in ()).throw(SafetensorError("header too large")))
    with pytest.raises(SafetensorError, match="header too large"):  # not an I/O error: left as it is
        io_utils.write_safetensors({}, tmp_path / "x.safetensors")


@pytest.mark.parametrize(("name", "content", "message"), [
    ("training_state/training_step.json", b'{"step": "two"}', "'step' must be a non-negative integer"),
    ("training_state/training_step.json", b'{"step": -1}', "'step' must be a non-negative integer"),
    ("training_state/training_step.json", b"[2]", "'step' must be a non-negative integer"),
])
def test_damaged_json_in_a_checkpoint_names_the_file(tmp_path, name, content, message) -> None:
    _, _, _, checkpointer, path = save(tmp_path)
    (path / name).write_bytes(content)
    fresh = make(SyntheticSource())
    with pytest.raises(CheckpointError, match=message) as exc:
        checkpointer.resume(fresh, make_optimizer(fresh), None)
    assert exc.value.path == path / name


def test_a_config_json_that_is_not_text_names_the_file(tmp_path) -> None:
    _, _, _, _, path = save(tmp_path)
    (path / "pretrained_model" / "config.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(CheckpointError, match="not UTF-8 text") as exc:
        load_policy(path / "pretrained_model")
    assert exc.value.path == path / "pretrained_model" / "config.json"


def test_training_state_round_trip(tmp_path) -> None:
    source, policy, optimizer, checkpointer, _ = save(tmp_path)
    # take a real step so the optimizer has state, then save and scramble everything
    batch = torch.utils.data.default_collate([source.full(policy.delta_timestamps())[i] for i in range(4)])
    sched = make_scheduler(optimizer, TinyConfig(scheduler="cosine", scheduler_warmup_steps=5,
                                                 scheduler_decay_steps=20))
    policy.forward(batch)[0].backward()
    optimizer.step()
    sched.step()
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    path = checkpointer.save(4, policy, optimizer, sched, source.meta.stats, {})
    expected = (random.random(), np.random.rand(), torch.rand(1))
    opt_state = {k: v.clone() for k, v in optimizer.state_dict()["state"][0].items()}
    lr = optimizer.param_groups[0]["lr"]

    fresh = make(source)
    fresh_opt = make_optimizer(fresh)
    fresh_sched = make_scheduler(fresh_opt, TinyConfig(scheduler="cosine", scheduler_warmup_steps=5,
                                                       scheduler_decay_steps=20))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    step = Checkpointer(tmp_path / "run", 2, 10).resume(fresh, fresh_opt, fresh_sched)
    assert step == 4 and path.name == "000004"
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected
    for key, value in fresh_opt.state_dict()["state"][0].items():
        assert torch.equal(value, opt_state[key])
    assert fresh_opt.param_groups[0]["lr"] == lr and fresh_sched.last_epoch == sched.last_epoch
    for a, b in zip(fresh.parameters(), policy.parameters()):
        assert torch.equal(a, b)


def test_no_pickle_anywhere(tmp_path) -> None:
    _, _, _, _, path = save(tmp_path)
    suffixes = {p.suffix for p in path.rglob("*") if p.is_file()}
    assert suffixes <= {".json", ".safetensors"}


def test_loads_lerobot_written_act_checkpoint(lerobot_fixtures) -> None:
    pytest.importorskip("robotrain.policies.act.model")
    pretrained = lerobot_fixtures / "lerobot_act_checkpoint" / "pretrained_model"
    policy = load_policy(pretrained)
    assert type(policy).__name__ == "ACTPolicy"
    assert policy.features.image_shape == (3, 96, 128) and policy.config.chunk_size == 10
    weights = load_file(pretrained / "model.safetensors")
    state = policy.state_dict()
    assert set(state) == set(weights)
    assert all(torch.equal(state[k], weights[k]) for k in weights)


def test_init_from_a_lerobot_act_checkpoint_copies_its_weights(lerobot_fixtures) -> None:
    pytest.importorskip("robotrain.policies.act.model")
    pretrained = lerobot_fixtures / "lerobot_act_checkpoint" / "pretrained_model"
    loaded = load_policy(pretrained)
    torch.manual_seed(123)
    fresh = type(loaded)(loaded.config, loaded.features, ckpt.load_stats(pretrained))
    assert not torch.equal(fresh.state_dict()["model.action_head.weight"], loaded.state_dict()["model.action_head.weight"])
    ckpt.init_weights_from(fresh, pretrained.parent)  # the step dir works as well as pretrained_model/
    want = loaded.state_dict()
    assert all(torch.equal(fresh.state_dict()[k], want[k]) for k in want)


def test_act_round_trip_and_lerobot_config_keys(tmp_path, lerobot_fixtures) -> None:
    pytest.importorskip("robotrain.policies.act.model")
    from robotrain.checkpoints.store import load_stats
    from robotrain.policies import get_policy_class

    fixture = lerobot_fixtures / "lerobot_act_checkpoint" / "pretrained_model"
    stats = load_stats(fixture)
    act = get_policy_class("act")
    config = act.config_class(dim_model=32, dim_feedforward=64, n_heads=2, n_encoder_layers=1,
                              n_vae_encoder_layers=1, chunk_size=5, n_action_steps=5, image_size=(64, 96))
    features = PolicyFeatures(state_dim=6, action_dim=6, camera_keys=("observation.images.front",
                              "observation.images.wrist"), image_shape=(3, 64, 96), fps=30)
    torch.manual_seed(0)
    policy = act(config, features, stats)
    optimizer = make_optimizer(policy)
    path = Checkpointer(tmp_path / "run", 1, 1).save(1, policy, optimizer, None, stats, {"robotrain": {
        "fps": 30, "policy": to_dict(config)}})
    ours = json.loads((path / "pretrained_model" / "config.json").read_text())
    theirs = json.loads((fixture / "config.json").read_text())
    assert list(ours) == list(theirs)
    assert set(load_file(path / "pretrained_model" / ckpt.PREPROCESSOR_STATS)) == set(
        load_file(fixture / ckpt.PREPROCESSOR_STATS))
    loaded = load_policy(path)
    assert loaded.config == policy.config  # robotrain-only fields (image_size) come back too
    batch = {"observation.state": torch.randn(2, 6), "observation.images.front": torch.rand(2, 3, 64, 96),
             "observation.images.wrist": torch.rand(2, 3, 64, 96)}
    policy.eval()
    assert torch.equal(loaded.predict_action_chunk(batch), policy.predict_action_chunk(batch))



def test_train_config_json_holds_only_lerobot_keys(tmp_path) -> None:
    """LeRobot's TrainPipelineConfig (draccus) rejects unknown keys, so a "robotrain" key in
    train_config.json makes LeRobot refuse it: our section goes to robotrain_config.json."""
    source = SyntheticSource()
    policy = make(source, image_size=(8, 8))
    optimizer = make_optimizer(policy)
    ours = {"fps": 15, "world_size": 2, "policy": to_dict(policy.config)}
    path = Checkpointer(tmp_path / "run", 1, 1).save(1, policy, optimizer, None, source.meta.stats,
                                                     {"steps": 10, "batch_size": 2, "robotrain": ours})
    pretrained = path / "pretrained_model"
    assert json.loads((pretrained / "train_config.json").read_text()) == {"steps": 10, "batch_size": 2}
    assert json.loads((pretrained / ckpt.ROBOTRAIN_CONFIG_JSON).read_text()) == ours
    assert ckpt.read_robotrain_config(pretrained) == ours
    assert load_policy(pretrained).features.fps == 15


def test_older_checkpoint_with_section_inside_train_config_still_loads(tmp_path) -> None:
    source = SyntheticSource()
    policy = make(source, image_size=(8, 8))
    path = Checkpointer(tmp_path / "run", 1, 1).save(1, policy, make_optimizer(policy), None, source.meta.stats,
                                                     {"steps": 10, "robotrain": {"fps": 15}})
    pretrained = path / "pretrained_model"
    (pretrained / ckpt.ROBOTRAIN_CONFIG_JSON).unlink()
    (pretrained / "train_config.json").write_text(json.dumps({"steps": 10, "robotrain": {"fps": 12}}))
    assert ckpt.read_robotrain_config(pretrained) == {"fps": 12}
    assert load_policy(pretrained).features.fps == 12
    (pretrained / "train_config.json").write_text(json.dumps({"steps": 10}))  # LeRobot's: none
    assert ckpt.read_robotrain_config(pretrained) == {}


def test_an_unknown_policy_type_names_the_config_file(tmp_path) -> None:
    _, _, _, _, path = save(tmp_path)
    config = path / "pretrained_model" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "type": "nosuchpolicy"}))
    with pytest.raises(CheckpointError, match="'type': unknown policy 'nosuchpolicy'") as exc:
        load_policy(path / "pretrained_model")
    assert exc.value.path == config


def test_nan_weights_are_refused_with_their_names(tmp_path) -> None:
    _, _, _, _, path = save(tmp_path)
    weights = path / "pretrained_model" / "model.safetensors"
    state = load_file(weights)
    key = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[key][0] = float("nan")
    save_file(state, weights)
    with pytest.raises(CheckpointError, match=rf"1 weight tensor\(s\) hold NaN or inf, e.g. \['{re.escape(key)}'\]"):
        load_policy(path / "pretrained_model")
