from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from robotrain.errors import ConfigError
from robotrain.policies.normalize import MEAN_STD, MIN_MAX, Normalizer, unflatten_stats


def _stats() -> dict:
    return {
        "observation.state": {"mean": np.array([1.0, 2.0]), "std": np.array([2.0, 4.0]),
                              "min": np.array([-1.0, 0.0]), "max": np.array([3.0, 4.0])},
    }


@pytest.mark.parametrize("mode", [MEAN_STD, MIN_MAX])
def test_normalize_unnormalize_round_trip(mode: str) -> None:
    norm = Normalizer(_stats(), {"observation.state": mode})
    x = torch.tensor([[0.5, -3.0], [7.0, 2.0]])
    assert torch.allclose(norm.unnormalize("observation.state", norm.normalize("observation.state", x)), x, atol=1e-6)


def test_mean_std_values_and_flat_stats_are_lerobot_layout() -> None:
    norm = Normalizer(_stats(), {"observation.state": MEAN_STD})
    out = norm.normalize("observation.state", torch.tensor([3.0, 2.0]))
    assert torch.allclose(out, torch.tensor([1.0, 0.0]))
    flat = norm.flat_stats()
    assert sorted(flat) == ["observation.state.mean", "observation.state.std"]
    assert norm.state_dict() == {}  # stats never enter model.safetensors
    assert np.allclose(unflatten_stats(flat)["observation.state"]["std"], [2.0, 4.0])


def test_missing_stats_is_an_error_not_a_silent_skip() -> None:
    with pytest.raises(ConfigError, match="observation.state"):
        Normalizer({"observation.state": {"mean": np.zeros(2)}}, {"observation.state": MEAN_STD})


def test_tiny_std_warns(caplog: pytest.LogCaptureFixture) -> None:
    stats = {"observation.images.front": {"mean": np.full((3, 1, 1), 0.5), "std": np.full((3, 1, 1), 1e-5)}}
    with caplog.at_level(logging.WARNING):
        Normalizer(stats, {"observation.images.front": MEAN_STD})
    assert "observation.images.front" in caplog.text
