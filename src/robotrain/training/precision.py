"""Which precision a training run computes in (`--amp`), decided in one place for the loop
and for `robotrain plan`, so the plan predicts the run that will happen.

`--amp auto` is bf16 autocast on CUDA. On a CPU it is float32 unless both hold:
- the CPU computes bf16 natively (`cpu_has_native_bf16`: avx512_bf16 or AMX). Elsewhere
  PyTorch emulates bf16 matrix products and an ACT step was measured ~20x slower than in
  float32, so an AVX2-only CPU never gets bf16 by default;
- a measurement on such a CPU found bf16 faster with a loss curve that matches float32's
  within run-to-run noise (`benchmarks/bench_precision.py`), recorded in
  `CPU_BF16_WHEN_NATIVE`. Measured 2026-12-07 on a 2-core AMD EPYC with avx512_bf16
  (torch 2.13): the demo preset's ACT step 1.51x faster, and after 2,000 steps the loss
  0.1826 in bf16 against 0.1862 in float32 (same seed), where two float32 seeds differ by
  0.0132 (docs/bench/precision_cpu/: the curves and the output).
`--amp off` keeps float32 anywhere.
"""

from __future__ import annotations

import torch

from robotrain.system import environment

CPU_BF16_WHEN_NATIVE = True
"""Whether `--amp auto` trains in bf16 autocast on a CPU with native bf16: True since
`benchmarks/bench_precision.py` on such a CPU printed "bf16 faster: yes" and "loss within
run-to-run noise: yes" (module docstring)."""


def cpu_bf16_by_default() -> bool:
    """Whether `--amp auto` means bf16 on this machine's CPU (see the module docstring)."""
    return CPU_BF16_WHEN_NATIVE and environment.cpu_has_native_bf16()


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `--amp` on `device`, or None for float32.

    "bf16": bf16 autocast on any device; "off": float32; "auto": bf16 on CUDA, on a CPU
    only where `cpu_bf16_by_default()`, float32 elsewhere (mps)."""
    if amp == "bf16":
        return torch.bfloat16
    if amp != "auto":
        return None
    if device.type == "cuda" or (device.type == "cpu" and cpu_bf16_by_default()):
        return torch.bfloat16
    return None
