"""ACTPolicy behaviour on tiny configurations (dim_model 32, one layer, 64x80 images)."""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from act_testutils import single_thread  # noqa: F401
from act_testutils import CAMERAS, batch, features, stats, tiny_config
from robotrain.constants import ACTION, ACTION_IS_PAD, OBS_STATE
from robotrain.errors import ConfigError, TrainingError
from robotrain.policies.act.model import (
    ACTPolicy,
    DecoderLayer,
    EncoderLayer,
    TemporalEnsembler,
    sinusoidal_1d,
    sinusoidal_2d,
)


def make_policy(h: int = 64, w: int = 80, **overrides) -> ACTPolicy:
    torch.manual_seed(0)
    return ACTPolicy(tiny_config(**overrides), features(h, w), stats())


# --- shapes and sizes -----------------------------------------------------------------


def test_forward_and_predict_shapes():
    policy = make_policy()
    loss, metrics = policy(batch())
    assert loss.shape == () and torch.isfinite(loss)
    assert set(metrics) == {"l1_loss", "kld_loss"} and all(isinstance(v, float) for v in metrics.values())
    assert policy.training  # predict must not leave the module in eval mode
    chunk = policy.predict_action_chunk(batch())
    assert chunk.shape == (2, 8, 6)
    assert policy.training
    assert policy.encoder_token_count() == 2 + 2 * 2 * 3  # 64x80 -> 2x3 per camera


@pytest.mark.parametrize("size,tokens", [((480, 640), 602), ((240, 320), 162), ((224, 224), 100)])
def test_encoder_token_count(size, tokens, caplog):
    with caplog.at_level(logging.INFO, logger="robotrain.policies.act.model"):
        policy = ACTPolicy(tiny_config(image_size=size), features(480, 640), stats())
    assert policy.encoder_token_count() == tokens
    assert f"{tokens} encoder tokens" in caplog.text


def test_token_count_matches_what_the_encoder_sees(monkeypatch):
    policy = make_policy().eval()
    seen = []
    orig = policy.model.encoder.forward
    monkeypatch.setattr(policy.model.encoder, "forward", lambda x, *a, **k: seen.append(x.shape[1]) or orig(x, *a, **k))
    policy.predict_action_chunk(batch())
    assert seen == [policy.encoder_token_count()]
    dilated = make_policy(replace_final_stride_with_dilation=True)
    assert dilated.encoder_token_count() == 2 + 2 * 4 * 5


def test_batches_at_another_size_are_resized_inside():
    policy = make_policy(image_size=(64, 80)).eval()
    big = batch(h=96, w=128)
    small = dict(big)
    for cam in CAMERAS:
        small[cam] = F.interpolate(big[cam], size=(64, 80), mode="bilinear", antialias=True, align_corners=False)
    torch.testing.assert_close(policy.predict_action_chunk(big), policy.predict_action_chunk(small))
    padded = make_policy(image_size=(64, 64), resize_mode="pad").eval()
    assert padded.predict_action_chunk(batch(h=96, w=128)).shape == (2, 8, 6)


# --- loss --------------------------------------------------------------------------------


def test_padded_steps_do_not_change_the_loss():
    policy = make_policy()
    b = batch()
    b[ACTION_IS_PAD][0, 5:] = True
    b[ACTION_IS_PAD][1, 2:] = True
    torch.manual_seed(1)
    loss_a, m_a = policy(b)
    changed = dict(b, **{ACTION: b[ACTION].clone()})
    changed[ACTION][b[ACTION_IS_PAD]] = 1e3
    torch.manual_seed(1)
    loss_b, m_b = policy(changed)
    assert loss_a.item() == pytest.approx(loss_b.item(), rel=1e-6)
    assert m_a == pytest.approx(m_b, rel=1e-6)
    # But a change in a real step does change it.
    changed[ACTION][0, 0] += 10
    torch.manual_seed(1)
    assert policy(changed)[0].item() != pytest.approx(loss_a.item(), rel=1e-6)


