"""Episode stats and their aggregation (robotrain.data.stats)."""

from __future__ import annotations

import numpy as np
import pytest

from robotrain.data import stats as S


def test_feature_stats_match_numpy():
    x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    s = S.compute_feature_stats(x)
    np.testing.assert_allclose(s["mean"], x.astype(np.float64).mean(0))
    np.testing.assert_allclose(s["std"], x.astype(np.float64).std(0))
    np.testing.assert_allclose(s["q90"], np.quantile(x.astype(np.float64), 0.9, axis=0))
    assert s["count"].tolist() == [50] and list(s) == list(S.STAT_NAMES)
    ints = S.compute_feature_stats(np.arange(5))
    assert ints["min"].dtype == np.int64 and ints["max"].tolist() == [4] and ints["mean"].shape == (1,)


def test_image_stats_exact_on_kept_pixels():
    frames = np.random.default_rng(1).integers(0, 256, (4, 20, 30, 3), dtype=np.uint8)
    s = S.compute_image_stats(frames, num_frames=9)
    v = frames.reshape(-1, 3) / 255.0
    for name, fn in [("mean", np.mean), ("std", np.std), ("min", np.min), ("max", np.max)]:
        np.testing.assert_allclose(s[name].ravel(), fn(v, axis=0), atol=1e-12)
    for name, q in S.QUANTILES.items():
        np.testing.assert_allclose(s[name].ravel(), np.quantile(v, q, axis=0), atol=1e-12)
    assert s["mean"].shape == (3, 1, 1) and s["count"].tolist() == [9]


def test_large_images_are_strided():
    frames = np.zeros((1, 480, 640, 3), np.uint8)
    frames[0, ::4, ::4] = 255  # exactly the pixels kept by a stride of 4
    assert S.compute_image_stats(frames)["mean"].ravel().tolist() == [1.0, 1.0, 1.0]


def test_aggregate_equals_stats_of_concatenation():
    rng = np.random.default_rng(2)
    eps = [rng.normal(i, 1 + i, size=(n, 4)) for i, n in enumerate([10, 25, 7])]
    agg = S.aggregate_stats([{"x": S.compute_feature_stats(e)} for e in eps])["x"]
    full = np.concatenate(eps)
    np.testing.assert_allclose(agg["mean"], full.mean(0), rtol=1e-12)
    np.testing.assert_allclose(agg["std"], full.std(0), rtol=1e-12)
    np.testing.assert_array_equal(agg["min"], full.min(0))
    np.testing.assert_array_equal(agg["max"], full.max(0))
    assert agg["count"].tolist() == [42]
    # quantiles: count-weighted mean of the episodes' (LeRobot's convention)
    w = np.array([10, 25, 7]) / 42
    np.testing.assert_allclose(agg["q50"], sum(wi * np.quantile(e, 0.5, axis=0) for wi, e in zip(w, eps)))


def test_aggregate_skips_missing_stats_and_json_round_trip():
    a = {"x": {k: v for k, v in S.compute_feature_stats(np.arange(4.0)).items() if not k.startswith("q")}}
    b = {"x": S.compute_feature_stats(np.arange(6.0))}
    agg = S.aggregate_stats([a, b])
    assert "q50" not in agg["x"] and agg["x"]["count"].tolist() == [10]
    back = S.stats_from_json(S.stats_to_json(agg))
    for k, v in agg["x"].items():
        np.testing.assert_array_equal(back["x"][k], v)
    with pytest.raises(ValueError, match="episode_stats"):
        S.aggregate_stats([])
    with pytest.raises(ValueError, match="values"):
        S.compute_feature_stats(np.zeros((0, 3)))
