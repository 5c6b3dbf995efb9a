"""Optimizer and learning-rate schedule built from a policy's config.

AdamW over `policy.optimizer_param_groups()` (a group may carry its own `lr`, e.g. ACT's
backbone) with the policy config's `optimizer_*` values; the schedule is "none"
(constant) or "cosine": LeRobot's / SmolVLA's cosine decay with linear warmup.
"""

from __future__ import annotations

import math

import torch

from robotrain.policies import Policy, PolicyConfig


def cosine_with_warmup_factor(step: int, warmup_steps: int, decay_steps: int, peak_lr: float,
                              decay_lr: float) -> float:
    """Multiplier of the peak lr at `step` (0 = the first update).

    Warmup: linear from 1/(warmup+1) at step 0 to 1 at step `warmup`. Then
    `cos = 0.5 * (1 + cos(pi * min(step, decay) / decay))` and
    `lr = peak * ((1 - alpha) * cos + alpha)` with `alpha = decay_lr / peak`
    (the LeRobot/SmolVLA convention: the cosine counts from step 0, not from warmup's end).
    With peak 1e-4, warmup 1000, decay 30000, decay_lr 2.5e-6: lr(20000) = 2.69e-5.
    """
    if warmup_steps > 0 and step < warmup_steps:
        start = 1.0 / (warmup_steps + 1)
        return start + (1.0 - start) * step / warmup_steps
    if decay_steps <= 0:
        return 1.0
    alpha = decay_lr / peak_lr if peak_lr > 0 else 0.0
    progress = min(step, decay_steps) / decay_steps
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return (1.0 - alpha) * cosine + alpha


FUSED_DEVICES = ("cpu", "cuda")
"""Devices where AdamW runs fused: one kernel updates every parameter, instead of a
dozen tensor operations per parameter (PyTorch >= 2.4 on both)."""


def make_optimizer(policy: Policy) -> torch.optim.AdamW:
    """AdamW over the policy's parameter groups with its config's optimizer_* settings,
    fused where every trainable parameter is a float tensor on a FUSED_DEVICES device (build
    it after moving the policy)."""
    cfg: PolicyConfig = policy.config
    groups = policy.optimizer_param_groups()
    params = [p for group in groups for p in group["params"]]
    fused = bool(params) and all(p.device.type in FUSED_DEVICES and p.is_floating_point() for p in params)
    return torch.optim.AdamW(
        groups,
        lr=cfg.optimizer_lr,
        betas=tuple(cfg.optimizer_betas),  # type: ignore[arg-type]
        eps=cfg.optimizer_eps,
        weight_decay=cfg.optimizer_weight_decay,
        fused=fused or None,
    )


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: PolicyConfig) -> torch.optim.lr_scheduler.LambdaLR | None:
    """None for a constant lr, else a LambdaLR stepping the cosine-with-warmup factor.

    Every group is scaled by the same factor, so a group with its own lr (a backbone)
    keeps its ratio to the main lr.
    """
    if cfg.scheduler == "none":
        return None

    def factor(step: int) -> float:
        return cosine_with_warmup_factor(step, cfg.scheduler_warmup_steps, cfg.scheduler_decay_steps,
                                         cfg.optimizer_lr, cfg.scheduler_decay_lr)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
