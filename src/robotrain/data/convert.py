"""Convert a LeRobot v2.1 dataset (one parquet + one mp4 per episode) to v3.0.

What happens:
- frames: every episode's parquet is appended, unchanged, to chunked
  `data/chunk-XXX/file-YYY.parquet` files (one row group per episode);
- videos: each camera's episode clips are concatenated into `videos/<key>/chunk-XXX/
  file-YYY.mp4` by STREAM COPY (packets remuxed with shifted timestamps, no re-encode, so
  pixels are bit-identical), with `from_timestamp` / `to_timestamp` per episode. When the
  clips cannot be joined losslessly (codec / size / time base / extradata differ between
  episodes, B-frame reordering, variable frame rate) that camera is re-encoded instead;
- stats: per-episode stats of the frame columns are recomputed from the data (exact, in
  float64, adding the quantiles v2.1 lacks); image stats are copied from
  `episodes_stats.jsonl` (computed by LeRobot on the frames before encoding) or, with
  `image_stats="recompute"` or when the source lacks them, computed from a subsample of
  decoded frames (adds quantiles); dataset stats are aggregated from the episode stats
  (robotrain.data.stats);
- verification: before anything becomes visible, every frame's columns (index,
  timestamp, state, action, ...) are compared with the source, and a few frames per
  episode are decoded at `from_timestamp + timestamp` and compared with the source clip.
The output is built in a temporary sibling directory and renamed at the end; `out` must
not exist.

Example:
    PYTHONPATH=src python -c "
    from robotrain.data.convert import convert_v21_to_v30
    print(convert_v21_to_v30('../shared/fixtures/so101_fixture_v21', '/tmp/so101_v30').summary())"
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from robotrain.constants import EPISODE_INDEX, INDEX, TIMESTAMP
from robotrain.data import stats as stats_lib
from robotrain.data import writer as w
from robotrain.errors import DatasetError
from robotrain.io_utils import atomic_directory

av = w.av  # imported by writer after setting SVT_LOG
logger = logging.getLogger(__name__)

SOURCE_VERSIONS = ("v2.1",)
STREAM_COPY_CODECS = ("av1", "h264", "hevc")  # codecs an mp4 holds and LeRobot decodes
# Decoded frames compared with the source per episode and camera (first, middle, last).
DEFAULT_CHECK_FRAMES = 3
TOLERANCE_S = 1e-4  # LeRobot's tolerance when it looks a frame up by timestamp
# Mean absolute pixel error (0-255) allowed for re-encoded clips in verification.
REENCODE_MAX_PIXEL_ERROR = 12.0


@dataclass
class ConversionReport:
    """What `convert_v21_to_v30` did; `summary()` is what the CLI prints."""

    src: Path
    out: Path
    episodes: int = 0
    frames: int = 0
    tasks: int = 0
    data_files: int = 0
    video_files: dict[str, int] = field(default_factory=dict)
    video_mode: dict[str, str] = field(default_factory=dict)  # key -> "stream-copy" | "re-encode (<why>)"
    verified_rows: int = 0
    verified_video_frames: int = 0
    max_pixel_error: float = 0.0  # mean |decoded - source| of the worst checked frame (0-255)
    image_stats: str = ""  # "copy" (from episodes_stats.jsonl) or "recompute" (decoded frames)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"converted {self.src} (v2.1) -> {self.out} (v3.0) in {self.seconds:.1f} s",
            f"  {self.episodes} episodes, {self.frames} frames, {self.tasks} tasks, {self.data_files} data file(s)",
        ]
        for key, mode in self.video_mode.items():
            lines.append(f"  {key}: {mode}, {self.video_files.get(key, 0)} file(s)")
        if self.video_mode:
            lines.append(f"  image stats: {self.image_stats}; frame-column stats recomputed from the data")
        lines.append(
            f"  verified {self.verified_rows} rows (all columns equal) and {self.verified_video_frames} decoded "
            f"frames (max mean pixel error {self.max_pixel_error:.2f})"
        )
        lines += [f"  warning: {msg}" for msg in self.warnings]
        return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Reading the v2.1 source
# --------------------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError("missing file (is this a LeRobot v2.1 dataset?)", path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"not valid JSON: {exc}", path) from None


def _read_jsonl(path: Path, required: bool = True) -> list[dict[str, Any]]:
    if not path.is_file():
        if required:
            raise DatasetError("missing file (is this a LeRobot v2.1 dataset?)", path)
        return []
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DatasetError(f"line {n} is not valid JSON: {exc}", path) from None
    return rows


@dataclass
class _Source:
    root: Path
    info: dict[str, Any]
    episodes: list[dict[str, Any]]  # by episode_index
    tasks: list[str]  # by task_index
    episode_stats: dict[int, dict[str, dict[str, np.ndarray]]]

    @property
    def chunks_size(self) -> int:
        return int(self.info.get("chunks_size", w.DEFAULT_CHUNKS_SIZE))

    def data_path(self, ep: int) -> Path:
        return self.root / self.info["data_path"].format(episode_chunk=ep // self.chunks_size, episode_index=ep)

    def video_path(self, key: str, ep: int) -> Path:
        return self.root / self.info["video_path"].format(
            episode_chunk=ep // self.chunks_size, video_key=key, episode_index=ep
        )


def _load_source(src: Path) -> _Source:
    if not src.is_dir():
        raise DatasetError("source dataset directory not found", src)
    info = _read_json(src / "meta/info.json")
    version = info.get("codebase_version")
    if version not in SOURCE_VERSIONS:
        raise DatasetError(f"codebase_version is {version!r}; only {SOURCE_VERSIONS} can be converted",
                           src / "meta/info.json")
    for k in ("fps", "features", "data_path"):
        if k not in info:
            raise DatasetError(f"missing key {k!r}", src / "meta/info.json")
    episodes = sorted(_read_jsonl(src / "meta/episodes.jsonl"), key=lambda e: e.get("episode_index", -1))
    if [e.get("episode_index") for e in episodes] != list(range(len(episodes))) or not episodes:
        raise DatasetError("episode_index values must be 0..N-1 without gaps", src / "meta/episodes.jsonl")
    tasks_rows = sorted(_read_jsonl(src / "meta/tasks.jsonl"), key=lambda t: t.get("task_index", -1))
    if [t.get("task_index") for t in tasks_rows] != list(range(len(tasks_rows))):
        raise DatasetError("task_index values must be 0..N-1 without gaps", src / "meta/tasks.jsonl")
    stats_rows = _read_jsonl(src / "meta/episodes_stats.jsonl", required=False)
    episode_stats = {int(r["episode_index"]): stats_lib.stats_from_json(r["stats"]) for r in stats_rows}
    for key, ft in info["features"].items():
        if ft.get("dtype") == "image":
            raise DatasetError(f"feature {key!r} stores images in parquet; only video features are supported",
                               src / "meta/info.json")
    if any(ft.get("dtype") == "video" for ft in info["features"].values()) and "video_path" not in info:
        raise DatasetError("has video features but no 'video_path'", src / "meta/info.json")
    return _Source(src, info, episodes, [t["task"] for t in tasks_rows], episode_stats)


# --------------------------------------------------------------------------------------
# Videos: probe, stream copy, re-encode
# --------------------------------------------------------------------------------------


@dataclass
class _Clip:
    """What we need to know about one episode's mp4 to decide how to join it."""

    path: Path
    codec: str
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
        return (self.codec, self.width, self.height, self.pix_fmt, self.time_base, self.extradata)


