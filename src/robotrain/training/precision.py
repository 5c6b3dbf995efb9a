"""Which precision a training run computes in (`--amp`), decided in one place for the loop
and for `robotrain plan`, so the plan predicts the run that will happen."""

from __future__ import annotations

import torch


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `--amp` on `device`, or None for float32.

    "bf16": bf16 autocast on any device; "off": float32; "auto": bf16 on CUDA, float32
    elsewhere."""
    if amp == "bf16" or (amp == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None
