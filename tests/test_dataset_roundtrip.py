"""Writer -> reader round trip: actions/states bit-exact, frames within codec tolerance."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from robotrain.constants import ACTION, OBS_STATE
from robotrain.data.dataset import LeRobotDataset
from robotrain.data.format import load_meta, validate_dataset

writer_mod = pytest.importorskip("robotrain.data.writer")

CAMS = {"observation.images.front": (64, 80), "observation.images.wrist": (48, 64)}
LENGTHS = (20, 33, 12)
log = logging.getLogger(__name__)


def _frames(t0: int, n: int, h: int, w: int, cam: int) -> np.ndarray:
    """Smooth moving content (codecs keep it well; noise they would not)."""
    t = np.arange(t0, t0 + n)[:, None, None]
    y, x = (g[None] for g in np.mgrid[0:h, 0:w])
    out = np.empty((n, h, w, 3), np.uint8)
    out[..., 0] = (128 + 100 * np.sin((x + 2 * t) / 9.0 + cam)).astype(np.uint8)
    out[..., 1] = (128 + 100 * np.cos((y - t) / 7.0)).astype(np.uint8)
    out[..., 2] = (60 + (x + y + t) % 120).astype(np.uint8) // 2 * 2
    return out


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("rt") / "ds"
    rng = np.random.default_rng(0)
    truth: dict = {"state": [], "action": [], "images": {k: [] for k in CAMS}, "tasks": []}
    with writer_mod.DatasetWriter(root, fps=30, camera_shapes=CAMS) as w:
        t0 = 0
        for e, n in enumerate(LENGTHS):
            state = rng.normal(size=(n, 6)).astype(np.float32) * 30
            action = rng.normal(size=(n, 6)).astype(np.float32) * 30
            images = {k: _frames(t0, n, h, wd, i) for i, (k, (h, wd)) in enumerate(CAMS.items())}
            task = "task A" if e != 1 else "task B"
            w.add_episode(task, state, action, images)
            truth["state"].append(state)
            truth["action"].append(action)
            truth["tasks"] += [task] * n
            for k in CAMS:
                truth["images"][k].append(images[k])
            t0 += n
    return root, truth


def test_roundtrip_validates(written) -> None:
    root, _ = written
    assert validate_dataset(root) == []
    meta = load_meta(root)
    assert meta.version == "v3.0" and [e.length for e in meta.episodes] == list(LENGTHS)


@pytest.mark.parametrize("use_cache", [True, False])
def test_roundtrip_values(written, tmp_path: Path, use_cache: bool) -> None:
    root, truth = written
    ds = LeRobotDataset(root, cache_dir=tmp_path, use_cache=use_cache, progress=False)
    n = sum(LENGTHS)
    assert len(ds) == n
    state = np.concatenate(truth["state"])
    action = np.concatenate(truth["action"])
    np.testing.assert_array_equal(ds.column(OBS_STATE), state)  # bit-exact
    np.testing.assert_array_equal(ds.column(ACTION), action)
    errors = {}
    for k in CAMS:
        ref = np.concatenate(truth["images"][k])
        idx = range(n) if use_cache else range(0, n, 7)
        got = torch.stack([ds[i][k] for i in idx]).permute(0, 2, 3, 1).numpy() * 255.0
        err = np.abs(got - ref[list(idx)].astype(np.float64))
        errors[k] = float(err.mean())
        assert errors[k] < 6.0, f"{k}: mean absolute pixel error {errors[k]:.2f} (0..255)"
    print(f"round trip mean absolute pixel error (0..255): {errors}")
    assert [ds[i]["task"] for i in (0, LENGTHS[0], n - 1)] == ["task A", "task B", "task A"]
    assert torch.equal(ds[LENGTHS[0]][ACTION], torch.from_numpy(truth["action"][1][0]))