def _probe_clip(path: Path) -> _Clip:
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
            return _Clip(
                path=path, codec=cc.codec.canonical_name, width=cc.width, height=cc.height,
                pix_fmt=cc.pix_fmt, time_base=Fraction(st.time_base), extradata=bytes(cc.extradata or b""),
                num_frames=len(pts), first_pts=pts[0] if pts else 0,
                step=steps.pop() if len(steps) == 1 else (None if steps else 1),
                reordered=reordered, size=path.stat().st_size,
            )
    except av.error.FFmpegError as exc:
        raise DatasetError(f"cannot read video: {exc}", path) from None


def _copy_blocker(clips: list[_Clip], fps: int) -> str | None:
    """Why these clips cannot be concatenated by stream copy (None if they can)."""
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


class VideoRemuxSink(w.RollingFile):
    """One camera's output mp4 files filled by stream copy: packets of each episode's clip
    are appended with pts/dts shifted so the clip starts where the previous one ended."""

    def __init__(self, root: Path, key: str, fps: int, limit_bytes: float, chunks_size: int) -> None:
        super().__init__(limit_bytes, chunks_size)
        self.root, self.key, self.fps = root, key, fps
        self._container: Any = None
        self._stream: Any = None
        self._bytes = 0
        self._offset = 0  # in the clips' time base
        self.files = 0

    def add_clip(self, clip: _Clip) -> tuple[int, int, float, float]:
        """Append a clip; returns (chunk_index, file_index, from_timestamp, to_timestamp)."""
        if self.should_roll(self._bytes, clip.size):
            self.roll()
        step = int(1 / (Fraction(self.fps) * clip.time_base))
        with av.open(str(clip.path)) as src:
            in_stream = src.streams.video[0]
            if self._container is None:
                path = self.root / w.VIDEO_PATH.format(video_key=self.key, chunk_index=self.chunk_index,
                                                       file_index=self.file_index)
                path.parent.mkdir(parents=True, exist_ok=True)
                self._container = av.open(str(path), mode="w", format="mp4")
                self._stream = self._container.add_stream_from_template(in_stream, opaque=True)
                self._bytes, self._offset = 0, 0
                self.is_open = True
                self.files += 1
            start = self._offset
            for packet in src.demux(in_stream):
                if packet.size == 0 or packet.pts is None:
                    continue
                packet.pts = packet.pts - clip.first_pts + start
                packet.dts = packet.dts - clip.first_pts + start
                packet.stream = self._stream
                self._bytes += packet.size
                self._container.mux(packet)
        self._offset = start + clip.num_frames * step
        return (self.chunk_index, self.file_index, float(start * clip.time_base),
                float(self._offset * clip.time_base))

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
        super().close()


