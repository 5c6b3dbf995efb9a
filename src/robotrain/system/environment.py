"""What a result was computed with: software versions and the CPU's capabilities.

Recorded in every eval_info.json (and printed by benchmarks) so a number can be rerun on
the same stack, and read where the stack matters: bf16 autocast is ~2x faster per ACT
step on a CPU with native bf16 (avx512_bf16 / amx_bf16) and ~20x slower without it."""

from __future__ import annotations

import importlib.metadata
import platform
from functools import cache
from pathlib import Path
from typing import Any

_PACKAGES = ("robotrain", "torch", "numpy", "mujoco", "gymnasium", "av", "pyarrow", "safetensors", "transformers",
             "tokenizers")


def cpu_flags() -> set[str]:
    """The CPU feature flags Linux reports (empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_native_bf16() -> bool:
    """Whether bf16 matrix products run natively (avx512_bf16 or AMX); on other x86 CPUs
    PyTorch emulates them, far slower than float32."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


@cache
def software_versions() -> dict[str, Any]:
    """Python, the packages that can change a result (installed ones only) and the CPU."""
    out: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    out["cpu_native_bf16"] = cpu_has_native_bf16()
    try:
        import torch

        if torch.cuda.is_available():
            out["cuda_device"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return out
