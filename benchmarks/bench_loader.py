"""Loader throughput: per-sample video decoding (LeRobot's way) vs the decode-once cache.

Generates a dataset shaped like a real SO-101 recording (2 cameras 640x480 AV1, GOP 2,
N episodes x T frames, LeRobot v3.0, written by robotrain.data.writer.DatasetWriter), then measures samples/s of ACT-style
samples (2 cameras at 240x320, state, a 100-step action window with action_is_pad)
through a torch DataLoader (num_workers=2, batch 32, shuffled) for
  (a) per-sample decoding: seek + decode each camera for each sample, resize, and
  (b) our cached loader (frames from the uint8 memmap, float32 images like LeRobot's),
  (c) the cached loader with image_dtype="uint8" (the consumer converts, e.g. on GPU),
and prints both, their ratio, the cache build time and its size on disk. Then, for each
`--sizes` (default 240x320 and 480x640), the batched loader (`--loader batched`:
data/batch_loader.py, whole batches gathered from the memmap in `--workers` threads) against
(c), alternately for `--rounds` rounds, with medians, spread and the ratio, against the
targets of issue 23 (5,000 samples/s at 2x240x320 and 1,500 at 2x480x640 on 2 cores).

Run:
    nice -n 10 env PYTHONPATH=src python benchmarks/bench_loader.py             # full (10 x 300)
    nice -n 10 env PYTHONPATH=src python benchmarks/bench_loader.py --quick     # small, ~1 min
    env PYTHONPATH=src python benchmarks/bench_loader.py --skip-decode         # only (c) vs batched
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from robotrain.constants import SO101_FPS, SO101_TASK
from robotrain.data.batch_loader import BatchedLoader
from robotrain.data.cache import build_cache
from robotrain.data.dataset import LeRobotDataset
from robotrain.data.format import load_meta
from robotrain.data.images import parse_hw
from robotrain.data.writer import DatasetWriter

CAMERAS = ("observation.images.front", "observation.images.wrist")


def _frame(t: int, h: int, w: int, cam: int) -> np.ndarray:
    """A synthetic scene: gradient background, a moving square, some texture."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.empty((h, w, 3), dtype=np.uint8)
    img[..., 0] = (x * 255 // w + 3 * t) % 256
    img[..., 1] = (y * 255 // h + 2 * t + 40 * cam) % 256
    img[..., 2] = ((x // 16 + y // 16) % 2) * 60 + 30
    cx, cy = (w // 4 + 4 * t) % (w - 60), (h // 3 + 2 * t) % (h - 60)
    img[cy : cy + 60, cx : cx + 60] = 255
    return img


def make_dataset(root: Path, episodes: int, frames: int, h: int, w: int, codec: str = "libsvtav1") -> None:
    """Write a LeRobot v3.0 dataset with robotrain's DatasetWriter (AV1, GOP 2, LeRobot's settings)."""
    rng = np.random.default_rng(0)
    with DatasetWriter(root, fps=SO101_FPS, camera_shapes={c: (h, w) for c in CAMERAS}, codec=codec) as writer:
        for e in range(episodes):
            state = np.cumsum(rng.normal(size=(frames, 6)), axis=0).astype(np.float32)
            action = np.roll(state, -1, axis=0)
            images = {c: np.stack([_frame(e * frames + t, h, w, i) for t in range(frames)])
                      for i, c in enumerate(CAMERAS)}
            writer.add_episode(SO101_TASK, state, action, images)


def samples_per_s(it, batches: int) -> float:
    """Samples/s over the next `batches` batches of `it` (fewer where it ends first)."""
    t0 = time.perf_counter()
    n = 0
    for _ in range(batches):
        try:
            batch = next(it)
        except StopIteration:
            break
        n += batch["action"].shape[0]
    return n / (time.perf_counter() - t0)


def throughput(ds: LeRobotDataset, batches: int, batch_size: int, workers: int,
               size: tuple[int, int] = (240, 320)) -> float:
    """Samples/s through a shuffled DataLoader, after one warm-up batch (worker start-up)."""
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         drop_last=True, persistent_workers=False,
                                         generator=torch.Generator().manual_seed(0))
    it = iter(loader)
    first = next(it)
    assert first["observation.images.front"].shape[-2:] == size, first["observation.images.front"].shape
    return samples_per_s(it, batches)


def throughput_batched(ds: LeRobotDataset, batches: int, batch_size: int, threads: int, seed: int) -> float:
    """Samples/s of `BatchedLoader` over a shuffled order, after one warm-up batch."""
    order = np.random.default_rng(seed).permutation(len(ds))
    positions = (order[i:i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size))
    it = BatchedLoader(ds).iterate(positions, threads=threads)
    first = next(it)
    assert first["observation.images.front"].dtype == torch.uint8
    rate = samples_per_s(it, batches)
    it.close()
    return rate


def compare_batched(root: Path, cache_dir: Path, sizes: list[tuple[int, int]], args: argparse.Namespace) -> None:
    """DataLoader (uint8) against BatchedLoader, interleaved round by round at each size."""
    meta = load_meta(root)
    delta = {"action": [i / meta.fps for i in range(100)]}
    targets = {(240, 320): 5000, (480, 640): 1500}
    for size in sizes:
        build_cache(meta, size, "resize", cache_dir, progress=False)
        ds = LeRobotDataset(root, delta, image_size=size, cache_dir=cache_dir, image_dtype="uint8")
        old, new = [], []
        for r in range(args.rounds):
            old.append(throughput(ds, args.cached_batches, args.batch_size, args.workers, size))
            new.append(throughput_batched(ds, args.cached_batches, args.batch_size, args.workers, seed=r))
        q_old, q_new = np.percentile(old, [25, 50, 75]), np.percentile(new, [25, 50, 75])
        target = targets.get(size)
        print(f"{size[0]}x{size[1]}, {args.rounds} interleaved rounds of {args.cached_batches} batches, median "
              f"[25-75%]: DataLoader uint8 {q_old[1]:8.0f} [{q_old[0]:.0f}-{q_old[2]:.0f}] samples/s, batched "
              f"{q_new[1]:8.0f} [{q_new[0]:.0f}-{q_new[2]:.0f}] samples/s, batched/DataLoader "
              f"{q_new[1] / q_old[1]:.2f}x" + (f" (target {target:,})" if target else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--frames", type=int, default=300, help="frames per episode")
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--codec", default="libsvtav1")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--decode-batches", type=int, default=6, help="batches timed for per-sample decoding")
    ap.add_argument("--cached-batches", type=int, default=150, help="batches timed for the cached loader")
    ap.add_argument("--dataset", type=Path, default=None, help="reuse/keep a generated dataset here")
    ap.add_argument("--quick", action="store_true", help="3 episodes x 100 frames, fewer batches")
    ap.add_argument("--sizes", nargs="+", default=["240x320", "480x640"], help="sizes for batched vs DataLoader")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of batched vs DataLoader")
    ap.add_argument("--skip-decode", action="store_true", help="only the batched vs DataLoader comparison")
    args = ap.parse_args()
    if args.quick:
        args.episodes, args.frames, args.decode_batches, args.cached_batches, args.rounds = 3, 100, 3, 5, 2

    work = Path(tempfile.mkdtemp(prefix="bench_loader_"))
    try:
        root = args.dataset or work / "dataset"
        if not (root / "meta" / "info.json").exists():
            t0 = time.perf_counter()
            make_dataset(root, args.episodes, args.frames, args.height, args.width, args.codec)
            print(f"generated {args.episodes} x {args.frames} frames, 2 cameras {args.width}x{args.height} "
                  f"{args.codec} in {time.perf_counter() - t0:.1f} s")
        if args.skip_decode:
            compare_batched(root, work / "cache", [parse_hw(v, "--sizes") for v in args.sizes], args)
            return
        meta = load_meta(root)
        size = (240, 320)
        delta = {"action": [i / meta.fps for i in range(100)]}

        t0 = time.perf_counter()
        cache = build_cache(meta, size, "resize", work / "cache", progress=False)
        build_s = time.perf_counter() - t0
        cache_mb = cache.size_bytes / 2**20

        per_sample = LeRobotDataset(root, delta, image_size=size, use_cache=False)
        cached = LeRobotDataset(root, delta, image_size=size, cache_dir=work / "cache")
        cached_u8 = LeRobotDataset(root, delta, image_size=size, cache_dir=work / "cache", image_dtype="uint8")
        decode_sps = throughput(per_sample, args.decode_batches, args.batch_size, args.workers)
        cached_sps = throughput(cached, args.cached_batches, args.batch_size, args.workers)
        cached_u8_sps = throughput(cached_u8, args.cached_batches, args.batch_size, args.workers)

        print(f"frames: {meta.total_frames} x {len(meta.camera_keys)} cameras; DataLoader workers={args.workers}, "
              f"batch={args.batch_size}, samples = 2 x (3,240,320) + state + action (100,6) + action_is_pad")
        print(f"(a) per-sample decode (LeRobot-style): {decode_sps:8.1f} samples/s")
        print(f"(b) cached memmap loader            : {cached_sps:8.1f} samples/s")
        print(f"(c) cached, uint8 images            : {cached_u8_sps:8.1f} samples/s  (float on the consumer)")
        print(f"ratio (b)/(a): {cached_sps / decode_sps:.1f}x   ratio (c)/(a): {cached_u8_sps / decode_sps:.1f}x")
        print(f"cache build: {build_s:.1f} s for {meta.total_frames * len(meta.camera_keys)} frames "
              f"({meta.total_frames * len(meta.camera_keys) / build_s:.0f} frames/s), size on disk {cache_mb:.0f} MiB")
        compare_batched(root, work / "cache", [parse_hw(v, "--sizes") for v in args.sizes], args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
