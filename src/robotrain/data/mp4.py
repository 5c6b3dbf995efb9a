"""mp4 clips for LeRobot v3.0 datasets: encode one episode's clip, probe a clip, and join
clips into the concatenated per-camera files by STREAM COPY (no re-encode).

LeRobot v3.0 stores many episodes per mp4 and finds frame t of episode e at
`from_timestamp[e] + t`. We encode each episode to its own clip first (as LeRobot does),
then append its packets to the open file with timestamps shifted to continue where the
previous clip ended. That keeps every episode discardable until it is saved, makes the
file-size limit exact (the clip size is known before it is appended) and lets the v2.1
converter reuse the same joiner on existing clips.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from robotrain.errors import DatasetError
from robotrain.system.files import atomic_path

# SVT-AV1 prints a banner and warnings on stderr for every encoder it opens; keep errors.
os.environ.setdefault("SVT_LOG", "1")

import av  # noqa: E402  (after SVT_LOG so the encoder library sees it)

# Encoder names we accept -> (PyAV encoder, name written to info.json's video.codec).
CODECS: dict[str, tuple[str, str]] = {
    "libsvtav1": ("libsvtav1", "av1"),
    "av1": ("libsvtav1", "av1"),
    "libx264": ("libx264", "h264"),
    "h264": ("libx264", "h264"),
}
FALLBACK_ENCODER = "libx264"
PIX_FMT = "yuv420p"
# LeRobot's recorder defaults (shared docs §1): GOP 2 keeps random access cheap.
DEFAULT_GOP = 2
DEFAULT_CRF = {"libsvtav1": 30, "libx264": 23}
DEFAULT_SVT_PRESET = 12
STREAM_COPY_CODECS = ("av1", "h264", "hevc")  # codecs an mp4 holds and LeRobot decodes

log = logging.getLogger(__name__)


def _thread_ids() -> set[int]:
    try:
        return {int(t) for t in os.listdir("/proc/self/task")}
    except OSError:  # not Linux
        return set()


@contextlib.contextmanager
def keep_scheduling() -> Iterator[None]:
    """Undo the real-time scheduling SVT-AV1 imposes while an encoder is opened inside this block.

    When the process may use real-time scheduling (root, or CAP_SYS_NICE), SVT-AV1's encoder
    init calls sched_setscheduler(SCHED_FIFO, 99) on the thread that opens it, and its ~50
    worker threads per encoder inherit SCHED_FIFO 99. Our Python thread then stays real-time
    for good (and every thread and forked process it starts later inherits it). FIFO threads of
    equal priority are never time-sliced, so the caller outruns the encoder's pipeline and, on
    a loaded 2-core machine, the encode deadlocked within a few dozen 300-frame clips (caller
    blocked in svt_av1_enc_send_picture, every SVT thread idle in sem_wait). Restoring the
    caller's own policy on the caller and on the threads the encoder created avoids that.
    """
    if not hasattr(os, "sched_getscheduler"):
        yield
        return
    me = threading.get_native_id()
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    before = _thread_ids()
    try:
        yield
    finally:
        changed = 0
        for tid in (_thread_ids() - before) | {me}:
            try:
                if os.sched_getscheduler(tid) != policy or os.sched_getparam(tid).sched_priority != param.sched_priority:
                    os.sched_setscheduler(tid, policy, param)
                    changed += 1
            except OSError:  # thread already gone, or not allowed (then it was not raised either)
                continue
        if changed:
            log.debug("restored scheduling policy %d on %d encoder thread(s)", policy, changed)


def encoder_options(encoder: str, crf: int | None = None, gop: int = DEFAULT_GOP,
                    preset: int = DEFAULT_SVT_PRESET) -> dict[str, str]:
    opts = {"g": str(gop), "crf": str(crf if crf is not None else DEFAULT_CRF[encoder])}
    if encoder == "libsvtav1":
        opts["preset"] = str(preset)
    else:  # no B-frames: pts == dts, so clips join and seek like the AV1 ones
        opts.update(preset="veryfast", bf="0")
    return opts


def probe_encoder(encoder: str, height: int, width: int, options: Mapping[str, str]) -> str | None:
    """Encode two frames in memory; returns None if it works, else the reason."""
    if encoder not in av.codecs_available:
        return f"encoder {encoder} is not in this PyAV/FFmpeg build"
    try:
        ctx = av.CodecContext.create(encoder, "w")
        ctx.width, ctx.height, ctx.pix_fmt = width, height, PIX_FMT
        ctx.time_base = Fraction(1, 30)
        ctx.options = dict(options)
        with keep_scheduling():
            ctx.open()
        for i in range(2):
            frame = av.VideoFrame.from_ndarray(np.zeros((height, width, 3), np.uint8), format="rgb24")
            frame.pts = i
            ctx.encode(frame)
        ctx.encode(None)
    except Exception as exc:  # any FFmpeg failure means "use the fallback"
        return f"{encoder} failed: {exc}"
    return None


class ClipEncoder:
    """Encode one episode's frames into its own mp4, frame pts = frame index / fps."""

    def __init__(self, path: Path, height: int, width: int, fps: int, encoder: str,
                 options: Mapping[str, str]) -> None:
        self.path = path
        self.num_frames = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(path), mode="w", format="mp4")
        self._stream = self._container.add_stream(encoder, rate=fps)
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, PIX_FMT
        self._stream.options = dict(options)
        # Open now (PyAV would on the first frame) so the encoder's threads start inside
        # keep_scheduling().
        try:
            with keep_scheduling():
                self._stream.codec_context.open()
        except BaseException:
            with contextlib.suppress(Exception):
                self._container.close()
            path.unlink(missing_ok=True)
            raise

    def add_frame(self, rgb: np.ndarray) -> None:
        """rgb: (H, W, 3) uint8."""
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = self.num_frames
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.num_frames += 1

    def close(self) -> None:
        """Flush the encoder and finish the file."""
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._stream.encode(None)  # SVT-AV1 complains when closed without end of stream
        with contextlib.suppress(Exception):
            self._container.close()
        self.path.unlink(missing_ok=True)


