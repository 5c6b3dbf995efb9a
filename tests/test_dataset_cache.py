"""The decode-once frame cache: keyed, reused, atomic, rebuilt after an interrupted build."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import killed_by_the_system, run_cli
from dataset_helpers import FRONT, V21, V30, WRIST, edit_info, writable_copy

import robotrain.data.cache as cache_mod
from robotrain.data.cache import (
    BUILDER_PID_FILE,
    COMPLETE_MARKER,
    build_cache,
    cache_key,
    ensure_cache,
    find_cache,
    resolve_cache_dir,
)
from robotrain.data.dataset import LeRobotDataset
from robotrain.data.format import load_meta
from robotrain.errors import RobotrainError


def test_build_then_reuse(lerobot_fixtures: Path, tmp_path: Path) -> None:
    meta = load_meta(lerobot_fixtures / V30)
    assert find_cache(meta, (48, 64), "resize", tmp_path) is None
    cache, built = ensure_cache(meta, (48, 64), "resize", tmp_path, progress=False)
    assert built and (cache.path / COMPLETE_MARKER).is_file()
    assert cache.shapes == {FRONT: (123, 3, 48, 64), WRIST: (123, 3, 48, 64)}
    frames = cache.open(FRONT)
    assert frames.dtype == np.uint8 and not frames.flags.writeable and frames[60].std() > 10
    again, built = ensure_cache(meta, (48, 64), "resize", tmp_path, progress=False)
    assert not built and again.path == cache.path
    assert cache.size_bytes == sum(cache.file(k).stat().st_size for k in (FRONT, WRIST))
    # other resolution / mode / dataset -> other key
    keys = {cache_key(meta, (48, 64), "resize"), cache_key(meta, (48, 64), "pad"), cache_key(meta, None, "resize"),
            cache_key(load_meta(lerobot_fixtures / V21), (48, 64), "resize")}
    assert len(keys) == 4


def test_key_follows_dataset_content(lerobot_fixtures: Path, tmp_path: Path) -> None:
    root = writable_copy(lerobot_fixtures / V30, tmp_path / "ds")
    before = cache_key(load_meta(root), None, "resize")
    edit_info(root, robot_type="koch")
    assert cache_key(load_meta(root), None, "resize") != before


def test_cache_dir_from_env(lerobot_fixtures: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROBOTRAIN_CACHE_DIR", str(tmp_path / "env_cache"))
    assert resolve_cache_dir() == tmp_path / "env_cache"
    assert resolve_cache_dir(tmp_path / "arg") == tmp_path / "arg"
    ds = LeRobotDataset(lerobot_fixtures / V21, image_size=(24, 32), progress=False)
    assert ds.cache is not None and ds.cache.path.parent == tmp_path / "env_cache"
    monkeypatch.delenv("ROBOTRAIN_CACHE_DIR")
    assert resolve_cache_dir() == Path("~/.cache/robotrain/frames").expanduser()


@pytest.mark.slow  # spawns 2 processes that import torch
def test_parallel_build_equals_serial(lerobot_fixtures: Path, tmp_path: Path) -> None:
    meta = load_meta(lerobot_fixtures / V21)
    serial = build_cache(meta, (24, 32), "pad", tmp_path / "a", num_workers=0, progress=False)
    parallel = build_cache(meta, (24, 32), "pad", tmp_path / "b", num_workers=2, progress=False)
    for key in (FRONT, WRIST):
        np.testing.assert_array_equal(serial.open(key), parallel.open(key))


def test_interrupted_build_never_looks_complete(lerobot_fixtures: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    meta = load_meta(lerobot_fixtures / V30)
    real = cache_mod._decode_task
    calls = {"n": 0}

    def dies_midway(task):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # a Ctrl-C in the middle of the build
        return real(task)

    monkeypatch.setattr(cache_mod, "_decode_task", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        build_cache(meta, (48, 64), "resize", tmp_path, num_workers=0, progress=False)
    assert find_cache(meta, (48, 64), "resize", tmp_path) is None
    assert list(tmp_path.iterdir()) == []  # the temporary directory is gone too
    monkeypatch.setattr(cache_mod, "_decode_task", real)
    _, built = ensure_cache(meta, (48, 64), "resize", tmp_path, progress=False)
    assert built


def test_a_cache_that_cannot_fit_is_refused_before_decoding(lerobot_fixtures: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    meta = load_meta(lerobot_fixtures / V30)
    needed = 2 * 123 * 3 * 48 * 64
    monkeypatch.setattr(cache_mod.shutil, "disk_usage", lambda path: SimpleNamespace(free=needed - 1))
    monkeypatch.setattr(cache_mod, "_decode_task", lambda task: pytest.fail("decoded despite no room"))
    with pytest.raises(RobotrainError, match=r"frame cache needs .* GiB but only .* free.*--cache-dir"):
        build_cache(meta, (48, 64), "resize", tmp_path, num_workers=0, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_disk_filling_up_during_the_build_is_a_clear_error(lerobot_fixtures: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The frames go through a memory map: without reserved blocks, a full disk would be
    a SIGBUS in the writer, not an error."""
    meta = load_meta(lerobot_fixtures / V30)

    def disk_full(fd: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_mod, "_fallocate", disk_full)
    with pytest.raises(RobotrainError, match="no space left on device"):
        build_cache(meta, (48, 64), "resize", tmp_path, num_workers=0, progress=False)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(cache_mod, "_fallocate", lambda fd, length: (_ for _ in ()).throw(
        OSError(errno.EOPNOTSUPP, "Operation not supported")))  # a filesystem that cannot preallocate
    assert build_cache(meta, (48, 64), "resize", tmp_path / "nfs", num_workers=0, progress=False).size_bytes > 0
    monkeypatch.undo()
    cache = build_cache(meta, (48, 64), "resize", tmp_path, num_workers=0, progress=False)
    assert all(os.stat(cache.file(k)).st_blocks * 512 >= os.stat(cache.file(k)).st_size for k in cache.shapes)


