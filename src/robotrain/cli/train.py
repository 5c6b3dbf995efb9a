"""`robotrain train`: train a policy on a local LeRobot dataset.

Every TrainConfig field is a flag and every policy config field a dotted flag
(`robotrain train --policy act --help` lists them).

Examples:
    robotrain train --dataset data/so101 --policy act --steps 2000 --image-size 240x320 --policy.dim_model 256
    robotrain train --config my_run.json --steps 5000
    robotrain train --resume --output-dir outputs/train/2026-11-25_17-00-00_act
    robotrain train --dataset data/more_episodes --preset act_sim_demo --init-from RUN/checkpoints/last  # fine-tune
    torchrun --nproc_per_node 2 -m robotrain train --dataset data/so101 --policy act
"""

from __future__ import annotations

import argparse

from robotrain.training.config import parse_train_config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a policy (ACT, SmolVLA) on a LeRobot dataset",
        add_help=False,  # the full flag list depends on --policy; run() prints it
        description="Train a policy. Run `robotrain train --policy act --help` for every flag.",
    )
    parser.add_argument("-h", "--help", action="store_true", dest="train_help")
    parser.set_defaults(func=run, extra_args=[])


def run(args: argparse.Namespace) -> int:
    from robotrain.training.loop import train  # lazily, like every heavy import here: see robotrain.cli

    argv = list(args.extra_args) + (["--help"] if args.train_help else [])
    config = parse_train_config(argv)
    train(config)
    return 0