# H.264 for videos people watch (rollouts, expert previews), not dataset storage.
PREVIEW_ENCODER = "libx264"
PREVIEW_OPTIONS = {"crf": "23", "preset": "veryfast"}


def even_frame(rgb: np.ndarray) -> np.ndarray:
    """Pad (H, W, 3) to even H and W by repeating the edge: yuv420p needs even sizes."""
    h, w = rgb.shape[:2]
    if h % 2 or w % 2:
        rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return np.ascontiguousarray(rgb)


def write_preview_mp4(path: str | Path, frames: np.ndarray, fps: int) -> Path:
    """frames (T, H, W, 3) uint8 -> an H.264 mp4 at `path`, written atomically."""
    path = Path(path)
    first = even_frame(frames[0])
    with atomic_path(path) as tmp:
        encoder = ClipEncoder(tmp, first.shape[0], first.shape[1], fps, PREVIEW_ENCODER, PREVIEW_OPTIONS)
        try:
            for frame in frames:
                encoder.add_frame(even_frame(frame))
            encoder.close()
        except BaseException:
            encoder.abort()
            raise
    return path


@dataclass
class Clip:
    """What we need to know about one episode's mp4 to join it to others."""

    path: Path
    codec: str  # canonical name: "av1", "h264", ...
    width: int
    height: int
    pix_fmt: str | None
    time_base: Fraction
    extradata: bytes
    num_frames: int
    first_pts: int
    step: int | None  # pts units per frame if constant, else None
    reordered: bool  # dts != pts somewhere (B-frames)
    size: int

    def signature(self) -> tuple:
        """Clips with equal signatures can share one mp4 stream."""
        return (self.codec, self.width, self.height, self.pix_fmt, self.time_base, self.extradata)


def probe_clip(path: Path) -> Clip:
    """Read a clip's stream parameters and packet timestamps (demux only, no decoding)."""
    if not path.is_file():
        raise DatasetError("video file missing", path)
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise DatasetError("no video stream", path)
            st = c.streams.video[0]
            cc = st.codec_context
            pts, reordered = [], False
            for p in c.demux(st):
                if p.size == 0 or p.pts is None:
                    continue
                pts.append(int(p.pts))
                reordered |= p.dts is None or p.dts != p.pts
            pts.sort()
            steps = set(np.diff(pts).tolist()) if len(pts) > 1 else set()
            return Clip(
                path=path, codec=cc.codec.canonical_name, width=cc.width, height=cc.height,
                pix_fmt=cc.pix_fmt, time_base=Fraction(st.time_base), extradata=bytes(cc.extradata or b""),
                num_frames=len(pts), first_pts=pts[0] if pts else 0,
                step=steps.pop() if len(steps) == 1 else (None if steps else 1),
                reordered=reordered, size=path.stat().st_size,
            )
    except av.error.FFmpegError as exc:
        raise DatasetError(f"cannot read video: {exc}", path) from None


