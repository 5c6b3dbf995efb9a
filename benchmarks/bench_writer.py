"""Throughput of DatasetWriter: encode fps per camera, real-time factor, ratio to a bare
PyAV encode loop on the same frames (measured in the same run, so load on a shared machine
cancels out), peak memory growth, and the mean absolute pixel error of decoded frames.

    PYTHONPATH=src nice -n 10 python benchmarks/bench_writer.py --size 480x640 --episodes 2 --frames 300
    PYTHONPATH=src nice -n 10 python benchmarks/bench_writer.py --size 240x320 --codec libx264
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq

from robotrain.data.mp4 import encoder_options
from robotrain.data.writer import CODECS, VIDEO_PATH, DatasetWriter


def bare_encode_fps(frames: np.ndarray, repeats: int, codec: str, path: Path) -> float:
    """One continuous stream, no stats, no parquet, no joining: the encoder's own speed."""
    encoder = CODECS[codec][0]
    t0 = time.perf_counter()
    with av.open(str(path), "w") as c:
        s = c.add_stream(encoder, rate=30)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.options = encoder_options(encoder)
        for r in range(repeats):
            for i, rgb in enumerate(frames):
                f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                f.pts = r * len(frames) + i
                for p in s.encode(f):
                    c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return repeats * len(frames) / (time.perf_counter() - t0)


def sim_like_frames(T: int, h: int, w: int, seed: int) -> np.ndarray:
    """Rendered-scene stand-in: shaded floor gradient, a moving box, mild sensor noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([90 + 80 * yy / h, 110 + 60 * xx / w, 130 + 40 * (yy + xx) / (h + w)], -1)
    out = np.empty((T, h, w, 3), np.uint8)
    bs = h // 6
    for t in range(T):
        img = base.copy()
        x0 = int((w - bs) * (0.5 + 0.4 * np.sin(t / 20)))
        y0 = int((h - bs) * (0.5 + 0.3 * np.cos(t / 25)))
        img[y0:y0 + bs, x0:x0 + bs] = (200, 40, 40)
        img += rng.normal(0, 2, (h, w, 1)).astype(np.float32)
        out[t] = np.clip(img, 0, 255)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", default="480x640", help="HxW")
    p.add_argument("--episodes", type=int, default=2)
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--cameras", type=int, default=1)
    p.add_argument("--codec", default="libsvtav1")
    args = p.parse_args()
    h, w = map(int, args.size.split("x"))
    cams = {f"observation.images.cam{i}": (h, w) for i in range(args.cameras)}
    frames = sim_like_frames(args.frames, h, w, 0)
    state = np.zeros((args.frames, 6), np.float32)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ds"
        t0 = time.perf_counter()
        with DatasetWriter(root, camera_shapes=cams, codec=args.codec) as wr:
            for _ in range(args.episodes):
                wr.add_episode("bench", state, state, {k: frames for k in cams})
        dt = time.perf_counter() - t0
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        n = args.episodes * args.frames * args.cameras
        path = root / VIDEO_PATH.format(video_key=next(iter(cams)), chunk_index=0, file_index=0)
        size_mb = path.stat().st_size / 1024**2
        errs = []
        with av.open(str(path)) as c:
            for i, f in enumerate(c.decode(video=0)):
                errs.append(np.abs(f.to_ndarray(format="rgb24").astype(np.int16) - frames[i % args.frames]).mean())
        assert pq.read_metadata(root / "data/chunk-000/file-000.parquet").num_rows == args.episodes * args.frames
        bare = bare_encode_fps(frames, args.episodes, args.codec, Path(tmp) / "bare.mp4")
    print(f"codec={args.codec} size={h}x{w} cameras={args.cameras} frames={n}")
    print(f"encode fps (camera-frames/s): {n / dt:.1f}  real-time factor at 30 fps: {n / dt / 30 / args.cameras:.2f}x")
    print(f"bare PyAV encode loop: {bare:.1f} fps; writer / bare = {n / dt / bare:.2f}")
    print(f"video MB per camera-minute: {size_mb / (args.episodes * args.frames / 30 / 60):.2f}")
    print(f"peak RSS growth while writing: {rss1 - rss0:.0f} MB (input frames: {frames.nbytes / 1024**2:.0f} MB)")
    print(f"mean abs pixel error (0-255): {np.mean(errs):.2f}")


if __name__ == "__main__":
    main()
