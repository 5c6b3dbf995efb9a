"""SmolVLA on a tiny random SmolVLM snapshot: training, sampling, weights, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from smolvla_tiny import CAMERAS, batch, features, stats, write_tiny_snapshot

from robotrain.constants import ACTION, ACTION_IS_PAD, OBS_STATE, TASK
from robotrain.errors import CheckpointError, ConfigError
from robotrain.policies import get_policy_class
from robotrain.policies.smolvla import SmolVLAConfig
from robotrain.policies.smolvla.model import SmolVLAPolicy

CHUNK = 8


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_snapshot(tmp_path_factory.mktemp("smolvlm") / "snapshot", num_layers=6)


def make_config(snapshot: Path, **kw: object) -> SmolVLAConfig:
    base = dict(
        vlm=str(snapshot), load_vlm_weights=True, num_vlm_layers=4, chunk_size=CHUNK, n_action_steps=4,
        resize_imgs_with_padding=(32, 32), num_steps=3,
    )
    base.update(kw)
    return SmolVLAConfig(**base)


def make_policy(snapshot: Path, seed: int = 0, **kw: object) -> SmolVLAPolicy:
    torch.manual_seed(seed)
    return SmolVLAPolicy(make_config(snapshot, **kw), features(), stats())


def fixed_noise_time(b: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(b, CHUNK, 32, generator=g), torch.tensor([0.3, 0.9])[:b]


def test_registry_and_snapshot_weights(snapshot: Path) -> None:
    assert get_policy_class("smolvla") is SmolVLAPolicy
    policy = make_policy(snapshot)
    vlm = policy.model.vlm_with_expert.vlm
    assert len(vlm.model.text_model.layers) == 4  # cut from the snapshot's 6
    saved = load_file(str(snapshot / "model.safetensors"))
    for key, value in vlm.state_dict().items():
        assert torch.equal(value, saved[key]), key


def test_forward_backward_trains_expert_only(snapshot: Path) -> None:
    policy = make_policy(snapshot)
    policy.train()
    loss, metrics = policy(batch(chunk=CHUNK))
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert set(metrics) == {"flow_mse"} and metrics["flow_mse"] == pytest.approx(loss.item())
    loss.backward()
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all(".vlm." not in n for n in trainable)
    assert "model.state_proj.weight" in trainable
    for name, p in policy.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        else:
            assert p.grad is None, name
    group_params = [p for g in policy.optimizer_param_groups() for p in g["params"]]
    assert {id(p) for p in group_params} == {id(p) for p in policy.parameters() if p.requires_grad}


def test_unfrozen_vlm_gets_gradients(snapshot: Path) -> None:
    policy = make_policy(snapshot, train_expert_only=False, freeze_vision_encoder=False, gradient_checkpointing=True)
    policy.train()
    loss, _ = policy(batch(chunk=CHUNK))
    loss.backward()
    vision = policy.model.vlm_with_expert.vlm.model.vision_model
    assert vision.embeddings.patch_embedding.weight.grad is not None
    assert not policy.model.vlm_with_expert.vlm.lm_head.weight.requires_grad  # nothing reads it


def test_padded_actions_do_not_change_the_loss(snapshot: Path) -> None:
    policy = make_policy(snapshot)
    noise, time = fixed_noise_time()
    b = batch(chunk=CHUNK)
    b[ACTION_IS_PAD] = torch.zeros(2, CHUNK, dtype=torch.bool)
    b[ACTION_IS_PAD][:, -3:] = True
    loss_a, _ = policy(b, noise=noise, time=time)
    changed = dict(b)
    changed[ACTION] = b[ACTION].clone()
    changed[ACTION][:, -3:] += 100.0  # only padded steps
    loss_b, _ = policy(changed, noise=noise, time=time)
    torch.testing.assert_close(loss_a, loss_b)
    changed[ACTION][:, 0] += 1.0  # a real step does matter
    loss_c, _ = policy(changed, noise=noise, time=time)
    assert not torch.allclose(loss_a, loss_c)


def test_gradient_checkpointing_gives_the_same_gradients(snapshot: Path) -> None:
    noise, time = fixed_noise_time()
    grads = []
    for ckpt in (False, True):
        policy = make_policy(snapshot, seed=3, gradient_checkpointing=ckpt)
        policy.train()
        loss, _ = policy(batch(chunk=CHUNK), noise=noise, time=time)
        loss.backward()
        grads.append((loss.detach(), policy.model.action_in_proj.weight.grad.clone()))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])


def test_sampling_shape_determinism_and_cache(snapshot: Path) -> None:
    policy = make_policy(snapshot).eval()
    noise, _ = fixed_noise_time()
    obs = batch(chunk=CHUNK)
    a = policy.predict_action_chunk(obs, noise=noise)
    assert a.shape == (2, CHUNK, 6) and torch.isfinite(a).all()
    torch.testing.assert_close(a, policy.predict_action_chunk(obs, noise=noise), rtol=0, atol=0)
    assert not torch.allclose(a, policy.predict_action_chunk(obs, noise=noise + 1.0))
    policy.config.use_cache = False  # the cached prefix gives what full recomputation gives
    torch.testing.assert_close(a, policy.predict_action_chunk(obs, noise=noise), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="noise must have shape"):
        policy.predict_action_chunk(obs, noise=noise[:, :, :6])


def test_actions_are_causal_and_prefix_ignores_suffix(snapshot: Path) -> None:
    """Velocity at step k depends on noisy actions <= k only (causal action tokens)."""
    policy = make_policy(snapshot).eval()
    inner = policy.model
    images, masks, tokens, lang, state, _ = policy._prepare(batch(chunk=CHUNK))
    x = torch.randn(2, CHUNK, 32)
    t = torch.tensor([0.5, 0.5])
    prefix, pad, flags = inner.embed_prefix(images, masks, tokens, lang, state)
    v1 = inner._denoise_full(prefix, pad, flags, x, t)
    x2 = x.clone()
    x2[:, 5:] += 3.0
    v2 = inner._denoise_full(prefix, pad, flags, x2, t)
    torch.testing.assert_close(v1[:, :5], v2[:, :5])
    assert not torch.allclose(v1[:, 5:], v2[:, 5:])


def test_select_action_uses_the_queue(snapshot: Path) -> None:
    policy = make_policy(snapshot).eval()
    calls = []
    original = policy.predict_action_chunk

    def counting(obs: dict, noise: torch.Tensor | None = None) -> torch.Tensor:
        calls.append(1)
        return original(obs, noise=noise)

    policy.predict_action_chunk = counting  # type: ignore[method-assign]
    noise, _ = fixed_noise_time()
    obs = batch(chunk=CHUNK)
    chunk = original(obs, noise=noise)
    first = [policy.select_action(obs, noise=noise) for _ in range(4)]
    assert len(calls) == 1 and first[0].shape == (2, 6)
    torch.testing.assert_close(torch.stack(first, 1), chunk[:, :4])
    policy.select_action(obs)
    assert len(calls) == 2
    policy.reset()
    policy.select_action(obs)
    assert len(calls) == 3


def test_state_dict_round_trip_via_lerobot_checkpoint(snapshot: Path, tmp_path: Path) -> None:
    policy = make_policy(snapshot, seed=1).eval()
    with torch.no_grad():  # make the expert differ from a fresh init
        for p in policy.model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    ckpt = tmp_path / "pretrained_model"
    ckpt.mkdir()
    save_file({k: v.contiguous() for k, v in policy.state_dict().items()}, str(ckpt / "model.safetensors"))
    (ckpt / "config.json").write_text(json.dumps(policy.config.to_lerobot_dict(features())))
    reloaded = make_policy(snapshot, seed=2, load_vlm_weights=False, pretrained=str(tmp_path)).eval()
    noise, _ = fixed_noise_time()
    obs = batch(chunk=CHUNK)
    torch.testing.assert_close(
        policy.predict_action_chunk(obs, noise=noise), reloaded.predict_action_chunk(obs, noise=noise), rtol=0, atol=0
    )
    assert all(not any(s in k for s in ("normalizer", "__mean")) for k in policy.state_dict())


def test_checkpoint_in_lerobots_layout_reloads(snapshot: Path, tmp_path: Path) -> None:
    """save_pretrained writes LeRobot's SmolVLA processor steps (newline, tokenizer) before
    the normaliser, whose statistics file is then step 5; load_policy follows the file names
    the processor descriptions give and rebuilds the same policy."""
    from robotrain.checkpoints.store import load_policy, save_pretrained

    policy = make_policy(snapshot, seed=1).eval()
    save_pretrained(tmp_path, policy, stats())
    pre = json.loads((tmp_path / "policy_preprocessor.json").read_text())
    assert [s["registry_name"] for s in pre["steps"]] == [
        "rename_observations_processor", "to_batch_processor", "smolvla_new_line_processor",
        "tokenizer_processor", "device_processor", "normalizer_processor"]
    tokenizer_step = pre["steps"][3]["config"]
    assert tokenizer_step["max_length"] == 48 and tokenizer_step["padding_side"] == "right"
    assert tokenizer_step["tokenizer_name"] == "HuggingFaceTB/SmolVLM2-500M-Video-Instruct"
    assert pre["steps"][5]["state_file"] == "policy_preprocessor_step_5_normalizer_processor.safetensors"
    assert (tmp_path / "policy_preprocessor_step_5_normalizer_processor.safetensors").is_file()
    reloaded = load_policy(tmp_path, overrides={"vlm": str(snapshot), "load_vlm_weights": False})
    noise, _ = fixed_noise_time()
    obs = batch(chunk=CHUNK)
    torch.testing.assert_close(policy.predict_action_chunk(obs, noise=noise),
                               reloaded.predict_action_chunk(obs, noise=noise), rtol=0, atol=0)


def test_strict_checkpoint_errors(snapshot: Path, tmp_path: Path) -> None:
    policy = make_policy(snapshot)
    sd = {k: v.contiguous() for k, v in policy.state_dict().items()}
    (tmp_path / "config.json").write_text(json.dumps(policy.config.to_lerobot_dict()))
    bad = dict(sd)
    bad.pop("model.state_proj.bias")
    bad["model.extra.weight"] = torch.zeros(1)
    save_file(bad, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing 1 \(model.state_proj.bias\).*unexpected 1 \(model.extra"):
        policy.load_pretrained(tmp_path)
    bad = dict(sd)
    bad["model.state_proj.bias"] = torch.zeros(3)
    save_file(bad, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="shape mismatch"):
        policy.load_pretrained(tmp_path)
    cfg = policy.config.to_lerobot_dict()
    cfg["chunk_size"] = 50
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="chunk_size=50"):
        policy.load_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    (tmp_path / "config.json").write_text(json.dumps(policy.config.to_lerobot_dict()))
    with pytest.raises(CheckpointError, match="cannot read weights"):
        policy.load_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="missing"):
        policy.load_pretrained(tmp_path / "nowhere")


def test_snapshot_errors(snapshot: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no config.json"):
        SmolVLAPolicy(make_config(tmp_path), features(), stats())
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (broken / name).write_bytes((snapshot / name).read_bytes())
    sd = load_file(str(snapshot / "model.safetensors"))
    sd.pop("model.connector.modality_projection.proj.weight")
    save_file(sd, str(broken / "model.safetensors"))
    with pytest.raises(CheckpointError, match="missing 1 .*modality_projection"):
        SmolVLAPolicy(make_config(broken), features(), stats())
    (broken / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="no tokenizer.json"):
        SmolVLAPolicy(make_config(broken, load_vlm_weights=False), features(), stats())


def test_batch_errors(snapshot: Path) -> None:
    policy = make_policy(snapshot)
    obs = batch(chunk=CHUNK)
    no_task = {k: v for k, v in obs.items() if k != TASK}
    with pytest.raises(ConfigError, match="no 'task'"):
        policy(no_task)
    no_cams = {k: v for k, v in obs.items() if k not in CAMERAS}
    with pytest.raises(ConfigError, match="none of the cameras"):
        policy.predict_action_chunk(no_cams)
    short = dict(obs)
    short[ACTION] = obs[ACTION][:, :3]
    with pytest.raises(ConfigError, match="chunk_size"):
        policy(short)
    history = dict(obs)  # an observation-history axis is accepted (last step used)
    history[OBS_STATE] = obs[OBS_STATE][:, None]
    assert policy.predict_action_chunk(history).shape == (2, CHUNK, 6)


def test_random_tiny_backbone_without_files() -> None:
    torch.manual_seed(0)
    cfg = SmolVLAConfig(vlm="tiny", chunk_size=CHUNK, n_action_steps=CHUNK, resize_imgs_with_padding=(32, 32), num_steps=2)
    policy = SmolVLAPolicy(cfg, features(), stats())
    loss, _ = policy(batch(chunk=CHUNK))
    assert torch.isfinite(loss)
    with pytest.raises(ConfigError, match="multiple of"):
        SmolVLAPolicy(SmolVLAConfig(vlm="tiny", resize_imgs_with_padding=(30, 30)), features(), stats())


def test_bf16_autocast_forward(snapshot: Path) -> None:
    policy = make_policy(snapshot)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = policy(batch(chunk=CHUNK))
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    policy.to(torch.bfloat16).eval()  # whole model in bf16
    actions = policy.predict_action_chunk(batch(chunk=CHUNK))
    assert torch.isfinite(actions).all()


def test_missing_transformers_is_one_line_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"needs the 'transformers' package.*\.\[smolvla\]"):
        SmolVLAPolicy(SmolVLAConfig(vlm="tiny", resize_imgs_with_padding=(32, 32)), features(), stats())
