"""AV1 encode cost with and without SVT-AV1's real-time scheduling (see mp4.keep_scheduling).

Encodes 300-frame 640x480 clips for 2 cameras interleaved (as DatasetWriter does), alternating
the old behaviour (SVT-AV1 leaves the caller and its workers SCHED_FIFO 99 when run as root)
and the fixed one, each in a fresh process so no policy leaks between trials. Prints wall fps
(depends on how much of a shared machine the process takes), CPU ms per frame (the encode
cost itself) and the ratios fixed/old.

Run:
    nice -n 10 env PYTHONPATH=src /work/venv/bin/python benchmarks/bench_av1_sched.py --trials 2
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def one_trial(variant: str, frames: int) -> tuple[float, float]:
    """Encode one clip pair in this process; returns (wall fps, CPU ms per frame)."""
    import robotrain.data.mp4 as mp4

    if variant == "old":
        mp4.keep_scheduling = contextlib.nullcontext  # type: ignore[assignment]
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)  # (H, W, 3)
    imgs = [np.roll(base, 3 * t, axis=1) for t in range(frames)]
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        encs = [mp4.ClipEncoder(Path(tmp) / f"cam{k}.mp4", 480, 640, 30, "libsvtav1",
                                mp4.encoder_options("libsvtav1")) for k in range(2)]
        for t in range(frames):
            for e in encs:
                e.add_frame(imgs[t])
        for e in encs:
            e.close()
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return 2 * frames / wall, 1000 * cpu / (2 * frames)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=2)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--child", choices=["old", "fixed"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        fps, cpu_ms = one_trial(args.child, args.frames)
        print(f"{fps} {cpu_ms} {os.sched_getscheduler(0)}")
        return
    res: dict[str, list[tuple[float, float, int]]] = {"old": [], "fixed": []}
    for _ in range(args.trials):
        for variant in ("old", "fixed"):
            out = subprocess.run([sys.executable, __file__, "--child", variant, "--frames", str(args.frames)],
                                 capture_output=True, text=True, check=True, env=os.environ)
            fps, cpu_ms, policy = out.stdout.split()
            res[variant].append((float(fps), float(cpu_ms), int(policy)))
    for variant, rows in res.items():
        fps = np.mean([r[0] for r in rows])
        cpu = np.mean([r[1] for r in rows])
        print(f"{variant:6s} wall {fps:6.1f} fps   cpu {cpu:5.1f} ms/frame   caller policy {rows[-1][2]} "
              f"(0 = SCHED_OTHER, 1 = SCHED_FIFO)")
    f = lambda v, i: np.mean([r[i] for r in res[v]])  # noqa: E731
    print(f"fixed/old: wall fps x{f('fixed', 0) / f('old', 0):.2f}, cpu per frame x{f('fixed', 1) / f('old', 1):.2f}")


if __name__ == "__main__":
    main()
