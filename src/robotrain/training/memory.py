"""Predicted peak memory of a training run, and the largest batch that fits (`robotrain plan`).

    robotrain plan --policy act --image-size 240x320 --batch-size 64 --device cuda --memory 24G
    robotrain plan --preset smolvla_sim --json

Why: finding the batch that fits by trial costs a crashed run per try (an OOM on a GPU,
the OOM killer or swapping on a CPU), and the answer is mostly arithmetic. The policy is
built on the `meta` device (shapes, no memory), so its parameter counts and which of
them train are the real ones; what a step adds per sample comes from the policy's own
activation model (`Policy.activation_bytes_per_sample`, calibrated against measured
peaks: `benchmarks/bench_memory.py`, table in docs/benchmarks.md).

The peak of a training step, every term in bytes:
    runtime        the interpreter and libraries (CPU RSS), or the CUDA context
  + weights        every parameter and buffer, and under bf16 autocast the bf16 copy of
                   each trainable weight that autocast caches for the step
  + gradients      one per trainable parameter (alive together during backward)
  + optimizer      AdamW's exp_avg and exp_avg_sq, 2 per trainable parameter
  + activations    batch x the policy's bytes per sample
  + loader         the batch itself (uint8 frames + their float copy), on a CPU also the
                   DataLoader's batches in flight in shared memory (2 per worker), and
                   with --frames-on-device the whole frame cache on the GPU
All terms but runtime and weights grow with the batch or are fixed, so the largest batch
that fits a budget is a division, not a search.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robotrain.constants import ACTION, OBS_STATE
from robotrain.data.format import load_meta
from robotrain.errors import ConfigError
from robotrain.policies import Policy, PolicyFeatures, get_policy_class
from robotrain.training.config import TrainConfig
from robotrain.training.precision import autocast_dtype

logger = logging.getLogger(__name__)

RUNTIME_CPU_BYTES = 270 * 2**20
"""Peak RSS of a training process before it builds the policy: Python, torch, numpy,
pyarrow and robotrain's modules (measured: 269 MB, torch 2.11, Linux)."""
RUNTIME_CUDA_BYTES = 512 * 2**20
"""The CUDA context and kernels, outside torch's allocator (a typical H100 figure; not in
`torch.cuda.max_memory_allocated`, so left out when comparing with it)."""
AUTOCAST_WEIGHT_COPY_BYTES = 2
"""Bytes per trainable parameter of the bf16 copies autocast caches during a step (its
cast cache; CPU and CUDA alike)."""
DATALOADER_PREFETCH = 2
"""torch DataLoader's default prefetch_factor: batches in flight per worker."""
SO101_CAMERAS = ("observation.images.front", "observation.images.wrist")


def so101_features() -> PolicyFeatures:
    """What `plan` assumes without --dataset: an SO-101 arm (6 joints) with two 480x640 cameras."""
    return PolicyFeatures(state_dim=6, action_dim=6, camera_keys=SO101_CAMERAS, image_shape=(3, 480, 640))


def placeholder_stats(features: PolicyFeatures) -> dict[str, dict[str, np.ndarray]]:
    """Statistics of the right shapes for building a policy whose values do not matter
    (on the meta device, for its sizes)."""
    def stats(shape: tuple[int, ...]) -> dict[str, np.ndarray]:
        return {"mean": np.zeros(shape, np.float32), "std": np.ones(shape, np.float32),
                "min": np.zeros(shape, np.float32), "max": np.ones(shape, np.float32)}

    out = {OBS_STATE: stats((features.state_dim,)), ACTION: stats((features.action_dim,))}
    out.update({key: stats((3, 1, 1)) for key in features.camera_keys})
    return out


def parse_memory_size(text: str) -> int:
    """"24G", "24GB", "24GiB", "512M", "1.5T" or a number of bytes -> bytes (binary units:
    a "24 GB" GPU reports about 24 GiB)."""
    units = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    raw = text.strip().upper().removesuffix("IB").removesuffix("B")
    number, unit = (raw[:-1], raw[-1]) if raw and raw[-1] in units else (raw, "")
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise ConfigError(f"--memory: expected a size like 24G or 512M, got {text!r}") from None
    if not value > 0:
        raise ConfigError(f"--memory: must be positive, got {text!r}")
    return int(value)