def _decode_clip(path: Path) -> Iterator[np.ndarray]:
    """(H, W, 3) uint8 frames of a clip, in presentation order."""
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def _check_indices(n: int, k: int) -> list[int]:
    return sorted({int(i) for i in np.linspace(0, n - 1, k).round()}) if n and k else []


@dataclass
class _FrameCheck:
    episode: int
    frame: int
    digest: bytes  # blake2b of the full source frame: stream copy must reproduce it
    thumb: np.ndarray  # strided source frame for the pixel error of re-encoded clips


def _fingerprint(rgb: np.ndarray) -> tuple[bytes, np.ndarray]:
    return hashlib.blake2b(np.ascontiguousarray(rgb).tobytes(), digest_size=16).digest(), rgb[::4, ::4].copy()


# --------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------


def convert_v21_to_v30(
    src: str | Path,
    out: str | Path,
    *,
    data_files_size_in_mb: float = w.DEFAULT_DATA_FILES_SIZE_IN_MB,
    video_files_size_in_mb: float = w.DEFAULT_VIDEO_FILES_SIZE_IN_MB,
    chunks_size: int | None = None,
    stream_copy: bool = True,
    codec: str = "libsvtav1",
    image_stats: str = "auto",
    check_frames: int = DEFAULT_CHECK_FRAMES,
    image_stats_frames: int = w.DEFAULT_IMAGE_STATS_FRAMES,
) -> ConversionReport:
    """Convert the v2.1 dataset at `src` into a new v3.0 dataset at `out` (must not exist).

    stream_copy=False forces re-encoding every camera with `codec` (writer settings).
    image_stats: "auto" (copy from episodes_stats.jsonl when every episode has them, else
    recompute), "copy" or "recompute" (decode a subsample per episode; adds quantiles).
    Raises DatasetError for a bad source, an existing `out` or a failed verification
    (then nothing is written).
    """
    t0 = time.perf_counter()
    src, out = Path(src), Path(out)
    if out.exists():
        raise DatasetError("output already exists; choose a new directory", out)
    if image_stats not in ("auto", "recompute", "copy"):
        raise w.WriterInputError(f"image_stats: must be 'auto', 'recompute' or 'copy', got {image_stats!r}")
    source = _load_source(src)
    fps = int(source.info["fps"])
    chunks = int(chunks_size or source.chunks_size)
    features: dict[str, dict[str, Any]] = {k: dict(v) for k, v in source.info["features"].items()}
    video_keys = [k for k, ft in features.items() if ft.get("dtype") == "video"]
    schema = w.data_schema(features)
    report = ConversionReport(src=src, out=out, episodes=len(source.episodes), tasks=len(source.tasks))
    have_stats = all(k in source.episode_stats.get(ep, {}) for ep in range(len(source.episodes))
                     for k in video_keys)
    if image_stats == "copy" and not have_stats:
        raise DatasetError("image_stats='copy' needs every episode and camera in episodes_stats.jsonl",
                           src / "meta/episodes_stats.jsonl")
    if image_stats == "auto":
        image_stats = "copy" if have_stats else "recompute"
    report.image_stats = image_stats

    with atomic_directory(out) as tmp:
        records = _convert_data(source, tmp, schema, data_files_size_in_mb * 1024**2, chunks, report)
        checks: dict[str, list[_FrameCheck]] = {}
        for key in video_keys:
            checks[key] = _convert_video(
                source, tmp, key, records, features, report,
                stream_copy=stream_copy, codec=codec, limit_bytes=video_files_size_in_mb * 1024**2,
                chunks=chunks, image_stats=image_stats, check_frames=check_frames,
                image_stats_frames=image_stats_frames,
            )
        info = w.build_info(
            robot_type=source.info.get("robot_type"), fps=fps, features=features,
            total_episodes=len(records), total_frames=report.frames, total_tasks=len(source.tasks),
            chunks_size=chunks, data_files_size_in_mb=data_files_size_in_mb,
            video_files_size_in_mb=video_files_size_in_mb,
        )
        dataset_stats = stats_lib.aggregate_stats([r.stats for r in records])
        w.write_meta(tmp, info, records, source.tasks, dataset_stats)
        _verify(source, tmp, schema, records, checks, report)
    report.seconds = time.perf_counter() - t0
    logger.info("%s", report.summary())
    return report