@pytest.mark.parametrize("reduction", ["all", "valid"])
def test_l1_reduction(reduction):
    policy = make_policy(use_vae=False, l1_reduction=reduction).eval()
    b = batch()
    b[ACTION_IS_PAD][:, 6:] = True
    pred = policy.normalizer.normalize(ACTION, policy.predict_action_chunk(b))
    err = (pred - policy.normalizer.normalize(ACTION, b[ACTION])).abs()
    valid = ~b[ACTION_IS_PAD]
    expected = err[valid].mean() if reduction == "valid" else (err * valid.unsqueeze(-1)).mean()
    loss, metrics = policy(b)
    assert metrics["l1_loss"] == pytest.approx(expected.item(), rel=1e-5)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_kl_term_matches_formula():
    policy = make_policy(kl_weight=7.0, dropout=0.0)
    b = batch()
    b[ACTION_IS_PAD][1, 4:] = True
    mu, log_sigma_x2 = policy.model.encode_latent(
        policy.normalizer.normalize(OBS_STATE, b[OBS_STATE]),
        policy.normalizer.normalize(ACTION, b[ACTION]),
        b[ACTION_IS_PAD],
    )
    var = log_sigma_x2.exp()
    expected = (0.5 * (mu.pow(2) + var - 1 - log_sigma_x2)).sum(-1).mean()
    loss, metrics = policy(b)
    assert metrics["kld_loss"] == pytest.approx(expected.item(), rel=1e-4)
    assert loss.item() == pytest.approx(metrics["l1_loss"] + 7.0 * metrics["kld_loss"], rel=1e-5)


def test_no_vae_means_no_kl_and_no_vae_weights():
    policy = make_policy(use_vae=False)
    loss, metrics = policy(batch())
    assert metrics["kld_loss"] == 0.0
    assert loss.item() == pytest.approx(metrics["l1_loss"])
    assert not any("vae" in k for k in policy.state_dict())


def test_eval_mode_loss_uses_zero_latent():
    policy = make_policy().eval()
    _, metrics = policy(batch())
    assert metrics["kld_loss"] == 0.0


def test_padded_actions_do_not_reach_the_latent():
    policy = make_policy()
    b = batch()
    b[ACTION_IS_PAD][:, 3:] = True
    state = policy.normalizer.normalize(OBS_STATE, b[OBS_STATE])
    act = policy.normalizer.normalize(ACTION, b[ACTION])
    policy.eval()  # no dropout
    mu_a, ls_a = policy.model.encode_latent(state, act, b[ACTION_IS_PAD])
    act2 = act.clone()
    act2[:, 3:] = 99.0
    mu_b, ls_b = policy.model.encode_latent(state, act2, b[ACTION_IS_PAD])
    torch.testing.assert_close(mu_a, mu_b)
    torch.testing.assert_close(ls_a, ls_b)


# --- the layers are the textbook post-norm (or pre-norm) transformer -----------------


