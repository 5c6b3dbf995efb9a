"""The `robotrain` command: a thin shell over library functions.

Each subcommand lives in its own module under `robotrain.cli` and exposes
`register(subparsers)`, which adds its parser and sets `func` to a function
`(args) -> int` (the exit code). User errors (`RobotrainError`) are printed on one line
with no traceback and exit non-zero.

`robotrain --help` imports every subcommand module, so they import library code that
pulls in torch, numpy, pyarrow, PyAV, MuJoCo or matplotlib inside the functions that use
it: torch alone costs more CPU time than the whole of `--help`.

Example:
    robotrain --help
    robotrain dataset info tests/fixtures/so101_fixture_v30
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import re
import sys
from collections.abc import Callable

from robotrain import __version__
from robotrain.errors import EXIT_USER_ERROR, RobotrainError, Stopped

# Subcommand modules, in the order `robotrain --help` lists them. A module that does not
# exist yet is skipped, so the CLI works while features land one by one.
SUBCOMMAND_MODULES = (
    "robotrain.cli.demo",
    "robotrain.cli.dataset",
    "robotrain.cli.sim",
    "robotrain.cli.train",
    "robotrain.cli.plan",
    "robotrain.cli.eval",
    "robotrain.cli.checkpoint",
    "robotrain.cli.report",
    "robotrain.cli.recipe",
)



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="robotrain",
        description="Train, evaluate and compare robot imitation-learning policies on LeRobot datasets.",
    )
    parser.add_argument("--version", action="version", version=f"robotrain {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        module.register(subparsers)
    return parser


def _without_worker_traceback(message: str) -> str:
    """A RobotrainError raised in a DataLoader worker comes back re-created by torch with the
    worker's whole traceback as its message; keep the error's own last line."""
    if "Original Traceback (most recent call last)" not in message:
        return message
    last = message.strip().splitlines()[-1]
    return re.sub(r"^[\w.]+(Error|Stopped): ", "", last)


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= `minimum`, else argparse's one-line usage error."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # A subcommand whose flags depend on other flags (train's --policy.<field>) sets
    # `extra_args=[]` and parses the rest itself.
    args, extra = parser.parse_known_args(argv)
    if extra and getattr(args, "extra_args", None) is None:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.extra_args = extra
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USER_ERROR if args.command is None else 0
    try:
        return int(args.func(args) or 0)
    except Stopped as exc:
        print(f"robotrain: stopped: {exc}", file=sys.stderr)
        return exc.exit_code
    except RobotrainError as exc:
        print(f"robotrain: error: {_without_worker_traceback(str(exc))}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("robotrain: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        # Writers replace files atomically, so a full disk loses nothing; wherever it strikes,
        # say so in one line rather than a traceback.
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"robotrain: error: {where}no space left on device; free some space and run again", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
