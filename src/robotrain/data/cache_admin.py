"""List the frame caches on disk and prune the ones nothing will use again.

A cache's key hashes its dataset's files (`cache.cache_key`), so a dataset that is
re-recorded, edited or deleted leaves its old cache behind for good: each fresh
40-episode demo dataset, for instance, leaves ~600 MB, and four sessions of that filled a
250 GB disk here. `robotrain dataset caches` lists every cache with its dataset, size and
last use; `--prune` deletes the ones whose dataset is gone (orphaned) or has changed
(stale), the unreadable ones and interrupted builds, and `--max-size` then deletes the
least recently used until the rest fit.

Deleting a cache is always safe: it is rebuilt from its dataset when next needed, and a
training that has it memory-mapped keeps reading it (the files live until unmapped).

Example:
    robotrain dataset caches --prune --max-size 20G --dry-run
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from robotrain.data.cache import (
    BUILDER_PID_FILE,
    CACHE_KEY_PATTERN,
    COMPLETE_MARKER,
    cache_key,
    remove_dead_builds,
    resolve_cache_dir,
)
from robotrain.data.format import load_meta
from robotrain.errors import RobotrainError
from robotrain.system.files import read_json

OK, STALE, ORPHANED, BROKEN = "ok", "stale", "orphaned", "broken"
CACHE_FILES = {COMPLETE_MARKER, BUILDER_PID_FILE}
STATUS_HELP = {
    OK: "its dataset is unchanged",
    STALE: "its dataset has changed since (a new cache is built for it)",
    ORPHANED: "its dataset is gone",
    BROKEN: "no readable complete.json (an old or damaged cache)",
}


@dataclass(frozen=True)
class CacheEntry:
    path: Path
    size_bytes: int
    last_used: float
    """Unix time the cache was last found for a training or eval (its marker's mtime)."""
    status: str
    dataset: str | None = None
    image_size: tuple[int, int] | None = None


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def _status(info: dict, key: str) -> str:
    dataset = Path(info.get("dataset") or "")
    if not info.get("dataset") or not dataset.is_dir():
        return ORPHANED
    try:
        size = info.get("image_size")
        meta = load_meta(dataset, info.get("episodes"))  # a cache of some episodes: those only
        current = cache_key(meta, tuple(size) if size else None, info.get("resize_mode", "resize"))
    except (RobotrainError, OSError, ValueError, TypeError):
        return STALE  # the dataset no longer reads as the one this cache was built from
    return OK if current == key else STALE


def looks_like_cache(path: Path) -> bool:
    """A folder named like a cache key holding only a cache's files. Anything else in the
    cache dir (a dataset, a run, notes: the dir may be set to the wrong place) is not ours
    and is never listed, so never pruned."""
    if not CACHE_KEY_PATTERN.fullmatch(path.name) or not path.is_dir():
        return False
    try:
        return all(f.is_file() and (f.suffix == ".npy" or f.name in CACHE_FILES) for f in path.iterdir())
    except OSError:
        return False


def list_caches(cache_dir: str | Path | None = None) -> list[CacheEntry]:
    """Every cache under `cache_dir` (default: $ROBOTRAIN_CACHE_DIR or ~/.cache/...),
    least recently used first. Builds in progress (hidden temporary dirs) are not listed,
    nor is anything that is not a cache (`looks_like_cache`)."""
    root = resolve_cache_dir(cache_dir)
    if not root.is_dir():
        return []
    entries = []
    for path in sorted(p for p in root.iterdir() if looks_like_cache(p)):
        marker = path / COMPLETE_MARKER
        try:
            info = read_json(marker, expect=dict)
            last_used = marker.stat().st_mtime
        except (RobotrainError, OSError):
            entries.append(CacheEntry(path, _size(path), path.stat().st_mtime, BROKEN))
            continue
        size = info.get("image_size")
        entries.append(CacheEntry(path, _size(path), last_used, _status(info, path.name), info.get("dataset"),
                                  tuple(size) if size else None))
    return sorted(entries, key=lambda e: e.last_used)


def prunable(entries: list[CacheEntry], max_size_bytes: int | None = None) -> list[CacheEntry]:
    """The entries to delete: every one not OK, then the least recently used OK ones until
    the OK ones left take at most `max_size_bytes` (None: keep every OK one)."""
    doomed = [e for e in entries if e.status != OK]
    if max_size_bytes is not None:
        kept = sorted((e for e in entries if e.status == OK), key=lambda e: e.last_used)
        total = sum(e.size_bytes for e in kept)
        for entry in kept:
            if total <= max_size_bytes:
                break
            doomed.append(entry)
            total -= entry.size_bytes
    return doomed


def remove(entries: list[CacheEntry], cache_dir: str | Path | None = None) -> int:
    """Delete `entries` and any interrupted build under the cache dir; returns bytes freed
    by the entries."""
    freed = 0
    for entry in entries:
        shutil.rmtree(entry.path, ignore_errors=True)
        (entry.path.parent / f".{entry.path.name}.lock").unlink(missing_ok=True)  # the builders' lock
        freed += entry.size_bytes
    root = resolve_cache_dir(cache_dir)
    if root.is_dir():
        remove_dead_builds(root, "*")
    return freed