def _convert_data(source: _Source, tmp: Path, schema: pa.Schema, limit_bytes: float, chunks: int,
                  report: ConversionReport) -> list[w.EpisodeRecord]:
    """Append every episode's frames to the v3.0 data files; one EpisodeRecord each."""
    sink = w.ParquetSink(tmp, schema, limit_bytes, chunks)
    records: list[w.EpisodeRecord] = []
    position = 0
    try:
        for ep_meta in source.episodes:
            ep = int(ep_meta["episode_index"])
            table = _read_episode_table(source, ep, schema)
            n = table.num_rows
            if n != int(ep_meta.get("length", n)):
                report.warnings.append(f"episode {ep}: episodes.jsonl says {ep_meta.get('length')} frames, "
                                       f"parquet has {n}; using {n}")
            index = table.column(INDEX).to_numpy()
            if index[0] != position or not np.array_equal(index, np.arange(position, position + n)):
                report.warnings.append(f"episode {ep}: 'index' is not {position}..{position + n - 1}; kept as is")
            chunk, file = sink.write_episode(table)
            ep_stats = {}
            for name in schema.names:
                col = table.column(name)
                if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                    continue
                values = np.asarray(col.combine_chunks().flatten()).reshape(n, -1) \
                    if pa.types.is_fixed_size_list(col.type) else col.to_numpy()
                ep_stats[name] = stats_lib.compute_feature_stats(values)
            records.append(w.EpisodeRecord(
                episode_index=ep, tasks=list(ep_meta.get("tasks", [])), length=n, data_chunk_index=chunk,
                data_file_index=file, dataset_from_index=position, dataset_to_index=position + n, stats=ep_stats,
            ))
            position += n
    finally:
        sink.close()
    report.frames = position
    report.data_files = sum(1 for _ in (tmp / "data").glob("chunk-*/file-*.parquet"))
    return records


