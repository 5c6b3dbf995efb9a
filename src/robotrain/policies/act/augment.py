"""Batched image augmentation for real-robot data, in torch only (no torchvision).

Real cameras drift in exposure, white balance and framing between sessions; jittering
training images makes ACT less brittle to that (LeRobot offers similar `image_transforms`
on the dataset side). Here it runs on the whole (B, 3, H, W) batch on the training device,
with independent random factors per image, on images in [0, 1] before normalisation.

Example:
    >>> aug = ImageAugment(brightness=0.2, contrast=0.2, saturation=0.5, hue=0.05,
    ...                    sharpness=0.5, crop_scale=0.9)
    >>> out = aug(torch.rand(8, 3, 96, 128))  # same shape, values in [0, 1]
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

# ITU-R 601 luma weights (what torchvision's rgb_to_grayscale uses).
_LUMA = (0.299, 0.587, 0.114)
# torchvision's sharpness blur kernel: centre 5, neighbours 1, normalised.
_SMOOTH = ((1.0, 1.0, 1.0), (1.0, 5.0, 1.0), (1.0, 1.0, 1.0))


def _factor(b: int, spread: float, like: Tensor) -> Tensor:
    """(B, 1, 1, 1) factors uniform in [1 - spread, 1 + spread]."""
    return 1.0 + (torch.rand(b, 1, 1, 1, device=like.device, dtype=like.dtype) * 2 - 1) * spread


def _gray(x: Tensor) -> Tensor:  # (B, 3, H, W) -> (B, 1, H, W)
    r, g, b = x.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


def adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    return (x * factor).clamp(0, 1)


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    mean = _gray(x).mean(dim=(-2, -1), keepdim=True)  # (B, 1, 1, 1)
    return (mean + (x - mean) * factor).clamp(0, 1)


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    gray = _gray(x)
    return (gray + (x - gray) * factor).clamp(0, 1)


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate chroma by `shift` turns (B,) in YIQ space: a cheap, differentiable stand-in
    for an HSV hue shift (luma is kept exactly)."""
    rgb2yiq = torch.tensor(
        [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], device=x.device
    )  # float32: linalg.inv has no half-precision kernels
    yiq2rgb = torch.linalg.inv(rgb2yiq)
    angle = shift.float() * 2 * math.pi  # (B,)
    cos, sin = angle.cos(), angle.sin()
    one, zero = torch.ones_like(cos), torch.zeros_like(cos)
    rot = torch.stack(
        [torch.stack([one, zero, zero], -1), torch.stack([zero, cos, -sin], -1), torch.stack([zero, sin, cos], -1)],
        dim=-2,
    )  # (B, 3, 3)
    mat = (yiq2rgb @ rot @ rgb2yiq).to(x.dtype)  # (B, 3, 3)
    out = torch.einsum("bij,bjhw->bihw", mat, x)
    return out.clamp(0, 1)


def adjust_sharpness(x: Tensor, factor: Tensor) -> Tensor:
    kernel = x.new_tensor(_SMOOTH)
    kernel = (kernel / kernel.sum()).expand(x.shape[1], 1, 3, 3)
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=x.shape[1])
    return (blurred + (x - blurred) * factor).clamp(0, 1)


def random_crop_resize(x: Tensor, min_scale: float) -> Tensor:
    """Crop a random window keeping a fraction in [min_scale, 1] of each side (per image)
    and resize it back to (H, W), bilinearly, with one batched `grid_sample`."""
    b = x.shape[0]
    scale = min_scale + torch.rand(b, device=x.device, dtype=x.dtype) * (1 - min_scale)  # (B,)
    # Window centre anywhere that keeps the window inside the image (normalised coords).
    tx = (torch.rand(b, device=x.device, dtype=x.dtype) * 2 - 1) * (1 - scale)
    ty = (torch.rand(b, device=x.device, dtype=x.dtype) * 2 - 1) * (1 - scale)
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 2] = scale, tx
    theta[:, 1, 1], theta[:, 1, 2] = scale, ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class ImageAugment:
    """Applies every enabled transform (strength > 0, crop_scale < 1) in a fixed order:
    crop, brightness, contrast, saturation, hue, sharpness. Input/output (B, 3, H, W) in [0, 1]."""

    def __init__(
        self,
        brightness: float = 0.2,
        contrast: float = 0.2,
        saturation: float = 0.5,
        hue: float = 0.05,
        sharpness: float = 0.5,
        crop_scale: float = 0.9,
    ) -> None:
        self.brightness = brightness
        self.contrast = contrast
        self.saturation = saturation
        self.hue = hue
        self.sharpness = sharpness
        self.crop_scale = crop_scale

    @torch.no_grad()
    def __call__(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        if self.crop_scale < 1:
            x = random_crop_resize(x, self.crop_scale)
        if self.brightness > 0:
            x = adjust_brightness(x, _factor(b, self.brightness, x))
        if self.contrast > 0:
            x = adjust_contrast(x, _factor(b, self.contrast, x))
        if self.saturation > 0:
            x = adjust_saturation(x, _factor(b, self.saturation, x))
        if self.hue > 0:
            x = adjust_hue(x, (torch.rand(b, device=x.device, dtype=x.dtype) * 2 - 1) * self.hue)
        if self.sharpness > 0:
            x = adjust_sharpness(x, _factor(b, self.sharpness, x))
        return x