@pytest.mark.slow  # spawns 2 processes that import torch
def test_a_dead_decoding_worker_is_an_error_not_a_hang(lerobot_fixtures: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       killed_worker_marker: Path) -> None:
    meta = load_meta(lerobot_fixtures / V30)
    monkeypatch.setattr(cache_mod, "_decode_task", killed_by_the_system)
    with pytest.raises(RobotrainError, match="decoding process died"):
        build_cache(meta, (48, 64), "resize", tmp_path, num_workers=2, progress=False)
    assert find_cache(meta, (48, 64), "resize", tmp_path) is None
    assert list(tmp_path.iterdir()) == []
    assert killed_worker_marker.exists()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_killed_build_is_detected_and_rebuilt(lerobot_fixtures: Path, tmp_path: Path) -> None:
    meta = load_meta(lerobot_fixtures / V30)
    key = cache_key(meta, (48, 64), "resize")
    # What `kill -9` leaves: a temporary dir of a dead builder, and (say) a final dir
    # someone copied without its completion marker.
    stale = tmp_path / f".{key}.tmp-abc123"
    stale.mkdir(parents=True)
    (stale / BUILDER_PID_FILE).write_text(str(_dead_pid()))
    (stale / f"{FRONT}.npy").write_bytes(b"half")
    final = tmp_path / key
    final.mkdir()
    np.save(final / f"{FRONT}.npy", np.zeros((123, 3, 48, 64), np.uint8))
    assert find_cache(meta, (48, 64), "resize", tmp_path) is None

    result = run_cli("dataset", "cache", str(lerobot_fixtures / V30), "--size", "48x64", "--cache-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "built" in result.stdout and "size on disk" in result.stdout
    assert not stale.exists()
    cache = find_cache(meta, (48, 64), "resize", tmp_path)
    assert cache is not None and cache.open(FRONT)[10].std() > 10


def test_damaged_complete_cache_is_rebuilt(lerobot_fixtures: Path, tmp_path: Path) -> None:
    meta = load_meta(lerobot_fixtures / V21)
    cache = build_cache(meta, (24, 32), "resize", tmp_path, progress=False)
    np.save(cache.file(WRIST), np.zeros((5, 3, 24, 32), np.uint8))  # wrong shape under a valid marker
    assert find_cache(meta, (24, 32), "resize", tmp_path) is None
    rebuilt, built = ensure_cache(meta, (24, 32), "resize", tmp_path, progress=False)
    assert built and rebuilt.open(WRIST).shape == (135, 3, 24, 32)


def test_cli_cache_builds_then_reuses(lerobot_fixtures: Path, tmp_path: Path) -> None:
    args = ("dataset", "cache", str(lerobot_fixtures / V21), "--size", "32x32", "--pad", "--cache-dir", str(tmp_path))
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert "built" in first.stdout and "32x32" in first.stdout and "size on disk" in first.stdout
    second = run_cli(*args)
    assert second.returncode == 0 and "reused" in second.stdout


def test_cli_cache_bad_flags(lerobot_fixtures: Path, tmp_path: Path) -> None:
    result = run_cli("dataset", "cache", str(lerobot_fixtures / V21), "--pad", "--cache-dir", str(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr and "--pad needs --size" in result.stderr
    result = run_cli("dataset", "cache", str(tmp_path / "missing"), "--cache-dir", str(tmp_path))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "does not exist" in result.stderr


def test_concurrent_builders_share_one_build(lerobot_fixtures: Path, tmp_path: Path) -> None:
    import threading

    meta = load_meta(lerobot_fixtures / V21)
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(
        ensure_cache(meta, (24, 32), "resize", tmp_path, num_workers=0, progress=False)[1])) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, True]


def test_caches_lists_and_prunes_orphaned_stale_broken_and_least_recently_used(lerobot_fixtures: Path,
                                                                                tmp_path: Path) -> None:
    from robotrain.data.cache_admin import BROKEN, OK, ORPHANED, STALE, list_caches, prunable, remove

    cache_dir = tmp_path / "caches"
    kept = writable_copy(lerobot_fixtures / V30, tmp_path / "kept")
    edited = writable_copy(lerobot_fixtures / V30, tmp_path / "edited")
    deleted = writable_copy(lerobot_fixtures / V21, tmp_path / "deleted")
    a, _ = ensure_cache(load_meta(kept), (8, 8), "resize", cache_dir, progress=False)
    b, _ = ensure_cache(load_meta(kept), (16, 16), "resize", cache_dir, progress=False)
    c, _ = ensure_cache(load_meta(edited), (8, 8), "resize", cache_dir, progress=False)
    d, _ = ensure_cache(load_meta(deleted), (8, 8), "resize", cache_dir, progress=False)
    (cache_dir / "0123456789abcdef01234567").mkdir()  # a cache dir without its marker
    edit_info(edited, robot_type="koch")  # an edited meta file: a new key
    shutil.rmtree(deleted)
    old = time.time() - 3600
    os.utime(a.path / COMPLETE_MARKER, (old, old))
    assert find_cache(load_meta(kept), (16, 16), "resize", cache_dir) is not None  # a use stamps it
    entries = {e.path.name: e for e in list_caches(cache_dir)}
    assert {n: e.status for n, e in entries.items()} == {
        a.path.name: OK, b.path.name: OK, c.path.name: STALE, d.path.name: ORPHANED,
        "0123456789abcdef01234567": BROKEN}
    assert entries[a.path.name].last_used < entries[b.path.name].last_used
    assert entries[b.path.name].image_size == (16, 16) and entries[b.path.name].size_bytes == (
        b.size_bytes + (b.path / COMPLETE_MARKER).stat().st_size)
    # Without a size limit only what cannot be used again goes; with one, the least recently used next.
    assert {e.path.name for e in prunable(list(entries.values()))} == {
        c.path.name, d.path.name, "0123456789abcdef01234567"}
    doomed = prunable(list(entries.values()), max_size_bytes=entries[b.path.name].size_bytes)
    assert a.path.name in {e.path.name for e in doomed} and b.path.name not in {e.path.name for e in doomed}
    freed = remove(doomed, cache_dir)
    assert freed == sum(e.size_bytes for e in doomed)
    assert sorted(p.name for p in cache_dir.iterdir()) == sorted([b.path.name, f".{b.path.name}.lock"])
    assert find_cache(load_meta(kept), (16, 16), "resize", cache_dir) is not None


def test_cli_caches_prune_dry_run_then_prune(lerobot_fixtures: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "caches"
    ds = writable_copy(lerobot_fixtures / V21, tmp_path / "ds")
    cache, _ = ensure_cache(load_meta(ds), (8, 8), "resize", cache_dir, progress=False)
    shutil.rmtree(ds)
    listed = run_cli("dataset", "caches", "--cache-dir", str(cache_dir))
    assert listed.returncode == 0, listed.stderr
    assert f"1 frame cache(s) in {cache_dir}" in listed.stdout and "orphaned" in listed.stdout
    dry = run_cli("dataset", "caches", "--cache-dir", str(cache_dir), "--prune", "--dry-run", "--max-size", "1G")
    assert dry.returncode == 0 and "would delete 1 cache(s)" in dry.stdout and cache.path.is_dir()
    pruned = run_cli("dataset", "caches", "--cache-dir", str(cache_dir), "--prune")
    assert pruned.returncode == 0 and "deleted 1 cache(s), freed" in pruned.stdout and not cache.path.exists()
    bad = run_cli("dataset", "caches", "--cache-dir", str(cache_dir), "--max-size", "lots")
    assert bad.returncode == 2 and "expected a size like 20G" in bad.stderr
    alone = run_cli("dataset", "caches", "--cache-dir", str(cache_dir), "--max-size", "1G")
    assert alone.returncode == 2 and "go with --prune" in alone.stderr


def test_prune_never_touches_what_is_not_a_cache(lerobot_fixtures: Path, tmp_path: Path) -> None:
    """--cache-dir pointed at the wrong folder: its datasets, runs and notes stay."""
    from robotrain.data.cache_admin import list_caches, prunable, remove

    wrong = tmp_path / "work"
    writable_copy(lerobot_fixtures / V30, wrong / "my_dataset")
    (wrong / "notes").mkdir()
    (wrong / "notes" / "todo.txt").write_text("keep me")
    hexname = wrong / "0123456789abcdef01234567"  # named like a cache, but holds a folder
    (hexname / "sub").mkdir(parents=True)
    hidden = wrong / ".0123456789abcdef01234567.tmp-mine"  # a build's name, but a file
    hidden.write_text("keep me too")
    old = time.time() - 7200
    os.utime(hidden, (old, old))
    before = sorted(str(p.relative_to(wrong)) for p in wrong.rglob("*"))
    entries = list_caches(wrong)
    assert entries == []
    remove(prunable(entries), wrong)
    assert sorted(str(p.relative_to(wrong)) for p in wrong.rglob("*")) == before


@pytest.mark.parametrize("mode", ["resize", "pad"])
def test_cache_at_native_size_copies_frames_exactly(mode: str) -> None:
    from robotrain.data.images import fit_uint8, hwc_to_chw

    frames = np.random.default_rng(0).integers(0, 256, (5, 12, 16, 3), dtype=np.uint8)
    out = fit_uint8(hwc_to_chw(frames), (12, 16), mode).numpy()
    assert out.dtype == np.uint8 and out.shape == (5, 3, 12, 16)
    np.testing.assert_array_equal(out, frames.transpose(0, 3, 1, 2))
    assert fit_uint8(hwc_to_chw(frames), (6, 8), mode).shape == (5, 3, 6, 8)  # a real resize still happens


def test_decode_workers_run_one_torch_thread_each() -> None:
    import torch

    before = torch.get_num_threads()
    try:
        cache_mod._init_decode_worker()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