def _read_episode_table(source: _Source, ep: int, schema: pa.Schema) -> pa.Table:
    path = source.data_path(ep)
    if not path.is_file():
        raise DatasetError(f"data file of episode {ep} missing", path)
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DatasetError(f"cannot read parquet: {exc}", path) from None
    missing = [n for n in schema.names if n not in table.column_names]
    if missing:
        raise DatasetError(f"columns {missing} listed in info.json features are missing", path)
    if table.num_rows == 0:
        raise DatasetError(f"episode {ep} has no frames", path)
    episode_col = table.column(EPISODE_INDEX).to_numpy()
    if not (episode_col == ep).all():
        raise DatasetError(f"episode_index column is not {ep} everywhere", path)
    try:
        return table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DatasetError(f"columns do not match info.json features: {exc}", path) from None


def _convert_video(source: _Source, tmp: Path, key: str, records: list[w.EpisodeRecord],
                   features: dict[str, dict[str, Any]], report: ConversionReport, *, stream_copy: bool,
                   codec: str, limit_bytes: float, chunks: int, image_stats: str, check_frames: int,
                   image_stats_frames: int) -> list[_FrameCheck]:
    """Join one camera's clips (stream copy, else re-encode); fill records' video fields and
    image stats; returns the source fingerprints of the frames to verify."""
    fps = int(source.info["fps"])
    clips = [_probe_clip(source.video_path(key, r.episode_index)) for r in records]
    blocker = "stream copy disabled" if not stream_copy else _copy_blocker(clips, fps)
    for clip, rec in zip(clips, records):
        if clip.num_frames != rec.length:
            report.warnings.append(f"{key} episode {rec.episode_index}: video has {clip.num_frames} frames, "
                                   f"data has {rec.length}")
    checks: list[_FrameCheck] = []
    if blocker is None:
        sink: Any = VideoRemuxSink(tmp, key, fps, limit_bytes, chunks)
        features[key]["info"] = {**features[key].get("info", {}), "video.codec": clips[0].codec,
                                 "video.pix_fmt": clips[0].pix_fmt}
        report.video_mode[key] = "stream-copy"
    else:
        encoder, codec_name = w.CODECS[codec]
        options = w.encoder_options(encoder, None, w.DEFAULT_GOP, w.DEFAULT_SVT_PRESET)
        if w.probe_encoder(encoder, clips[0].height, clips[0].width, options) is not None:
            encoder, codec_name = w.CODECS[w.FALLBACK_ENCODER]
            options = w.encoder_options(encoder, None, w.DEFAULT_GOP, w.DEFAULT_SVT_PRESET)
        sink = w.VideoEncoderSink(tmp, key, clips[0].height, clips[0].width, fps, encoder, options,
                                  limit_bytes, chunks)
        features[key]["info"] = {**features[key].get("info", {}), "video.codec": codec_name, "video.pix_fmt": w.PIX_FMT}
        report.video_mode[key] = f"re-encode ({blocker})"
    features[key]["shape"] = [clips[0].height, clips[0].width, 3]
    try:
        for clip, rec in zip(clips, records):
            ep = rec.episode_index
            want = set(_check_indices(clip.num_frames, check_frames))
            decode = blocker is not None or image_stats == "recompute" or want
            sample = set(stats_lib.sample_frame_indices(clip.num_frames, image_stats_frames).tolist())
            samples: list[np.ndarray] = []
            if blocker is None:
                rec.videos[key] = sink.add_clip(clip)
            else:
                chunk, file, from_ts = sink.begin_episode(clip.num_frames)
            if decode:
                n = 0
                for i, rgb in enumerate(_decode_clip(clip.path)):
                    if blocker is not None:
                        sink.add_frame(rgb)
                    if i in sample and image_stats == "recompute":
                        samples.append(rgb)
                    if i in want:
                        checks.append(_FrameCheck(ep, i, *_fingerprint(rgb)))
                    n = i + 1
                    if blocker is None and image_stats == "copy" and i >= max(want, default=-1):
                        break  # nothing more to look at in this clip
                if blocker is not None:
                    rec.videos[key] = (chunk, file, from_ts, from_ts + n / fps)
            if image_stats == "recompute":
                rec.stats[key] = stats_lib.compute_image_stats(samples, num_frames=rec.length)
            else:
                rec.stats[key] = source.episode_stats[ep][key]
    finally:
        sink.close()
    report.video_files[key] = sum(1 for _ in (tmp / "videos" / key).glob("chunk-*/file-*.mp4"))
    # Keep episode stats in info.json feature order (writer's _episodes_table reads it).
    for rec in records:
        rec.stats = {k: rec.stats[k] for k in features if k in rec.stats}
    return checks


