"""Batch image augmentation: shapes, ranges, identities, per-image randomness."""

from __future__ import annotations

import pytest
import torch

from act_testutils import single_thread  # noqa: F401
from robotrain.policies.act.augment import (
    ImageAugment,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    adjust_sharpness,
    random_crop_resize,
)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(4, 3, 24, 32, generator=torch.Generator().manual_seed(0))


def ones(b: int, value: float = 1.0) -> torch.Tensor:
    return torch.full((b, 1, 1, 1), value)


def test_identities(images):
    torch.testing.assert_close(adjust_brightness(images, ones(4)), images)
    torch.testing.assert_close(adjust_contrast(images, ones(4)), images)
    torch.testing.assert_close(adjust_saturation(images, ones(4)), images)
    torch.testing.assert_close(adjust_sharpness(images, ones(4)), images)
    torch.testing.assert_close(adjust_hue(images, torch.zeros(4)), images, atol=1e-5, rtol=0)
    torch.testing.assert_close(random_crop_resize(images, 1.0), images, atol=1e-5, rtol=0)
    off = ImageAugment(0, 0, 0, 0, 0, 1.0)
    torch.testing.assert_close(off(images), images)


def test_effects(images):
    gray = adjust_saturation(images, ones(4, 0.0))
    torch.testing.assert_close(gray[:, 0], gray[:, 1])  # no saturation: gray
    flat = adjust_contrast(images, ones(4, 0.0))
    assert flat.flatten(1).std(1).max() < 1e-6  # no contrast: one value per image
    assert adjust_brightness(images, ones(4, 0.5)).mean() < images.mean()
    # A hue shift keeps luma.
    luma = lambda x: 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]  # noqa: E731
    mid = images * 0.5 + 0.25  # away from the clamp
    torch.testing.assert_close(luma(adjust_hue(mid, torch.full((4,), 0.1))), luma(mid), atol=1e-5, rtol=0)
    assert (adjust_hue(mid, torch.full((4,), 0.1)) - mid).abs().max() > 0.01


def test_full_augment_shapes_range_and_independence(images):
    torch.manual_seed(0)
    aug = ImageAugment()
    same = images[:1].expand(4, -1, -1, -1).contiguous()
    out = aug(same)
    assert out.shape == same.shape and out.dtype == same.dtype
    assert out.min() >= 0 and out.max() <= 1
    # Each image gets its own random factors.
    assert (out[0] - out[1]).abs().max() > 1e-3
    cl = aug(images.contiguous(memory_format=torch.channels_last))
    assert cl.shape == images.shape
