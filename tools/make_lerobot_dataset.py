"""Write a LeRobot v3.0 dataset with LeRobot itself, for benchmarks/bench_lerobot.py: N
episodes of an SO-101-shaped recording (6 joints, 2 cameras at 480x640, AV1 through
LeRobot's own encoder settings), synthetic but video-like frames (a gradient, a moving
square, texture), so both projects read exactly the files LeRobot writes.

Run in the LeRobot venv (never robotrain's; LeRobot 0.4.4):
    HF_HUB_OFFLINE=1 /work/lerobot-venv/bin/python tools/make_lerobot_dataset.py /tmp/lerobot_bench_ds
    HF_HUB_OFFLINE=1 /work/lerobot-venv/bin/python tools/make_lerobot_dataset.py DIR --episodes 10 --frames 300
It imports nothing from robotrain.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402

JOINTS = ["shoulder_pan.pos", "shoulder_lift.pos", "elbow_flex.pos", "wrist_flex.pos", "wrist_roll.pos",
          "gripper.pos"]
CAMERAS = ("observation.images.front", "observation.images.wrist")
TASK = "Pick up the cube and place it in the bowl"


def frame(t: int, h: int, w: int, cam: int) -> np.ndarray:
    """(h, w, 3) uint8: gradient background, a moving white square, a checker texture."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.empty((h, w, 3), dtype=np.uint8)
    img[..., 0] = (x * 255 // w + 3 * t) % 256
    img[..., 1] = (y * 255 // h + 2 * t + 40 * cam) % 256
    img[..., 2] = ((x // 16 + y // 16) % 2) * 60 + 30
    cx, cy = (w // 4 + 4 * t) % (w - 60), (h // 3 + 2 * t) % (h - 60)
    img[cy:cy + 60, cx:cx + 60] = 255
    return img


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path, help="dataset directory to create (replaced if it exists)")
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--frames", type=int, default=300, help="frames per episode")
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--fps", type=int, default=30)
    args = ap.parse_args()

    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    features = {
        "observation.state": {"dtype": "float32", "shape": (6,), "names": JOINTS},
        "action": {"dtype": "float32", "shape": (6,), "names": JOINTS},
        **{cam: {"dtype": "video", "shape": (args.height, args.width, 3), "names": ["height", "width", "channels"]}
           for cam in CAMERAS},
    }
    if args.root.exists():
        shutil.rmtree(args.root)
    t0 = time.perf_counter()
    ds = LeRobotDataset.create(repo_id=f"local/{args.root.name}", fps=args.fps, features=features, root=args.root,
                               robot_type="so101_follower", use_videos=True, image_writer_threads=4)
    rng = np.random.default_rng(0)
    for e in range(args.episodes):
        state = np.cumsum(rng.normal(size=(args.frames, 6)), axis=0).astype(np.float32)
        action = np.roll(state, -1, axis=0)
        for t in range(args.frames):
            ds.add_frame({"observation.state": state[t], "action": action[t], "task": TASK,
                          **{cam: frame(e * args.frames + t, args.height, args.width, i)
                             for i, cam in enumerate(CAMERAS)}})
        ds.save_episode()
    ds.finalize()
    print(f"wrote {args.episodes} x {args.frames} frames, 2 cameras {args.width}x{args.height} AV1 (LeRobot "
          f"{importlib.metadata.version('lerobot')}) to {args.root} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
