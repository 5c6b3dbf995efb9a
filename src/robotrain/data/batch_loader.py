"""Whole batches gathered from the frame cache at once (`robotrain train --loader batched`).

Why: torch's DataLoader builds a batch sample by sample (`__getitem__` in a worker, a
dozen small arrays per sample), pickles every sample's tensors to the main process and
stacks them there; for ACT-style samples at 240x320 that capped a 2-core machine at ~2,000
samples/s (docs/benchmarks.md). Here one batch is a handful of vectorised numpy
operations on arrays already in memory:
- each camera's frames: one fancy index of the cache's memory map (rows in the batch's
  order: sorting them first needs a second copy to restore the order, measured 3x slower
  with the cache in the page cache, where row order does not matter);
- every parquet column, and every temporal window (ACT's 100-step action chunk): one
  gather of a (B, T) index array clamped to each sample's episode, `*_is_pad` from the
  same comparison;
- the task strings from the task indices.
It runs in the training process, in background threads that keep a few batches ready
(numpy releases the GIL while copying), so nothing is pickled between processes at all.

The batches are those of `DataLoader(dataset, batch_size, sampler=...)` over the same
`LeRobotDataset`: the same keys, dtypes, shapes and values (tests compare them), so the
training loop takes either.

    loader = BatchedLoader(LeRobotDataset(root, {"action": [i / 30 for i in range(100)]},
                                          image_size=(240, 320), image_dtype="uint8"))
    batch = loader.gather(np.array([5, 17, 2]))           # positions in the dataset
    for batch in loader.iterate(position_batches, threads=2): ...
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from robotrain.constants import TASK, TASK_INDEX, frame_index_key, pad_key
from robotrain.data.dataset import LeRobotDataset
from robotrain.data.images import to_unit_float
from robotrain.errors import ConfigError


class BatchedLoader:
    """Batches of a cached `LeRobotDataset`, gathered whole (see the module docstring)."""

    def __init__(self, dataset: LeRobotDataset) -> None:
        if not isinstance(dataset, LeRobotDataset):
            raise ConfigError(f"--loader batched needs a LeRobot dataset, got {type(dataset).__name__}")
        if dataset.camera_keys and dataset.cache is None:
            raise ConfigError("--loader batched reads frames from the frame cache; drop --use-cache false")
        self.dataset = dataset
        # The dataset's own arrays (read once from the parquet files): shared, never copied.
        self._columns: dict[str, np.ndarray] = dataset._columns
        self._global: np.ndarray = dataset._global
        self._ep_from, self._ep_to = dataset._ep_from, dataset._ep_to
        self._frames: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def _frame_arrays(self) -> dict[str, np.ndarray]:
        if self._frames is None:
            assert self.dataset.cache is not None
            # Plain ndarray views of the read-only maps: fancy indexing a np.memmap subclass
            # would wrap every result in a memmap object.
            self._frames = {k: self.dataset.cache.open(k).view(np.ndarray) for k in self.dataset.camera_keys}
        return self._frames

    def gather(self, positions: Sequence[int] | np.ndarray) -> dict[str, Any]:
        """The collated batch of the samples at `positions` (indices into the dataset)."""
        pos = np.asarray(positions, dtype=np.int64)
        n = len(self._global)
        if pos.ndim != 1 or pos.size == 0 or pos.min() < -n or pos.max() >= n:
            raise IndexError(f"positions must be a non-empty 1-d array in [-{n}, {n}), got {pos!r}")
        g = self._global[pos]  # (B,) global frame indices
        lo, hi = self._ep_from[g][:, None], self._ep_to[g][:, None]  # (B, 1) each sample's episode
        batch: dict[str, Any] = {}
        windows: dict[str, np.ndarray] = {}
        for key, deltas in self.dataset.delta_indices.items():
            q = g[:, None] + deltas[None, :]  # (B, T)
            windows[key] = np.clip(q, lo, hi - 1)
            batch[pad_key(key)] = torch.from_numpy((q < lo) | (q >= hi))
        for key, col in self._columns.items():
            batch[key] = torch.from_numpy(col[windows.get(key, g)])  # (B, T, ...) or (B, ...)
        frames = self._frame_arrays() if self.dataset.frames == "pixels" else {}
        for key in self.dataset.camera_keys:
            idx = windows.get(key, g)  # (B, T) or (B,)
            if self.dataset.frames == "indices":  # the consumer gathers the pixels (DeviceFrames)
                batch[frame_index_key(key)] = torch.from_numpy(np.ascontiguousarray(idx))
                continue
            rows = frames[key][idx.reshape(-1)]  # (B*T or B, 3, H, W) uint8, one copy
            images = torch.from_numpy(rows.reshape(*idx.shape, *rows.shape[1:]))
            batch[key] = images if self.dataset.image_dtype == "uint8" else to_unit_float(images)
        tasks = self.dataset.meta.tasks
        batch[TASK] = [tasks[int(t)] for t in self._columns[TASK_INDEX][g]]
        return batch

    def iterate(self, batches: Iterable[np.ndarray], threads: int = 1, prefetch: int = 2,
                pin_memory: bool = False) -> Iterator[dict[str, Any]]:
        """`gather` each array of positions in `batches`, in order, by `threads` background
        threads keeping up to `prefetch` batches per thread ready (pinned for a fast copy
        to the GPU with `pin_memory`)."""
        threads = max(1, threads)

        def load(positions: np.ndarray) -> dict[str, Any]:
            batch = self.gather(positions)
            if pin_memory:
                batch = {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            return batch

        pending: collections.deque[cf.Future] = collections.deque()
        it = iter(batches)
        with cf.ThreadPoolExecutor(threads, thread_name_prefix="batched-loader") as pool:
            try:
                for positions in it:
                    pending.append(pool.submit(load, positions))
                    if len(pending) >= threads * prefetch:
                        break
                while pending:
                    batch = pending.popleft().result()
                    nxt = next(it, None)
                    if nxt is not None:
                        pending.append(pool.submit(load, nxt))
                    yield batch
            finally:
                for future in pending:
                    future.cancel()
