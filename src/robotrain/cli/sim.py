"""`robotrain sim`: record expert demonstrations, or preview one episode as a video.

Examples:
    MUJOCO_GL=egl robotrain sim record --episodes 75 --out data/so101_sim --size 480x640 --workers 2
    MUJOCO_GL=egl robotrain sim video --seed 0 --out ep.mp4 --size 240x320
"""

from __future__ import annotations

import argparse
import os

from robotrain.errors import ConfigError

os.environ.setdefault("MUJOCO_GL", "egl")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("sim", help="MuJoCo SO-101 pick-and-place: record a dataset, render a video")
    sub = parser.add_subparsers(dest="sim_command", metavar="SIM_COMMAND", required=True)

    rec = sub.add_parser("record", help="record successful scripted-expert episodes as a LeRobot v3.0 dataset")
    rec.add_argument("--episodes", type=int, default=75, help="successful episodes to keep (default 75)")
    rec.add_argument("--out", required=True, help="dataset directory to create")
    rec.add_argument("--size", default="480x640", help="camera image HEIGHTxWIDTH (default 480x640)")
    rec.add_argument("--workers", type=int, default=None, help="render processes (default: CPU cores)")
    rec.add_argument("--seed", type=int, default=0, help="first episode seed (default 0)")
    rec.add_argument("--max-steps", type=int, default=300, help="steps per episode, 30 Hz (default 300)")
    rec.add_argument("--keep-failures", action="store_true", help="also keep episodes where the expert failed")
    rec.add_argument("--codec", default="libsvtav1", choices=["libsvtav1", "libx264"],
                     help="video codec (default libsvtav1, LeRobot's; libx264 is the fallback)")
    rec.add_argument("--action-noise", type=float, default=0.0, metavar="DEG",
                     help="DART: execute actions plus smooth noise of this std (degrees, arm joints) but "
                          "record the clean actions, so the data shows recoveries (default 0: off)")
    rec.add_argument("--wrist-roll-noise", type=float, default=0.0, metavar="DEG",
                     help="DART on wrist_roll alone: extra smooth execution noise of this std (degrees), "
                          "so the data shows the jaws turned back onto the cube's faces (default 0: off)")
    rec.add_argument("--cube-margin-mm", type=float, default=0.0, metavar="MM",
                     help="draw cube placements from a range this much wider on every side than the "
                          "evaluation's, so its edges are inside the data (default 0)")
    rec.add_argument("--cube-yaw-margin-deg", type=float, default=0.0, metavar="DEG",
                     help="draw the cube's yaw from a range this much wider on each side than the "
                          "evaluation's +-30 deg (at most 15; default 0)")
    rec.add_argument("--late-wrist-turn", action="store_true",
                     help="the expert keeps the wrist at its natural roll until near the cube and turns the "
                          "jaws onto the cube's faces over the hover, where the wrist camera sees it "
                          "(default: aligned from the first step)")
    rec.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    rec.add_argument("--no-progress", action="store_true", help="no progress bar")
    
    vid = sub.add_parser("video", help="an mp4 of one expert episode, front and wrist cameras side by side")
    vid.add_argument("--seed", type=int, default=0)
    vid.add_argument("--out", required=True, help="mp4 file to write")
    vid.add_argument("--size", default="480x640", help="per-camera HEIGHTxWIDTH (default 480x640)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return {"record": run_record, "video": run_video}[args.sim_command](args)


def run_record(args: argparse.Namespace) -> int:
    from robotrain.data.images import parse_hw  # lazily, like every heavy import here: see robotrain.cli
    from robotrain.sim.record import RecordConfig, record_dataset, record_summary

    h, w = parse_hw(args.size, "--size")
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    cfg = RecordConfig(episodes=args.episodes, height=h, width=w, seed=args.seed, max_steps=args.max_steps,
                       only_successful=not args.keep_failures, codec=args.codec,
                       action_noise_deg=args.action_noise, wrist_roll_noise_deg=args.wrist_roll_noise,
                       cube_margin_mm=args.cube_margin_mm,
                       cube_yaw_margin_deg=args.cube_yaw_margin_deg, late_wrist_turn=args.late_wrist_turn)
    result = record_dataset(args.out, cfg, workers=args.workers, overwrite=args.overwrite,
                            progress=not args.no_progress)
    print(record_summary(result))
    return 0


def run_video(args: argparse.Namespace) -> int:
    from robotrain.data.images import parse_hw
    from robotrain.sim.video import episode_video

    h, w = parse_hw(args.size, "--size")
    path, success, n = episode_video(args.out, args.seed, h, w)
    print(f"wrote {path}: {n} frames, seed {args.seed}, expert {'succeeded' if success else 'failed'}")
    return 0
