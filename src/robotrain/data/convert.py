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
    print(convert_v21_to_v30('tests/fixtures/so101_fixture_v21', '/tmp/so101_v30').summary())"
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from robotrain.constants import EPISODE_INDEX, INDEX, TIMESTAMP
from robotrain.data import mp4
from robotrain.data import stats as stats_lib
from robotrain.data import writer as w
from robotrain.data.mp4 import av
from robotrain.errors import ConfigError, DatasetError
from robotrain.system.files import atomic_directory, read_json, read_jsonl

logger = logging.getLogger(__name__)

SOURCE_VERSIONS = ("v2.1",)
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


_NOT_V21 = "missing file (is this a LeRobot v2.1 dataset?)"


@dataclass
class _Source:
    root: Path
    info: dict[str, Any]
    episodes: list[dict[str, Any]]  # the episodes to convert, by episode_index
    tasks: list[str]  # by task_index
    episode_stats: dict[int, dict[str, dict[str, np.ndarray]]]
    renumbered: bool = False
    """Only some episodes are converted: they become episodes 0..k-1 of the output (v3.0
    readers, LeRobot's included, look episodes up by position) and `index` is renumbered."""

    def source_episode(self, position: int) -> int:
        """The source's episode_index of output episode `position`."""
        return int(self.episodes[position]["episode_index"])

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
    info = read_json(src / "meta/info.json", DatasetError, missing=_NOT_V21, expect=dict)
    version = info.get("codebase_version")
    if version not in SOURCE_VERSIONS:
        raise DatasetError(f"codebase_version is {version!r}; only {SOURCE_VERSIONS} can be converted",
                           src / "meta/info.json")
    for k in ("fps", "features", "data_path"):
        if k not in info:
            raise DatasetError(f"missing key {k!r}", src / "meta/info.json")
    episodes = sorted(read_jsonl(src / "meta/episodes.jsonl", DatasetError, missing=_NOT_V21),
                      key=lambda e: e.get("episode_index", -1))
    if [e.get("episode_index") for e in episodes] != list(range(len(episodes))) or not episodes:
        raise DatasetError("episode_index values must be 0..N-1 without gaps", src / "meta/episodes.jsonl")
    tasks_rows = sorted(read_jsonl(src / "meta/tasks.jsonl", DatasetError, missing=_NOT_V21),
                        key=lambda t: t.get("task_index", -1))
    if [t.get("task_index") for t in tasks_rows] != list(range(len(tasks_rows))):
        raise DatasetError("task_index values must be 0..N-1 without gaps", src / "meta/tasks.jsonl")
    stats_path = src / "meta/episodes_stats.jsonl"
    stats_rows = read_jsonl(stats_path, DatasetError) if stats_path.is_file() else []
    episode_stats = {int(r["episode_index"]): stats_lib.stats_from_json(r["stats"]) for r in stats_rows}
    for key, ft in info["features"].items():
        if ft.get("dtype") == "image":
            raise DatasetError(f"feature {key!r} stores images in parquet; only video features are supported",
                               src / "meta/info.json")
    if any(ft.get("dtype") == "video" for ft in info["features"].values()) and "video_path" not in info:
        raise DatasetError("has video features but no 'video_path'", src / "meta/info.json")
    return _Source(src, info, episodes, [t["task"] for t in tasks_rows], episode_stats)


def _select(source: _Source, selection: Sequence[int]) -> _Source:
    """`source` with only the `selection` episodes, which alone need their files on disk."""
    wanted = sorted({int(e) for e in selection})
    unknown = [e for e in wanted if not 0 <= e < len(source.episodes)]
    if unknown or not wanted:
        raise ConfigError(f"episodes {unknown or '[]'} are not in the dataset (it has {len(source.episodes)}: "
                          f"0..{len(source.episodes) - 1})", source.root)
    if wanted == list(range(len(source.episodes))):
        return source
    kept = [source.episodes[e] for e in wanted]
    return _Source(source.root, source.info, kept, source.tasks, source.episode_stats, renumbered=True)


def _unavailable_episodes(source: _Source, selected: set[int]) -> int:
    """How many episodes that were not selected lack a data or video file (a partial download)."""
    keys = [k for k, ft in source.info["features"].items() if ft.get("dtype") == "video"]
    count = 0
    for row in source.episodes:
        ep = int(row["episode_index"])
        if ep in selected:
            continue
        paths = [source.data_path(ep), *(source.video_path(k, ep) for k in keys)]
        count += any(not p.is_file() for p in paths)
    return count


# --------------------------------------------------------------------------------------
# Videos: probe, stream copy, re-encode
# --------------------------------------------------------------------------------------


