"""Decode every video once into uint8 memory-mapped arrays (one per camera).

Per-sample video decoding dominates LeRobot's step time, and every DataLoader worker
decodes again (reference §7). Here each camera becomes one `(total_frames, 3, H, W)`
uint8 `.npy` file at the policy's resolution, indexed by global frame index; a
DataLoader worker maps it read-only, so the OS page cache is shared by all workers and
no video is touched again.

Layout: `<cache_dir>/<key>/{<camera_key>.npy, complete.json}` where `key` hashes the
dataset's content (meta files, data/video file names, sizes and mtimes), the resolution
and the resize mode. The directory is built under a temporary name and renamed when
complete (`atomic_directory`), and `complete.json` is written last: a killed build
never looks complete, and a cache without a valid marker is rebuilt.

Example:
    PYTHONPATH=src python -m robotrain dataset cache tests/fixtures/so101_fixture_v30 --size 96x96 --pad
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import ctypes
import errno
import fcntl
import hashlib
import logging
import multiprocessing as mp
import os
import re
import shutil
import time
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from robotrain.constants import TIMESTAMP
from robotrain.data.format import DatasetMeta, load_frame_table
from robotrain.data.images import check_mode, fit_uint8, fitted_size, hwc_to_chw
from robotrain.data.video import DEFAULT_TOLERANCE_S, check_frame_size, iter_frames_at
from robotrain.errors import ConfigError, DatasetError, RobotrainError
from robotrain.system.files import atomic_directory, atomic_write_json, process_exists, read_json

log = logging.getLogger(__name__)

CACHE_DIR_ENV = "ROBOTRAIN_CACHE_DIR"
DEFAULT_CACHE_DIR = Path("~/.cache/robotrain/frames")
CACHE_FORMAT_VERSION = 1
COMPLETE_MARKER = "complete.json"
BUILDER_PID_FILE = "builder.pid"
CACHE_KEY_LENGTH = 24  # hex digits of the sha256 that name a cache
CACHE_KEY_PATTERN = re.compile(r"[0-9a-f]{%d}" % CACHE_KEY_LENGTH)
"""What a cache's folder name looks like; nothing else in a cache dir is ever removed."""
_RESIZE_BATCH = 32  # frames resized together in a worker
# Below this many frames (all cameras), worker processes cost more than they save.
_MIN_FRAMES_FOR_POOL = 2000


@dataclass(frozen=True)
class FrameCache:
    """A complete cache: `open(key)` gives the read-only (N, 3, H, W) uint8 memmap."""

    path: Path
    shapes: dict[str, tuple[int, int, int, int]]
    stems: dict[str, str] = field(default_factory=dict)
    """Camera key -> file name, for cameras renamed (`DatasetMeta.stored_names`): files keep
    the dataset's own names, so a cache serves the dataset with or without a rename map."""

    def file(self, key: str) -> Path:
        return self.path / f"{self.stems.get(key, key)}.npy"

    def open(self, key: str) -> np.ndarray:
        return np.load(self.file(key), mmap_mode="r")

    @property
    def size_bytes(self) -> int:
        return sum(self.file(k).stat().st_size for k in self.shapes)


def resolve_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """Argument, else $ROBOTRAIN_CACHE_DIR, else ~/.cache/robotrain/frames."""
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR
    return Path(cache_dir).expanduser()


def frame_size(meta: DatasetMeta, key: str, image_size: tuple[int, int] | None) -> tuple[int, int]:
    """(H, W) of cached frames of camera `key` (native when `image_size` is None)."""
    if image_size is None:
        h, w, _ = meta.camera_shape(key)
        return h, w
    return int(image_size[0]), int(image_size[1])


def _check_args(image_size: tuple[int, int] | None, resize_mode: str) -> None:
    check_mode(resize_mode)
    if image_size is not None:
        if len(image_size) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in image_size):
            raise ConfigError(f"image_size must be (height, width) positive integers, got {image_size!r}")


