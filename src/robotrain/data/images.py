"""The one image path: how a camera frame becomes what a policy sees.

Every place that fits a frame to a policy's input size or turns uint8 pixels into floats
calls this module: the frame cache builder, per-sample decoding, the sim rollout and both
policies. So a frame rendered in closed loop and the same frame read from the cache give
the same tensor, bit for bit (tests/test_images.py renders one and checks).

Two ways to fit a frame to `size` = (height, width):
- "resize": stretch to `size`, bilinear with antialias (ACT; a 480x640 frame at 240x320
  keeps its 4:3 aspect anyway).
- "pad": keep the aspect ratio, scale by `min(height / h, width / w)`, floor the scaled
  sides (`int(h / ratio)`), then pad on the left and top with black. This is LeRobot's
  SmolVLA `resize_with_pad` exactly (bilinear *without* antialias), the frames pretrained
  SmolVLA weights saw: a 480x640 frame padded into 250x250 is 187 rows tall, everywhere.

The cache stores uint8 frames fitted by `fit_uint8`: fitted in float on the 0..255 values,
rounded, clamped. `to_unit_float` is the single uint8 -> float32 [0, 1] conversion.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from robotrain.errors import ConfigError

RESIZE_MODES = ("resize", "pad")


def parse_image_size(value: Any, name: str = "image_size") -> tuple[int, int] | None:
    """None | "240x320" | "224" | 224 | (240, 320) -> (H, W), or None for the frames' own
    size ("none", "native", ""): the one parser of image sizes, for flags, config files
    and configs alike. Raises ConfigError naming `name`."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("", "none", "native"):
            return None
        try:
            dims = [int(p) for p in text.split("x")]
        except ValueError:
            raise ConfigError(f"{name}: expected HxW (HEIGHTxWIDTH) like 240x320, got {value!r}") from None
    elif isinstance(value, int) and not isinstance(value, bool):
        dims = [value]
    elif isinstance(value, (tuple, list)) and all(isinstance(d, int) and not isinstance(d, bool) for d in value):
        dims = list(value)
    else:
        raise ConfigError(f"{name}: expected HxW (HEIGHTxWIDTH) like 240x320, or (H, W) integers, got {value!r}")
    if len(dims) == 1:
        dims = dims * 2
    if len(dims) != 2 or min(dims) < 1:
        raise ConfigError(f"{name}: expected two positive sizes HxW like 240x320, got {value!r}")
    return int(dims[0]), int(dims[1])


def parse_hw(text: str, flag: str) -> tuple[int, int]:
    """A flag's "HxW" text -> (H, W); unlike `parse_image_size`, a size is required."""
    size = parse_image_size(text, flag)
    if size is None:
        raise ConfigError(f"{flag}: expected HxW (HEIGHTxWIDTH) like 240x320, got {text!r}")
    return size


def check_mode(mode: str) -> None:
    if mode not in RESIZE_MODES:
        raise ConfigError(f"resize_mode must be one of {', '.join(RESIZE_MODES)}, got {mode!r}")


def fitted_size(height: int, width: int, size: tuple[int, int], mode: str) -> tuple[int, int]:
    """(rows, cols) the picture itself occupies inside `size`: all of it for "resize"; for
    "pad" the aspect-kept size, floored (LeRobot's rule), at least 1 pixel."""
    check_mode(mode)
    th, tw = int(size[0]), int(size[1])
    if mode == "resize":
        return th, tw
    ratio = max(width / tw, height / th)
    return max(1, int(height / ratio)), max(1, int(width / ratio))


def fit_float(images: Tensor, size: tuple[int, int] | None, mode: str = "resize") -> Tensor:
    """(N, C, H, W) float -> (N, C, *size): the fitting rule of the module docstring.

    `size` None (or the frame's own size) returns the input unchanged."""
    check_mode(mode)
    if size is None:
        return images
    th, tw = int(size[0]), int(size[1])
    h, w = images.shape[-2:]
    if (h, w) == (th, tw):
        return images
    if mode == "resize":
        return F.interpolate(images, size=(th, tw), mode="bilinear", align_corners=False, antialias=True)
    rh, rw = fitted_size(h, w, (th, tw), mode)
    if (rh, rw) != (h, w):
        images = F.interpolate(images, size=(rh, rw), mode="bilinear", align_corners=False)
    return F.pad(images, (tw - rw, 0, th - rh, 0), value=0.0)  # (left, right, top, bottom)


def hwc_to_chw(frames_hwc: np.ndarray | Tensor) -> Tensor:
    """(N, H, W, C) frames as decoded or rendered -> a (N, C, H, W) uint8 tensor."""
    x = torch.as_tensor(np.ascontiguousarray(frames_hwc) if isinstance(frames_hwc, np.ndarray) else frames_hwc)
    if x.dtype != torch.uint8 or x.ndim != 4:
        raise ValueError(f"expected (N, H, W, C) uint8 frames, got {tuple(x.shape)} {x.dtype}")
    return x.permute(0, 3, 1, 2)


def fit_uint8(frames: Tensor, size: tuple[int, int] | None, mode: str = "resize") -> Tensor:
    """(N, C, H, W) uint8 -> (N, C, *size) uint8: fitted in float on 0..255, rounded.

    Frames already at `size` (or `size` None) come back unchanged, with no float round trip."""
    check_mode(mode)
    if size is None or tuple(frames.shape[-2:]) == (int(size[0]), int(size[1])):
        return frames.contiguous()
    out = fit_float(frames.float(), size, mode)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def to_unit_float(images: Tensor) -> Tensor:
    """uint8 0..255 -> float32 in [0, 1] (the policy contract); float input is returned as is."""
    if images.dtype != torch.uint8:
        return images
    return images.to(torch.float32).div_(255.0)


def prepare_frames(frames_hwc: np.ndarray | Tensor, size: tuple[int, int] | None, mode: str = "resize",
                   dtype: str = "float32") -> Tensor:
    """(N, H, W, C) uint8 frames -> (N, C, *size) fitted like the cache, as uint8 or as
    float32 in [0, 1]: what per-sample decoding and the rollout hand to a policy."""
    out = fit_uint8(hwc_to_chw(frames_hwc), size, mode)
    return out if dtype == "uint8" else to_unit_float(out)
