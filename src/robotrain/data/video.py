"""Decode LeRobot camera videos with PyAV (fitting frames to a policy: `data/images.py`).

Two ways in:
- `decode_frames_at(path, timestamps)`: what LeRobot does for every sample (seek to the
  keyframe before the first timestamp, decode forward, keep the frame closest to each
  timestamp, reject one farther than `tolerance_s`). Used when the cache is off.
- `iter_frames_at(path, timestamps)`: the same matching rule over a long sorted list of
  timestamps (a whole episode) in one forward pass: what the decode-once cache uses.

v3.0 files hold many episodes back to back: callers pass `from_timestamp + timestamp`.

Example:
    python -c "from robotrain.data.video import probe_video; \
print(probe_video('tests/fixtures/so101_fixture_v21/videos/chunk-000/observation.images.front/episode_000000.mp4'))"
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from robotrain.errors import DatasetError

log = logging.getLogger(__name__)

DEFAULT_TOLERANCE_S = 1e-4  # LeRobot's tolerance_s

_AV_ERRORS: tuple[type[BaseException], ...] = (av.error.FFmpegError, OSError, ValueError, EOFError)


@dataclass(frozen=True)
class VideoProbe:
    width: int
    height: int
    fps: float | None
    codec: str
    frames: int


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise DatasetError("video file is missing", path)
    try:
        container = av.open(str(path), mode="r")
    except _AV_ERRORS as exc:
        raise DatasetError(f"cannot open video (corrupt?): {exc}", path) from exc
    if not container.streams.video:
        container.close()
        raise DatasetError("no video stream", path)
    return container


def probe_video(path: str | Path) -> VideoProbe:
    """Read the stream header and decode the first frame (cheap validity check)."""
    path = Path(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        try:
            first = next(container.decode(stream), None)
        except _AV_ERRORS as exc:
            raise DatasetError(f"cannot decode video (corrupt?): {exc}", path) from exc
        if first is None:
            raise DatasetError("video has no decodable frame", path)
        return VideoProbe(
            width=int(first.width),
            height=int(first.height),
            fps=float(rate) if rate else None,
            codec=stream.codec_context.name,
            frames=int(stream.frames or 0),
        )
    finally:
        container.close()


def video_duration(path: str | Path) -> float | None:
    """Seconds the video lasts by its header (the stream's duration, else the container's);
    None when the header does not say. Cheap: nothing is decoded."""
    path = Path(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        if stream.duration is not None and stream.time_base:
            return float(stream.duration * stream.time_base)
        if container.duration is not None:
            return container.duration / av.time_base
        return None
    except _AV_ERRORS as exc:
        raise DatasetError(f"cannot read the video header (corrupt?): {exc}", path) from exc
    finally:
        container.close()


def _seek(container: av.container.InputContainer, stream: av.video.stream.VideoStream, t: float) -> None:
    """Seek to the keyframe at or before time `t` (seconds)."""
    offset = int(max(t, 0.0) / stream.time_base) if stream.time_base else 0
    container.seek(offset, stream=stream, backward=True, any_frame=False)


def _frame_time(frame: av.VideoFrame) -> float:
    if frame.pts is None:
        raise ValueError("frame without pts")
    return float(frame.pts * frame.time_base)


def iter_frames_at(
    path: str | Path,
    timestamps: Sequence[float],
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    threads: int = 0,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (i, frame (H, W, 3) uint8) for each query in `timestamps` (ascending), in one
    forward pass from the keyframe before the first. The frame picked is the decoded one
    closest in time; farther than `tolerance_s` is a DatasetError naming the file."""
    path = Path(path)
    queries = np.asarray(timestamps, dtype=np.float64)
    if queries.size == 0:
        return
    if np.any(np.diff(queries) < 0):
        raise ValueError("timestamps must be sorted ascending")
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if threads:
            stream.codec_context.thread_count = threads
        try:
            _seek(container, stream, float(queries[0]))
            qi = 0
            prev: tuple[float, av.VideoFrame] | None = None
            for frame in container.decode(stream):
                t = _frame_time(frame)
                while qi < len(queries) and t >= queries[qi] - tolerance_s / 2:
                    q = queries[qi]
                    best_t, best = t, frame
                    if prev is not None and abs(prev[0] - q) < abs(t - q):
                        best_t, best = prev
                    _check_tolerance(path, q, best_t, tolerance_s)
                    yield qi, best.to_ndarray(format="rgb24")
                    qi += 1
                if qi == len(queries):
                    break
                prev = (t, frame)
            else:
                # Queries past the last frame: only the last frame can match.
                while qi < len(queries):
                    if prev is None:
                        raise DatasetError(f"no frame decoded near t={queries[qi]:.4f}s", path)
                    _check_tolerance(path, queries[qi], prev[0], tolerance_s)
                    yield qi, prev[1].to_ndarray(format="rgb24")
                    qi += 1
        except _AV_ERRORS as exc:
            raise DatasetError(f"cannot decode video (corrupt?): {exc}", path) from exc
    finally:
        container.close()


def _check_tolerance(path: Path, query: float, found: float, tolerance_s: float) -> None:
    if abs(found - query) > tolerance_s:
        raise DatasetError(
            f"no frame within {tolerance_s:g}s of t={query:.6f}s (closest is at {found:.6f}s); "
            "timestamps do not match the video",
            path,
        )


def check_frame_size(decoded_hw: tuple[int, ...], declared_hw: tuple[int, ...], path: str | Path) -> None:
    """A video whose frames differ from info.json's shape is a broken dataset: resizing it
    silently would train on what the policy will never see."""
    if tuple(decoded_hw) != tuple(declared_hw):
        raise DatasetError(f"decoded frames are {decoded_hw[0]}x{decoded_hw[1]} but info.json declares "
                           f"{declared_hw[0]}x{declared_hw[1]}", path)


def decode_frames_at(
    path: str | Path, timestamps: Sequence[float], tolerance_s: float = DEFAULT_TOLERANCE_S
) -> np.ndarray:
    """Frames (N, H, W, 3) uint8 at `timestamps` (any order), like LeRobot per sample."""
    ts = np.asarray(timestamps, dtype=np.float64)
    order = np.argsort(ts, kind="stable")
    out: list[np.ndarray | None] = [None] * len(ts)
    for j, frame in iter_frames_at(path, ts[order], tolerance_s):
        out[order[j]] = frame
    return np.stack(out)  # type: ignore[arg-type]