def cache_key(meta: DatasetMeta, image_size: tuple[int, int] | None, resize_mode: str) -> str:
    """Hash of what the frames depend on: meta file contents, data/video file identities
    (name, size, mtime), the resolution, the resize mode and the selected episodes (a
    selection's files only: the other episodes' may be absent)."""
    h = hashlib.sha256()
    # "pad" frames follow LeRobot's resize_with_pad since 2026-12 (floored sides, no
    # antialias); caches padded by the earlier rule get another key and are rebuilt.
    mode_tag = "pad-lerobot" if resize_mode == "pad" else resize_mode
    h.update(f"robotrain-frames-v{CACHE_FORMAT_VERSION}|{image_size}|{mode_tag}|".encode())
    if meta.selection is not None:  # a cache of some episodes only (rows numbered within them)
        h.update(f"episodes={list(meta.selection)}|".encode())
    root = meta.root
    for path in sorted((root / "meta").rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
    for path in sorted(set(meta.data_files()) | set(meta.video_files())):
        st = path.stat()
        h.update(f"{path.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:CACHE_KEY_LENGTH]


def _stems(meta: DatasetMeta) -> dict[str, str]:
    return {k: meta.stored_name(k) for k in meta.camera_keys if meta.stored_name(k) != k}


def _expected_shapes(meta: DatasetMeta, image_size: tuple[int, int] | None) -> dict[str, tuple[int, int, int, int]]:
    return {k: (meta.total_frames, 3, *frame_size(meta, k, image_size)) for k in meta.camera_keys}


def find_cache(
    meta: DatasetMeta,
    image_size: tuple[int, int] | None = None,
    resize_mode: str = "resize",
    cache_dir: str | Path | None = None,
) -> FrameCache | None:
    """The complete cache for these settings, or None (missing, interrupted or damaged)."""
    _check_args(image_size, resize_mode)
    key = cache_key(meta, image_size, resize_mode)
    path = resolve_cache_dir(cache_dir) / key
    found = _load_complete(FrameCache(path, _expected_shapes(meta, image_size), _stems(meta)), key)
    if found is not None:
        with contextlib.suppress(OSError):  # a read-only cache dir just keeps its old stamp
            os.utime(path / COMPLETE_MARKER)  # "last used", for `robotrain dataset caches --max-size`
    return found


def _load_complete(cache: FrameCache, key: str) -> FrameCache | None:
    """`cache` if its folder holds a complete build for `key` with the expected shapes."""
    path = cache.path
    marker = path / COMPLETE_MARKER
    if not path.is_dir():
        return None
    try:
        info = read_json(marker, expect=dict)
        if info.get("key") != key:
            raise ValueError("marker key differs")
        for k, shape in cache.shapes.items():
            arr = np.load(cache.file(k), mmap_mode="r")
            if tuple(arr.shape) != shape or arr.dtype != np.uint8:
                raise ValueError(f"{cache.file(k).name} has shape {arr.shape}, expected {shape}")
    except (RobotrainError, OSError, ValueError) as exc:
        log.warning("frame cache %s is incomplete or damaged (%s); rebuilding it", path, exc)
        return None
    return cache


def remove_dead_builds(cache_dir: Path, key: str) -> None:
    """Temporary directories of builds whose process is gone (killed) are removed; `key`
    may be "*" for every key (only names of the form `.<24 hex digits>.tmp-*` are touched)."""
    for tmp in cache_dir.glob(f".{key}.tmp-*"):
        key_part = tmp.name[1:].split(".tmp-", 1)[0]
        if not CACHE_KEY_PATTERN.fullmatch(key_part) or not tmp.is_dir():
            continue
        try:
            pid: int | None = int((tmp / BUILDER_PID_FILE).read_text())
        except (OSError, ValueError):
            pid = None  # no pid yet (a build just starting) or unreadable: judge by age
        if pid is not None and process_exists(pid):
            continue  # still building
        if pid is None and time.time() - tmp.stat().st_mtime < 3600:
            continue
        log.info("removing interrupted frame cache build %s", tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def _init_decode_worker() -> None:
    """Pool initializer: one torch thread per worker. The pool already runs one process per
    core; torch's default of one intra-op thread per core in *each* worker would put N^2
    threads on N cores (256 on a 16-core machine) for the resize/convert of every batch."""
    torch.set_num_threads(1)


def _decode_task(task: tuple) -> tuple[int, str | None, str | None]:
    """Worker: decode one episode of one camera into rows [row0, row0+n) of the .npy."""
    npy, row0, video, times, native, image_size, mode, threads = task
    try:
        arr = np.load(npy, mmap_mode="r+")
        batch: list[np.ndarray] = []
        start = row0

        def flush() -> None:
            nonlocal start, batch
            if batch:
                out = fit_uint8(hwc_to_chw(np.stack(batch)), image_size, mode).numpy()
                arr[start : start + len(batch)] = out
                start += len(batch)
                batch = []

        for _, frame in iter_frames_at(video, times, DEFAULT_TOLERANCE_S, threads=threads):
            check_frame_size(frame.shape[:2], native, video)
            batch.append(frame)
            if len(batch) == _RESIZE_BATCH:
                flush()
        flush()
        arr.flush()
        del arr
        return len(times), None, None
    except RobotrainError as exc:
        return 0, exc.reason, str(exc.path) if exc.path else None


def build_cache(
    meta: DatasetMeta,
    image_size: tuple[int, int] | None = None,
    resize_mode: str = "resize",
    cache_dir: str | Path | None = None,
    num_workers: int | None = None,
    progress: bool = True,
    timestamps: np.ndarray | None = None,
) -> FrameCache:
    """Decode all frames of every camera once (episodes in parallel) into a new cache.

    `timestamps` (total_frames,) are the data parquet's; read here when not given.
    """
    _check_args(image_size, resize_mode)
    root_dir = resolve_cache_dir(cache_dir)
    key = cache_key(meta, image_size, resize_mode)
    shapes = _expected_shapes(meta, image_size)
    stems = _stems(meta)
    if timestamps is None:
        timestamps = load_frame_table(meta)[TIMESTAMP]
    timestamps = np.asarray(timestamps, dtype=np.float64)
    try:
        root_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the cache directory: {exc.strerror}", root_dir) from exc
    remove_dead_builds(root_dir, key)
    _check_free_space(root_dir, shapes)
    total_work = meta.total_frames * len(meta.camera_keys)
    if num_workers is None:
        num_workers = 0 if total_work < _MIN_FRAMES_FOR_POOL else (os.cpu_count() or 1)
    t0 = time.perf_counter()
    with atomic_directory(root_dir / key) as tmp:
        (tmp / BUILDER_PID_FILE).write_text(str(os.getpid()))
        tasks = []
        for cam, shape in shapes.items():
            npy = tmp / f"{stems.get(cam, cam)}.npy"
            np.lib.format.open_memmap(npy, mode="w+", dtype=np.uint8, shape=shape).flush()
            _reserve_blocks(npy)
            native = meta.camera_shape(cam)[:2]
            for ep in meta.episodes:
                span = ep.videos[cam]
                times = span.from_timestamp + timestamps[ep.dataset_from_index : ep.dataset_to_index]
                threads = 1 if num_workers > 1 else 0
                tasks.append((str(npy), ep.dataset_from_index, str(span.path), times, native,
                              image_size, resize_mode, threads))
        tasks.sort(key=lambda t: -len(t[3]))  # long episodes first: better load balance
        _run_tasks(tasks, num_workers, total_work, progress, meta)
        atomic_write_json(tmp / COMPLETE_MARKER, {
            "key": key,
            "dataset": str(meta.root.resolve()),
            "episodes": list(meta.selection) if meta.selection is not None else None,
            "image_size": list(image_size) if image_size else None,
            "resize_mode": resize_mode,
            "shapes": {stems.get(k, k): list(v) for k, v in shapes.items()},
            "build_seconds": round(time.perf_counter() - t0, 3),
            "format_version": CACHE_FORMAT_VERSION,
        })
        (tmp / BUILDER_PID_FILE).unlink()
    log.info("frame cache built in %.1fs at %s", time.perf_counter() - t0, root_dir / key)
    return FrameCache(root_dir / key, shapes, stems)


def _check_free_space(root_dir: Path, shapes: dict[str, tuple[int, int, int, int]]) -> None:
    """Refuse before decoding anything when the cache cannot fit: a 300-episode dataset at
    240x320 is tens of GB, and finding out after an hour of decoding helps nobody."""
    needed = sum(int(np.prod(shape)) for shape in shapes.values())
    free = shutil.disk_usage(root_dir).free
    if needed > free:
        raise RobotrainError(
            f"the frame cache needs {needed / 2**30:.2f} GiB but only {free / 2**30:.2f} GiB is free; "
            f"free some space (`robotrain dataset caches --prune`) or put the cache on a disk with "
            f"room (--cache-dir or ${CACHE_DIR_ENV})", root_dir)


def _reserve_blocks(npy: Path) -> None:
    """Allocate the file's disk blocks now. The workers write through a memory map, and a
    write into a sparse file on a full disk is not an error but a SIGBUS that kills the
    writer; with the blocks reserved, a disk that fills up raises ENOSPC here instead.

    Linux's fallocate(2), not posix_fallocate: where a filesystem cannot preallocate (NFSv3,
    older ZFS), glibc's posix_fallocate falls back to writing every block, millions of
    writes for a large cache; there we skip and rely on the free-space check."""
    with open(npy, "r+b") as f:
        try:
            _fallocate(f.fileno(), os.fstat(f.fileno()).st_size)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise  # ENOSPC: atomic_directory removes the partial build and says so
            log.debug("cannot preallocate %s (%s); relying on the free-space check", npy, exc)


def _fallocate(fd: int, length: int) -> None:
    """fallocate(fd, 0, 0, length) through libc; ENOSYS where libc has no such call."""
    libc = ctypes.CDLL(None, use_errno=True)
    call = getattr(libc, "fallocate", None)
    if call is None:
        raise OSError(errno.ENOSYS, "fallocate is not available here")
    call.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    if call(fd, 0, 0, length) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _run_tasks(tasks: list[tuple], num_workers: int, total: int, progress: bool, meta: DatasetMeta) -> None:
    columns = (TextColumn("decoding frames"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), disable=not progress, transient=False) as bar:
        job = bar.add_task("decode", total=total)

        def handle(result: tuple[int, str | None, str | None]) -> None:
            n, reason, path = result
            if reason is not None:
                raise DatasetError(reason, path)
            bar.advance(job, n)

        if num_workers <= 1:
            for task in tasks:
                handle(_decode_task(task))
            return
        # An executor, not mp.Pool: a worker that dies (the OOM killer, a signal) breaks the
        # executor with an error, where a Pool would wait forever for the lost task.
        ctx = mp.get_context("spawn")  # no fork: the parent may hold torch/arrow threads
        pool = cf.ProcessPoolExecutor(min(num_workers, len(tasks)), mp_context=ctx, initializer=_init_decode_worker)
        try:
            for future in cf.as_completed([pool.submit(_decode_task, task) for task in tasks]):
                handle(future.result())
        except BrokenProcessPool as exc:
            _stop_now(pool)
            raise RobotrainError(
                "a frame-decoding process died (killed by the system, out of memory?); "
                "nothing was cached, run the command again", meta.root) from exc
        except BaseException:
            _stop_now(pool)  # a bad video or Ctrl-C: do not wait for the decodes already queued
            raise
        pool.shutdown(wait=True)


def _stop_now(pool: cf.ProcessPoolExecutor) -> None:
    """Cancel what has not started and kill the workers (Pool.terminate, for an executor)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.kill()
    for process in processes:
        process.join(timeout=10)


def ensure_cache(
    meta: DatasetMeta,
    image_size: tuple[int, int] | None = None,
    resize_mode: str = "resize",
    cache_dir: str | Path | None = None,
    num_workers: int | None = None,
    progress: bool = True,
    timestamps: np.ndarray | None = None,
) -> tuple[FrameCache, bool]:
    """The cache for these settings, built if missing. Returns (cache, built_now).

    Processes that ask at the same time (e.g. torchrun ranks) take a file lock, so one
    builds and the others wait and reuse its cache.
    """
    found = find_cache(meta, image_size, resize_mode, cache_dir)
    if found is not None:
        return found, False
    root_dir = resolve_cache_dir(cache_dir)
    try:
        root_dir.mkdir(parents=True, exist_ok=True)
        lock = open(root_dir / f".{cache_key(meta, image_size, resize_mode)}.lock", "a")  # noqa: SIM115
    except OSError as exc:
        raise ConfigError(f"cannot create the cache directory: {exc.strerror}", root_dir) from exc
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        found = find_cache(meta, image_size, resize_mode, cache_dir)
        if found is not None:
            return found, False
        return build_cache(meta, image_size, resize_mode, cache_dir, num_workers, progress, timestamps), True


def padded_region(meta: DatasetMeta, key: str, image_size: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of the real image inside a padded frame (padding is on the left/top)."""
    h, w, _ = meta.camera_shape(key)
    return fitted_size(h, w, image_size, "pad")
