"""`robotrain plan`: the predicted peak memory of a training run, by term, and the largest
batch that fits; takes every `robotrain train` flag, plus --memory and --json.

Examples:
    robotrain plan --policy act --image-size 240x320 --batch-size 64 --device cuda --memory 24G
    robotrain plan --dataset data/so101 --preset smolvla_so101 --device cuda --memory 80G --json
    robotrain plan --preset smolvla_sim          # this machine's RAM on a CPU-only machine
"""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="predict a training run's peak memory and the largest batch that fits",
        add_help=False,  # the train flags depend on --policy; run() handles --help
        description="Predict peak memory of `robotrain train` with the same flags. Without --dataset the "
                    "SO-101 layout (2 cameras at 480x640, 6 joints) is assumed.",
    )
    parser.add_argument("-h", "--help", action="store_true", dest="plan_help")
    parser.add_argument("--memory", metavar="SIZE",
                        help="memory to fit in, e.g. 24G (default: the device's total: the GPU's, or the RAM on CPU)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.set_defaults(func=run, extra_args=[])


def run(args: argparse.Namespace) -> int:
    from robotrain.training.config import parse_train_config
    from robotrain.training.memory import dataset_layout, parse_memory_size, plan_memory

    if args.plan_help:
        print("robotrain plan [--memory SIZE] [--json] [robotrain train flags]\n"
              "  --memory SIZE  memory to fit in, e.g. 24G (default: the device's total)\n"
              "  --json         print {peak_bytes, max_batch, breakdown, ...}\n"
              "Training flags: `robotrain train --policy act --help`.")
        return 0
    config = parse_train_config(list(args.extra_args), check_paths=False)
    features, total_frames = dataset_layout(config.dataset) if config.dataset else (None, None)
    budget = parse_memory_size(args.memory) if args.memory else None
    plan = plan_memory(config, features, total_frames, budget)
    print(json.dumps(plan.to_dict(), indent=2) if args.json else plan.summary())
    return 0
