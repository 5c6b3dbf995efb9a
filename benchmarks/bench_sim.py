"""Sim throughput: rendered frames/s per process, physics-only steps/s, and the (projected
or measured) wall time to record the 75-episode dataset, at 480x640 and 240x320.

Rendered frames are counted per camera image (two per env step). Projection: one expert
episode's steps x (render + physics time per step) x 75 episodes / workers, plus the
dataset writer's encoding time measured on the same frames.

Examples:
    MUJOCO_GL=egl nice -n 10 python benchmarks/bench_sim.py
    MUJOCO_GL=egl nice -n 10 python benchmarks/bench_sim.py --measure --workers 2   # real recording too
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

from robotrain.sim.env import SO101PickPlaceEnv  # noqa: E402
from robotrain.sim.expert import run_episode  # noqa: E402

SIZES = ((480, 640), (240, 320))


def render_fps(height: int, width: int, visual_cell: float, seed: int = 0, steps: int = 60) -> float:
    """Camera images per second for one process, over the states of an expert episode."""
    env = SO101PickPlaceEnv(image_size=(height, width), visual_cell=visual_cell, render=False,
                            terminate_on_success=False)
    ep = run_episode(env, seed)
    env.reset(seed=seed)
    states = []
    for a in ep["action"][:steps]:
        env.step(a)
        states.append(env.data.qpos.copy())
    for cam in ("front", "wrist"):
        env.render_camera(cam)  # GL context + first upload outside the timing
    t0 = time.perf_counter()
    for q in states:
        env.data.qpos[:] = q
        for cam in ("front", "wrist"):
            env.render_camera(cam)
    dt = time.perf_counter() - t0
    env.close()
    return 2 * len(states) / dt


def physics_episode(seeds: range) -> tuple[float, float]:
    """(mean steps per episode, physics + expert seconds per step), no rendering."""
    env = SO101PickPlaceEnv(render=False, terminate_on_success=False)
    lengths, t0 = [], time.perf_counter()
    for s in seeds:
        lengths.append(len(run_episode(env, s)["action"]))
    dt = time.perf_counter() - t0
    return float(np.mean(lengths)), dt / sum(lengths)


def encode_seconds_per_frame(height: int, width: int, frames: int = 60) -> float:
    """Dataset-writer seconds per step (both cameras encoded), on rendered expert frames."""
    try:
        from robotrain.data.writer import DatasetWriter
    except ImportError:
        return float("nan")
    env = SO101PickPlaceEnv(image_size=(height, width), max_episode_steps=frames, terminate_on_success=False)
    ep = run_episode(env, 0)
    env.close()
    with tempfile.TemporaryDirectory() as tmp:
        shapes = {k: (height, width) for k in ep["images"]}
        t0 = time.perf_counter()
        with DatasetWriter(Path(tmp) / "ds", camera_shapes=shapes) as w:
            w.add_episode("task", ep["state"], ep["action"], ep["images"])
        return (time.perf_counter() - t0) / len(ep["action"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=75)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--measure", action="store_true", help="also record the datasets for real")
    args = parser.parse_args()

    mean_len, phys_s = physics_episode(range(10))
    print(f"physics + expert IK: {1 / phys_s:.0f} steps/s per process; expert episodes average {mean_len:.0f} steps")
    fps = {}
    for h, w in SIZES:
        fps[(h, w, "full")] = render_fps(h, w, visual_cell=0.0)
        fps[(h, w, "dec")] = render_fps(h, w, visual_cell=0.002)
        print(f"render {h}x{w}: {fps[(h, w, 'full')]:.1f} frames/s full meshes, "
              f"{fps[(h, w, 'dec')]:.1f} frames/s decimated visual meshes "
              f"(x{fps[(h, w, 'dec')] / fps[(h, w, 'full')]:.2f}), per process")
    (h0, w0), (h1, w1) = SIZES
    print(f"ratio {h1}x{w1} / {h0}x{w0} frames/s (decimated): x{fps[(h1, w1, 'dec')] / fps[(h0, w0, 'dec')]:.2f}")

    steps = args.episodes * mean_len
    for h, w in SIZES:
        sim_s = steps * (2 / fps[(h, w, "dec")] + phys_s) / args.workers
        enc = encode_seconds_per_frame(h, w)
        total = sim_s + (0 if np.isnan(enc) else steps * enc / max(1, args.workers))
        print(f"projected record {args.episodes} episodes at {h}x{w} on {args.workers} workers: "
              f"{sim_s / 60:.1f} min rendering+physics, encoding {enc * 1000:.1f} ms/step "
              f"-> ~{total / 60:.1f} min")
        if args.measure:
            from robotrain.sim.record import RecordConfig, record_dataset

            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                res = record_dataset(Path(tmp) / "ds", RecordConfig(episodes=args.episodes, height=h, width=w),
                                     workers=args.workers, progress=False)
                print(f"measured record {res.recorded} episodes ({res.frames} frames, {res.discarded} discarded) "
                      f"at {h}x{w}: {(time.perf_counter() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
