"""Weight averaging of checkpoints of one architecture ("model soup").

Why: two fine-tunes of one model that are good in different places can average into one
better than either, at no training cost. In our sim (docs/results.md, run S+T) S was better
in the interior of the workspace and T at its far edge; their 50/50 average succeeded in
35/50 episodes against 31 and 30.

Checkpoints trained on different datasets normalise state and action with different
statistics, so their weights live in different coordinates and averaging them raw mixes
units. Each checkpoint is first re-expressed exactly in the reference's statistics (the
first checkpoint's; `robotrain.checkpoints.reexpress`), then the weights are averaged.

Example:
    robotrain checkpoint average runs/T/checkpoints/last runs/S/checkpoints/last --out soup
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

from robotrain.checkpoints.store import MODEL_SAFETENSORS, find_pretrained_dir, load_policy, state_dict_mismatch
from robotrain.constants import PRETRAINED_MODEL_DIR
from robotrain.errors import CheckpointError, ConfigError
from robotrain.system.files import atomic_directory, write_safetensors
from robotrain.policies.normalize import Normalizer
from robotrain.policies.base import Policy
from robotrain.checkpoints.reexpress import reexpress_state_dict

# Written beside the averaged model: where it came from (the sources, weights, reference).
AVERAGE_JSON = "robotrain_average.json"


@dataclasses.dataclass(frozen=True)
class AverageResult:
    out: Path
    sources: list[Path]
    weights: list[float]
    reexpressed: list[list[str]]  # per source, the features whose statistics it was converted from


def _check_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0 / n] * n
    if len(weights) != n:
        raise ConfigError(f"got {len(weights)} weights for {n} checkpoints")
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise ConfigError(f"weights must be finite, >= 0 and not all 0, got {list(weights)}")
    total = float(sum(weights))
    return [float(w) / total for w in weights]


def _check_same_architecture(reference: Policy, other: Policy, where: Path) -> None:
    if other.name != reference.name:
        raise CheckpointError(f"holds a {other.name!r} policy, the first checkpoint a {reference.name!r} one", where)
    mismatch = state_dict_mismatch(reference.state_dict(), other.state_dict())
    if mismatch:
        raise CheckpointError(f"different architecture from the first checkpoint: {mismatch}", where)


def average_checkpoints(checkpoints: Sequence[str | Path], out: str | Path,
                        weights: Sequence[float] | None = None) -> AverageResult:
    """Write `out/pretrained_model/`: the weighted average of `checkpoints`' weights, in the
    first checkpoint's normalisation, with its config and processor files.

    `weights` (default equal) are normalised to sum to 1. Nothing is written unless the
    whole average succeeds; an existing `out` is refused.
    """
    if len(checkpoints) < 2:
        raise ConfigError("averaging needs at least two checkpoints")
    norm_weights = _check_weights(weights, len(checkpoints))
    out = Path(out)
    if out.exists():
        raise CheckpointError("output exists; choose a new directory", out)
    dirs = [find_pretrained_dir(c) for c in checkpoints]
    reference = load_policy(dirs[0])
    target: Normalizer = reference.normalizer  # type: ignore[assignment]
    total: dict[str, Tensor] = {}
    reexpressed: list[list[str]] = []
    for i, (src, w) in enumerate(zip(dirs, norm_weights)):
        policy = reference if i == 0 else load_policy(src)
        if i:
            _check_same_architecture(reference, policy, src)
        try:
            state, converted = reexpress_state_dict(policy, target)
        except CheckpointError as exc:
            raise CheckpointError(exc.reason, src) from None
        reexpressed.append(converted)
        for key, value in state.items():
            if value.is_floating_point():
                total[key] = total[key] + w * value if key in total else w * value
            else:
                total.setdefault(key, value)
        del policy
    ref_state = reference.state_dict()
    averaged = {k: v.to(ref_state[k].dtype).contiguous() for k, v in total.items()}
    with atomic_directory(out) as tmp:
        tmp.chmod(0o755)
        shutil.copytree(dirs[0], tmp / PRETRAINED_MODEL_DIR)
        write_safetensors(averaged, str(tmp / PRETRAINED_MODEL_DIR / MODEL_SAFETENSORS), metadata={"format": "pt"})
        provenance = {
            "reference": str(dirs[0].resolve()),
            "sources": [{"checkpoint": str(d.resolve()), "weight": w, "reexpressed": c}
                        for d, w, c in zip(dirs, norm_weights, reexpressed)],
        }
        (tmp / PRETRAINED_MODEL_DIR / AVERAGE_JSON).write_text(json.dumps(provenance, indent=4) + "\n")
    return AverageResult(out=out, sources=dirs, weights=norm_weights, reexpressed=reexpressed)
