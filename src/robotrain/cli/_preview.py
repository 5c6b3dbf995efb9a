"""`robotrain dataset preview`: wiring for the dataset command (which owns the subparser).

In cli/dataset.py:
    from robotrain.cli._preview import register_preview
    register_preview(dataset_subparsers)

Example:
    robotrain dataset preview tests/fixtures/so101_fixture_v30 --episode 0 --out preview/
"""

from __future__ import annotations

import argparse

from robotrain.errors import ConfigError


def register_preview(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "preview",
        help="contact sheet of camera frames and state/action plots of one episode (PNGs)",
    )
    parser.add_argument("path", metavar="PATH", help="LeRobot dataset root (v3.0 or v2.1)")
    parser.add_argument("--episode", type=int, default=0, help="episode index (default: 0)")
    parser.add_argument("--out", default="preview", metavar="DIR", help="output directory (default: preview)")
    parser.add_argument("--frames", type=int, default=8, help="frames per camera on the contact sheet")
    parser.set_defaults(func=run_preview)


def run_preview(args: argparse.Namespace) -> int:
    from robotrain.reports.preview import preview_episode  # lazily, like every heavy import here: see robotrain.cli

    if args.frames < 1:
        raise ConfigError(f"--frames must be >= 1, got {args.frames}")
    paths = preview_episode(args.path, args.episode, args.out, n_frames=args.frames)
    for path in paths.values():
        print(f"wrote {path}")
    return 0
