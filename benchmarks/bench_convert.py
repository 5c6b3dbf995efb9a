"""v2.1 -> v3.0 conversion time: stream copy vs forced re-encode, on a generated v2.1
dataset (sim-like 480x640 frames, AV1 clips as LeRobot writes them).

    PYTHONPATH=src nice -n 10 python benchmarks/bench_convert.py --episodes 3 --frames 300
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import test_convert  # noqa: E402  (reuses the tests' v2.1 generator)
from bench_writer import sim_like_frames  # noqa: E402

from robotrain.data.convert import convert_v21_to_v30  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--episodes", type=int, default=3)
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--size", default="480x640")
    args = p.parse_args()
    h, w = map(int, args.size.split("x"))
    cams = {"observation.images.front": (h, w)}
    frames = sim_like_frames(args.frames, h, w, 0)
    test_convert.synthetic_frames = lambda T, hh, ww, seed: frames[:T]  # realistic content
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "v21"
        t0 = time.perf_counter()
        test_convert.write_v21(src, lengths=(args.frames,) * args.episodes, cams=cams)
        print(f"generated v2.1 ({args.episodes} x {args.frames} frames {h}x{w}) in {time.perf_counter() - t0:.1f} s")
        results = {}
        for name, kwargs in [("stream-copy", {}), ("re-encode", {"stream_copy": False})]:
            t0 = time.perf_counter()
            report = convert_v21_to_v30(src, Path(tmp) / name, **kwargs)
            results[name] = time.perf_counter() - t0
            print(report.summary())
        n = args.episodes * args.frames
        for name, dt in results.items():
            print(f"{name}: {dt:.2f} s, {n / dt:.0f} frames/s")
        print(f"stream copy is {results['re-encode'] / results['stream-copy']:.1f}x faster than re-encoding")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
