"""SVT-AV1 must not leave our threads real-time (SCHED_FIFO 99): see mp4.keep_scheduling.

Run: /work/venv/bin/python -m pytest -q tests/test_encoder_scheduling.py
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import av
import numpy as np
import pytest

from robotrain.data import mp4

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "sched_getscheduler"), reason="needs Linux scheduling calls"),
    pytest.mark.skipif("libsvtav1" not in av.codecs_available, reason="no SVT-AV1 in this PyAV build"),
]


@pytest.fixture(autouse=True)
def ordinary_caller():
    """Start from SCHED_OTHER (lowering is always allowed), whatever ran before in this process."""
    saved = (os.sched_getscheduler(0), os.sched_getparam(0))
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    yield
    with contextlib.suppress(OSError):
        os.sched_setscheduler(0, *saved)


def _policies(tids: set[int]) -> set[tuple[int, int]]:
    out = set()
    for tid in tids:
        try:
            out.add((os.sched_getscheduler(tid), os.sched_getparam(tid).sched_priority))
        except OSError:
            pass
    return out


def _tids() -> set[int]:
    return {int(t) for t in os.listdir("/proc/self/task")}


def test_clip_encoder_keeps_caller_and_workers_unprivileged(tmp_path: Path) -> None:
    before = (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority)
    old_threads = _tids()
    enc = mp4.ClipEncoder(tmp_path / "c.mp4", 64, 96, 30, "libsvtav1", mp4.encoder_options("libsvtav1"))
    try:
        for _ in range(3):
            enc.add_frame(np.zeros((64, 96, 3), np.uint8))
        # while the encoder's worker threads are alive: nobody in this process is real-time
        assert (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority) == before
        new_threads = _tids() - old_threads
        assert len(new_threads) > 1  # SVT's workers exist now
        assert _policies(new_threads) == {before}
    finally:
        enc.close()
    assert (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority) == before


def test_probe_encoder_keeps_caller_policy() -> None:
    before = (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority)
    assert mp4.probe_encoder("libsvtav1", 64, 96, mp4.encoder_options("libsvtav1")) is None
    assert (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority) == before


def test_keep_scheduling_undoes_a_raised_policy() -> None:
    """The mechanism itself, without SVT: a thread made FIFO inside the block is restored."""
    try:
        with mp4.keep_scheduling():
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except PermissionError:
        pytest.skip("real-time scheduling not permitted here (then SVT cannot raise it either)")
    assert os.sched_getscheduler(0) != os.SCHED_FIFO
