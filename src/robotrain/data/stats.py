"""Per-episode feature statistics and their aggregation into dataset statistics.

LeRobot stores, for every feature, `min, max, mean, std, count` and the quantiles
`q01, q10, q50, q90, q99`: per episode as flattened columns `stats/<feature>/<stat>` of
`meta/episodes/*.parquet`, and aggregated over the dataset in `meta/stats.json`.
Vector features (state, action, timestamp, ...) have stats of shape [D]; images have
per-channel stats of shape [3, 1, 1] on pixel values scaled to [0, 1]; `count` is [1].

Aggregation (same conventions as LeRobot, so our numbers mean what theirs mean):
- min / max: element-wise over episodes; mean: count-weighted;
- std: pooled population std, `var = sum n_i (std_i^2 + (mean_i - mean)^2) / N` (exact);
- quantiles: count-weighted mean of the episode quantiles (an approximation: exact
  dataset quantiles would need every frame again, which a streaming writer does not keep).

Stats are `dict[str, np.ndarray]` per feature; `count` and the min/max of integer
features are int64, everything else float64.

Example:
    >>> import numpy as np
    >>> s = compute_feature_stats(np.zeros((4, 6), np.float32))
    >>> s["mean"].shape, int(s["count"][0])
    ((6,), 4)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

QUANTILES: dict[str, float] = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
STAT_NAMES: tuple[str, ...] = ("min", "max", "mean", "std", "count", *QUANTILES)
# Longest image side kept for image stats: statistics of a 4x-strided image are
# indistinguishable from the full image's, at a 16th of the cost.
IMAGE_STATS_MAX_SIDE = 160

FeatureStats = dict[str, np.ndarray]
Stats = dict[str, FeatureStats]


def compute_feature_stats(values: np.ndarray) -> FeatureStats:
    """Stats of a vector feature over one episode.

    values: (T,) or (T, D) numbers. Returns arrays of shape (D,) (`count` (1,)).
    Integer inputs keep integer min/max (as LeRobot writes them for frame_index etc.).
    """
    x = np.asarray(values)
    if x.ndim == 1:
        x = x[:, None]  # (T, 1)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"values: expected a non-empty (T, D) array, got shape {x.shape}")
    is_int = np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_
    xf = x.astype(np.float64)
    stats: FeatureStats = {
        "min": x.min(axis=0).astype(np.int64) if is_int else xf.min(axis=0),
        "max": x.max(axis=0).astype(np.int64) if is_int else xf.max(axis=0),
        "mean": xf.mean(axis=0),
        "std": xf.std(axis=0),
        "count": np.array([x.shape[0]], dtype=np.int64),
    }
    qs = np.quantile(xf, list(QUANTILES.values()), axis=0)  # (5, D)
    for i, name in enumerate(QUANTILES):
        stats[name] = qs[i]
    return stats


def sample_frame_indices(num_frames: int, max_frames: int) -> np.ndarray:
    """Evenly spaced frame indices (first and last included), at most `max_frames`."""
    if num_frames <= max_frames:
        return np.arange(num_frames)
    return np.unique(np.round(np.linspace(0, num_frames - 1, max_frames)).astype(np.int64))


def _hist_quantile(cum: np.ndarray, total: int, q: float) -> float:
    """Linear-interpolated quantile (numpy's default) of uint8 data given its cumsum."""
    pos = q * (total - 1)
    lo = int(np.floor(pos))
    frac = pos - lo
    v_lo = int(np.searchsorted(cum, lo, side="right"))  # value of the lo-th sorted element
    v_hi = int(np.searchsorted(cum, min(lo + 1, total - 1), side="right"))
    return v_lo + frac * (v_hi - v_lo)


class ImageStatsAccumulator:
    """Per-channel stats of uint8 RGB frames fed one at a time (streaming: O(1) memory).

    Each frame is strided so its longest side is at most IMAGE_STATS_MAX_SIDE, and its
    pixels are counted into a 256-bin histogram per channel, which gives exact mean, std,
    min, max and quantiles of the kept pixels without sorting. Values are on [0, 1].
    """

    def __init__(self) -> None:
        self.hist = np.zeros((3, 256), dtype=np.int64)
        self.frames = 0

    def add(self, frame: np.ndarray) -> None:
        """frame: (H, W, 3) uint8."""
        f = np.asarray(frame)
        if f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8:
            raise ValueError(f"frames: expected (H, W, 3) uint8 frames, got {f.shape} {f.dtype}")
        step = max(1, -(-max(f.shape[:2]) // IMAGE_STATS_MAX_SIDE))
        f = f[::step, ::step]
        for c in range(3):
            self.hist[c] += np.bincount(f[..., c].ravel(), minlength=256)
        self.frames += 1

    def result(self, num_frames: int | None = None) -> FeatureStats:
        """Stats of shape (3, 1, 1); `count` is `num_frames` (the episode length, the weight
        in aggregation), by default the number of frames added."""
        if self.frames == 0:
            raise ValueError("frames: no frames to compute image stats from")
        values = np.arange(256, dtype=np.float64) / 255.0
        total = int(self.hist[0].sum())
        stats: FeatureStats = {name: np.zeros((3, 1, 1)) for name in ("min", "max", "mean", "std", *QUANTILES)}
        for c in range(3):
            h = self.hist[c]
            nz = np.nonzero(h)[0]
            mean = float((h * values).sum() / total)
            var = float((h * (values - mean) ** 2).sum() / total)
            stats["min"][c] = values[nz[0]]
            stats["max"][c] = values[nz[-1]]
            stats["mean"][c] = mean
            stats["std"][c] = np.sqrt(max(var, 0.0))
            cum = np.cumsum(h)
            for name, q in QUANTILES.items():
                stats[name][c] = _hist_quantile(cum, total, q) / 255.0
        stats["count"] = np.array([num_frames if num_frames is not None else self.frames], dtype=np.int64)
        return {name: stats[name] for name in STAT_NAMES}


def compute_image_stats(frames: np.ndarray | Iterable[np.ndarray], num_frames: int | None = None) -> FeatureStats:
    """Per-channel stats of uint8 RGB frames (N, H, W, 3) (or an iterable of (H, W, 3)),
    on [0, 1] pixel values, shape (3, 1, 1); see ImageStatsAccumulator."""
    acc = ImageStatsAccumulator()
    for frame in frames:
        acc.add(frame)
    return acc.result(num_frames)


def aggregate_stats(episode_stats: Sequence[Mapping[str, Mapping[str, np.ndarray]]]) -> Stats:
    """Dataset stats from per-episode stats (see module docstring for the rules).

    Features missing from some episodes are aggregated over the episodes that have them;
    stats missing from some episodes (e.g. quantiles in v2.1 files) are left out.
    """
    if not episode_stats:
        raise ValueError("episode_stats: need at least one episode")
    keys: list[str] = []
    for ep in episode_stats:
        keys += [k for k in ep if k not in keys]
    out: Stats = {}
    for key in keys:
        eps = [ep[key] for ep in episode_stats if key in ep]
        counts = np.array([float(np.asarray(e["count"]).reshape(-1)[0]) for e in eps])  # (E,)
        total = counts.sum()
        w = counts / total
        present = [s for s in STAT_NAMES if all(s in e for e in eps)]

        def stack(name: str) -> np.ndarray:
            return np.stack([np.asarray(e[name]) for e in eps])  # (E, *shape)

        def wsum(arr: np.ndarray) -> np.ndarray:
            return np.tensordot(w, arr.astype(np.float64), axes=1)

        agg: FeatureStats = {}
        if "min" in present:
            agg["min"] = stack("min").min(axis=0)
        if "max" in present:
            agg["max"] = stack("max").max(axis=0)
        if "mean" in present:
            means = stack("mean").astype(np.float64)
            mean = wsum(means)
            agg["mean"] = mean
            if "std" in present:
                stds = stack("std").astype(np.float64)
                var = wsum(stds**2 + (means - mean) ** 2)
                agg["std"] = np.sqrt(np.maximum(var, 0.0))
        agg["count"] = np.array([int(total)], dtype=np.int64)
        for name in QUANTILES:
            if name in present:
                agg[name] = wsum(stack(name))
        out[key] = {s: agg[s] for s in STAT_NAMES if s in agg}
    return out


def stats_to_json(stats: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, dict[str, list]]:
    """Nested lists, as in `meta/stats.json`."""
    return {k: {s: np.asarray(v).tolist() for s, v in fs.items()} for k, fs in stats.items()}


def stats_from_json(obj: Mapping[str, Mapping[str, list]]) -> Stats:
    """Inverse of `stats_to_json` (integers stay int64, the rest float64)."""
    out: Stats = {}
    for k, fs in obj.items():
        out[k] = {}
        for s, v in fs.items():
            arr = np.asarray(v)
            out[k][s] = arr.astype(np.int64) if np.issubdtype(arr.dtype, np.integer) else arr.astype(np.float64)
    return out