# --------------------------------------------------------------------------------------
# Verification (inside the temporary directory, before the rename)
# --------------------------------------------------------------------------------------


def _verify(source: _Source, tmp: Path, schema: pa.Schema, records: list[w.EpisodeRecord],
            checks: dict[str, list[_FrameCheck]], report: ConversionReport) -> None:
    cached: dict[tuple[int, int], pa.Table] = {}
    file_start: dict[tuple[int, int], int] = {}
    for rec in records:
        loc = (rec.data_chunk_index, rec.data_file_index)
        if loc not in cached:
            cached.clear()
            cached[loc] = pq.read_table(tmp / w.DATA_PATH.format(chunk_index=loc[0], file_index=loc[1]))
            file_start[loc] = rec.dataset_from_index
        got = cached[loc].slice(rec.dataset_from_index - file_start[loc], rec.length)
        want = _read_episode_table(source, rec.episode_index, schema)
        for name in schema.names:
            if not got.column(name).equals(want.column(name)):
                raise DatasetError(f"verification failed: column {name!r} of episode {rec.episode_index} "
                                   "differs from the source", tmp)
        report.verified_rows += rec.length
    ts_by_ep = {}
    for key, key_checks in checks.items():
        exact = report.video_mode[key] == "stream-copy"
        by_file: dict[tuple[int, int], list[_FrameCheck]] = {}
        for chk in key_checks:
            chunk, file, _, _ = records[chk.episode].videos[key]
            by_file.setdefault((chunk, file), []).append(chk)
        for (chunk, file), file_checks in by_file.items():
            path = tmp / w.VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=file)
            with av.open(str(path)) as c:
                stream = c.streams.video[0]
                for chk in file_checks:
                    rec = records[chk.episode]
                    if chk.episode not in ts_by_ep:
                        ts_by_ep[chk.episode] = _read_episode_table(source, chk.episode, schema).column(
                            TIMESTAMP).to_numpy()
                    ts = ts_by_ep[chk.episode]
                    if chk.frame >= len(ts):
                        continue  # a video frame beyond the data: nothing looks it up
                    query = rec.videos[key][2] + float(ts[chk.frame])
                    rgb = _decode_at(c, stream, query, path)
                    digest, thumb = _fingerprint(rgb)
                    err = float(np.abs(thumb.astype(np.int16) - chk.thumb).mean())
                    report.max_pixel_error = max(report.max_pixel_error, err)
                    if (exact and digest != chk.digest) or err > REENCODE_MAX_PIXEL_ERROR:
                        raise DatasetError(f"verification failed: {key} episode {chk.episode} frame {chk.frame} "
                                           f"decodes differently (mean pixel error {err:.2f})", path)
                    report.verified_video_frames += 1


def _decode_at(container: Any, stream: Any, query: float, path: Path) -> np.ndarray:
    """The frame shown at `query` seconds, which must be within TOLERANCE_S of a frame."""
    target = int(query / float(stream.time_base))
    container.seek(max(target, 0), stream=stream, backward=True, any_frame=False)
    for frame in container.decode(stream):
        t = float(frame.time)
        if t >= query - TOLERANCE_S:
            if abs(t - query) > TOLERANCE_S:
                break
            return frame.to_ndarray(format="rgb24")
    raise DatasetError(f"verification failed: no frame within {TOLERANCE_S}s of t={query:.6f}s", path)
