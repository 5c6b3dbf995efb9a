"""`robotrain dataset ...`: inspect, validate and pre-cache LeRobot datasets.

Examples:
    robotrain dataset info tests/fixtures/so101_fixture_v30
    robotrain dataset validate tests/fixtures/so101_fixture_v21
    robotrain dataset cache tests/fixtures/so101_fixture_v30 --size 240x320 [--pad] [--cache-dir D]
    robotrain dataset convert tests/fixtures/so101_fixture_v21 --out /tmp/so101_v30
    robotrain dataset preview tests/fixtures/so101_fixture_v30 --episode 0 --out preview/

Each sub-subcommand is a `register_<name>(subparsers)` function listed in
`DATASET_SUBCOMMANDS`; a new one (convert, preview, ...) is one more function there.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from collections.abc import Callable

from robotrain.cli._preview import register_preview
from robotrain.errors import ConfigError

EXIT_PROBLEMS = 1


def parse_size(text: str) -> tuple[int, int]:
    """`--size HxW` for argparse (its type errors name the flag)."""
    from robotrain.data.images import parse_hw  # lazily, like every heavy import here: see robotrain.cli

    try:
        return parse_hw(text, "--size")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.reason) from None


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


# ------------------------------------------------------------------------------ info
def register_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="episodes, frames, fps, features, cameras and tasks of a dataset, then "
                                    "the problems its files show (exit 1 if any)")
    p.add_argument("path", help="dataset root (holds meta/, data/, videos/)")
    p.set_defaults(func=run_info)


def run_info(args: argparse.Namespace) -> int:
    """The metadata that could be read, then every problem found (exit 1 if any)."""
    from robotrain.data.format import inspect_dataset

    meta, problems = inspect_dataset(args.path)
    duration = meta.total_frames / meta.fps
    print(f"dataset   {meta.root}")
    print(f"format    LeRobot {meta.version}   robot {meta.robot_type or '-'}")
    print(f"episodes  {meta.total_episodes}   frames {meta.total_frames}   fps {meta.fps}   "
          f"duration {duration:.1f} s ({duration / 60:.1f} min)")
    print("features")
    for name, feat in meta.features.items():
        if name in meta.camera_keys:
            continue
        names = feat.get("names")
        extra = f"  {', '.join(map(str, names))}" if isinstance(names, list) and names else ""
        print(f"  {name:<28} {feat['dtype']:<8} {feat['shape']}{extra}")
    print("cameras")
    for key in meta.camera_keys:
        h, w, _ = meta.camera_shape(key)
        vinfo = meta.features[key].get("info") or {}
        print(f"  {key:<28} {h}x{w}  {vinfo.get('video.codec', '?')} {vinfo.get('video.pix_fmt', '')}".rstrip())
    print("tasks")
    for i, task in enumerate(meta.tasks):
        print(f"  {i:>3}  {task}")
    return print_problems(args.path, problems)


def print_problems(path: str, problems: list[str]) -> int:
    """Every problem on stderr, one a line; the exit status (0: none)."""
    if not problems:
        return 0
    print(f"robotrain: {len(problems)} problem(s) in {path}:", file=sys.stderr)
    for problem in problems:
        print(f"  - {problem}", file=sys.stderr)
    return EXIT_PROBLEMS


# -------------------------------------------------------------------------- validate
def register_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check meta, data and videos; exit 1 listing every problem")
    p.add_argument("path", help="dataset root")
    p.set_defaults(func=run_validate)


def run_validate(args: argparse.Namespace) -> int:
    from robotrain.data.format import validate_dataset

    problems = validate_dataset(args.path)
    if not problems:
        print(f"ok: {args.path} is a valid LeRobot dataset")
    return print_problems(args.path, problems)


# ----------------------------------------------------------------------------- cache
def register_cache(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache", help="decode every video once into the memory-mapped frame cache")
    p.add_argument("path", help="dataset root")
    p.add_argument("--size", type=parse_size, default=None, metavar="HxW",
                   help="frame size, e.g. 240x320 (default: native)")
    p.add_argument("--pad", action="store_true", help="keep aspect ratio and pad left/top to --size")
    p.add_argument("--cache-dir", default=None,
                   help="cache root (default: $ROBOTRAIN_CACHE_DIR or ~/.cache/robotrain/frames)")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: all cores)")
    p.add_argument("--rebuild", action="store_true", help="rebuild even if a complete cache exists")
    p.add_argument("--episodes", type=int, nargs="+", metavar="N",
                   help="cache only these episodes (their files suffice), for `train --episodes` with the same ones")
    p.add_argument("--rename", metavar="OLD=NEW,...",
                   help="feature rename map as for train, e.g. image=observation.images.front (the cache is the same "
                        "with or without it)")
    p.set_defaults(func=run_cache)


def run_cache(args: argparse.Namespace) -> int:
    from robotrain.data.cache import build_cache, ensure_cache
    from robotrain.data.format import load_meta
    from robotrain.data.rename import parse_rename, rename_features

    if args.pad and args.size is None:
        raise ConfigError("--pad needs --size HxW")
    if args.workers is not None and args.workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {args.workers}")
    meta = load_meta(args.path, args.episodes)  # only the chosen episodes' files are read
    if args.rename:
        meta = rename_features(meta, parse_rename(args.rename))
    if not meta.camera_keys:
        print(f"{args.path} has no video features; nothing to cache")
        return 0
    mode = "pad" if args.pad else "resize"
    t0 = time.perf_counter()
    if args.rebuild:
        cache, built = build_cache(meta, args.size, mode, args.cache_dir, args.workers), True
    else:
        cache, built = ensure_cache(meta, args.size, mode, args.cache_dir, args.workers)
    seconds = time.perf_counter() - t0
    print(f"{'built' if built else 'reused'} frame cache {cache.path}")
    for key, shape in cache.shapes.items():
        print(f"  {key:<28} {shape[0]} frames x {shape[2]}x{shape[3]}")
    print(f"size on disk {_human_bytes(cache.size_bytes)}   time {seconds:.1f} s")
    return 0


# ---------------------------------------------------------------------------- caches
def parse_bytes(text: str) -> int:
    """'20G', '500M', '1.5T' or a plain byte count -> bytes (powers of 1024)."""
    units = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1] if t and t[-1] in units else ""
    try:
        value = float(t[: len(t) - len(unit)])
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size like 20G or 500M, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"size must be >= 0, got {text!r}")
    return int(value * units[unit])


def register_caches(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("caches", help="list the frame caches on disk; --prune deletes those nothing will use again")
    p.add_argument("--cache-dir", default=None,
                   help="cache root (default: $ROBOTRAIN_CACHE_DIR or ~/.cache/robotrain/frames)")
    p.add_argument("--prune", action="store_true",
                   help="delete caches whose dataset is gone or has changed, unreadable ones and interrupted builds")
    p.add_argument("--max-size", type=parse_bytes, default=None, metavar="SIZE",
                   help="with --prune: then delete the least recently used caches until the rest fit in SIZE "
                        "(e.g. 20G)")
    p.add_argument("--dry-run", action="store_true", help="with --prune: only say what would be deleted")
    p.set_defaults(func=run_caches)


def run_caches(args: argparse.Namespace) -> int:
    from robotrain.data.cache import resolve_cache_dir
    from robotrain.data.cache_admin import STATUS_HELP, list_caches, prunable, remove

    if (args.max_size is not None or args.dry_run) and not args.prune:
        raise ConfigError("--max-size and --dry-run go with --prune")
    root = resolve_cache_dir(args.cache_dir)
    entries = list_caches(root)
    print(f"{len(entries)} frame cache(s) in {root}, {_human_bytes(sum(e.size_bytes for e in entries))}")
    for e in entries:
        size = "x".join(map(str, e.image_size)) if e.image_size else "native"
        used = datetime.fromtimestamp(e.last_used).strftime("%Y-%m-%d %H:%M")
        print(f"  {e.path.name}  {_human_bytes(e.size_bytes):>10}  used {used}  {e.status:<8}  {size:>8}  "
              f"{e.dataset or '-'}")
    for status in sorted({e.status for e in entries}):
        print(f"  {status}: {STATUS_HELP[status]}")
    if not args.prune:
        return 0
    doomed = prunable(entries, args.max_size)
    total = _human_bytes(sum(e.size_bytes for e in doomed))
    if args.dry_run:
        print(f"would delete {len(doomed)} cache(s), {total}: {' '.join(e.path.name for e in doomed) or '-'}")
        return 0
    freed = remove(doomed, root)
    print(f"deleted {len(doomed)} cache(s), freed {_human_bytes(freed)}")
    return 0


# --------------------------------------------------------------------------- convert
def register_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a v2.1 dataset to v3.0 (video stream-copied, every row verified)")
    p.add_argument("path", help="v2.1 dataset root")
    p.add_argument("--out", required=True, help="where to write the v3.0 dataset (must not exist)")
    p.add_argument("--reencode", action="store_true", help="re-encode video instead of stream-copying it")
    p.add_argument("--recompute-image-stats", action="store_true",
                   help="compute image stats (with quantiles) from decoded frames instead of copying v2.1's")
    p.add_argument("--episodes", type=int, nargs="+", metavar="N",
                   help="convert only these episodes (their files suffice); they become episodes 0..k-1")
    p.set_defaults(func=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    from robotrain.data.convert import convert_v21_to_v30

    report = convert_v21_to_v30(
        args.path,
        args.out,
        stream_copy=not args.reencode,
        image_stats="recompute" if args.recompute_image_stats else "auto",
        episodes=args.episodes,
    )
    print(report.summary())
    return 0


DATASET_SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    register_info,
    register_validate,
    register_cache,
    register_caches,
    register_convert,
    register_preview,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("dataset", help="inspect, validate and cache LeRobot datasets")
    sub = parser.add_subparsers(dest="dataset_command", metavar="SUBCOMMAND")
    for add in DATASET_SUBCOMMANDS:
        add(sub)
    parser.set_defaults(func=lambda args: _no_subcommand(parser))


def _no_subcommand(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2
