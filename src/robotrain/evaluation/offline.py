"""Offline evaluation: how far a policy's predicted action chunks are from the recorded ones.

The same number for every policy (ACT, SmolVLA, ...): mean absolute error in joint units
(degrees / gripper percent for the SO-101) over the non-padded steps of the chunk, per
joint and overall, plus the error of the first action alone (what is executed first).
A constant baseline that always predicts the training-set mean action is scored on the
same frames, so a number can be read as "better than doing nothing clever" or not.

Sim rollouts (success rate) are a separate mode, `robotrain eval --sim`, implemented in
`robotrain.evaluation.rollout`.

Example:
    robotrain eval --checkpoint outputs/train/run/checkpoints/last --dataset data/so101 --episodes 0 1
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from robotrain.constants import (
    ACTION,
    ACTION_IS_PAD,
    EVAL_ACTION_ERROR,
    EVAL_ACTION_ERROR_PER_JOINT,
    EVAL_BASELINE_ACTION_ERROR,
    EVAL_BASELINE_FIRST_ACTION_ERROR,
    EVAL_FIRST_ACTION_ERROR,
    EVAL_NUM_SAMPLES,
    is_image_key,
)
from robotrain.errors import ConfigError
from robotrain.policies import Policy

if TYPE_CHECKING:
    from robotrain.data.device_frames import DeviceFrames

logger = logging.getLogger(__name__)


@dataclass
class ActionErrors:
    """Mean absolute action errors in joint units."""

    action_error: float
    """Over every non-padded step of every predicted chunk, all joints."""
    first_action_error: float
    """Of the first action of each chunk only."""
    action_error_per_joint: list[float]
    """Per joint (action dimension), over non-padded steps."""
    first_action_error_per_joint: list[float] = field(default_factory=list)


@dataclass
class OfflineEvalResult:
    policy: ActionErrors
    baseline: ActionErrors | None
    """The constant training-mean action scored on the same frames."""
    num_samples: int
    num_steps: int
    """Non-padded (frame, chunk step) pairs scored."""

    def to_metrics(self) -> dict[str, Any]:
        """Flat metric dict in the shared `eval/...` names (metrics.jsonl, report.py)."""
        out: dict[str, Any] = {
            EVAL_ACTION_ERROR: self.policy.action_error,
            EVAL_FIRST_ACTION_ERROR: self.policy.first_action_error,
            EVAL_ACTION_ERROR_PER_JOINT: self.policy.action_error_per_joint,
            EVAL_NUM_SAMPLES: self.num_samples,
        }
        if self.baseline is not None:
            out[EVAL_BASELINE_ACTION_ERROR] = self.baseline.action_error
            out[EVAL_BASELINE_FIRST_ACTION_ERROR] = self.baseline.first_action_error
        return out


class _ErrorSums:
    """Running sums of |error| per joint, over valid chunk steps and over first actions."""

    def __init__(self, action_dim: int) -> None:
        self.abs_sum = torch.zeros(action_dim, dtype=torch.float64)
        self.first_sum = torch.zeros(action_dim, dtype=torch.float64)
        self.count = 0
        self.first_count = 0

    def add(self, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> None:
        # pred, target: (B, T, A); valid: (B, T) bool
        err = (pred.double() - target.double()).abs()
        self.abs_sum += (err * valid.unsqueeze(-1)).sum(dim=(0, 1))
        self.count += int(valid.sum())
        self.first_sum += err[:, 0].sum(dim=0)
        self.first_count += err.shape[0]

    def result(self) -> ActionErrors:
        per_joint = (self.abs_sum / max(self.count, 1)).tolist()
        first_per_joint = (self.first_sum / max(self.first_count, 1)).tolist()
        return ActionErrors(
            action_error=float(np.mean(per_joint)),
            first_action_error=float(np.mean(first_per_joint)),
            action_error_per_joint=per_joint,
            first_action_error_per_joint=first_per_joint,
        )


def episode_indices(dataset: Dataset, episodes: Sequence[int]) -> list[int]:
    """Dataset indices of `episodes`, from the dataset's meta (`dataset_from_index/to_index`).

    Needs a dataset over every episode (its length equals meta.total_frames); for a
    dataset already restricted to some episodes pass `episodes=None`.
    """
    meta = getattr(dataset, "meta", None)
    records = getattr(meta, "episodes", None)
    if records is None or len(dataset) != getattr(meta, "total_frames", -1):  # type: ignore[arg-type]
        raise ConfigError("episodes can only be selected on a dataset holding every episode")
    by_index = {int(_get(r, "episode_index")): r for r in records}
    unknown = [e for e in episodes if e not in by_index]
    if unknown:
        raise ConfigError(f"--episodes: unknown episode(s) {unknown}; the dataset has 0..{len(by_index) - 1}")
    out: list[int] = []
    for e in episodes:
        r = by_index[e]
        out.extend(range(int(_get(r, "dataset_from_index")), int(_get(r, "dataset_to_index"))))
    return out


def _get(record: Any, name: str) -> Any:
    return record[name] if isinstance(record, Mapping) else getattr(record, name)


def spaced_indices(n: int, max_samples: int | None) -> list[int]:
    """At most `max_samples` evenly spaced indices of range(n) (all when None or 0)."""
    if not max_samples or n <= max_samples:
        return list(range(n))
    return sorted({int(i) for i in np.linspace(0, n - 1, max_samples).round()})


def batch_to_device(batch: Mapping[str, Any], device: torch.device, channels_last: bool = False,
                    frames: DeviceFrames | None = None) -> dict[str, Any]:
    """Move a collated batch to `device`; uint8 camera frames become float32 in [0, 1] there.

    Datasets may ship frames as uint8 (4x less through the DataLoader's shared memory), or
    only frame indices that `frames` (the cache in device memory) turns into images;
    policies always receive float images in [0, 1] (the policy contract).
    """
    if frames is not None:
        batch = frames.fill(batch)
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=True)
            if is_image_key(key) and value.dtype == torch.uint8:
                value = value.float().div_(255.0)
            if channels_last and value.ndim == 4:
                value = value.contiguous(memory_format=torch.channels_last)
        out[key] = value
    return out


@torch.no_grad()
def offline_action_error(
    policy: Policy,
    dataset: Dataset,
    episodes: Sequence[int] | None = None,
    batch_size: int = 8,
    baseline_action: np.ndarray | torch.Tensor | None = None,
    max_samples: int | None = None,
    num_workers: int = 0,
) -> OfflineEvalResult:
    """Score predicted action chunks against the recorded ones on held-out frames.

    `dataset` must yield `action` windows of the policy's chunk length with
    `action_is_pad` (built with `policy.delta_timestamps()`). `episodes` selects episodes
    of a full dataset; None scores the whole `dataset` (e.g. a validation split).
    `baseline_action` (action_dim,) is the training-mean action of the constant
    baseline; None skips it. The policy's RNG use (e.g. flow-matching noise) does not
    disturb the caller's RNG streams, so evaluation inside training keeps resume exact.
    """
    indices = episode_indices(dataset, episodes) if episodes is not None else list(range(len(dataset)))  # type: ignore[arg-type]
    indices = [indices[i] for i in spaced_indices(len(indices), max_samples)]
    if not indices:
        raise ConfigError("offline evaluation got no frames (empty dataset or episode list)")
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size, shuffle=False, num_workers=num_workers)
    device = next(policy.parameters()).device
    was_training = policy.training
    policy.eval()
    sums: _ErrorSums | None = None
    base_sums: _ErrorSums | None = None
    baseline = torch.as_tensor(np.asarray(baseline_action), dtype=torch.float32) if baseline_action is not None else None
    devices = list(range(torch.cuda.device_count())) if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            for batch in loader:
                target = batch[ACTION].float()  # (B, T, A)
                valid = ~batch[ACTION_IS_PAD].bool() if ACTION_IS_PAD in batch else torch.ones(target.shape[:2], dtype=torch.bool)
                pred = policy.predict_action_chunk(batch_to_device(batch, device)).float().cpu()  # (B, chunk, A)
                steps = min(pred.shape[1], target.shape[1])
                pred, target, valid = pred[:, :steps], target[:, :steps], valid[:, :steps]
                if sums is None:
                    sums = _ErrorSums(target.shape[-1])
                    base_sums = _ErrorSums(target.shape[-1]) if baseline is not None else None
                sums.add(pred, target, valid)
                if base_sums is not None and baseline is not None:
                    base_sums.add(baseline.expand_as(target), target, valid)
    finally:
        policy.train(was_training)
    assert sums is not None
    return OfflineEvalResult(
        policy=sums.result(),
        baseline=base_sums.result() if base_sums is not None else None,
        num_samples=len(indices),
        num_steps=sums.count,
    )


def format_table(result: OfflineEvalResult, joint_names: Sequence[str] | None = None) -> str:
    """A plain-text table: per-joint and overall errors, policy vs constant-mean baseline."""
    n = len(result.policy.action_error_per_joint)
    names = list(joint_names) if joint_names and len(joint_names) == n else [f"joint_{i}" for i in range(n)]
    has_base = result.baseline is not None
    header = f"{'':<20}{'policy':>12}" + (f"{'mean-action':>14}" if has_base else "")
    lines = [f"offline action error (mean |pred - recorded|, joint units) on {result.num_samples} frames", header]

    def row(label: str, value: float, base: float | None) -> str:
        return f"{label:<20}{value:>12.4f}" + (f"{base:>14.4f}" if base is not None else "")

    b = result.baseline
    for i, name in enumerate(names):
        lines.append(row(name, result.policy.action_error_per_joint[i], b.action_error_per_joint[i] if b else None))
    lines.append(row("all joints (chunk)", result.policy.action_error, b.action_error if b else None))
    lines.append(row("first action", result.policy.first_action_error, b.first_action_error if b else None))
    return "\n".join(lines)
