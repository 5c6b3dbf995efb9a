"""Loader throughput: per-sample video decoding (LeRobot's way) vs the decode-once cache.

Generates a dataset shaped like a real SO-101 recording (2 cameras 640x480 AV1, GOP 2,
N episodes x T frames, LeRobot v3.0 layout), then measures samples/s of ACT-style
samples (2 cameras at 240x320, state, a 100-step action window with action_is_pad)
through a torch DataLoader (num_workers=2, batch 32, shuffled) for
  (a) per-sample decoding: seek + decode each camera for each sample, resize, and
  (b) our cached loader (frames from the uint8 memmap, float32 images like LeRobot's),
  (c) the cached loader with image_dtype="uint8" (the consumer converts, e.g. on GPU),
and prints both, their ratio, the cache build time and its size on disk.

Run:
    nice -n 10 env PYTHONPATH=src python benchmarks/bench_loader.py             # full (10 x 300)
    nice -n 10 env PYTHONPATH=src python benchmarks/bench_loader.py --quick     # small, ~1 min
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from robotrain.constants import SO101_FPS, SO101_JOINT_NAMES, SO101_ROBOT_TYPE, SO101_TASK
from robotrain.data.cache import build_cache
from robotrain.data.dataset import LeRobotDataset
from robotrain.data.format import load_meta

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
    """Write a LeRobot v3.0 dataset (one data file, one concatenated mp4 per camera)."""
    fps = SO101_FPS
    rng = np.random.default_rng(0)
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    (root / "data" / "chunk-000").mkdir(parents=True)
    n = episodes * frames
    state = np.cumsum(rng.normal(size=(n, 6)).astype(np.float32), axis=0)
    action = np.roll(state, -1, axis=0)
    for cam_i, cam in enumerate(CAMERAS):
        path = root / "videos" / cam / "chunk-000" / "file-000.mp4"
        path.parent.mkdir(parents=True)
        with av.open(str(path), "w") as out:
            stream = out.add_stream(codec, rate=fps)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.time_base = Fraction(1, fps)
            stream.options = {"g": "2", "crf": "30", "preset": "12"} if codec == "libsvtav1" else {"g": "2"}
            for k in range(n):
                frame = av.VideoFrame.from_ndarray(_frame(k % frames, h, w, cam_i), format="rgb24")
                frame.pts = k
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
    ts = np.tile(np.arange(frames, dtype=np.float32) / fps, episodes)
    ep_idx = np.repeat(np.arange(episodes), frames)
    data = pa.table({
        "action": pa.FixedSizeListArray.from_arrays(pa.array(action.reshape(-1)), 6),
        "observation.state": pa.FixedSizeListArray.from_arrays(pa.array(state.reshape(-1)), 6),
        "timestamp": pa.array(ts),
        "frame_index": pa.array(np.tile(np.arange(frames), episodes)),
        "episode_index": pa.array(ep_idx),
        "index": pa.array(np.arange(n)),
        "task_index": pa.array(np.zeros(n, dtype=np.int64)),
    })
    pq.write_table(data, root / "data" / "chunk-000" / "file-000.parquet")
    ep_cols: dict[str, list] = {
        "episode_index": list(range(episodes)), "tasks": [[SO101_TASK]] * episodes,
        "length": [frames] * episodes, "data/chunk_index": [0] * episodes, "data/file_index": [0] * episodes,
        "dataset_from_index": [e * frames for e in range(episodes)],
        "dataset_to_index": [(e + 1) * frames for e in range(episodes)],
    }
    for cam in CAMERAS:
        ep_cols[f"videos/{cam}/chunk_index"] = [0] * episodes
        ep_cols[f"videos/{cam}/file_index"] = [0] * episodes
        ep_cols[f"videos/{cam}/from_timestamp"] = [e * frames / fps for e in range(episodes)]
        ep_cols[f"videos/{cam}/to_timestamp"] = [(e + 1) * frames / fps for e in range(episodes)]
    pq.write_table(pa.table(ep_cols), root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    pq.write_table(pa.table({"task_index": [0], "task": [SO101_TASK]}), root / "meta" / "tasks.parquet")
    vec = {"dtype": "float32", "shape": [6], "names": list(SO101_JOINT_NAMES)}
    scalar = lambda dt: {"dtype": dt, "shape": [1], "names": None}  # noqa: E731
    video = {"dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"],
             "info": {"video.height": h, "video.width": w, "video.codec": "av1" if "av1" in codec else codec,
                      "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "video.fps": fps,
                      "video.channels": 3, "has_audio": False}}
    info = {
        "codebase_version": "v3.0", "robot_type": SO101_ROBOT_TYPE, "total_episodes": episodes,
        "total_frames": n, "total_tasks": 1, "chunks_size": 1000, "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 500, "fps": fps, "splits": {"train": f"0:{episodes}"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        "features": {"action": vec, "observation.state": vec, **{c: video for c in CAMERAS},
                     "timestamp": scalar("float32"), "frame_index": scalar("int64"),
                     "episode_index": scalar("int64"), "index": scalar("int64"), "task_index": scalar("int64")},
    }
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=4))

    def vstats(a: np.ndarray) -> dict:
        return {"min": a.min(0).tolist(), "max": a.max(0).tolist(), "mean": a.mean(0).tolist(),
                "std": a.std(0).tolist(), "count": [len(a)]}

    img = np.stack([_frame(t, h, w, 0) for t in range(0, frames, 30)]).astype(np.float64) / 255
    img_stats = {k: np.asarray(v).reshape(3, 1, 1).tolist() for k, v in {
        "min": img.min((0, 1, 2)), "max": img.max((0, 1, 2)), "mean": img.mean((0, 1, 2)),
        "std": img.std((0, 1, 2))}.items()}
    img_stats["count"] = [n]
    stats = {"action": vstats(action), "observation.state": vstats(state), **{c: img_stats for c in CAMERAS}}
    (root / "meta" / "stats.json").write_text(json.dumps(stats))


def throughput(ds: LeRobotDataset, batches: int, batch_size: int, workers: int) -> float:
    """Samples/s through a shuffled DataLoader, after one warm-up batch (worker start-up)."""
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         drop_last=True, persistent_workers=False,
                                         generator=torch.Generator().manual_seed(0))
    it = iter(loader)
    first = next(it)
    assert first["observation.images.front"].shape[-2:] == (240, 320), first["observation.images.front"].shape
    t0 = time.perf_counter()
    n = 0
    for _ in range(batches):
        try:
            batch = next(it)
        except StopIteration:
            break
        n += batch["action"].shape[0]
    return n / (time.perf_counter() - t0)


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
    args = ap.parse_args()
    if args.quick:
        args.episodes, args.frames, args.decode_batches, args.cached_batches = 3, 100, 3, 30

    work = Path(tempfile.mkdtemp(prefix="bench_loader_"))
    try:
        root = args.dataset or work / "dataset"
        if not (root / "meta" / "info.json").exists():
            t0 = time.perf_counter()
            make_dataset(root, args.episodes, args.frames, args.height, args.width, args.codec)
            print(f"generated {args.episodes} x {args.frames} frames, 2 cameras {args.width}x{args.height} "
                  f"{args.codec} in {time.perf_counter() - t0:.1f} s")
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
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