@pytest.mark.parametrize("pre_norm", [False, True])
def test_layers_equal_torch_transformer_layers_without_positions(pre_norm):
    """With no position embedding our layers must be exactly PyTorch's Transformer layers
    (same parameter names): this pins norm placement and residuals."""
    cfg = tiny_config(pre_norm=pre_norm)
    torch.manual_seed(0)
    ours = EncoderLayer(cfg).eval()
    ref = nn.TransformerEncoderLayer(32, 2, 64, dropout=0.1, batch_first=True, norm_first=pre_norm).eval()
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 7, 32)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)
    dec = DecoderLayer(cfg).eval()
    ref_dec = nn.TransformerDecoderLayer(32, 2, 64, dropout=0.1, batch_first=True, norm_first=pre_norm).eval()
    ref_dec.load_state_dict(dec.state_dict(), strict=True)
    q, mem = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    torch.testing.assert_close(dec(q, mem, None, None), ref_dec(q, mem), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pre_norm", [False, True])
def test_vae_encoder_computes_its_cls_token_alone(pre_norm):
    """The VAE encoder's last layer computes token 0 only (the one the latent is read
    from): its output equals token 0 of the full computation, padding mask included."""
    cfg = tiny_config(pre_norm=pre_norm, n_vae_encoder_layers=2)
    torch.manual_seed(0)
    policy = ACTPolicy(cfg, features(64, 80), stats()).eval()
    encoder = policy.model.vae_encoder
    x, pos = torch.randn(3, 10, 32), torch.randn(1, 10, 32)
    mask = torch.zeros(3, 10, dtype=torch.bool)
    mask[1, 6:] = True
    full = encoder(x, pos, key_padding_mask=mask)
    first = encoder(x, pos, key_padding_mask=mask, first_token_only=True)
    assert first.shape == (3, 1, 32)
    torch.testing.assert_close(first[:, 0], full[:, 0], rtol=1e-5, atol=1e-5)


def test_position_embeddings():
    t = sinusoidal_1d(5, 8)
    assert t[0].tolist() == [0, 1, 0, 1, 0, 1, 0, 1]
    assert t[3, 2].item() == pytest.approx(math.sin(3 / 10000 ** (2 / 8)), rel=1e-6)
    assert t[3, 3].item() == pytest.approx(math.cos(3 / 10000 ** (2 / 8)), rel=1e-6)
    p = sinusoidal_2d(3, 4, 8)  # (1, 8, 3, 4): channels 0-3 rows, 4-7 columns
    assert p.shape == (1, 8, 3, 4)
    row = lambda i: (i + 1) / 3 * 2 * math.pi  # noqa: E731
    col = lambda j: (j + 1) / 4 * 2 * math.pi  # noqa: E731
    assert p[0, 0, 1, 2].item() == pytest.approx(math.sin(row(1)), abs=1e-5)
    assert p[0, 1, 1, 2].item() == pytest.approx(math.cos(row(1)), abs=1e-5)
    assert p[0, 2, 1, 2].item() == pytest.approx(math.sin(row(1) / 100), abs=1e-5)
    assert p[0, 4, 1, 2].item() == pytest.approx(math.sin(col(2)), abs=1e-5)
    assert p[0, 7, 2, 3].item() == pytest.approx(math.cos(col(3) / 100), abs=1e-5)


# --- inference: queue and temporal ensembling ------------------------------------------


def test_select_action_queue(monkeypatch):
    policy = make_policy(n_action_steps=3)
    calls = []

    def fake_predict(b):
        calls.append(1)
        return torch.arange(8.0).view(1, 8, 1).expand(2, 8, 6) + 100 * len(calls)

    monkeypatch.setattr(policy, "predict_action_chunk", fake_predict)
    got = [policy.select_action({})[0, 0].item() for _ in range(7)]
    assert got == [100, 101, 102, 200, 201, 202, 300]
    assert len(calls) == 3
    policy.reset()
    assert policy.select_action({})[0, 0].item() == 400


def test_select_action_is_first_predicted_action():
    policy = make_policy()
    obs = {k: v for k, v in batch().items() if k not in (ACTION, ACTION_IS_PAD)}
    chunk = policy.predict_action_chunk(obs)
    first = policy.select_action(obs)
    torch.testing.assert_close(first, chunk[:, 0])
    torch.testing.assert_close(policy.select_action(obs), chunk[:, 1])


def brute_force_ensemble(chunks: list[torch.Tensor], coeff: float) -> list[torch.Tensor]:
    """Action at t = sum_i w_i * chunk_{s_i}[t - s_i] / sum_i w_i, i = 0 the oldest chunk."""
    size = chunks[0].shape[1]
    out = []
    for t in range(len(chunks)):
        starts = [s for s in range(len(chunks)) if s <= t < s + size]
        w = torch.tensor([math.exp(-coeff * i) for i in range(len(starts))], dtype=torch.float64)
        preds = torch.stack([chunks[s][:, t - s].double() for s in starts])  # (n, B, A)
        out.append((preds * w.view(-1, 1, 1)).sum(0) / w.sum())
    return out


def test_temporal_ensembler_matches_brute_force():
    torch.manual_seed(0)
    coeff, size = 0.3, 5
    chunks = [torch.randn(2, size, 3, dtype=torch.float64) for _ in range(12)]
    ens = TemporalEnsembler(coeff, size)
    online = [ens.update(c) for c in chunks]
    for got, want in zip(online, brute_force_ensemble(chunks, coeff)):
        torch.testing.assert_close(got, want)
    ens.reset()
    torch.testing.assert_close(ens.update(chunks[3]), chunks[3][:, 0])


def test_select_action_with_temporal_ensembling(monkeypatch):
    policy = make_policy(n_action_steps=1, temporal_ensemble_coeff=0.01)
    torch.manual_seed(1)
    chunks = [torch.randn(2, 8, 6) for _ in range(10)]
    it = iter(chunks)
    monkeypatch.setattr(policy, "predict_action_chunk", lambda b: next(it))
    got = [policy.select_action({}) for _ in range(10)]
    for g, w in zip(got, brute_force_ensemble(chunks, 0.01)):
        torch.testing.assert_close(g.double(), w, rtol=1e-5, atol=1e-5)
    policy.reset()
    assert policy._ensembler.avg is None


# --- training ---------------------------------------------------------------------------


def test_optimizer_param_groups():
    policy = make_policy(optimizer_lr_backbone=3e-6)
    groups = policy.optimizer_param_groups()
    assert len(groups) == 2 and groups[1]["lr"] == 3e-6 and "lr" not in groups[0]
    backbone = {id(p) for p in policy.model.backbone.parameters()}
    assert {id(p) for p in groups[1]["params"]} == backbone
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(policy.parameters()))
    torch.optim.AdamW(groups, lr=1e-5)  # a valid AdamW spec