def _video_feature_entry(old: dict[str, Any], height: int, width: int, fps: int, codec: str,
                         pix_fmt: str) -> dict[str, Any]:
    """LeRobot's v3.0 video feature entry, describing the files actually written; other
    keys of the source's `info` (or v2.0's `video_info`) are kept."""
    entry = w.video_feature(height, width, fps, codec)
    source_info = old.get("info") or old.get("video_info") or {}
    entry["info"].update({k: v for k, v in source_info.items() if k not in entry["info"]})
    entry["info"]["video.pix_fmt"] = pix_fmt
    return entry


def _decode_clip(path: Path) -> Iterator[np.ndarray]:
    """(H, W, 3) uint8 frames of a clip, in presentation order."""
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def _source_frames(clip: mp4.Clip, indices: list[int]) -> Iterator[tuple[int, np.ndarray]]:
    """Frames `indices` of a constant-frame-rate clip, each found by seeking."""
    with av.open(str(clip.path)) as c:
        stream = c.streams.video[0]
        for i in indices:
            query = float((clip.first_pts + i * (clip.step or 0)) * clip.time_base)
            yield i, _decode_at(c, stream, query, clip.path)


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
    image_stats_every: int = w.DEFAULT_IMAGE_STATS_EVERY,
    episodes: Sequence[int] | None = None,
) -> ConversionReport:
    """Convert the v2.1 dataset at `src` into a new v3.0 dataset at `out` (must not exist).

    stream_copy=False forces re-encoding every camera with `codec` (writer settings).
    image_stats: "auto" (copy from episodes_stats.jsonl when every episode has them, else
    recompute), "copy" or "recompute" (decode a subsample per episode; adds quantiles).
    episodes: convert only these (their files suffice); they become episodes 0..k-1 of
    the output, `index` renumbered to match, every other column kept.
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
    unavailable = 0
    if episodes is not None:
        unavailable = _unavailable_episodes(source, {int(e) for e in episodes})
        source = _select(source, episodes)
    fps = int(source.info["fps"])
    chunks = int(chunks_size or source.chunks_size)
    features: dict[str, dict[str, Any]] = {k: dict(v) for k, v in source.info["features"].items()}
    video_keys = [k for k, ft in features.items() if ft.get("dtype") == "video"]
    schema = w.data_schema(features)
    report = ConversionReport(src=src, out=out, episodes=len(source.episodes), tasks=len(source.tasks))
    if source.renumbered:
        report.warnings.append(f"converted the {len(source.episodes)} selected episodes as episodes 0.."
                               f"{len(source.episodes) - 1}" + (f"; {unavailable} other episode(s) lack files "
                                                              f"(a partial download?)" if unavailable else ""))
    have_stats = all(k in source.episode_stats.get(int(e["episode_index"]), {}) for e in source.episodes
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
                image_stats_every=image_stats_every,
            )
        info = w.build_info(
            robot_type=source.info.get("robot_type"), fps=fps, features=features,
            total_episodes=len(records), total_frames=report.frames, total_tasks=len(source.tasks),
            chunks_size=chunks, data_files_size_in_mb=data_files_size_in_mb,
            video_files_size_in_mb=video_files_size_in_mb,
        )
        shutil.rmtree(tmp / w.CLIPS_DIR, ignore_errors=True)
        dataset_stats = stats_lib.aggregate_stats([r.stats for r in records])
        w.write_meta(tmp, info, records, source.tasks, dataset_stats)
        _verify(source, tmp, schema, records, checks, report)
    report.seconds = time.perf_counter() - t0
    logger.debug("%s", report.summary())
    return report


def _convert_data(source: _Source, tmp: Path, schema: pa.Schema, limit_bytes: float, chunks: int,
                  report: ConversionReport) -> list[w.EpisodeRecord]:
    """Append every episode's frames to the v3.0 data files; one EpisodeRecord each."""
    sink = w.ParquetSink(tmp, schema, limit_bytes, chunks)
    records: list[w.EpisodeRecord] = []
    position = 0
    try:
        for out_ep, ep_meta in enumerate(source.episodes):
            ep = int(ep_meta["episode_index"])
            table = _read_episode_table(source, ep, schema)
            n = table.num_rows
            if n != int(ep_meta.get("length", n)):
                report.warnings.append(f"episode {ep}: episodes.jsonl says {ep_meta.get('length')} frames, "
                                       f"parquet has {n}; using {n}")
            if source.renumbered:
                table = _renumber(table, out_ep, position)
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
                episode_index=out_ep, tasks=list(ep_meta.get("tasks", [])), length=n, data_chunk_index=chunk,
                data_file_index=file, dataset_from_index=position, dataset_to_index=position + n, stats=ep_stats,
            ))
            position += n
    finally:
        sink.close()
    report.frames = position
    report.data_files = sum(1 for _ in (tmp / "data").glob("chunk-*/file-*.parquet"))
    return records


