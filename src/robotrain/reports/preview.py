"""A quick look at one episode of a LeRobot dataset: what the cameras saw and what the arm did.

Two PNGs per episode: a contact sheet (rows = cameras, columns = evenly spaced frames,
each titled with its time) and the state/action trajectory of every joint over time.
Checking these before training catches the usual data bugs: a swapped or black camera,
units off by a factor (degrees vs -100..100), actions lagging or leading the state.

Frames come through `robotrain.data.dataset.LeRobotDataset` (house rule: only `data/`
opens parquet or video files), decoded per sample so no cache is written.

Example:
    robotrain dataset preview tests/fixtures/so101_fixture_v30 --episode 0 --out preview/
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robotrain.constants import ACTION, OBS_STATE, SO101_JOINT_NAMES, TIMESTAMP
from robotrain.errors import DatasetError
from robotrain.system.files import atomic_path, make_folder

logger = logging.getLogger(__name__)

DEFAULT_N_FRAMES = 8


def _field(record: Any, name: str) -> Any:
    return record[name] if isinstance(record, dict) else getattr(record, name)


def _names(meta: Any, key: str, dim: int) -> list[str]:
    """Joint names from info.json's `names` (a list, or LeRobot's {"motors": [...]})."""
    names = (getattr(meta, "features", {}) or {}).get(key, {}).get("names")
    if isinstance(names, dict):
        names = next((v for v in names.values() if isinstance(v, list)), None)
    if isinstance(names, list) and len(names) == dim:
        return [str(n) for n in names]
    if dim == len(SO101_JOINT_NAMES):
        return list(SO101_JOINT_NAMES)
    return [f"{key}[{i}]" for i in range(dim)]


def _to_uint8_hwc(img: Any) -> np.ndarray:
    arr = np.asarray(img.detach().cpu() if hasattr(img, "detach") else img, dtype=np.float32)  # (C, H, W) in [0, 1]
    return (np.clip(arr.transpose(1, 2, 0), 0.0, 1.0) * 255).round().astype(np.uint8)


def _save(fig: Any, path: Path) -> None:
    # matplotlib inside the plotting functions: the Agg backend is chosen just before pyplot
    # loads, so importing this module does not switch the backend of a user's session.
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def plot_contact_sheet(
    frames: dict[str, list[np.ndarray]], times: Sequence[float], frame_ix: Sequence[int], title: str, path: Path
) -> None:
    """frames[camera] = list of (H, W, 3) uint8 at `times` (s) / `frame_ix`; one row per camera."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cams = list(frames)
    n = len(times)
    h, w = frames[cams[0]][0].shape[:2]
    fig, axes = plt.subplots(len(cams), n, figsize=(1.9 * n, 1.9 * len(cams) * h / w + 0.6), squeeze=False)
    for r, cam in enumerate(cams):
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(frames[cam][c])
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"t={times[c]:.2f}s (#{frame_ix[c]})", fontsize=8)
            if c == 0:
                ax.set_ylabel(cam.rsplit(".", 1)[-1], fontsize=9)
    fig.suptitle(title, fontsize=10)
    _save(fig, path)


