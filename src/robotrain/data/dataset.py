"""`LeRobotDataset`: frames plus temporal windows, the way LeRobot's dataset returns them.

`ds[i]` is a dict with every feature at frame i (state, action, timestamp, frame_index,
episode_index, index, task_index as tensors, images float32 (C, H, W) in [0, 1]), the
`task` string, and for each key of `delta_timestamps` a window (T, ...) plus a
`<key>_is_pad` bool mask: offsets before the episode's first / after its last frame are
clamped to that frame and flagged (reference §3). Windows never cross episodes.

Speed: the parquet is read once into numpy arrays; frames come from the decode-once
uint8 memmap cache (`robotrain.data.cache`), opened lazily in each DataLoader worker so
all workers share the OS page cache instead of pickling arrays.

Example:
    PYTHONPATH=src python -c "from robotrain.data.dataset import LeRobotDataset; \
ds = LeRobotDataset('tests/fixtures/so101_fixture_v30', {'action': [i / 30 for i in range(10)]}, \
image_size=(96, 96)); print(len(ds), {k: getattr(v, 'shape', v) for k, v in ds[0].items()})"
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robotrain.constants import OBS_IMAGES_PREFIX, TASK, TASK_INDEX, TIMESTAMP, frame_index_key, pad_key
from robotrain.data.cache import FrameCache, ensure_cache
from robotrain.data.format import TIMESTAMP_TOLERANCE_S, DatasetMeta, load_frame_table, load_meta
from robotrain.data.images import check_mode, prepare_frames, to_unit_float
from robotrain.data.video import check_frame_size, decode_frames_at
from robotrain.errors import ConfigError

log = logging.getLogger(__name__)

IMAGE_DTYPES = ("float32", "uint8")


def delta_timestamps_to_indices(
    delta_timestamps: dict[str, Sequence[float]], fps: int, features: Iterable[str],
    tolerance_s: float = TIMESTAMP_TOLERANCE_S,
) -> dict[str, np.ndarray]:
    """Offsets in seconds -> offsets in frames; each must be a multiple of 1/fps."""
    features = set(features)
    out = {}
    for key, deltas in delta_timestamps.items():
        if key not in features:
            raise ConfigError(f"delta_timestamps key {key!r} is not a feature of the dataset ({sorted(features)})")
        deltas = np.asarray(list(deltas), dtype=np.float64)
        if deltas.ndim != 1 or deltas.size == 0:
            raise ConfigError(f"delta_timestamps[{key!r}] must be a non-empty list of seconds")
        frames = np.round(deltas * fps)
        bad = np.abs(frames / fps - deltas) > tolerance_s
        if bad.any():
            raise ConfigError(
                f"delta_timestamps[{key!r}] has {deltas[bad][:3].tolist()}, not multiples of 1/fps = {1 / fps:.6f}s"
            )
        out[key] = frames.astype(np.int64)
    return out


class LeRobotDataset(torch.utils.data.Dataset):
    """A LeRobot dataset (v3.0 or v2.1) on local disk, optionally restricted to `episodes`.

    Args:
        root: dataset directory (holds meta/, data/, videos/), or its already loaded
            `DatasetMeta` (possibly a selection of episodes, `load_meta(root, episodes)`):
            the frame table and the frame cache hold that meta's episodes, so datasets
            made from one meta (a train and a validation split) share one cache.
        delta_timestamps: {feature: [offsets in seconds]} windows, e.g. ACT's
            {"action": [i / 30 for i in range(100)]}.
        episodes: episode indices to use (default all); `len(ds)` counts their frames
            and `ds[i]` walks them in order, while `index` stays the global frame index.
            With a path as `root` only these episodes are read (their files suffice).
        image_size: (H, W) of returned images, None for the native size.
        resize_mode: "resize" (stretch to image_size) or "pad" (keep aspect, pad left/top).
        cache_dir: frame cache root (default $ROBOTRAIN_CACHE_DIR or ~/.cache/robotrain/frames).
        use_cache: frames from the decode-once memmap cache (built on first use); False
            decodes the videos for every sample like LeRobot does.
        cache_workers: processes for building the cache (None: all cores when worth it).
        image_dtype: "float32" (default, LeRobot's: values in [0, 1]) or "uint8" (values
            0..255, converted by the consumer, e.g. on the GPU: 4x less data through the
            DataLoader's shared memory, which is what limits a cached loader).
        frames: "pixels" (default) or "indices": each camera's frames are replaced by
            their cache row indices under `frame_index.<camera key>` (int64, (T,) or ()),
            for a consumer holding the cache in device memory (`data.device_frames`).
    """

    def __init__(
        self,
        root: str | Path | DatasetMeta,
        delta_timestamps: dict[str, Sequence[float]] | None = None,
        episodes: Sequence[int] | None = None,
        image_size: tuple[int, int] | None = None,
        resize_mode: str = "resize",
        cache_dir: str | Path | None = None,
        use_cache: bool = True,
        cache_workers: int | None = None,
        tolerance_s: float = TIMESTAMP_TOLERANCE_S,
        progress: bool = True,
        image_dtype: str = "float32",
        frames: str = "pixels",
    ) -> None:
        if frames not in ("pixels", "indices"):
            raise ConfigError(f"frames must be 'pixels' or 'indices', got {frames!r}")
        if frames == "indices" and not use_cache:
            raise ConfigError("frames='indices' needs the frame cache (use_cache=True)")
        self.frames = frames
        if image_dtype not in IMAGE_DTYPES:
            raise ConfigError(f"image_dtype must be one of {', '.join(IMAGE_DTYPES)}, got {image_dtype!r}")
        self.image_dtype = image_dtype
        check_mode(resize_mode)
        if image_size is not None:
            image_size = tuple(int(v) for v in image_size)  # type: ignore[assignment]
            if len(image_size) != 2 or min(image_size) <= 0:
                raise ConfigError(f"image_size must be (height, width) positive integers, got {image_size!r}")
        self.meta: DatasetMeta = root if isinstance(root, DatasetMeta) else load_meta(root, episodes)
        self.root = self.meta.root
        self.image_size = image_size
        self.resize_mode = resize_mode
        self.tolerance_s = tolerance_s
        self.delta_timestamps = dict(delta_timestamps) if delta_timestamps else None
        self.delta_indices = (
            delta_timestamps_to_indices(delta_timestamps, self.meta.fps, self.meta.features, tolerance_s)
            if delta_timestamps else {}
        )
        self._columns = load_frame_table(self.meta)  # {key: (total_frames, ...)}

        known = {e.episode_index: e for e in self.meta.episodes}
        if episodes is None:
            selected = list(self.meta.episodes)
        else:
            missing = sorted(set(int(e) for e in episodes) - set(known))
            if missing:
                raise ConfigError(
                    f"episodes {missing} are not in the dataset (it has {len(known)}: "
                    f"{min(known, default=0)}..{max(known, default=-1)})"
                )
            selected = [known[e] for e in sorted(set(int(e) for e in episodes))]
        self.episodes = [e.episode_index for e in selected]
        # position in this dataset -> global frame index
        self._global = (
            np.concatenate([np.arange(e.dataset_from_index, e.dataset_to_index) for e in selected])
            if selected else np.zeros(0, dtype=np.int64)
        )
        # per global frame: its episode's range and record (windows clamp to it)
        self._ep_from = np.zeros(self.meta.total_frames, dtype=np.int64)
        self._ep_to = np.zeros(self.meta.total_frames, dtype=np.int64)
        self._ep_pos = np.zeros(self.meta.total_frames, dtype=np.int64)
        for pos, e in enumerate(self.meta.episodes):
            sl = slice(e.dataset_from_index, e.dataset_to_index)
            self._ep_from[sl], self._ep_to[sl], self._ep_pos[sl] = e.dataset_from_index, e.dataset_to_index, pos

        self.cache: FrameCache | None = None
        if use_cache and self.meta.camera_keys:
            self.cache, _ = ensure_cache(
                self.meta, image_size, resize_mode, cache_dir, num_workers=cache_workers,
                progress=progress, timestamps=self._columns[TIMESTAMP],
            )
        self._frames: dict[str, np.ndarray] | None = None  # opened lazily, per process
        self._frames_pid: int | None = None

    # ------------------------------------------------------------------ properties
    @property
    def fps(self) -> int:
        return self.meta.fps

    @property
    def features(self) -> dict[str, dict]:
        return self.meta.features

    @property
    def camera_keys(self) -> tuple[str, ...]:
        return self.meta.camera_keys

    @property
    def stats(self) -> dict[str, dict[str, np.ndarray]]:
        return self.meta.stats

    @property
    def num_frames(self) -> int:
        return len(self._global)

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    def column(self, key: str) -> np.ndarray:
        """All values of a parquet column for this dataset's frames, (len(ds), ...)."""
        return self._columns[key][self._global]

    def __len__(self) -> int:
        return len(self._global)

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_frames"] = None  # never pickle the memmaps: each worker maps the file itself
        state["_frames_pid"] = None
        return state

    def _frame_arrays(self) -> dict[str, np.ndarray]:
        if self._frames is None or self._frames_pid != os.getpid():
            assert self.cache is not None
            self._frames = {k: self.cache.open(k) for k in self.meta.camera_keys}
            self._frames_pid = os.getpid()
        return self._frames

    # ------------------------------------------------------------------ items
    def _global_index(self, i: int) -> int:
        n = len(self._global)
        try:
            i = int(i)
        except (TypeError, ValueError):
            raise TypeError(f"dataset index must be an integer, got {type(i).__name__}") from None
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of range for a dataset of {n} frames")
        return int(self._global[i % n])

    def __getitem__(self, i: int) -> dict[str, Any]:
        g = self._global_index(i)
        lo, hi = self._ep_from[g], self._ep_to[g]
        item: dict[str, Any] = {}
        windows: dict[str, np.ndarray] = {}
        for key, deltas in self.delta_indices.items():
            q = g + deltas
            windows[key] = np.clip(q, lo, hi - 1)
            item[pad_key(key)] = torch.from_numpy((q < lo) | (q >= hi))
        for key, col in self._columns.items():
            if key in windows:
                item[key] = torch.from_numpy(col[windows[key]])
            else:
                item[key] = torch.from_numpy(np.array(col[g]))  # 0-d for scalar columns
        for key in self.meta.camera_keys:
            idx = windows.get(key)
            if self.frames == "indices":  # the consumer gathers the pixels (DeviceFrames)
                item[frame_index_key(key)] = torch.tensor(g) if idx is None else torch.from_numpy(idx)
                continue
            frames = self._images(key, g, np.array([g]) if idx is None else idx)  # (T, 3, H, W)
            item[key] = frames[0] if idx is None else frames
        item[TASK] = self.meta.tasks[int(self._columns[TASK_INDEX][g])]
        return item

    def _images(self, key: str, g: int, idx: np.ndarray) -> torch.Tensor:
        """Frames at global indices `idx` (all in g's episode) -> (T, 3, H, W) float32 in
        [0, 1] (or uint8 0..255 with image_dtype="uint8")."""
        if self.cache is not None:
            u8 = torch.from_numpy(self._frame_arrays()[key][idx])  # fancy index copies from the memmap
            return u8 if self.image_dtype == "uint8" else to_unit_float(u8)
        span = self.meta.episodes[self._ep_pos[g]].videos[key]
        times = span.from_timestamp + self._columns[TIMESTAMP][idx].astype(np.float64)
        frames = decode_frames_at(span.path, times, self.tolerance_s)
        check_frame_size(frames.shape[1:3], self.meta.camera_shape(key)[:2], span.path)
        return prepare_frames(frames, self.image_size, self.resize_mode, self.image_dtype)


def split_episodes(meta: DatasetMeta, val_fraction: float = 0.1, seed: int = 0) -> tuple[list[int], list[int]]:
    """Random train/validation split by whole episodes (no frame leaks across).

    At least one validation episode when val_fraction > 0 and there are >= 2 episodes;
    never all of them. Returns sorted episode indices (train, val).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    episodes = np.array(sorted(e.episode_index for e in meta.episodes), dtype=np.int64)
    n = len(episodes)
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n >= 2:
        n_val = max(n_val, 1)
    n_val = min(n_val, max(n - 1, 0))
    perm = np.random.default_rng(seed).permutation(n)
    val = sorted(episodes[perm[:n_val]].tolist())
    train = sorted(episodes[perm[n_val:]].tolist())
    return train, val


def images_to_float(batch: dict[str, Any], device: torch.device | str | None = None) -> dict[str, Any]:
    """Move a batch's tensors to `device`; uint8 camera images become float32 in [0, 1].

    With `image_dtype="uint8"` the DataLoader carries 4x fewer bytes through shared
    memory, and the conversion happens here, after the copy (free on a GPU):
        batch = images_to_float(next(loader_iter), "cuda")
    """
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if torch.is_tensor(value):
            if device is not None:
                value = value.to(device, non_blocking=True)
            if key.startswith(OBS_IMAGES_PREFIX) and value.dtype == torch.uint8:
                value = to_unit_float(value)
        out[key] = value
    return out