def _renumber(table: pa.Table, episode: int, start: int) -> pa.Table:
    """An episode's frames as output episode `episode` starting at global frame `start`."""
    n = table.num_rows
    for name, values in ((EPISODE_INDEX, np.full(n, episode)), (INDEX, np.arange(start, start + n))):
        i = table.schema.get_field_index(name)
        table = table.set_column(i, table.schema.field(i), pa.array(values, type=table.schema.field(i).type))
    return table


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
    extra = [n for n in table.column_names if n not in schema.names]
    if extra and ep == 0:
        logger.warning("%s: columns %s are not in info.json features; they are left out", path, extra)
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
                   image_stats_every: int) -> list[_FrameCheck]:
    """Join one camera's clips into the v3.0 files, by stream copy or else after
    re-encoding each clip; fill the records' video fields and image stats. Returns the
    source fingerprints of the frames to verify."""
    fps = int(source.info["fps"])
    clips = [mp4.probe_clip(source.video_path(key, source.source_episode(r.episode_index))) for r in records]
    sizes = {(c.height, c.width) for c in clips}
    if len(sizes) > 1:
        raise DatasetError(f"{key}: episodes have different frame sizes {sorted(sizes)}; LeRobot needs one",
                           source.root / "videos")
    height, width = clips[0].height, clips[0].width
    blocker = "stream copy disabled" if not stream_copy else mp4.copy_blocker(clips, fps)
    for clip, rec in zip(clips, records):
        if clip.num_frames != rec.length:
            report.warnings.append(f"{key} episode {rec.episode_index}: video has {clip.num_frames} frames, "
                                   f"data has {rec.length}")
    if blocker is None:
        codec_name, pix_fmt = clips[0].codec, clips[0].pix_fmt or mp4.PIX_FMT
        report.video_mode[key] = "stream-copy"
    else:
        encoder, codec_name = mp4.CODECS[codec]
        options = mp4.encoder_options(encoder)
        if mp4.probe_encoder(encoder, height, width, options) is not None:
            encoder, codec_name = mp4.CODECS[mp4.FALLBACK_ENCODER]
            options = mp4.encoder_options(encoder)
        pix_fmt = mp4.PIX_FMT
        report.video_mode[key] = f"re-encode ({blocker})"
    features[key] = _video_feature_entry(features[key], height, width, fps, codec_name, pix_fmt)

    def path_for(chunk: int, file: int) -> Path:
        return tmp / w.VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=file)

    joiner = mp4.ClipJoiner(path_for, fps, limit_bytes, chunks)
    checks: list[_FrameCheck] = []
    try:
        for clip, rec in zip(clips, records):
            ep = rec.episode_index
            want = set(_check_indices(clip.num_frames, check_frames))
            acc = stats_lib.ImageStatsAccumulator()
            encoder_clip = None
            if blocker is not None:
                encoder_clip = mp4.ClipEncoder(tmp / w.CLIPS_DIR / f"{key}.episode_{ep:06d}.mp4", height, width,
                                               fps, encoder, options)
            if encoder_clip is None and image_stats == "copy":
                # Pure stream copy: seek to the few frames to check (GOP 2 makes it cheap).
                checks += [_FrameCheck(ep, i, *_fingerprint(rgb)) for i, rgb in _source_frames(clip, sorted(want))]
            else:
                for i, rgb in enumerate(_decode_clip(clip.path)):
                    if encoder_clip is not None:
                        encoder_clip.add_frame(rgb)
                    if image_stats == "recompute" and i % image_stats_every == 0:
                        acc.add(rgb)
                    if i in want:
                        checks.append(_FrameCheck(ep, i, *_fingerprint(rgb)))
            if encoder_clip is not None:
                encoder_clip.close()
                rec.videos[key] = joiner.add_clip(mp4.probe_clip(encoder_clip.path))
                encoder_clip.path.unlink()
            else:
                rec.videos[key] = joiner.add_clip(clip)
            if image_stats == "recompute":
                rec.stats[key] = acc.result(num_frames=rec.length)
            else:
                rec.stats[key] = source.episode_stats[source.source_episode(ep)][key]
    finally:
        joiner.close()
    report.video_files[key] = sum(1 for _ in (tmp / "videos" / key).glob("chunk-*/file-*.mp4"))
    # Keep episode stats in info.json feature order (the episodes parquet's column order).
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
        want = _read_episode_table(source, source.source_episode(rec.episode_index), schema)
        if source.renumbered:
            want = _renumber(want, rec.episode_index, rec.dataset_from_index)
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
                        ts_by_ep[chk.episode] = _read_episode_table(
                            source, source.source_episode(chk.episode), schema).column(TIMESTAMP).to_numpy()
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
