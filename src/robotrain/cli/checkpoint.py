"""`robotrain checkpoint`: work on saved checkpoints.

Example:
    robotrain checkpoint average runs/T/checkpoints/last runs/S/checkpoints/last --out soup
    robotrain eval --checkpoint soup --sim
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("checkpoint", help="work on saved checkpoints (average)")
    commands = parser.add_subparsers(dest="checkpoint_command", metavar="COMMAND", required=True)
    average = commands.add_parser(
        "average",
        help="weight-average checkpoints of one architecture into a new checkpoint",
        description=(
            "Write OUT/pretrained_model/: the weighted average of the checkpoints' weights. The "
            "first checkpoint is the reference: its config and normalisation statistics are kept, "
            "and an ACT checkpoint trained on other statistics is first re-expressed in them "
            "exactly (its predicted actions do not change). Image statistics must be equal."
        ),
    )
    average.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT",
                         help="a checkpoint directory (a step dir, `last`, or its pretrained_model/)")
    average.add_argument("--weights", nargs="+", type=float, metavar="W",
                         help="one weight per checkpoint, normalised to sum to 1 (default: equal)")
    average.add_argument("--out", required=True, metavar="DIR", help="new output directory")
    average.set_defaults(func=run_average)


def run_average(args: argparse.Namespace) -> int:
    from robotrain.checkpoints.averaging import average_checkpoints  # lazily, like every heavy import here: see robotrain.cli

    result = average_checkpoints(args.checkpoints, args.out, args.weights)
    for source, weight, converted in zip(result.sources, result.weights, result.reexpressed):
        note = f" (re-expressed in the first's statistics: {', '.join(converted)})" if converted else ""
        print(f"  {weight:.3f} x {source}{note}")
    print(f"wrote {result.out}")
    return 0
