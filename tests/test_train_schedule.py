"""The cosine-with-warmup schedule (LeRobot/SmolVLA convention) and the optimizer groups."""

from __future__ import annotations

import pytest
import torch

from robotrain.training.optim import cosine_with_warmup_factor, make_optimizer, make_scheduler

from train_helpers import TinyConfig

PEAK, WARMUP, DECAY, FLOOR = 1e-4, 1000, 30000, 2.5e-6


def lr_at(step: int) -> float:
    return PEAK * cosine_with_warmup_factor(step, WARMUP, DECAY, PEAK, FLOOR)


def test_smolvla_value_at_step_20000() -> None:
    assert lr_at(20000) == pytest.approx(2.69e-5, rel=1e-3)


def test_warmup_rises_linearly_from_peak_over_warmup_plus_one() -> None:
    assert lr_at(0) == pytest.approx(PEAK / (WARMUP + 1))
    assert lr_at(WARMUP) == pytest.approx(PEAK * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * WARMUP / DECAY)).item())
                                          * (1 - FLOOR / PEAK) + FLOOR, rel=1e-6)
    mid = lr_at(WARMUP // 2)
    assert mid == pytest.approx((lr_at(0) + PEAK) / 2, rel=1e-3)


def test_floor_after_decay() -> None:
    assert lr_at(DECAY) == pytest.approx(FLOOR)
    assert lr_at(DECAY * 2) == pytest.approx(FLOOR)


def test_scheduler_scales_every_group() -> None:
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [a]}, {"params": [b], "lr": 2 * PEAK}], lr=PEAK)
    cfg = TinyConfig(optimizer_lr=PEAK, scheduler="cosine", scheduler_warmup_steps=WARMUP,
                     scheduler_decay_steps=DECAY, scheduler_decay_lr=FLOOR)
    sched = make_scheduler(opt, cfg)
    assert opt.param_groups[0]["lr"] == pytest.approx(PEAK / (WARMUP + 1))
    assert opt.param_groups[1]["lr"] == pytest.approx(2 * PEAK / (WARMUP + 1))
    for _ in range(3):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(lr_at(3))
    assert make_scheduler(opt, TinyConfig()) is None


def test_adamw_is_fused_on_a_cpu_and_steps_like_the_plain_one() -> None:
    """One fused kernel per step on CPU/CUDA; the same update as PyTorch's default AdamW."""
    from act_testutils import features, stats, tiny_config
    from robotrain.policies.act.model import ACTPolicy

    torch.manual_seed(0)
    policy = ACTPolicy(tiny_config(), features(64, 80), stats())
    fused = make_optimizer(policy)
    assert fused.defaults["fused"] is True
    plain_params = [p.detach().clone().requires_grad_() for p in policy.parameters()]
    for p, q in zip(policy.parameters(), plain_params):
        p.grad = torch.randn_like(p)
        q.grad = p.grad.clone()
    lr_of = {id(p): g["lr"] for g in fused.param_groups for p in g["params"]}  # the backbone has its own
    plain = torch.optim.AdamW([{"params": [q], "lr": lr_of[id(p)]} for p, q in zip(policy.parameters(), plain_params)],
                              betas=fused.defaults["betas"], eps=fused.defaults["eps"],
                              weight_decay=fused.defaults["weight_decay"], fused=False)
    fused.step()
    plain.step()
    for p, q in zip(policy.parameters(), plain_params):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