def test_every_trainable_part_gets_gradients():
    policy = make_policy()
    loss, _ = policy(batch())
    loss.backward()
    no_grad = [n for n, p in policy.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert no_grad == []


def _step(policy: ACTPolicy) -> tuple[torch.Tensor, dict, dict[str, torch.Tensor], torch.Tensor]:
    torch.manual_seed(1)  # the VAE's noise and the dropout masks
    loss, metrics = policy(batch())
    loss.backward()
    grads = {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}
    return loss.detach(), metrics, grads, torch.get_rng_state()


def test_gradient_checkpointing_gives_identical_losses_and_gradients():
    """Every ResNet stage and transformer layer is recomputed in backward, with the same
    dropout masks: the loss, every gradient and the RNG state after the step are those of
    the plain forward, to the bit."""
    plain = make_policy(dropout=0.3).train()
    checkpointed = make_policy(dropout=0.3, gradient_checkpointing=True).train()
    calls: dict[str, int] = {}
    watched = {"conv1": checkpointed.model.backbone.conv1, "layer4": checkpointed.model.backbone.layer4,
               "encoder": checkpointed.model.encoder.layers[0], "decoder": checkpointed.model.decoder.layers[0],
               "vae": checkpointed.model.vae_encoder.layers[0]}
    for name, module in watched.items():
        module.register_forward_pre_hook(lambda *_, name=name: calls.__setitem__(name, calls.get(name, 0) + 1))
    loss_a, metrics_a, grads_a, rng_a = _step(plain)
    loss_b, metrics_b, grads_b, rng_b = _step(checkpointed)
    assert calls == dict.fromkeys(watched, 2)  # forward, then the recomputation in backward
    assert torch.equal(loss_a, loss_b) and metrics_a == metrics_b and torch.equal(rng_a, rng_b)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) == len(list(plain.parameters()))
    for name, grad in grads_a.items():
        assert torch.equal(grad, grads_b[name]), name
    calls.clear()
    with torch.no_grad():  # inference never recomputes
        checkpointed.eval().predict_action_chunk(batch())
    assert calls == {k: 1 for k in watched if k != "vae"}  # no VAE at inference


