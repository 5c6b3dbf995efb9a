"""`robotrain demo`: record a sim dataset, train ACT, evaluate it in the sim, write a report.

Logic in `robotrain.recipes.demo`; each stage is reused when its result exists.

Examples:
    robotrain demo                                  # outputs/demo/, ~15 min on 2 CPU cores
    robotrain demo --out /tmp/demo --episodes 60 --steps 3000 --eval-episodes 50
    robotrain demo --quick --out /tmp/demo_quick    # tiny sizes, under a minute (smoke test)
"""

from __future__ import annotations

import argparse

from robotrain.recipes.demo import DemoConfig, quick_demo_config, run_demo


def register(subparsers: argparse._SubParsersAction) -> None:
    d = DemoConfig()
    parser = subparsers.add_parser(
        "demo",
        help="record a sim dataset, train ACT, evaluate it in sim and write a report",
        description="Record expert demonstrations in the SO-101 sim, train ACT on them, evaluate the policy "
                    "closed-loop in the sim (success rate, 95%% Wilson interval, videos) and write a report. "
                    "Stages whose results exist are reused.",
    )
    parser.add_argument("--out", default=d.out, help=f"directory for everything (default {d.out})")
    parser.add_argument("--episodes", type=int, default=None, help=f"expert episodes to record (default {d.episodes})")
    parser.add_argument("--steps", type=int, default=None, help=f"ACT training steps (default {d.steps})")
    parser.add_argument("--batch-size", type=int, default=None, help=f"samples per step (default {d.batch_size})")
    parser.add_argument("--seed", type=int, default=None, help="training seed (default: the preset's)")
    parser.add_argument("--eval-episodes", type=int, default=None,
                        help=f"closed-loop sim episodes (default {d.eval_episodes})")
    parser.add_argument("--videos", type=int, default=None, help=f"videos of the first eval episodes (default {d.videos})")
    parser.add_argument("--workers", type=int, default=None, help="sim processes (default: CPU cores)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes end to end (a smoke test, not a policy)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = quick_demo_config(args.out) if args.quick else DemoConfig(out=args.out)
    for name in ("episodes", "steps", "batch_size", "seed", "eval_episodes", "videos", "workers"):
        value = getattr(args, name)
        if value is not None:
            setattr(cfg, name, value)
    cfg.progress = not args.no_progress
    run_demo(cfg)
    return 0
