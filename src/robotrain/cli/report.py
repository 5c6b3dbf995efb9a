"""`robotrain report`: compare runs in one markdown report with plots.

Example:
    robotrain report outputs/act outputs/smolvla lerobot_train.log --out report/
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="compare runs: throughput, training curves, matched-sample action error, sim success",
        description=(
            "Write DIR/report.md and PNG plots comparing runs. Each RUN is a robotrain run "
            "directory (metrics.jsonl, config.json), a LeRobot console log file or a directory "
            "holding one (*.log/*.txt) and/or LeRobot's checkpoints/, or a directory of "
            "eval_info.json files. Sim results: every eval_info.json below a RUN directory."
        ),
    )
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run directory or LeRobot log file")
    parser.add_argument("--out", default="report", metavar="DIR", help="output directory (default: report)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from robotrain.reports.report import write_report  # lazily, like every heavy import here: see robotrain.cli

    result = write_report(args.runs, args.out)
    print(f"wrote {result.markdown} ({len(result.plots)} plots)")
    return 0
