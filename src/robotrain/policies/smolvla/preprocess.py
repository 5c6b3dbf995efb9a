"""State, action and image-range preparation for SmolVLA (frames are fitted by `robotrain.data.images`)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def pad_last_dim(x: Tensor, size: int) -> Tensor:
    """Zero-pad the last dimension to `size` (state 6 -> 32, action 6 -> 32)."""
    if x.shape[-1] > size:
        raise ValueError(f"vector of size {x.shape[-1]} exceeds the model's maximum {size}")
    if x.shape[-1] == size:
        return x
    return F.pad(x, (0, size - x.shape[-1]))


def to_siglip_range(img: Tensor) -> Tensor:
    """[0, 1] -> [-1, 1], the range SigLIP was trained on."""
    return img * 2.0 - 1.0


def last_step(x: Tensor, batched_ndim: int) -> Tensor:
    """Drop an observation-history axis if present: (B, T, ...) -> (B, ...)."""
    return x[:, -1] if x.ndim == batched_ndim + 1 else x


def ensure_tensor(x: object, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"batch[{name!r}] must be a tensor, got {type(x).__name__}")
    return x


__all__ = ["ensure_tensor", "last_step", "pad_last_dim", "to_siglip_range"]