def copy_blocker(clips: Sequence[Clip], fps: int) -> str | None:
    """Why these clips cannot be joined into one stream by stream copy (None if they can)."""
    first = clips[0]
    if first.codec not in STREAM_COPY_CODECS:
        return f"codec {first.codec} is not one of {STREAM_COPY_CODECS}"
    for c in clips:
        if c.signature() != first.signature():
            return f"{c.path.name} differs from {first.path.name} in codec parameters"
        if c.reordered:
            return f"{c.path.name} has B-frame reordering"
        if c.num_frames == 0:
            return f"{c.path.name} has no frames"
    frame_step = 1 / (Fraction(fps) * first.time_base)
    if frame_step.denominator != 1:
        return f"time base {first.time_base} does not hold whole frames at {fps} fps"
    for c in clips:
        if c.num_frames > 1 and c.step != int(frame_step):
            return f"{c.path.name} does not have a constant {fps} fps frame rate"
    return None


class RollingFile:
    """Numbering of `chunk-XXX/file-YYY` files: the file index advances when the current
    file would pass the size limit; after `chunks_size` files the chunk index advances."""

    def __init__(self, limit_bytes: float, chunks_size: int) -> None:
        self.limit_bytes = limit_bytes
        self.chunks_size = chunks_size
        self.chunk_index = 0
        self.file_index = 0
        self.is_open = False

    def should_roll(self, current_bytes: float, incoming_bytes: float) -> bool:
        """True if the open, non-empty file would pass the limit with `incoming_bytes` more."""
        return self.is_open and current_bytes > 0 and current_bytes + incoming_bytes > self.limit_bytes

    def roll(self) -> None:
        self.close()
        self.file_index += 1
        if self.file_index >= self.chunks_size:
            self.chunk_index += 1
            self.file_index = 0

    def close(self) -> None:  # subclasses close their handle, then call this
        self.is_open = False


class ClipJoiner(RollingFile):
    """One camera's concatenated mp4 files, filled by stream copy: each clip's packets are
    appended with pts/dts shifted so it starts where the previous clip ended. A new file
    starts when the size limit would be passed or a clip's codec parameters differ."""

    def __init__(self, path_for: Callable[[int, int], Path], fps: int, limit_bytes: float,
                 chunks_size: int) -> None:
        super().__init__(limit_bytes, chunks_size)
        self.path_for, self.fps = path_for, fps
        self._container: Any = None
        self._stream: Any = None
        self._signature: tuple | None = None
        self._bytes = 0
        self._offset = 0  # end of the last clip, in the clips' time base

    def add_clip(self, clip: Clip) -> tuple[int, int, float, float]:
        """Append a clip; returns (chunk_index, file_index, from_timestamp, to_timestamp)."""
        if self.is_open and clip.signature() != self._signature:
            self.roll()
        elif self.should_roll(self._bytes, clip.size):
            self.roll()
        step = 1 / (Fraction(self.fps) * clip.time_base)
        if step.denominator != 1:
            raise DatasetError(f"time base {clip.time_base} does not hold whole frames at {self.fps} fps", clip.path)
        with av.open(str(clip.path)) as src:
            in_stream = src.streams.video[0]
            if self._container is None:
                path = self.path_for(self.chunk_index, self.file_index)
                path.parent.mkdir(parents=True, exist_ok=True)
                self._container = av.open(str(path), mode="w", format="mp4")
                self._stream = self._container.add_stream_from_template(in_stream, opaque=True)
                self._signature, self._bytes, self._offset = clip.signature(), 0, 0
                self.is_open = True
            start = self._offset
            for packet in src.demux(in_stream):
                if packet.size == 0 or packet.pts is None:
                    continue
                packet.pts = packet.pts - clip.first_pts + start
                packet.dts = packet.dts - clip.first_pts + start
                packet.stream = self._stream
                self._bytes += packet.size
                self._container.mux(packet)
        self._offset = start + clip.num_frames * int(step)
        return (self.chunk_index, self.file_index, float(start * clip.time_base),
                float(self._offset * clip.time_base))

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
            self._stream = None
        super().close()