def resolve_device(name: str) -> torch.device:
    """`--device` as a device type to plan for; "auto" is what `robotrain train` would pick here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def device_total_memory(device: torch.device) -> int | None:
    """Total memory of `device`: the GPU's, or the machine's RAM for the CPU; None when
    this machine has no such device to ask."""
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return None
        return int(torch.cuda.get_device_properties(device.index or 0).total_memory)
    if device.type == "cpu":
        try:
            return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        except (ValueError, OSError):
            return None
    return None


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """A predicted training peak, by term (bytes), and the largest batch that fits `budget`."""

    policy_type: str
    device: str
    precision: str
    batch_size: int
    image_size: tuple[int, int]
    n_cameras: int
    parameters: int
    trainable_parameters: int
    runtime: int
    weights: int
    gradients: int
    optimizer: int
    activations: int
    loader: int
    per_sample: int
    """What one more sample adds (activations + loader), for `max_batch`."""
    budget: int | None
    budget_source: str

    @property
    def peak_bytes(self) -> int:
        return self.runtime + self.weights + self.gradients + self.optimizer + self.activations + self.loader

    @property
    def fixed_bytes(self) -> int:
        """The part that does not grow with the batch."""
        return self.peak_bytes - self.batch_size * self.per_sample

    @property
    def max_batch(self) -> int | None:
        """Largest batch whose peak fits the budget (0: not even one sample); None without one."""
        if self.budget is None:
            return None
        return max(0, (self.budget - self.fixed_bytes) // self.per_sample)

    @property
    def fits(self) -> bool | None:
        return None if self.budget is None else self.peak_bytes <= self.budget

    def breakdown(self) -> dict[str, int]:
        return {"runtime": self.runtime, "weights": self.weights, "gradients": self.gradients,
                "optimizer": self.optimizer, "activations": self.activations, "loader": self.loader}

    def to_dict(self) -> dict[str, Any]:
        return {"peak_bytes": self.peak_bytes, "max_batch": self.max_batch, "fits": self.fits,
                "budget_bytes": self.budget, "budget_source": self.budget_source, "breakdown": self.breakdown(),
                "per_sample_bytes": self.per_sample, "policy": self.policy_type, "device": self.device,
                "precision": self.precision, "batch_size": self.batch_size, "image_size": list(self.image_size),
                "cameras": self.n_cameras, "parameters": self.parameters,
                "trainable_parameters": self.trainable_parameters}

    def summary(self) -> str:
        """The plan as a few lines for people."""
        gib = 2**30
        lines = [f"{self.policy_type} on {self.device}, {self.precision}, batch {self.batch_size}, "
                 f"{self.n_cameras} camera(s) at {self.image_size[0]}x{self.image_size[1]}: "
                 f"{self.parameters / 1e6:.1f}M parameters, {self.trainable_parameters / 1e6:.1f}M trainable"]
        for name, value in self.breakdown().items():
            lines.append(f"  {name:<12}{value / gib:8.2f} GiB")
        lines.append(f"  {'peak':<12}{self.peak_bytes / gib:8.2f} GiB  ({self.per_sample / 2**20:.0f} MiB per sample)")
        if self.budget is not None:
            verdict = "fits" if self.fits else "does NOT fit"
            lines.append(f"{verdict} in {self.budget / gib:.1f} GiB ({self.budget_source}); largest batch that fits: "
                         f"{self.max_batch}")
        else:
            lines.append("no budget: pass --memory SIZE (e.g. 24G) to get the largest batch that fits")
        return "\n".join(lines)


def plan_memory(config: TrainConfig, features: PolicyFeatures | None = None, total_frames: int | None = None,
                budget: int | None = None, policy: Policy | None = None) -> MemoryPlan:
    """The predicted peak of training `config` (see the module docstring).

    `features`: the dataset's (default: `so101_features()`); `total_frames`: the dataset's
    frame count, needed only for --frames-on-device; `budget`: bytes available (default:
    the device's total); `policy`: an already built policy (else one is built on `meta`).
    """
    features = features or so101_features()
    device = resolve_device(config.device)
    amp = autocast_dtype(config.amp, device) is not None
    if policy is None:
        with torch.device("meta"):
            policy = get_policy_class(config.policy_type)(config.policy, features, placeholder_stats(features))
    per_sample_act = policy.activation_bytes_per_sample(device.type, amp)
    if per_sample_act is None:
        raise ConfigError(f"the {config.policy_type!r} policy has no activation memory model; `plan` cannot size it")
    params = list(policy.parameters())
    n_params = sum(p.numel() for p in params)
    trainable = [p for p in params if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)
    weights = sum(p.numel() * p.element_size() for p in params)
    weights += sum(b.numel() * b.element_size() for b in policy.buffers())
    gradients = sum(p.numel() * p.element_size() for p in trainable)
    optimizer = 2 * gradients  # AdamW: exp_avg + exp_avg_sq, in the parameters' dtype
    if amp:  # autocast keeps a bf16 copy of every trainable weight it casts, for the whole step
        weights += AUTOCAST_WEIGHT_COPY_BYTES * n_trainable

    size, _ = config.image_input()
    h, w = size or features.image_shape[1:]
    n_cameras = len(features.camera_keys)
    frame_bytes = n_cameras * 3 * h * w  # uint8, one sample
    per_sample_loader = frame_bytes * (1 + 4)  # the uint8 batch and its float32 copy
    if device.type == "cpu":
        per_sample_loader += frame_bytes * DATALOADER_PREFETCH * config.num_workers
    fixed_loader = 0
    if config.frames_on_device and device.type != "cpu":
        if total_frames is None:
            raise ConfigError("--frames-on-device: pass --dataset so the plan knows the frame cache's size")
        fixed_loader = total_frames * frame_bytes
    per_sample = per_sample_act + per_sample_loader
    b = config.batch_size
    budget_source = "--memory"
    if budget is None:
        budget = device_total_memory(device)
        budget_source = f"{'GPU' if device.type == 'cuda' else 'RAM'} total of this machine"
    return MemoryPlan(
        policy_type=config.policy_type, device=device.type, precision="bf16 autocast" if amp else "float32",
        batch_size=b, image_size=(int(h), int(w)), n_cameras=n_cameras, parameters=n_params,
        trainable_parameters=n_trainable,
        runtime=(RUNTIME_CPU_BYTES if device.type == "cpu" else RUNTIME_CUDA_BYTES) + policy.library_bytes,
        weights=weights, gradients=gradients, optimizer=optimizer, activations=b * per_sample_act,
        loader=fixed_loader + b * per_sample_loader, per_sample=per_sample, budget=budget,
        budget_source=budget_source if budget is not None else "none")


def dataset_layout(dataset: str) -> tuple[PolicyFeatures, int]:
    """(features, total frames) of a local dataset, read from its meta files only."""
    if not Path(dataset).is_dir():
        raise ConfigError("dataset directory not found (--dataset)", dataset)
    meta = load_meta(dataset)
    return PolicyFeatures.from_meta(meta), int(meta.total_frames)


def check_memory(config: TrainConfig, policy: Policy, features: PolicyFeatures, total_frames: int) -> None:
    """`robotrain train` asks this before building the data: when the plan says the run
    will not fit the device's memory, a one-line ConfigError with the estimate and the
    largest batch that fits (`--memory-check warn`: the same line as a warning). Silent
    for policies without a memory model and where the device's memory cannot be read.
    Deterministic, so every process of a torchrun job decides alike."""
    if config.memory_check == "off" or policy.activation_bytes_per_sample("cpu", False) is None:
        return
    plan = plan_memory(config, features, total_frames, policy=policy)
    if plan.fits is not False:
        return
    gib = 2**30
    fits = (f"the largest batch that fits is about {plan.max_batch} (--batch-size {plan.max_batch})"
            if plan.max_batch else "the largest batch that fits is 0: lower --image-size or try --policy.gradient_checkpointing true")
    message = (f"predicted peak memory {plan.peak_bytes / gib:.1f} GiB for batch {plan.batch_size} exceeds the "
               f"{plan.budget_source} ({(plan.budget or 0) / gib:.1f} GiB); {fits}. `robotrain plan` with these "
               f"flags shows the terms")
    if config.memory_check == "error":
        raise ConfigError(f"{message}; --memory-check warn runs it anyway")
    logger.warning("%s", message)
