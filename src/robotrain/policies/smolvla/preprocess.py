"""Image, state and action preparation for SmolVLA (torch only, no torchvision)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def resize_with_pad(img: Tensor, width: int, height: int, pad_value: float = 0.0) -> Tensor:
    """(B, C, H, W) -> (B, C, height, width): bilinear resize keeping the aspect ratio, then
    pad on the left and top (LeRobot's layout, which pretrained SmolVLA weights saw)."""
    if img.ndim != 4:
        raise ValueError(f"expected (B, C, H, W) images, got shape {tuple(img.shape)}")
    cur_h, cur_w = img.shape[2:]
    if (cur_h, cur_w) == (height, width):
        return img
    ratio = max(cur_w / width, cur_h / height)
    new_h, new_w = int(cur_h / ratio), int(cur_w / ratio)
    resized = F.interpolate(img, size=(new_h, new_w), mode="bilinear", align_corners=False)
    pad_h, pad_w = max(0, height - new_h), max(0, width - new_w)
    return F.pad(resized, (pad_w, 0, pad_h, 0), value=pad_value)


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


__all__ = ["ensure_tensor", "last_step", "pad_last_dim", "resize_with_pad", "to_siglip_range"]
