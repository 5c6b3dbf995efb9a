"""Tiny ACT configurations, features, stats and batches shared by tests/test_act_*.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robotrain.constants import ACTION, ACTION_IS_PAD, OBS_STATE
from robotrain.policies.act.config import ACTConfig
from robotrain.policies.base import PolicyFeatures

CAMERAS = ("observation.images.front", "observation.images.wrist")


def tiny_config(**overrides) -> ACTConfig:
    kwargs = dict(
        dim_model=32,
        n_heads=2,
        dim_feedforward=64,
        n_encoder_layers=1,
        n_decoder_layers=1,
        n_vae_encoder_layers=1,
        latent_dim=8,
        chunk_size=8,
        n_action_steps=8,
    )
    kwargs.update(overrides)
    return ACTConfig(**kwargs)


def features(h: int = 64, w: int = 80, cameras=CAMERAS, state_dim: int = 6, action_dim: int = 6) -> PolicyFeatures:
    return PolicyFeatures(state_dim=state_dim, action_dim=action_dim, camera_keys=tuple(cameras), image_shape=(3, h, w))


def stats(cameras=CAMERAS, state_dim: int = 6, action_dim: int = 6, scale: float = 1.0) -> dict:
    out = {
        OBS_STATE: {"mean": np.linspace(-1, 1, state_dim), "std": np.full(state_dim, 2.0 * scale)},
        ACTION: {"mean": np.linspace(1, -1, action_dim), "std": np.full(action_dim, 3.0 * scale)},
    }
    for cam in cameras:
        out[cam] = {"mean": np.full((3, 1, 1), 0.45), "std": np.full((3, 1, 1), 0.25)}
    return out


def batch(b: int = 2, chunk: int = 8, h: int = 64, w: int = 80, cameras=CAMERAS, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {
        OBS_STATE: torch.randn(b, 6, generator=g) * 2,
        ACTION: torch.randn(b, chunk, 6, generator=g) * 3,
        ACTION_IS_PAD: torch.zeros(b, chunk, dtype=torch.bool),
        "task": ["pick"] * b,
    }
    for cam in cameras:
        out[cam] = torch.rand(b, 3, h, w, generator=g)
    return out


@pytest.fixture(autouse=True)
def single_thread():
    """One intra-op thread: on the shared 2-core machine, two spinning threads per test
    process are several times slower than one. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