def plot_trajectories(
    t: np.ndarray, state: np.ndarray, action: np.ndarray | None, names: list[str], title: str, path: Path
) -> None:
    """state/action (T, D) against time t (T,) seconds, one subplot per joint."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dim = state.shape[1]
    cols = 2 if dim > 1 else 1
    rows = -(-dim // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(11, 2.3 * rows), sharex=True, squeeze=False)
    for j in range(rows * cols):
        ax = axes[j // cols][j % cols]
        if j >= dim:
            ax.set_visible(False)
            continue
        ax.plot(t, state[:, j], label=OBS_STATE, lw=1.5)
        if action is not None and action.shape[1] > j:
            ax.plot(t, action[:, j], label=ACTION, lw=1.2, ls="--")
        unit = "opening (0-100)" if "gripper" in names[j] else "position (deg in sim)"
        ax.set_title(names[j], fontsize=9)
        ax.set_ylabel(unit, fontsize=8)
        ax.grid(True, alpha=0.3)
        if j == 0:
            ax.legend(fontsize=8)
    for c in range(cols):
        axes[-1][c].set_xlabel("time (s)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def _trajectories(ds: Any, n: int, fps: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """state (T, D), action (T, D) or None, timestamps (T,) of every frame of `ds`.

    Uses the reader's columnar `column(key)` (no video decoding); a reader without it is
    walked item by item, which decodes every frame.
    """
    if hasattr(ds, "column"):
        state = np.asarray(ds.column(OBS_STATE), dtype=np.float32).reshape(n, -1)
        try:
            action = np.asarray(ds.column(ACTION), dtype=np.float32).reshape(n, -1)
        except KeyError:
            action = None
        try:
            t = np.asarray(ds.column(TIMESTAMP), dtype=np.float64).reshape(n)
        except KeyError:
            t = np.arange(n) / fps
        return state, action, t
    states, actions, times = [], [], []
    for i in range(n):
        item = ds[i]
        states.append(np.asarray(item[OBS_STATE], dtype=np.float32))
        if ACTION in item:
            actions.append(np.asarray(item[ACTION], dtype=np.float32).reshape(-1, states[-1].shape[-1])[0])
        times.append(float(item.get(TIMESTAMP, i / fps)))
    action = np.stack(actions) if len(actions) == n else None
    return np.stack(states), action, np.asarray(times)


def preview_episode(
    dataset_root: str | Path, episode: int, out_dir: str | Path, n_frames: int = DEFAULT_N_FRAMES
) -> dict[str, Path]:
    """Write `episode_<E>_frames.png` and `episode_<E>_trajectories.png` into `out_dir`."""
    # Looked up when called: tests/test_report_preview.py puts a fake reader in their place.
    from robotrain.data.dataset import LeRobotDataset
    from robotrain.data.format import load_meta

    root = Path(dataset_root)
    meta = load_meta(root)
    indices = [int(_field(e, "episode_index")) for e in meta.episodes]
    if episode not in indices:
        span = f"{min(indices)}..{max(indices)}" if indices else "none"
        raise DatasetError(f"episode {episode} is not in the dataset (episodes {span})", root)
    record = meta.episodes[indices.index(episode)]
    ds = LeRobotDataset(root, episodes=[episode], use_cache=False)
    n = len(ds)
    if n == 0:
        raise DatasetError(f"episode {episode} has no frames", root)
    cams = list(meta.camera_keys)
    picks = sorted(set(np.linspace(0, n - 1, min(n_frames, n)).round().astype(int).tolist()))

    frames: dict[str, list[np.ndarray]] = {c: [] for c in cams}
    for i in picks:
        item = ds[i]  # decodes only the picked frames (no cache is written)
        for c in cams:
            frames[c].append(_to_uint8_hwc(item[c]))
    state, action, t = _trajectories(ds, n, meta.fps)  # (T, D), (T, D) | None, (T,)
    times = t.tolist()
    tasks = _field(record, "tasks") if isinstance(record, dict) or hasattr(record, "tasks") else []
    task = str(tasks[0]) if isinstance(tasks, (list, tuple)) and tasks else ""
    title = f"{root.name} episode {episode} ({n} frames, {meta.fps} fps) {task}".strip()

    out = make_folder(out_dir)
    paths: dict[str, Path] = {}
    if cams:
        paths["frames"] = out / f"episode_{episode:06d}_frames.png"
        plot_contact_sheet(frames, [times[i] for i in picks], picks, title, paths["frames"])
    else:
        logger.warning("%s: no cameras; contact sheet skipped", root)
    paths["trajectories"] = out / f"episode_{episode:06d}_trajectories.png"
    plot_trajectories(t, state, action, _names(meta, OBS_STATE, state.shape[1]), title, paths["trajectories"])
    logger.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return paths