def test_overfits_a_tiny_batch():
    """L1 falls 10x on a fixed batch (backbone frozen to keep this fast on CPU)."""
    torch.manual_seed(0)
    policy = ACTPolicy(tiny_config(dropout=0.0, kl_weight=1.0), features(32, 32), stats())
    for p in policy.model.backbone.parameters():
        p.requires_grad_(False)
    b = batch(h=32, w=32)
    opt = torch.optim.AdamW(policy.optimizer_param_groups(), lr=3e-3, weight_decay=0.0)
    for g in opt.param_groups:
        g["lr"] = 3e-3
    first = None
    for _ in range(300):
        loss, metrics = policy(b)
        first = first if first is not None else metrics["l1_loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if metrics["l1_loss"] < first / 10:
            break
    assert metrics["l1_loss"] < first / 10, (first, metrics)


def test_channels_last():
    policy = make_policy().eval()
    b = batch()
    ref = policy.predict_action_chunk(b)
    policy = policy.to(memory_format=torch.channels_last)
    cl = {k: v.contiguous(memory_format=torch.channels_last) if k in CAMERAS else v for k, v in b.items()}
    torch.testing.assert_close(policy.predict_action_chunk(cl), ref, rtol=1e-4, atol=1e-4)
    policy.train()
    loss, _ = policy(cl)
    loss.backward()
    assert torch.isfinite(loss)


def test_augmentation_only_in_training(monkeypatch):
    policy = make_policy(augment=True)
    calls = []
    orig = policy.augment.__call__
    monkeypatch.setattr(type(policy.augment), "__call__", lambda self, x: calls.append(x.shape) or orig(x))
    policy(batch())
    assert len(calls) == 2  # once per camera
    policy.predict_action_chunk(batch())
    assert len(calls) == 2
    assert make_policy().augment is None  # off by default


def test_accepts_uint8_and_one_step_windows():
    policy = make_policy().eval()
    b = batch()
    ref = policy.predict_action_chunk(b)
    alt = dict(b, **{OBS_STATE: b[OBS_STATE].unsqueeze(1)})
    for cam in CAMERAS:
        alt[cam] = b[cam].unsqueeze(1)
    torch.testing.assert_close(policy.predict_action_chunk(alt), ref)
    u8 = dict(b, **{cam: (b[cam] * 255).round().to(torch.uint8) for cam in CAMERAS})
    assert policy.predict_action_chunk(u8).shape == ref.shape


# --- errors ----------------------------------------------------------------------------


def test_bad_batches_raise_training_errors():
    policy = make_policy()
    b = batch()
    with pytest.raises(TrainingError, match="action"):
        policy({k: v for k, v in b.items() if k != ACTION})
    with pytest.raises(TrainingError, match="chunk_size=8"):
        policy(dict(b, **{ACTION: b[ACTION][:, :5], ACTION_IS_PAD: b[ACTION_IS_PAD][:, :5]}))
    with pytest.raises(TrainingError, match="observation.images.wrist"):
        policy({k: v for k, v in b.items() if k != CAMERAS[1]})
    with pytest.raises(TrainingError, match=OBS_STATE):
        policy({k: v for k, v in b.items() if k != OBS_STATE})


def test_bad_construction_raises_config_errors():
    st = stats()
    del st[CAMERAS[0]]
    with pytest.raises(ConfigError, match=CAMERAS[0]):
        ACTPolicy(tiny_config(), features(), st)
    with pytest.raises(ConfigError, match="camera"):
        ACTPolicy(tiny_config(), features(cameras=()), stats(cameras=()))


def test_bf16_autocast():
    policy = make_policy(augment=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, metrics = policy(batch())
    loss.backward()
    assert torch.isfinite(loss) and math.isfinite(metrics["kld_loss"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert policy.predict_action_chunk(batch()).dtype == torch.float32  # unnormalised in fp32


def test_without_state():
    torch.manual_seed(0)
    st = stats()
    del st[OBS_STATE]
    policy = ACTPolicy(tiny_config(), features(state_dim=0), st)
    assert policy.encoder_token_count() == 1 + 2 * 6
    assert not any("robot_state" in k for k in policy.state_dict())
    b = {k: v for k, v in batch().items() if k != OBS_STATE}
    loss, _ = policy(b)
    assert torch.isfinite(loss)
    assert policy.predict_action_chunk(b).shape == (2, 8, 6)
