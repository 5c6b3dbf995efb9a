"""Feature normalisation with dataset statistics, stored the way LeRobot stores it.

LeRobot (>= 0.4) keeps normalisation out of `model.safetensors`: the statistics live in
`policy_preprocessor_step_*_normalizer_processor.safetensors` with flat keys
`"<feature>.<stat>"` (e.g. `observation.state.mean`, shape [6]; images [3, 1, 1]).
`Normalizer` holds them as *non-persistent* buffers so they follow `.to(device)` but never
appear in the policy's state dict, keeping the model's key list identical to LeRobot's.
"""

from __future__ import annotations

from collections.abc import Mapping

import logging

import numpy as np
import torch
from torch import Tensor, nn

from robotrain.errors import ConfigError

logger = logging.getLogger(__name__)

# A std this small turns (x - mean) / std into values of 1e4 and more: gradients overflow.
# LeRobot 0.4.4 writes per-episode image std ~1e-5 (its fixture shows it), so warn loudly.
TINY_STD = 1e-4

MEAN_STD = "MEAN_STD"
MIN_MAX = "MIN_MAX"
IDENTITY = "IDENTITY"
NORM_MODES = (MEAN_STD, MIN_MAX, IDENTITY)


def _buffer_name(key: str, stat: str) -> str:
    # Buffer names may not contain dots.
    return f"{key.replace('.', '__')}__{stat}"


class Normalizer(nn.Module):
    """Normalise inputs / unnormalise outputs per feature.

    `modes` maps a feature key to MEAN_STD, MIN_MAX or IDENTITY. MEAN_STD is
    `(x - mean) / (std + eps)`, MIN_MAX maps [min, max] to [-1, 1] (LeRobot's conventions).
    """

    def __init__(
        self,
        stats: Mapping[str, Mapping[str, np.ndarray | Tensor]],
        modes: Mapping[str, str],
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        self.modes = dict(modes)
        self.eps = eps
        for key, mode in self.modes.items():
            if mode not in NORM_MODES:
                raise ConfigError(f"normalisation mode for {key!r} must be one of {NORM_MODES}, got {mode!r}")
            if mode == IDENTITY:
                continue
            needed = ("mean", "std") if mode == MEAN_STD else ("min", "max")
            feature_stats = stats.get(key)
            if feature_stats is None or any(s not in feature_stats for s in needed):
                # LeRobot silently skips normalisation here; we refuse (shared docs §7).
                raise ConfigError(f"dataset statistics lack {needed} for feature {key!r}, needed for {mode}")
            if mode == MEAN_STD and float(np.min(np.asarray(feature_stats["std"]))) < TINY_STD:
                logger.warning(
                    "std of %r is below %g (%s): normalised values will be huge and training may "
                    "diverge; recompute the dataset's stats", key, TINY_STD,
                    np.asarray(feature_stats["std"]).reshape(-1).tolist(),
                )
            for stat in needed:
                value = torch.as_tensor(np.asarray(feature_stats[stat]), dtype=torch.float32)
                self.register_buffer(_buffer_name(key, stat), value.clone(), persistent=False)

    def _stat(self, key: str, stat: str) -> Tensor:
        return getattr(self, _buffer_name(key, stat))

    def normalize(self, key: str, x: Tensor) -> Tensor:
        mode = self.modes.get(key, IDENTITY)
        if mode == MEAN_STD:
            return (x - self._stat(key, "mean")) / (self._stat(key, "std") + self.eps)
        if mode == MIN_MAX:
            lo, hi = self._stat(key, "min"), self._stat(key, "max")
            return (x - lo) / (hi - lo + self.eps) * 2 - 1
        return x

    def unnormalize(self, key: str, x: Tensor) -> Tensor:
        mode = self.modes.get(key, IDENTITY)
        if mode == MEAN_STD:
            return x * (self._stat(key, "std") + self.eps) + self._stat(key, "mean")
        if mode == MIN_MAX:
            lo, hi = self._stat(key, "min"), self._stat(key, "max")
            return (x + 1) / 2 * (hi - lo + self.eps) + lo
        return x

    def affine(self, key: str) -> tuple[Tensor, Tensor]:
        """`(offset, scale)` in float64 with `normalize(key, x) == (x - offset) / scale`.

        Every mode is an affine map, which is what lets a layer reading or writing normalised
        values be re-expressed exactly in other statistics (see `robotrain.checkpoints.reexpress`).
        """
        mode = self.modes.get(key, IDENTITY)
        if mode == MEAN_STD:
            return self._stat(key, "mean").double(), self._stat(key, "std").double() + self.eps
        if mode == MIN_MAX:
            lo, hi = self._stat(key, "min").double(), self._stat(key, "max").double()
            half_range = (hi - lo + self.eps) / 2
            return lo + half_range, half_range
        raise ConfigError(f"feature {key!r} is not normalised here (mode {mode}): it has no affine map")

    def normalize_batch(self, batch: Mapping[str, object]) -> dict[str, object]:
        """A shallow copy of `batch` with every known tensor feature normalised."""
        out = dict(batch)
        for key in self.modes:
            value = out.get(key)
            if isinstance(value, Tensor):
                out[key] = self.normalize(key, value)
        return out

    def flat_stats(self) -> dict[str, Tensor]:
        """Statistics as LeRobot's normalizer file stores them: `{"<key>.<stat>": tensor}`."""
        flat: dict[str, Tensor] = {}
        for key, mode in self.modes.items():
            if mode == IDENTITY:
                continue
            for stat in ("mean", "std") if mode == MEAN_STD else ("min", "max"):
                flat[f"{key}.{stat}"] = self._stat(key, stat).detach().cpu().contiguous()
        return flat


def unflatten_stats(flat: Mapping[str, Tensor | np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """`{"observation.state.mean": x}` -> `{"observation.state": {"mean": x}}`."""
    nested: dict[str, dict[str, np.ndarray]] = {}
    for name, value in flat.items():
        key, _, stat = name.rpartition(".")
        nested.setdefault(key, {})[stat] = np.asarray(value)
    return nested
