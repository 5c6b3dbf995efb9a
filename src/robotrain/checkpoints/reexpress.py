"""Re-express a policy's weights in other normalisation statistics, exactly.

Why: a checkpoint's weights read and write state and action *normalised with its own
dataset's statistics*. Reused with other statistics (averaged with a checkpoint trained on
another dataset, or fine-tuned on another dataset with `--init-from`), the same weights
would map raw inputs to different raw actions. Every normalisation mode is affine, and a
policy whose low-dimensional features touch the weights only through Linear layers
(`Policy.normalized_io_layers`, e.g. ACT) absorbs a change of statistics into those layers
exactly: its predicted actions do not change beyond float rounding. Images must use the
same statistics (they pass through convolutions and batch norms, which are not
re-expressed). Only inference is preserved exactly: a loss measured in normalised units is
not.
"""

from __future__ import annotations

import torch
from torch import Tensor

from robotrain.errors import CheckpointError
from robotrain.policies.normalize import IDENTITY, Normalizer
from robotrain.policies.base import Policy


def same_stats(a: Normalizer, b: Normalizer, key: str) -> bool:
    if a.modes.get(key, IDENTITY) != b.modes.get(key, IDENTITY):
        return False
    if a.modes.get(key, IDENTITY) == IDENTITY:
        return True
    a_off, a_scale = a.affine(key)
    b_off, b_scale = b.affine(key)
    return torch.equal(a_off, b_off) and torch.equal(a_scale, b_scale)


def io_features(policy: Policy) -> set[str]:
    """The features `policy` can be re-expressed in (empty when it cannot be at all)."""
    io = policy.normalized_io_layers()
    return set() if io is None else set(io[0].values()) | set(io[1].values())


def reexpress_state_dict(policy: Policy, target: Normalizer,
                         keys: set[str] | None = None) -> tuple[dict[str, Tensor], list[str]]:
    """`policy`'s weights (floats as float64) rewritten to read and write features normalised with
    `target`'s statistics instead of its own, and the features that needed it. `keys`
    limits the features compared (default: every feature either normaliser knows).

    For an input layer `y = W n_s + b` with `n_s = (x - o_s) / s_s` and `x = n_t s_t + o_t`:
    `W' = W diag(s_t / s_s)`, `b' = b + W (o_t - o_s) / s_s`. For an output layer writing
    `n_s`: `W' = diag(s_s / s_t) W`, `b' = (b s_s + o_s - o_t) / s_t`.
    """
    source: Normalizer = policy.normalizer  # type: ignore[assignment]
    state = {k: v.detach().double() if v.is_floating_point() else v.detach().clone()
             for k, v in policy.state_dict().items()}
    io = policy.normalized_io_layers()
    converted: set[str] = set()
    layer_features = io_features(policy)
    for key in sorted(keys if keys is not None else set(source.modes) | set(target.modes)):
        if same_stats(source, target, key):
            continue
        if io is None:
            raise CheckpointError(
                f"the {policy.name} checkpoints normalise {key!r} with different statistics, and a "
                f"{policy.name} policy cannot be re-expressed in other statistics; average only "
                "checkpoints trained with the same dataset statistics")
        if key not in layer_features:
            raise CheckpointError(
                f"the checkpoints normalise {key!r} with different statistics; only "
                f"{sorted(layer_features)} can be re-expressed (image statistics must be equal)")
        if IDENTITY in (source.modes.get(key, IDENTITY), target.modes.get(key, IDENTITY)):
            raise CheckpointError(f"{key!r} is normalised in one checkpoint and not in the other")
        converted.add(key)
    if not converted:
        return state, []
    inputs, outputs = io  # type: ignore[misc]
    for prefix, key in inputs.items():
        if key in converted:
            (o_s, s_s), (o_t, s_t) = source.affine(key), target.affine(key)
            weight = state[f"{prefix}.weight"]
            state[f"{prefix}.bias"] = state[f"{prefix}.bias"] + weight @ ((o_t - o_s) / s_s).flatten()
            state[f"{prefix}.weight"] = weight * (s_t / s_s).flatten()[None, :]
    for prefix, key in outputs.items():
        if key in converted:
            (o_s, s_s), (o_t, s_t) = source.affine(key), target.affine(key)
            o_s, s_s, o_t, s_t = (t.flatten() for t in (o_s, s_s, o_t, s_t))
            state[f"{prefix}.weight"] = (s_s / s_t)[:, None] * state[f"{prefix}.weight"]
            state[f"{prefix}.bias"] = (state[f"{prefix}.bias"] * s_s + o_s - o_t) / s_t
    return state, sorted(converted)
