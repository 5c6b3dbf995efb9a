"""Write LeRobot v3.0 datasets that LeRobot (>= 0.4) loads unchanged.

Layout (mirrors what LeRobot 0.4.4 writes, see tests/fixtures/so101_fixture_v30):
```
root/meta/info.json                              written last: its presence means "complete"
root/meta/stats.json                             aggregated dataset stats
root/meta/tasks.parquet                          task_index, task string as pandas index
root/meta/episodes/chunk-000/file-000.parquet    one row per episode (+ flattened stats)
root/data/chunk-000/file-000.parquet             one row per frame, one row group per episode
root/videos/<camera>/chunk-000/file-000.mp4      episodes concatenated, continuous pts
```
The whole dataset is built in a hidden temporary sibling directory and renamed to `root`
in `finalize()`, so a killed recording never leaves a dataset that looks complete.
Frames are encoded as they arrive into one clip per episode and camera (memory: one frame
plus the encoder); `save()` joins the clip to the camera's current file by stream copy
(robotrain.data.mp4), so an episode can be discarded until then and the file-size limit is
exact. A frame of episode e is at `from_timestamp[e] + timestamp` in its video file.
Episodes come whole (`add_episode`) or frame by frame (`begin_episode` -> EpisodeRecorder).

Example (run from the repository root):
    PYTHONPATH=src python -c "
    import numpy as np
    from robotrain.data.writer import DatasetWriter
    with DatasetWriter('/tmp/demo_ds', camera_shapes={'observation.images.front': (96, 128)}) as w:
        T = 30
        w.add_episode('Pick up the cube', np.zeros((T, 6), np.float32), np.zeros((T, 6), np.float32),
                      {'observation.images.front': np.zeros((T, 96, 128, 3), np.uint8)})
    "
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from robotrain.constants import (
    ACTION,
    EPISODE_INDEX,
    FRAME_INDEX,
    INDEX,
    OBS_IMAGES_PREFIX,
    OBS_STATE,
    SO101_FPS,
    SO101_JOINT_NAMES,
    SO101_ROBOT_TYPE,
    TASK_INDEX,
    TIMESTAMP,
)
from robotrain.data import stats as stats_lib
from robotrain.data.mp4 import (  # noqa: F401  (re-exported for callers of the writer)
    CODECS,
    DEFAULT_GOP,
    DEFAULT_SVT_PRESET,
    FALLBACK_ENCODER,
    PIX_FMT,
    ClipEncoder,
    ClipJoiner,
    RollingFile,
    av,
    encoder_options,
    probe_clip,
    probe_encoder,
)
from robotrain.errors import DatasetError
from robotrain.system.files import atomic_directory

logger = logging.getLogger(__name__)

CODEBASE_VERSION = "v3.0"
DEFAULT_CHUNKS_SIZE = 1000
DEFAULT_DATA_FILES_SIZE_IN_MB = 100
DEFAULT_VIDEO_FILES_SIZE_IN_MB = 200
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
# Image stats use every n-th frame: 100 of a 300-frame episode, as many as LeRobot samples.
DEFAULT_IMAGE_STATS_EVERY = 3
# Episode clips are encoded here (inside the dataset's temporary directory) before joining.
CLIPS_DIR = ".clips"

# Columns of the data parquet after the robot's features, in LeRobot's order and types.
FRAME_COLUMN_TYPES: dict[str, str] = {
    TIMESTAMP: "float32",
    FRAME_INDEX: "int64",
    EPISODE_INDEX: "int64",
    INDEX: "int64",
    TASK_INDEX: "int64",
}


class WriterInputError(DatasetError, ValueError):
    """A bad argument to the writer (shape, dtype, length, name). Both a DatasetError
    (the CLI prints it in one line) and a ValueError (it is a bad value)."""


def _bad(argument: str, reason: str) -> WriterInputError:
    return WriterInputError(f"{argument}: {reason}")


# --------------------------------------------------------------------------------------
# Schema helpers shared with convert.py
# --------------------------------------------------------------------------------------


def vector_feature(names: Sequence[str], dtype: str = "float32") -> dict[str, Any]:
    return {"dtype": dtype, "shape": [len(names)], "names": list(names)}


def video_feature(height: int, width: int, fps: int, codec: str) -> dict[str, Any]:
    """info.json entry of a camera, key order as LeRobot writes it."""
    return {
        "dtype": "video",
        "shape": [height, width, 3],
        "names": ["height", "width", "channels"],
        "info": {
            "video.height": height,
            "video.width": width,
            "video.codec": codec,
            "video.pix_fmt": PIX_FMT,
            "video.is_depth_map": False,
            "video.fps": fps,
            "video.channels": 3,
            "has_audio": False,
        },
    }


def default_frame_features() -> dict[str, dict[str, Any]]:
    return {k: {"dtype": t, "shape": [1], "names": None} for k, t in FRAME_COLUMN_TYPES.items()}


def is_video_feature(ft: Mapping[str, Any]) -> bool:
    return ft.get("dtype") in ("video", "image")


def _arrow_value_type(dtype: str) -> pa.DataType:
    if dtype == "string":
        return pa.string()
    return pa.from_numpy_dtype(np.dtype(dtype))


def data_schema(features: Mapping[str, Mapping[str, Any]]) -> pa.Schema:
    """Arrow schema of the data parquet: every non-video feature, in `features` order.

    Vectors are fixed_size_list<dtype>[D] and scalars (shape [1]) plain columns, as in
    the files LeRobot writes; the `huggingface` metadata lets `datasets` restore types.
    """
    fields = []
    hf: dict[str, Any] = {}
    for key, ft in features.items():
        if is_video_feature(ft):
            continue
        value_type = _arrow_value_type(ft["dtype"])
        shape = list(ft["shape"])
        if len(shape) == 1 and shape[0] == 1 and ft.get("names") is None:
            fields.append(pa.field(key, value_type))
            hf[key] = {"dtype": ft["dtype"], "_type": "Value"}
        elif len(shape) == 1:
            fields.append(pa.field(key, pa.list_(value_type, shape[0])))
            hf[key] = {"feature": {"dtype": ft["dtype"], "_type": "Value"}, "length": shape[0], "_type": "List"}
        else:
            raise _bad("features", f"{key!r} has shape {shape}; only vectors are supported in the data file")
    meta = {b"huggingface": json.dumps({"info": {"features": hf}}).encode()}
    return pa.schema(fields, metadata=meta)


def columns_to_table(columns: Mapping[str, np.ndarray], schema: pa.Schema) -> pa.Table:
    """Arrow table of one episode's frame columns; (T, D) arrays become fixed-size lists."""
    arrays = []
    for f in schema:
        values = np.asarray(columns[f.name])
        if pa.types.is_fixed_size_list(f.type):
            flat = pa.array(np.ascontiguousarray(values).reshape(-1).astype(f.type.value_type.to_pandas_dtype()))
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, f.type.list_size))
        else:
            arrays.append(pa.array(values.reshape(-1), type=f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _stat_arrow_type(key: str, stat: str, ft: Mapping[str, Any]) -> pa.DataType:
    if stat == "count":
        return pa.list_(pa.int64())
    if is_video_feature(ft):
        return pa.list_(pa.list_(pa.list_(pa.float64())))  # (3, 1, 1)
    if stat in ("min", "max") and np.issubdtype(np.dtype(ft["dtype"]), np.integer):
        return pa.list_(pa.int64())
    return pa.list_(pa.float64())


@dataclass
class EpisodeRecord:
    """One row of meta/episodes: where an episode's frames and video clips are."""

    episode_index: int
    tasks: list[str]
    length: int
    data_chunk_index: int
    data_file_index: int
    dataset_from_index: int
    dataset_to_index: int
    # video key -> (chunk_index, file_index, from_timestamp, to_timestamp)
    videos: dict[str, tuple[int, int, float, float]] = field(default_factory=dict)
    stats: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


def _episodes_table(records: Sequence[EpisodeRecord], features: Mapping[str, Mapping[str, Any]],
                    meta_chunk: int, meta_file: int) -> pa.Table:
    video_keys = [k for k, ft in features.items() if ft["dtype"] == "video"]
    cols: dict[str, pa.Array] = {
        "episode_index": pa.array([r.episode_index for r in records], pa.int64()),
        "tasks": pa.array([r.tasks for r in records], pa.list_(pa.string())),
        "length": pa.array([r.length for r in records], pa.int64()),
        "data/chunk_index": pa.array([r.data_chunk_index for r in records], pa.int64()),
        "data/file_index": pa.array([r.data_file_index for r in records], pa.int64()),
        "dataset_from_index": pa.array([r.dataset_from_index for r in records], pa.int64()),
        "dataset_to_index": pa.array([r.dataset_to_index for r in records], pa.int64()),
    }
    for key in video_keys:
        for i, (name, typ) in enumerate(
            [("chunk_index", pa.int64()), ("file_index", pa.int64()),
             ("from_timestamp", pa.float64()), ("to_timestamp", pa.float64())]
        ):
            cols[f"videos/{key}/{name}"] = pa.array([r.videos[key][i] for r in records], typ)
    for key, ft in features.items():
        if not all(key in r.stats for r in records):
            continue
        for stat in stats_lib.STAT_NAMES:
            if not all(stat in r.stats[key] for r in records):
                continue
            typ = _stat_arrow_type(key, stat, ft)
            cols[f"stats/{key}/{stat}"] = pa.array([np.asarray(r.stats[key][stat]).tolist() for r in records], typ)
    cols["meta/episodes/chunk_index"] = pa.array([meta_chunk] * len(records), pa.int64())
    cols["meta/episodes/file_index"] = pa.array([meta_file] * len(records), pa.int64())
    return pa.table(cols)


def write_episodes_meta(root: Path, records: Sequence[EpisodeRecord], features: Mapping[str, Mapping[str, Any]],
                        limit_bytes: float, chunks_size: int) -> None:
    """meta/episodes/chunk-*/file-*.parquet, a new file when one would pass `limit_bytes`."""
    groups: list[list[EpisodeRecord]] = [[]]
    size = 0
    for r in records:
        row_bytes = _episodes_table([r], features, 0, 0).nbytes
        if groups[-1] and size + row_bytes > limit_bytes:
            groups.append([])
            size = 0
        groups[-1].append(r)
        size += row_bytes
    for n, group in enumerate(groups):
        chunk, file = divmod(n, chunks_size)
        path = root / EPISODES_PATH.format(chunk_index=chunk, file_index=file)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(_episodes_table(group, features, chunk, file), path)


def write_tasks(root: Path, tasks: Sequence[str]) -> None:
    """meta/tasks.parquet: column task_index, the task string as an (unnamed) pandas index,
    exactly the layout `pandas.DataFrame.to_parquet` gives LeRobot's task table."""
    pandas_meta = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
             "metadata": None},
            {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode", "numpy_type": "object",
             "metadata": None},
        ],
        "attributes": {},
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    schema = pa.schema([pa.field("task_index", pa.int64()), pa.field("__index_level_0__", pa.large_string())],
                       metadata={b"pandas": json.dumps(pandas_meta).encode()})
    table = pa.Table.from_arrays(
        [pa.array(range(len(tasks)), pa.int64()), pa.array(list(tasks), pa.large_string())], schema=schema
    )
    path = root / TASKS_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def build_info(*, robot_type: str | None, fps: int, features: Mapping[str, Any], total_episodes: int,
               total_frames: int, total_tasks: int, chunks_size: int, data_files_size_in_mb: float,
               video_files_size_in_mb: float) -> dict[str, Any]:
    has_video = any(ft["dtype"] == "video" for ft in features.values())
    return {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": robot_type,
        "total_episodes": total_episodes,
        "total_frames": total_frames,
        "total_tasks": total_tasks,
        "chunks_size": chunks_size,
        "data_files_size_in_mb": data_files_size_in_mb,
        "video_files_size_in_mb": video_files_size_in_mb,
        "fps": fps,
        "splits": {"train": f"0:{total_episodes}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if has_video else None,
        "features": dict(features),
    }


def write_meta(root: Path, info: dict[str, Any], records: Sequence[EpisodeRecord], tasks: Sequence[str],
               dataset_stats: Mapping[str, Mapping[str, np.ndarray]]) -> None:
    """Episodes, tasks, stats, then info.json (last: it marks the dataset complete)."""
    limit = float(info["data_files_size_in_mb"]) * 1024**2
    write_episodes_meta(root, records, info["features"], limit, int(info["chunks_size"]))
    write_tasks(root, tasks)
    (root / STATS_PATH).write_text(json.dumps(stats_lib.stats_to_json(dataset_stats), indent=4) + "\n")
    (root / INFO_PATH).write_text(json.dumps(info, indent=4) + "\n")


# --------------------------------------------------------------------------------------
# Data parquet files
# --------------------------------------------------------------------------------------


class ParquetSink(RollingFile):
    """The data parquet files: one row group per episode, several episodes per file."""

    def __init__(self, root: Path, schema: pa.Schema, limit_bytes: float, chunks_size: int) -> None:
        super().__init__(limit_bytes, chunks_size)
        self.root = root
        self.schema = schema
        self._sink: pa.NativeFile | None = None
        self._writer: pq.ParquetWriter | None = None

    def write_episode(self, table: pa.Table) -> tuple[int, int]:
        """Append one episode (one row group); returns its (chunk_index, file_index)."""
        if self._sink is not None and self.should_roll(self._sink.tell(), table.nbytes):
            self.roll()
        if self._writer is None:
            path = self.root / DATA_PATH.format(chunk_index=self.chunk_index, file_index=self.file_index)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._sink = pa.OSFile(str(path), "wb")
            self._writer = pq.ParquetWriter(self._sink, self.schema)
            self.is_open = True
        self._writer.write_table(table, row_group_size=max(1, table.num_rows))
        return self.chunk_index, self.file_index

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._sink is not None:
            self._sink.close()
            self._sink = None
        super().close()


# --------------------------------------------------------------------------------------
# One episode being recorded
# --------------------------------------------------------------------------------------


class EpisodeRecorder:
    """Frames of one episode, encoded as they arrive (memory: one frame per camera plus
    the small state/action arrays). Nothing reaches the dataset before `save()`;
    `discard()` (or an exception inside `with`) drops the episode.

        with writer.begin_episode("Pick up the cube") as ep:
            for obs, act in rollout:
                ep.add_frame(obs_state, act, {"observation.images.front": rgb})
        # saved here
    """

    def __init__(self, writer: DatasetWriter, task: str, episode_index: int) -> None:
        self._writer = writer
        self.task = task
        self.episode_index = episode_index
        self._states: list[np.ndarray] = []
        self._actions: list[np.ndarray] = []
        self._clips: dict[str, ClipEncoder] = {}
        self._image_stats = {key: stats_lib.ImageStatsAccumulator() for key in writer.camera_shapes}
        self._status = "open"  # -> "saved" | "discarded"
        try:
            for key, (h, w) in writer.camera_shapes.items():
                path = writer._tmp / CLIPS_DIR / f"{key}.episode_{episode_index:06d}.mp4"
                self._clips[key] = ClipEncoder(path, h, w, writer.fps, writer.encoder, writer.encoder_options)
        except BaseException:
            self._abort_clips()
            raise

    @property
    def num_frames(self) -> int:
        return len(self._states)

    def add_frame(self, state: np.ndarray, action: np.ndarray,
                  images: Mapping[str, np.ndarray] | None = None) -> None:
        """state (S,) and action (A,) numbers; images: camera key -> (H, W, 3) uint8 RGB.
        Invalid input raises WriterInputError and adds nothing."""
        self._check_open()
        w = self._writer
        state = w._check_vector("state", state, len(w.state_names))
        action = w._check_vector("action", action, len(w.action_names))
        images = w._check_images(images, None)
        self._append(state, action, images)

    def _append(self, state: np.ndarray, action: np.ndarray, images: Mapping[str, np.ndarray]) -> None:
        t = len(self._states)
        try:
            for key, clip in self._clips.items():
                clip.add_frame(images[key])
                if t % self._writer.image_stats_every == 0:
                    self._image_stats[key].add(images[key])
        except BaseException:
            self.discard()  # a clip may hold part of this frame: the episode cannot go on
            raise
        self._states.append(state.astype(np.float32, copy=False))
        self._actions.append(action.astype(np.float32, copy=False))

    def save(self) -> int:
        """Add the episode to the dataset; returns its episode_index."""
        self._check_open()
        if not self._states:
            raise _bad("episode", "has no frames; add frames or discard() it")
        try:
            for clip in self._clips.values():
                clip.close()
        except BaseException:
            self.discard()
            raise
        self._status = "saved"
        self._writer._commit(self)
        return self.episode_index

    def discard(self) -> None:
        """Drop this episode; the writer goes on with the next one."""
        if self._status != "open":
            return
        self._status = "discarded"
        self._abort_clips()
        self._writer._current = None

    def _abort_clips(self) -> None:
        for clip in self._clips.values():
            clip.abort()

    def _check_open(self) -> None:
        if self._status != "open":
            raise DatasetError(f"episode {self.episode_index} was already {self._status}", self._writer.root)

    def __enter__(self) -> EpisodeRecorder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            if self._status == "open":
                self.save()
        else:
            self.discard()


# --------------------------------------------------------------------------------------
# DatasetWriter
# --------------------------------------------------------------------------------------


class DatasetWriter:
    """Record episodes into a new LeRobot v3.0 dataset at `root`.

    Two ways to add an episode: `add_episode(task, state, action, images)` with whole
    arrays, or frame by frame with `begin_episode(task)` -> EpisodeRecorder.

    Args:
        root: the dataset directory to create; it appears only when `finalize()` succeeds.
        fps: frames per second of every episode (and video).
        robot_type: written to info.json (LeRobot's name, e.g. "so101_follower").
        state_names / action_names: names of the state / action dimensions (info.json).
        camera_shapes: camera key ("observation.images.<name>") -> (height, width).
        codec: "libsvtav1" (AV1, LeRobot's default) or "libx264"; AV1 falls back to
            H.264 with a warning when the SVT-AV1 encoder is missing or fails.
        chunks_size: files per chunk directory (LeRobot: 1000).
        data_files_size_in_mb / video_files_size_in_mb: start a new file when the
            current one would pass this size (LeRobot: 100 / 200).
        crf, gop, preset: encoder settings (LeRobot: crf 30, g 2, preset 12 for AV1).
        image_stats_every: image stats use every n-th frame (strided to <= 160 px).
        overwrite: replace an existing `root` on finalize instead of refusing.
    """

    def __init__(
        self,
        root: str | Path,
        fps: int = SO101_FPS,
        robot_type: str | None = SO101_ROBOT_TYPE,
        state_names: Sequence[str] = SO101_JOINT_NAMES,
        action_names: Sequence[str] = SO101_JOINT_NAMES,
        camera_shapes: Mapping[str, tuple[int, int]] | None = None,
        codec: str = "libsvtav1",
        *,
        chunks_size: int = DEFAULT_CHUNKS_SIZE,
        data_files_size_in_mb: float = DEFAULT_DATA_FILES_SIZE_IN_MB,
        video_files_size_in_mb: float = DEFAULT_VIDEO_FILES_SIZE_IN_MB,
        crf: int | None = None,
        gop: int = DEFAULT_GOP,
        preset: int = DEFAULT_SVT_PRESET,
        image_stats_every: int = DEFAULT_IMAGE_STATS_EVERY,
        overwrite: bool = False,
    ) -> None:
        self.root = Path(root)
        if self.root.exists() and not overwrite:
            raise WriterInputError("already exists; choose a new directory (or pass overwrite=True)", self.root)
        if overwrite and self.root.is_dir() and any(self.root.iterdir()) and not (self.root / INFO_PATH).is_file():
            # --overwrite replaces a dataset; a run dir or a home folder given by mistake is not one
            raise WriterInputError("exists and is not a LeRobot dataset (no meta/info.json); overwrite only "
                                   "replaces a dataset, choose a new directory", self.root)
        if isinstance(fps, bool) or not isinstance(fps, (int, np.integer)) or fps <= 0:
            raise _bad("fps", f"must be a positive integer, got {fps!r}")
        self.fps = int(fps)
        self.robot_type = robot_type
        self.state_names = self._check_names("state_names", state_names)
        self.action_names = self._check_names("action_names", action_names)
        self.camera_shapes = self._check_cameras(camera_shapes or {})
        for name, value in (("chunks_size", chunks_size), ("image_stats_every", image_stats_every),
                            ("gop", gop)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise _bad(name, f"must be a positive integer, got {value!r}")
        for name, value in (("data_files_size_in_mb", data_files_size_in_mb),
                            ("video_files_size_in_mb", video_files_size_in_mb)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value <= 0:
                raise _bad(name, f"must be a positive number, got {value!r}")
        if codec not in CODECS:
            raise _bad("codec", f"must be one of {sorted(CODECS)}, got {codec!r}")
        self.chunks_size = int(chunks_size)
        self.data_files_size_in_mb = data_files_size_in_mb
        self.video_files_size_in_mb = video_files_size_in_mb
        self.image_stats_every = int(image_stats_every)
        self.encoder, self.codec_name = CODECS[codec]
        self.encoder_options = encoder_options(self.encoder, crf, gop, preset)
        if self.camera_shapes:
            self._choose_encoder(crf, gop, preset)

        self.features: dict[str, dict[str, Any]] = {
            ACTION: vector_feature(self.action_names),
            OBS_STATE: vector_feature(self.state_names),
        }
        for key, (h, w) in self.camera_shapes.items():
            self.features[key] = video_feature(h, w, self.fps, self.codec_name)
        self.features.update(default_frame_features())
        self._schema = data_schema(self.features)

        self._tasks: dict[str, int] = {}
        self._records: list[EpisodeRecord] = []
        self._total_frames = 0
        self._current: EpisodeRecorder | None = None
        self._status = "open"  # -> "finalized" | "aborted"
        # Build everything in a hidden sibling; renamed to root on finalize().
        self._dir_ctx = atomic_directory(self.root)
        self._tmp = self._dir_ctx.__enter__()
        self._data = ParquetSink(self._tmp, self._schema, data_files_size_in_mb * 1024**2, self.chunks_size)
        self._joiners = {
            key: ClipJoiner(self._video_path_for(key), self.fps, video_files_size_in_mb * 1024**2, self.chunks_size)
            for key in self.camera_shapes
        }

    def _video_path_for(self, key: str) -> Any:
        def path_for(chunk: int, file: int) -> Path:
            return self._tmp / VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=file)

        return path_for

    # --- validation ------------------------------------------------------------------
    @staticmethod
    def _check_names(arg: str, names: Sequence[str]) -> tuple[str, ...]:
        if isinstance(names, str) or not names or not all(isinstance(n, str) and n for n in names):
            raise _bad(arg, f"must be a non-empty sequence of non-empty strings, got {names!r}")
        if len(set(names)) != len(names):
            raise _bad(arg, f"names must be unique, got {list(names)}")
        return tuple(names)

    @staticmethod
    def _check_cameras(camera_shapes: Mapping[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for key, shape in camera_shapes.items():
            if not isinstance(key, str) or not key.startswith(OBS_IMAGES_PREFIX) or key == OBS_IMAGES_PREFIX:
                raise _bad("camera_shapes", f"camera key must look like '{OBS_IMAGES_PREFIX}<name>', got {key!r}")
            if (not isinstance(shape, (tuple, list)) or len(shape) != 2
                    or not all(isinstance(s, (int, np.integer)) and s > 0 for s in shape)):
                raise _bad("camera_shapes", f"{key!r} must map to (height, width), got {shape!r}")
            h, w = int(shape[0]), int(shape[1])
            if h % 2 or w % 2:
                raise _bad("camera_shapes", f"{key!r}: yuv420p video needs even height and width, got {(h, w)}")
            out[key] = (h, w)
        return out

    def _choose_encoder(self, crf: int | None, gop: int, preset: int) -> None:
        h, w = min(self.camera_shapes.values())
        reason = probe_encoder(self.encoder, h, w, self.encoder_options)
        if reason is None:
            return
        if self.encoder == FALLBACK_ENCODER:
            raise DatasetError(f"cannot encode video: {reason}", self.root)
        logger.warning("%s; falling back to %s (H.264)", reason, FALLBACK_ENCODER)
        self.encoder, self.codec_name = CODECS[FALLBACK_ENCODER]
        self.encoder_options = encoder_options(self.encoder, crf, gop, preset)
        reason = probe_encoder(self.encoder, h, w, self.encoder_options)
        if reason is not None:
            raise DatasetError(f"cannot encode video: {reason}", self.root)

    @staticmethod
    def _check_numeric(arg: str, x: Any) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            raise _bad(arg, f"must be a numpy array, got {type(x).__name__}")
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise _bad(arg, f"must be numeric (float32), got dtype {x.dtype}")
        x = x.astype(np.float32, copy=False)
        if not np.isfinite(x).all():
            raise _bad(arg, "contains NaN or infinite values")
        return x

    def _check_vectors(self, arg: str, x: Any, dim: int, length: int | None) -> np.ndarray:
        """(T, dim) array of one episode."""
        if isinstance(x, np.ndarray) and (x.ndim != 2 or x.shape[1] != dim):
            raise _bad(arg, f"must have shape (T, {dim}), got {x.shape}")
        x = self._check_numeric(arg, x)
        if x.shape[0] == 0:
            raise _bad(arg, "episode is empty (T = 0)")
        if length is not None and x.shape[0] != length:
            raise _bad(arg, f"has {x.shape[0]} frames but state has {length}")
        return x

    def _check_vector(self, arg: str, x: Any, dim: int) -> np.ndarray:
        """(dim,) array of one frame."""
        if isinstance(x, np.ndarray) and x.shape != (dim,):
            raise _bad(arg, f"must have shape ({dim},) for one frame, got {x.shape}")
        return self._check_numeric(arg, x)

    def _check_images(self, images: Any, length: int | None) -> Mapping[str, np.ndarray]:
        """camera key -> (T, H, W, 3) uint8 for an episode, or (H, W, 3) for one frame (length None)."""
        images = images or {}
        if not isinstance(images, Mapping):
            raise _bad("images", f"must be a dict camera key -> uint8 RGB array, got {type(images).__name__}")
        missing = sorted(set(self.camera_shapes) - set(images))
        extra = sorted(set(images) - set(self.camera_shapes))
        if missing or extra:
            raise _bad("images", f"camera keys must be {sorted(self.camera_shapes)}; missing {missing}, unexpected {extra}")
        for key, frames in images.items():
            h, w = self.camera_shapes[key]
            shape = (h, w, 3) if length is None else (length, h, w, 3)
            what = "(H, W, 3)" if length is None else "(T, H, W, 3)"
            if not isinstance(frames, np.ndarray):
                raise _bad(f"images[{key!r}]", f"must be a numpy array, got {type(frames).__name__}")
            if frames.shape != shape:
                raise _bad(f"images[{key!r}]", f"must have shape {shape} {what}, got {frames.shape}")
            if frames.dtype != np.uint8:
                raise _bad(f"images[{key!r}]", f"must be uint8 RGB, got dtype {frames.dtype}")
        return images

    # --- recording ---------------------------------------------------------------------
    def begin_episode(self, task: str) -> EpisodeRecorder:
        """Start an episode to be filled frame by frame (see EpisodeRecorder)."""
        self._check_open()
        if self._current is not None:
            raise DatasetError(f"episode {self._current.episode_index} is still open; save() or discard() it first",
                               self.root)
        if not isinstance(task, str) or not task.strip():
            raise _bad("task", f"must be a non-empty string, got {task!r}")
        self._current = EpisodeRecorder(self, task, len(self._records))
        return self._current

    def add_episode(self, task: str, state: np.ndarray, action: np.ndarray,
                    images: Mapping[str, np.ndarray] | None = None) -> int:
        """Append one episode; returns its episode_index.

        task: the language instruction; state / action: (T, D) float32;
        images: camera key -> (T, H, W, 3) uint8 RGB. Invalid input raises
        WriterInputError and writes nothing.
        """
        self._check_open()
        if not isinstance(task, str) or not task.strip():
            raise _bad("task", f"must be a non-empty string, got {task!r}")
        state = self._check_vectors("state", state, len(self.state_names), None)
        length = state.shape[0]
        action = self._check_vectors("action", action, len(self.action_names), length)
        images = self._check_images(images, length)
        episode = self.begin_episode(task)
        try:
            for t in range(length):
                episode._append(state[t], action[t], {key: frames[t] for key, frames in images.items()})
        except BaseException:
            episode.discard()
            raise
        return episode.save()

    def _commit(self, episode: EpisodeRecorder) -> None:
        """Append a finished episode's frames and clips to the dataset files."""
        self._current = None
        try:
            self._write_episode(episode)
        except BaseException:
            self.abort()  # a file may hold part of the episode: nothing can be trusted
            raise

    def _write_episode(self, episode: EpisodeRecorder) -> None:
        length = episode.num_frames
        task_index = self._tasks.setdefault(episode.task, len(self._tasks))
        episode_index = episode.episode_index
        start = self._total_frames
        frame_index = np.arange(length, dtype=np.int64)
        columns = {
            ACTION: np.stack(episode._actions),  # (T, A)
            OBS_STATE: np.stack(episode._states),  # (T, S)
            TIMESTAMP: (frame_index / self.fps).astype(np.float32),
            FRAME_INDEX: frame_index,
            EPISODE_INDEX: np.full(length, episode_index, np.int64),
            INDEX: np.arange(start, start + length, dtype=np.int64),
            TASK_INDEX: np.full(length, task_index, np.int64),
        }
        ep_stats = {key: stats_lib.compute_feature_stats(values) for key, values in columns.items()}
        videos: dict[str, tuple[int, int, float, float]] = {}
        for key, joiner in self._joiners.items():
            clip = probe_clip(episode._clips[key].path)
            if clip.num_frames != length:
                raise DatasetError(f"encoded {clip.num_frames} frames for {length} added", clip.path)
            videos[key] = joiner.add_clip(clip)
            clip.path.unlink()
            ep_stats[key] = episode._image_stats[key].result(num_frames=length)
        data_chunk, data_file = self._data.write_episode(columns_to_table(columns, self._schema))
        self._records.append(EpisodeRecord(
            episode_index=episode_index, tasks=[episode.task], length=length, data_chunk_index=data_chunk,
            data_file_index=data_file, dataset_from_index=start, dataset_to_index=start + length,
            videos=videos, stats={k: ep_stats[k] for k in self.features if k in ep_stats},
        ))
        self._total_frames += length
        logger.debug("episode %d: %d frames, task %r", episode_index, length, episode.task)

    def _check_open(self) -> None:
        if self._status == "finalized":
            raise DatasetError("writer is already finalized; create a new DatasetWriter", self.root)
        if self._status == "aborted":
            raise DatasetError("writing was aborted (an episode failed to write); nothing was kept", self.root)

    @property
    def num_episodes(self) -> int:
        return len(self._records)

    @property
    def tasks(self) -> list[str]:
        return list(self._tasks)

    # --- finishing ---------------------------------------------------------------------
    def finalize(self) -> Path:
        """Close the files, write the metadata and move the dataset to `root`."""
        if self._status == "finalized":
            return self.root
        self._check_open()
        if self._current is not None:
            raise DatasetError(f"episode {self._current.episode_index} is still open; save() or discard() it first",
                               self.root)
        if not self._records:
            self.abort()
            raise DatasetError("no episodes were added; nothing was written", self.root)
        try:
            self._data.close()
            for joiner in self._joiners.values():
                joiner.close()
            with contextlib.suppress(OSError):
                (self._tmp / CLIPS_DIR).rmdir()
            info = build_info(
                robot_type=self.robot_type, fps=self.fps, features=self.features,
                total_episodes=len(self._records), total_frames=self._total_frames, total_tasks=len(self._tasks),
                chunks_size=self.chunks_size, data_files_size_in_mb=self.data_files_size_in_mb,
                video_files_size_in_mb=self.video_files_size_in_mb,
            )
            dataset_stats = stats_lib.aggregate_stats([r.stats for r in self._records])
            write_meta(self._tmp, info, self._records, list(self._tasks), dataset_stats)
        except BaseException:
            self.abort()
            raise
        self._dir_ctx.__exit__(None, None, None)  # rename the temp dir to root
        self._status = "finalized"
        logger.info("wrote %s: %d episodes, %d frames", self.root, len(self._records), self._total_frames)
        return self.root

    def abort(self) -> None:
        """Discard everything written so far (root is left untouched)."""
        if self._status != "open":
            return
        self._status = "aborted"
        if self._current is not None:
            self._current.discard()
        with contextlib.suppress(Exception):
            self._data.close()
        for joiner in self._joiners.values():
            with contextlib.suppress(Exception):
                joiner.close()
        err = DatasetError("dataset writing aborted", self.root)
        with contextlib.suppress(DatasetError):
            self._dir_ctx.__exit__(DatasetError, err, None)

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.finalize()
        else:
            self.abort()
