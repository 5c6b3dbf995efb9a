"""Parse and validate LeRobot dataset metadata (format v3.0 and v2.1).

Everything that reads `meta/`, a data parquet or (for validation) an mp4 header is here,
so the rest of robotrain sees one `DatasetMeta` whatever the on-disk version. Every
problem is a `DatasetError` that names the file and the field at fault.

Example:
    python -c "from robotrain.data.format import load_meta; \
print(load_meta('tests/fixtures/so101_fixture_v30'))"
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from robotrain.constants import (
    ACTION,
    EPISODE_INDEX,
    FRAME_INDEX,
    INDEX,
    OBS_PREFIX,
    OBS_STATE,
    TASK_INDEX,
    TIMESTAMP,
)
from robotrain.data.stats import aggregate_stats
from robotrain.errors import ConfigError, DatasetError
from robotrain.system.files import read_json, read_jsonl

log = logging.getLogger(__name__)
_T = TypeVar("_T")

SUPPORTED_VERSIONS = ("v3.0", "v2.1")
INFO_JSON = "meta/info.json"
STATS_JSON = "meta/stats.json"
TASKS_PARQUET = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
EPISODES_JSONL = "meta/episodes.jsonl"
EPISODES_STATS_JSONL = "meta/episodes_stats.jsonl"
TASKS_JSONL = "meta/tasks.jsonl"
# LeRobot's default tolerance between a requested and a stored timestamp (seconds).
TIMESTAMP_TOLERANCE_S = 1e-4
VIDEO_DTYPES = ("video",)
# The two camera layouts LeRobot reads from a feature's `names` (its own first), and the
# singular spelling of v2.0-era ports.
IMAGE_LAYOUTS = (("height", "width", "channels"), ("channels", "height", "width"))
CHANNEL_NAMES = {"channel": "channels"}


@dataclass(frozen=True)
class VideoSpan:
    """Where one episode of one camera lives: a file and its start time inside it.

    v3.0 concatenates episodes in one mp4, so frame t of the episode is at
    `from_timestamp + t`; v2.1 has one file per episode and `from_timestamp == 0`.
    """

    path: Path
    from_timestamp: float
    to_timestamp: float | None = None


@dataclass(frozen=True)
class EpisodeRecord:
    """One episode: its rows [dataset_from_index, dataset_to_index) in the frame table.

    For a whole dataset these are the global frame range of the episodes table (and of
    the `index` column). A selection of episodes (`DatasetMeta.select`) numbers its rows
    anew from 0, episode after episode, so its frame table and frame cache hold only
    the selected frames; `first_index` keeps the `index` of the episode's first frame.
    """

    episode_index: int
    length: int
    dataset_from_index: int
    dataset_to_index: int
    tasks: tuple[str, ...]
    data_path: Path
    videos: dict[str, VideoSpan] = field(default_factory=dict)
    first_index: int | None = None
    """`index` of the first frame; None: `dataset_from_index` (a whole dataset)."""

    @property
    def index_from(self) -> int:
        return self.dataset_from_index if self.first_index is None else self.first_index

    def __getitem__(self, key: str) -> Any:  # also readable like LeRobot's dict records
        return getattr(self, key)


@dataclass
class DatasetMeta:
    """Everything about a dataset except its frames. Arrays of stats keep their shapes
    as stored (images: per channel [3, 1, 1], values in [0, 1])."""

    root: Path
    version: str
    fps: int
    features: dict[str, dict]
    camera_keys: tuple[str, ...]
    robot_type: str | None
    stats: dict[str, dict[str, np.ndarray]]
    tasks: list[str]
    episodes: list[EpisodeRecord]
    total_frames: int
    total_episodes: int
    info: dict[str, Any]
    selection: tuple[int, ...] | None = None
    """The episodes this meta was restricted to (`select`); None: every episode listed.
    `episodes`, `total_frames` and `total_episodes` then describe the selection only."""
    stored_names: dict[str, str] = field(default_factory=dict)
    """Feature name -> its name in the dataset's files, for features renamed by
    `robotrain.data.rename.rename_features`; the others are stored as named."""

    @property
    def state_dim(self) -> int:
        return _feature_size(self.features[OBS_STATE]) if OBS_STATE in self.features else 0

    @property
    def action_dim(self) -> int:
        return _feature_size(self.features[ACTION]) if ACTION in self.features else 0

    @property
    def video_keys(self) -> tuple[str, ...]:
        return self.camera_keys

    @property
    def data_keys(self) -> tuple[str, ...]:
        """Features stored in the parquet files (everything except the cameras)."""
        return tuple(k for k in self.features if k not in self.camera_keys)

    def episode(self, episode_index: int) -> EpisodeRecord:
        for ep in self.episodes:
            if ep.episode_index == episode_index:
                return ep
        raise DatasetError(f"episode {episode_index} does not exist", self.root)

    def camera_shape(self, key: str) -> tuple[int, int, int]:
        """(height, width, channels) declared for camera `key`."""
        return image_hwc(self.features[key], key, self.root / INFO_JSON)

    def stored_name(self, key: str) -> str:
        """The name feature `key` has in the dataset's files (see `stored_names`)."""
        return self.stored_names.get(key, key)

    def select(self, episodes: Iterable[int]) -> DatasetMeta:
        """This dataset restricted to `episodes`: only their files are read, their frames
        numbered 0.. in the dataset's order (`EpisodeRecord`). Every episode: `self`, unchanged."""
        wanted = sorted({int(e) for e in episodes})
        known = {e.episode_index: e for e in self.episodes}
        unknown = [e for e in wanted if e not in known]
        if unknown:
            raise ConfigError(f"episodes {unknown} are not in the dataset (it has {len(known)}: "
                              f"{min(known, default=0)}..{max(known, default=-1)})", self.root)
        if not wanted:
            raise ConfigError("no episodes selected", self.root)
        if len(wanted) == len(self.episodes):
            return self
        records, start = [], 0
        for record in sorted((known[ep] for ep in wanted), key=lambda r: r.dataset_from_index):  # frame order
            records.append(dataclasses.replace(record, dataset_from_index=start, dataset_to_index=start + record.length,
                                               first_index=record.index_from))
            start += record.length
        records.sort(key=lambda r: r.episode_index)
        return dataclasses.replace(self, episodes=records, total_frames=start, total_episodes=len(records),
                                   selection=tuple(wanted))

    def data_files(self) -> list[Path]:
        seen: dict[Path, None] = {}
        for ep in self.episodes:
            seen.setdefault(ep.data_path, None)
        return list(seen)

    def video_files(self) -> list[Path]:
        seen: dict[Path, None] = {}
        for ep in self.episodes:
            for key in self.camera_keys:
                seen.setdefault(ep.videos[key].path, None)
        return list(seen)

    def __repr__(self) -> str:
        return (
            f"DatasetMeta(root={str(self.root)!r}, version={self.version}, fps={self.fps}, "
            f"episodes={self.total_episodes}, frames={self.total_frames}, cameras={self.camera_keys})"
        )


# --------------------------------------------------------------------------- helpers


class _Problems:
    """Collects problems (validate) or raises the first one (load)."""

    def __init__(self, collect: bool) -> None:
        self.collect = collect
        self.items: list[str] = []

    def add(self, reason: str, path: Path) -> None:
        err = DatasetError(reason, path)
        if not self.collect:
            raise err
        self.items.append(str(err))

    def attempt(self, read: Callable[[], _T]) -> _T | None:
        """`read()`; when collecting, its DatasetError becomes a problem and None stands in,
        so one unreadable file does not hide what the others say."""
        try:
            return read()
        except DatasetError as exc:
            if not self.collect:
                raise
            self.items.append(str(exc))
            return None


def _feature_size(feature: dict) -> int:
    return int(math.prod(feature["shape"]))


def image_hwc(feature: dict, key: str, path: Path | None = None) -> tuple[int, int, int]:
    """(height, width, channels) of a camera feature declared in either layout LeRobot reads.

    LeRobot's recorder declares `shape [H, W, 3]` with `names [height, width, channels]`;
    datasets ported from elsewhere declare `[3, H, W]` with `[channels, height, width]`,
    and v2.0-era ports say "channel". LeRobot reads the layout from the names (a last name
    "channel(s)" means height-width-channels, anything else channels-first), so a shape is
    read by its names here too; names that fit neither layout would be read differently by
    LeRobot and by us, and are refused. Without names the shape is LeRobot's own layout.
    """
    shape = list(feature["shape"])
    names = feature.get("names")
    if len(shape) != 3:
        raise DatasetError(f"field 'features.{key}.shape' is {shape}; a camera needs 3 entries "
                           f"(height, width, channels or channels, height, width)", path)
    if names is None:
        layout = IMAGE_LAYOUTS[0]
    else:
        given = (tuple(CHANNEL_NAMES.get(n, n) for n in names)
                 if isinstance(names, list) and all(isinstance(n, str) for n in names) else None)
        if given not in IMAGE_LAYOUTS:
            raise DatasetError(
                f"field 'features.{key}.names' is {names!r}; expected {list(IMAGE_LAYOUTS[0])} or "
                f"{list(IMAGE_LAYOUTS[1])} (the layout of shape {shape})", path)
        layout = given
    dims = dict(zip(layout, shape))
    return int(dims["height"]), int(dims["width"]), int(dims["channels"])


def read_parquet(path: Path, columns: list[str] | None = None) -> pa.Table:
    """Read a parquet file; a missing, truncated or corrupt file is a DatasetError."""
    if not path.is_file():
        raise DatasetError("file is missing", path)
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DatasetError(f"cannot read parquet (truncated or corrupt?): {exc}", path) from exc


def _parquet_file(path: Path) -> pq.ParquetFile:
    if not path.is_file():
        raise DatasetError("file is missing", path)
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DatasetError(f"cannot read parquet (truncated or corrupt?): {exc}", path) from exc


def _require(d: dict, key: str, kind: type | tuple[type, ...], path: Path, where: str = "") -> Any:
    if key not in d:
        raise DatasetError(f"missing field '{where}{key}'", path)
    value = d[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise DatasetError(f"field '{where}{key}' has invalid value {value!r}", path)
    return value


# --------------------------------------------------------------------------- info.json


def _parse_info(root: Path) -> dict[str, Any]:
    path = root / INFO_JSON
    if root.exists() and not root.is_dir():
        raise DatasetError("is a file; a LeRobot dataset is a folder holding meta/, data/ and videos/", root)
    if not root.is_dir():
        raise DatasetError("dataset directory does not exist", root)
    info = read_json(path, DatasetError, expect=dict)
    version = _require(info, "codebase_version", str, path)
    if version not in SUPPORTED_VERSIONS:
        raise DatasetError(
            f"field 'codebase_version' is {version!r}; supported: {', '.join(SUPPORTED_VERSIONS)}", path
        )
    fps = _require(info, "fps", (int, float), path)
    if fps <= 0 or int(fps) != fps:
        raise DatasetError(f"field 'fps' must be a positive integer, got {fps!r}", path)
    for key in ("total_episodes", "total_frames"):
        if _require(info, key, int, path) < 0:
            raise DatasetError(f"field '{key}' must be >= 0", path)
    _require(info, "data_path", str, path)
    features = _require(info, "features", dict, path)
    for name, feat in features.items():
        where = f"features.{name}."
        if not isinstance(feat, dict):
            raise DatasetError(f"field 'features.{name}' must be an object", path)
        dtype = _require(feat, "dtype", str, path, where)
        shape = _require(feat, "shape", list, path, where)
        if not shape or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
            raise DatasetError(f"field '{where}shape' must be a list of positive integers, got {shape}", path)
        if dtype == "image":
            raise DatasetError(
                f"feature '{name}' stores images inside the parquet (dtype 'image'); only video "
                "features are supported",
                path,
            )
        if dtype in VIDEO_DTYPES:
            h, w, c = image_hwc(feat, name, path)
            if c != 3:
                raise DatasetError(
                    f"field '{where}shape' is {shape} with names {feat.get('names')}: {c} channels, expected 3 "
                    f"(RGB video)", path)
            vfps = (feat.get("info") or {}).get("video.fps")
            if vfps is not None and abs(float(vfps) - float(fps)) > 1e-6:
                raise DatasetError(
                    f"fps mismatch: field '{where}info.video.fps' is {vfps} but 'fps' is {fps}", path
                )
            if (feat.get("info") or {}).get("video.height", h) != h or (feat.get("info") or {}).get(
                "video.width", w
            ) != w:
                raise DatasetError(f"field '{where}info' video.height/width disagree with shape {shape}", path)
    if any(f["dtype"] in VIDEO_DTYPES for f in features.values()):
        _require(info, "video_path", str, path)
    for key in (TIMESTAMP, FRAME_INDEX, EPISODE_INDEX, INDEX, TASK_INDEX):
        if key not in features:
            raise DatasetError(f"missing field 'features.{key}'", path)
    return info


# --------------------------------------------------------------------------- tasks


def _parse_tasks(root: Path, version: str) -> list[str]:
    if version == "v3.0":
        path = root / TASKS_PARQUET
        table = read_parquet(path)
        if TASK_INDEX not in table.column_names:
            raise DatasetError(f"missing column '{TASK_INDEX}'", path)
        text_col = next(
            (c for c in ("task", "__index_level_0__") if c in table.column_names),
            next((c for c in table.column_names if c != TASK_INDEX), None),
        )
        if text_col is None:
            raise DatasetError("no task string column (expected 'task' or the pandas index)", path)
        pairs = list(zip(table.column(TASK_INDEX).to_pylist(), table.column(text_col).to_pylist()))
    else:
        path = root / TASKS_JSONL
        rows = read_jsonl(path, DatasetError)
        pairs = []
        for i, row in enumerate(rows):
            if not isinstance(row.get("task_index"), int) or not isinstance(row.get("task"), str):
                raise DatasetError(f"line {i + 1}: needs integer 'task_index' and string 'task'", path)
            pairs.append((row["task_index"], row["task"]))
    pairs.sort(key=lambda p: p[0])
    if [p[0] for p in pairs] != list(range(len(pairs))):
        raise DatasetError(f"field 'task_index' must be 0..{len(pairs) - 1}, got {[p[0] for p in pairs]}", path)
    return [str(p[1]) for p in pairs]


# --------------------------------------------------------------------------- stats


def _to_arrays(stats: dict, path: Path) -> dict[str, dict[str, np.ndarray]]:
    out: dict[str, dict[str, np.ndarray]] = {}
    if not isinstance(stats, dict):
        raise DatasetError("stats must be an object of features", path)
    for feat, per_stat in stats.items():
        if not isinstance(per_stat, dict):
            raise DatasetError(f"field '{feat}' must be an object of statistics", path)
        out[feat] = {}
        for name, value in per_stat.items():
            try:
                out[feat][name] = np.asarray(value)
            except ValueError as exc:
                raise DatasetError(f"field '{feat}.{name}' is not a regular array", path) from exc
    return out


def _episode_stats_from_table(table: pa.Table) -> list[dict[str, dict[str, np.ndarray]]]:
    cols = [c for c in table.column_names if c.startswith("stats/")]
    rows: list[dict[str, dict[str, np.ndarray]]] = [{} for _ in range(table.num_rows)]
    for col in cols:
        _, rest = col.split("/", 1)
        feat, name = rest.rsplit("/", 1)
        for i, value in enumerate(table.column(col).to_pylist()):
            if value is not None:
                rows[i].setdefault(feat, {})[name] = np.asarray(value)
    return rows


def _parse_stats(root: Path, version: str, episodes_table: pa.Table | None) -> dict[str, dict[str, np.ndarray]]:
    if version == "v3.0":
        path = root / STATS_JSON
        if path.is_file():
            return _to_arrays(read_json(path, DatasetError), path)
        if episodes_table is not None and any(c.startswith("stats/") for c in episodes_table.column_names):
            log.warning("%s is missing; aggregating the per-episode stats", path)
            return aggregate_stats(_episode_stats_from_table(episodes_table))
        raise DatasetError("file is missing (and the episodes carry no stats)", path)
    path = root / EPISODES_STATS_JSONL
    if not path.is_file() and (root / STATS_JSON).is_file():
        return _to_arrays(read_json(root / STATS_JSON, DatasetError), root / STATS_JSON)
    rows = read_jsonl(path, DatasetError)
    per_ep = []
    for i, row in enumerate(rows):
        if "stats" not in row:
            raise DatasetError(f"line {i + 1}: missing field 'stats'", path)
        per_ep.append(_to_arrays(row["stats"], path))
    if not per_ep:
        raise DatasetError("no episode stats", path)
    return aggregate_stats(per_ep)


def _check_stats(stats: dict[str, dict[str, np.ndarray]], features: dict, camera_keys: tuple[str, ...],
                 path: Path, problems: _Problems) -> None:
    for key, per_stat in stats.items():
        if key not in features:
            continue
        if key in camera_keys:
            expected: tuple[int, ...] = (3, 1, 1)
        else:
            expected = tuple(features[key]["shape"])
        well_shaped = True
        for name in ("mean", "std", "min", "max"):
            if name not in per_stat:
                continue
            shape = per_stat[name].shape
            if shape != expected and not (expected == (1,) and shape == ()):
                problems.add(f"field '{key}.{name}' has shape {list(shape)}, expected {list(expected)}", path)
                well_shaped = False
            elif not np.issubdtype(per_stat[name].dtype, np.number):
                problems.add(f"field '{key}.{name}' is not numbers", path)
                well_shaped = False
            elif not np.isfinite(per_stat[name]).all():
                problems.add(f"field '{key}.{name}' holds NaN or inf", path)
                well_shaped = False
        if well_shaped:
            _check_stat_values(key, per_stat, path, problems)
    for key in (OBS_STATE, ACTION, *camera_keys):
        if key in features and key not in stats:
            problems.add(f"no stats for feature '{key}'", path)


def _check_stat_values(key: str, per_stat: dict[str, np.ndarray], path: Path, problems: _Problems) -> None:
    """A mean outside [min, max] or a negative std cannot come from any data."""
    if "std" in per_stat and (per_stat["std"] < 0).any():
        problems.add(f"field '{key}.std' is negative ({per_stat['std'].reshape(-1).min():.6g})", path)
    if not {"mean", "min", "max"} <= set(per_stat):
        return
    mean, low, high = (np.asarray(per_stat[s], dtype=np.float64).reshape(-1) for s in ("mean", "min", "max"))
    tol = 1e-6 * np.maximum(1.0, np.maximum(np.abs(low), np.abs(high)))
    outside = (mean < low - tol) | (mean > high + tol) | (low > high + tol)
    if outside.any():
        i = int(np.argmax(outside))
        problems.add(f"field '{key}.mean' is {mean[i]:.6g} at index {i}, outside [min, max] = "
                     f"[{low[i]:.6g}, {high[i]:.6g}]", path)


# --------------------------------------------------------------------------- episodes


def _v3_episodes(root: Path, info: dict, camera_keys: tuple[str, ...]) -> tuple[list[EpisodeRecord], pa.Table]:
    ep_dir = root / EPISODES_DIR
    files = sorted(ep_dir.glob("chunk-*/file-*.parquet"))
    if not files:
        raise DatasetError("no episodes parquet files (meta/episodes/chunk-*/file-*.parquet)", ep_dir)
    required = ["episode_index", "length", "dataset_from_index", "dataset_to_index", "tasks",
                "data/chunk_index", "data/file_index"]
    for key in camera_keys:
        required += [f"videos/{key}/chunk_index", f"videos/{key}/file_index", f"videos/{key}/from_timestamp"]
    tables = []
    for path in files:
        table = read_parquet(path)
        for col in required:
            if col not in table.column_names:
                raise DatasetError(f"missing column '{col}'", path)
        tables.append((path, table))
    full = pa.concat_tables([t for _, t in tables], promote_options="permissive")
    records: list[EpisodeRecord] = []
    for path, table in tables:
        cols = {c: table.column(c).to_pylist() for c in required}
        to_ts = {k: (table.column(f"videos/{k}/to_timestamp").to_pylist()
                     if f"videos/{k}/to_timestamp" in table.column_names else [None] * table.num_rows)
                 for k in camera_keys}
        for i in range(table.num_rows):
            try:
                data_path = root / info["data_path"].format(
                    chunk_index=cols["data/chunk_index"][i], file_index=cols["data/file_index"][i]
                )
                videos = {}
                for k in camera_keys:
                    vpath = root / info["video_path"].format(
                        video_key=k,
                        chunk_index=cols[f"videos/{k}/chunk_index"][i],
                        file_index=cols[f"videos/{k}/file_index"][i],
                    )
                    videos[k] = VideoSpan(vpath, float(cols[f"videos/{k}/from_timestamp"][i]), to_ts[k][i])
            except (KeyError, IndexError, ValueError) as exc:
                raise DatasetError(f"data_path/video_path template cannot be filled: {exc}", root / INFO_JSON) from exc
            ep_tasks = cols["tasks"][i] or []
            if isinstance(ep_tasks, str):
                ep_tasks = [ep_tasks]
            records.append(
                EpisodeRecord(
                    episode_index=int(cols["episode_index"][i]),
                    length=int(cols["length"][i]),
                    dataset_from_index=int(cols["dataset_from_index"][i]),
                    dataset_to_index=int(cols["dataset_to_index"][i]),
                    tasks=tuple(ep_tasks),
                    data_path=data_path,
                    videos=videos,
                )
            )
    return records, full


def _v21_episodes(root: Path, info: dict, camera_keys: tuple[str, ...]) -> list[EpisodeRecord]:
    path = root / EPISODES_JSONL
    rows = read_jsonl(path, DatasetError)
    chunks_size = int(info.get("chunks_size", 1000))
    parsed = []
    for i, row in enumerate(rows):
        for key, kind in (("episode_index", int), ("length", int), ("tasks", list)):
            if not isinstance(row.get(key), kind):
                raise DatasetError(f"line {i + 1}: missing or invalid field '{key}'", path)
        parsed.append(row)
    parsed.sort(key=lambda r: r["episode_index"])
    records = []
    start = 0
    for row in parsed:
        ep = row["episode_index"]
        chunk = ep // chunks_size
        try:
            data_path = root / info["data_path"].format(episode_chunk=chunk, episode_index=ep)
            videos = {
                k: VideoSpan(root / info["video_path"].format(episode_chunk=chunk, video_key=k, episode_index=ep), 0.0)
                for k in camera_keys
            }
        except (KeyError, IndexError, ValueError) as exc:
            raise DatasetError(f"data_path/video_path template cannot be filled: {exc}", root / INFO_JSON) from exc
        records.append(
            EpisodeRecord(ep, row["length"], start, start + row["length"], tuple(row["tasks"]), data_path, videos)
        )
        start += row["length"]
    return records


def _check_episodes(meta: DatasetMeta, problems: _Problems, check_tasks: bool = True) -> None:
    info_path = meta.root / INFO_JSON
    ep_path = meta.root / (EPISODES_DIR if meta.version == "v3.0" else EPISODES_JSONL)
    eps = meta.episodes
    indices = [e.episode_index for e in eps]
    if len(set(indices)) != len(indices):
        problems.add("field 'episode_index' has duplicates", ep_path)
    if len(eps) != meta.info["total_episodes"]:
        problems.add(f"field 'total_episodes' is {meta.info['total_episodes']} but {len(eps)} episodes are listed", info_path)
    total = sum(e.length for e in eps)
    if total != meta.info["total_frames"]:
        problems.add(f"field 'total_frames' is {meta.info['total_frames']} but the episode lengths sum to {total}", info_path)
    expected_start = 0
    for e in sorted(eps, key=lambda e: e.dataset_from_index):
        if e.length <= 0:
            problems.add(f"episode {e.episode_index}: field 'length' must be > 0, got {e.length}", ep_path)
        if e.dataset_to_index - e.dataset_from_index != e.length:
            problems.add(
                f"episode {e.episode_index}: dataset_from_index..dataset_to_index "
                f"[{e.dataset_from_index}, {e.dataset_to_index}) disagrees with length {e.length}", ep_path)
        if e.dataset_from_index != expected_start:
            problems.add(
                f"episode {e.episode_index}: field 'dataset_from_index' is {e.dataset_from_index}, "
                f"expected {expected_start} (ranges must be contiguous)", ep_path)
        expected_start = e.dataset_to_index
        for t in e.tasks if check_tasks else ():
            if t not in meta.tasks:
                problems.add(f"episode {e.episode_index}: task {t!r} is not in the tasks table", ep_path)


def _check_video_ranges(meta: DatasetMeta, problems: _Problems, selected: DatasetMeta) -> None:
    """v3.0 keeps episodes back to back in one mp4 and reads frame t of an episode at
    `from_timestamp + t`. A range that overlaps another episode's, cannot hold the
    episode's frames or runs past the end of the file would show the policy another
    episode's frames (or none), so each is a problem naming the episode and the field.
    The files' durations come from their headers; only the `selected` episodes' files
    are opened (the others may be absent)."""
    from robotrain.data.video import video_duration  # local: keeps format.py importable without av

    ep_path = meta.root / EPISODES_DIR
    wanted = {e.episode_index for e in selected.episodes}
    for key in meta.camera_keys:
        by_file: dict[Path, list[tuple[float, float, EpisodeRecord]]] = {}
        for e in meta.episodes:
            span = e.videos[key]
            start = span.from_timestamp
            end = float(span.to_timestamp) if span.to_timestamp is not None else start + e.length / meta.fps
            where = f"episode {e.episode_index}: videos/{key}/from_timestamp..to_timestamp [{start:.6f}, {end:.6f})"
            if not (math.isfinite(start) and math.isfinite(end)) or start < -TIMESTAMP_TOLERANCE_S or end <= start:
                problems.add(f"{where} is not a time range", ep_path)
                continue
            if end - start < (e.length - 0.5) / meta.fps:
                problems.add(f"{where} holds {(end - start) * meta.fps:.1f} frames at {meta.fps} fps but the episode "
                             f"has {e.length}", ep_path)
            by_file.setdefault(span.path, []).append((start, end, e))
        for path, spans in by_file.items():
            spans.sort(key=lambda s: s[0])
            for (_, prev_end, prev), (start, _, e) in zip(spans, spans[1:]):
                if start < prev_end - TIMESTAMP_TOLERANCE_S:
                    problems.add(f"episode {e.episode_index}: videos/{key}/from_timestamp {start:.6f} lies inside "
                                 f"episode {prev.episode_index}'s range (to {prev_end:.6f}) in the same file", ep_path)
            if not path.is_file() or not wanted.intersection(s[2].episode_index for s in spans):
                continue  # a missing file is reported as such
            try:
                duration = video_duration(path)
            except DatasetError:
                continue  # unreadable: the video checks of validate (and decoding) say so
            _, last_end, last = max(spans, key=lambda s: s[1])
            if duration is not None and last_end > duration + 0.5 / meta.fps:
                problems.add(f"episode {last.episode_index}: videos/{key}/to_timestamp is {last_end:.6f}s but "
                             f"{path.name} lasts {duration:.6f}s", ep_path)


def _episodes_text(episodes: Sequence[int]) -> str:
    eps = sorted(set(episodes))
    if len(eps) == 1:
        return f"episode {eps[0]}"
    shown = ", ".join(map(str, eps[:5]))
    return f"episodes {shown}" + (f", ... ({len(eps)} episodes)" if len(eps) > 5 else "")


def _missing_files(episodes: Sequence[EpisodeRecord]) -> dict[Path, list[int]]:
    """Data and video files that are not on disk, each with the episodes stored in it."""
    missing: dict[Path, list[int]] = {}
    for e in episodes:
        for path in (e.data_path, *(span.path for span in e.videos.values())):
            if not path.is_file():
                missing.setdefault(path, []).append(e.episode_index)
    return missing


def _check_files(meta: DatasetMeta, problems: _Problems, selection: set[int] | None = None) -> None:
    """Cheap checks from parquet footers: schema vs features, row counts per file.

    With a `selection` only the selected episodes' files must be there: a partial download
    trains on the episodes it has, and the others' missing files are only counted (a warning).
    """
    missing = _missing_files(meta.episodes)
    lacking = {ep for eps in missing.values() for ep in eps}
    if selection is not None:
        unavailable = lacking - selection
        if unavailable:
            log.warning("%d of the %d episodes are unavailable (files missing: a partial download?) and not "
                        "selected; reading the %d selected", len(unavailable), len(meta.episodes), len(selection))
    hint = ""
    if selection is None and not problems.collect and 0 < len(lacking) < len(meta.episodes):
        hint = (f"; {len(lacking)} of the {len(meta.episodes)} episodes lack files (a partial download?): "
                f"--episodes can select the others")
    for path, eps in missing.items():
        if selection is None or selection.intersection(eps):
            kind = "data" if path.suffix == ".parquet" else "video"
            problems.add(f"{kind} file is missing ({_episodes_text(eps)}){hint}", path)
    rows_per_file: dict[Path, int] = {}
    for e in meta.episodes:  # every episode stored in a file counts, selected or not
        rows_per_file[e.data_path] = rows_per_file.get(e.data_path, 0) + e.length
    needed = {e.data_path for e in meta.episodes if selection is None or e.episode_index in selection}
    for path, expected_rows in rows_per_file.items():
        if path in missing or path not in needed:
            continue
        try:
            pf = _parquet_file(path)
        except DatasetError as exc:
            problems.add(exc.reason, path)
            continue
        schema = pf.schema_arrow
        if pf.metadata.num_rows != expected_rows:
            problems.add(
                f"has {pf.metadata.num_rows} rows but the episodes stored in it have {expected_rows} frames", path)
        for key in meta.data_keys:
            feat = meta.features[key]
            if key not in schema.names:
                problems.add(f"missing column '{key}' (declared in info.json features)", path)
                continue
            typ = schema.field(key).type
            size = _feature_size(feat)
            if pa.types.is_fixed_size_list(typ):
                if typ.list_size != size:
                    problems.add(
                        f"column '{key}' has {typ.list_size} values per frame but features.{key}.shape is "
                        f"{feat['shape']}", path)
            elif not (pa.types.is_list(typ) or pa.types.is_large_list(typ)) and size != 1:
                problems.add(f"column '{key}' is a scalar but features.{key}.shape is {feat['shape']}", path)


# --------------------------------------------------------------------------- entry points


def _load(root: str | Path, problems: _Problems, selection: Iterable[int] | None = None) -> DatasetMeta:
    root = Path(root)
    info = _parse_info(root)
    version = info["codebase_version"]
    features = info["features"]
    camera_keys = tuple(sorted(k for k, f in features.items() if f["dtype"] in VIDEO_DTYPES))
    # info.json is needed to read anything else; past it, each meta file is read on its own
    # so that `dataset info` / `validate` report every unreadable one (load: the first).
    tasks = problems.attempt(lambda: _parse_tasks(root, version))
    listed = problems.attempt(lambda: _v3_episodes(root, info, camera_keys) if version == "v3.0"
                              else (_v21_episodes(root, info, camera_keys), None))
    episodes, episodes_table = listed if listed is not None else ([], None)
    episodes.sort(key=lambda e: e.episode_index)
    if listed is not None and not episodes:  # before the stats, whose absence would be the only word
        problems.add("the dataset has no episodes: nothing to train or evaluate on",
                     root / (EPISODES_DIR if version == "v3.0" else EPISODES_JSONL))
    stats = problems.attempt(lambda: _parse_stats(root, version, episodes_table))
    meta = DatasetMeta(
        root=root,
        version=version,
        fps=int(info["fps"]),
        features=features,
        camera_keys=camera_keys,
        robot_type=info.get("robot_type"),
        stats=stats or {},
        tasks=tasks or [],
        episodes=episodes,
        total_frames=int(info["total_frames"]),
        total_episodes=int(info["total_episodes"]),
        info=info,
    )
    stats_path = root / (STATS_JSON if version == "v3.0" else EPISODES_STATS_JSONL)
    selected = meta if selection is None else meta.select(selection)
    if listed is not None:
        _check_episodes(meta, problems, check_tasks=tasks is not None)
        _check_files(meta, problems, None if selected is meta else set(selected.selection or ()))
        if version == "v3.0":
            _check_video_ranges(meta, problems, selected)
    if stats is not None:
        _check_stats(stats, features, camera_keys, stats_path, problems)
    return selected


def load_meta(root: str | Path, episodes: Iterable[int] | None = None) -> DatasetMeta:
    """Parse `root/meta` (v3.0 or v2.1) and check it against the data files' footers.

    `episodes` restricts the dataset to those episodes (`DatasetMeta.select`): only their
    files need to be on disk. Raises DatasetError naming the file and field of the first
    problem found (ConfigError for an episode the dataset does not have).
    """
    return _load(root, _Problems(collect=False), episodes)


# --------------------------------------------------------------------------- frame table


def _column_to_numpy(col: pa.ChunkedArray, key: str, shape: list[int], path: Path) -> np.ndarray:
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    typ = arr.type
    n = len(arr)
    size = int(math.prod(shape))
    if pa.types.is_fixed_size_list(typ) or pa.types.is_list(typ) or pa.types.is_large_list(typ):
        if arr.null_count:
            raise DatasetError(f"column '{key}' has null values", path)
        values = arr.flatten().to_numpy(zero_copy_only=False)
        if values.size != n * size:
            raise DatasetError(
                f"column '{key}' has {values.size / max(n, 1):g} values per frame but features.{key}.shape is {shape}",
                path)
        return values.reshape((n, *shape))
    if size != 1:
        raise DatasetError(f"column '{key}' is a scalar but features.{key}.shape is {shape}", path)
    if arr.null_count:
        raise DatasetError(f"column '{key}' has null values", path)
    return arr.to_numpy(zero_copy_only=False)  # (N,) scalars stay scalars, like LeRobot's rows


def load_frame_table(meta: DatasetMeta) -> dict[str, np.ndarray]:
    """Read every data parquet once into numpy arrays indexed by global frame index.

    Returns {column: (total_frames, *shape)} for every non-video feature (scalar
    features as (total_frames,)). Checks that each episode's rows are where the
    episode table says, and that timestamps advance by 1/fps.
    """
    if not meta.episodes:
        raise DatasetError("the dataset has no episodes: nothing to train or evaluate on", meta.root / INFO_JSON)
    chunks: dict[str, list[np.ndarray]] = {k: [] for k in meta.data_keys}
    for path in meta.data_files():
        table = read_parquet(path, columns=[meta.stored_name(k) for k in meta.data_keys])
        if meta.selection is not None:  # a v3.0 file also holds episodes that were not selected
            episode = _column_to_numpy(table.column(EPISODE_INDEX), EPISODE_INDEX, [1], path)
            table = table.filter(pa.array(np.isin(episode, meta.selection)))
        for key in meta.data_keys:
            stored = meta.stored_name(key)  # messages name the column as the file has it
            chunks[key].append(_column_to_numpy(table.column(stored), stored, meta.features[key]["shape"], path))
    columns = {k: (np.concatenate(v) if len(v) > 1 else v[0]) for k, v in chunks.items()}
    n = len(columns[INDEX])
    if n != meta.total_frames:
        what = ("'total_frames' is" if meta.selection is None
                else f"the lengths of the selected {_episodes_text(meta.selection)} sum to")
        raise DatasetError(f"data files hold {n} frames but {what} {meta.total_frames}", meta.root / INFO_JSON)
    # Rows may be ordered by file; place them by their global `index` column.
    index = columns[INDEX].astype(np.int64)
    expected = np.concatenate([np.arange(e.index_from, e.index_from + e.length)
                               for e in sorted(meta.episodes, key=lambda e: e.dataset_from_index)])
    if not np.array_equal(index, expected):
        order = np.argsort(index, kind="stable")
        if np.array_equal(index[order], expected):
            columns = {k: v[order] for k, v in columns.items()}
        else:
            raise DatasetError("column 'index' is not a permutation of 0..total_frames-1" if meta.selection is None
                               else "column 'index' does not hold the selected episodes' frame ranges",
                               meta.data_files()[0])
    tol = TIMESTAMP_TOLERANCE_S
    for e in meta.episodes:
        sl = slice(e.dataset_from_index, e.dataset_to_index)
        ep_col = columns[EPISODE_INDEX][sl]
        if not np.all(ep_col == e.episode_index):
            raise DatasetError(
                f"episode {e.episode_index}: rows [{e.dataset_from_index}, {e.dataset_to_index}) of column "
                f"'episode_index' hold {sorted(set(ep_col.tolist()))[:5]}; episode ranges do not match the data",
                e.data_path)
        if not np.array_equal(columns[FRAME_INDEX][sl], np.arange(e.length)):
            raise DatasetError(f"episode {e.episode_index}: column 'frame_index' is not 0..{e.length - 1}", e.data_path)
        ts = columns[TIMESTAMP][sl].astype(np.float64)
        if len(ts) > 1:
            diffs = np.diff(ts)
            bad = np.abs(diffs - 1.0 / meta.fps) > tol + 1e-6
            if bad.any():
                j = int(np.argmax(bad))
                raise DatasetError(
                    f"episode {e.episode_index}: fps mismatch, column 'timestamp' steps by {diffs[j]:.6f}s at frame "
                    f"{j + 1} but fps is {meta.fps} ({1.0 / meta.fps:.6f}s)", e.data_path)
        # A steady step can still start late: frames are read at from_timestamp + timestamp,
        # so an episode shifted by k frames would be shown the video k frames later.
        offset = ts - np.arange(e.length) / meta.fps
        bad = np.abs(offset) > tol + 1e-6
        if bad.any():
            j = int(np.argmax(bad))
            raise DatasetError(
                f"episode {e.episode_index}: column 'timestamp' is {ts[j]:.6f}s at frame {j} but frame_index / fps "
                f"is {j / meta.fps:.6f}s (shifted by {offset[j] * meta.fps:+.2f} frames); its video frames would be "
                f"read at the wrong times", e.data_path)
    tidx = columns[TASK_INDEX]
    if tidx.size and (tidx.min() < 0 or tidx.max() >= len(meta.tasks)):
        raise DatasetError(f"column 'task_index' has values outside 0..{len(meta.tasks) - 1}", meta.data_files()[0])
    _check_task_rows(meta, tidx)
    _check_finite(meta, columns)
    _check_stats_describe(meta, columns)
    return columns


def _check_task_rows(meta: DatasetMeta, task_index: np.ndarray) -> None:
    """Every row's task must be one its episode lists: a row saying another task would
    train the policy on the wrong instruction (SmolVLA reads it) without a word."""
    for e in meta.episodes:
        if not e.tasks:
            continue  # no tasks listed: nothing to compare with
        allowed = [meta.tasks.index(t) for t in e.tasks if t in meta.tasks]
        rows = task_index[e.dataset_from_index:e.dataset_to_index]
        bad = ~np.isin(rows, allowed)
        if bad.any():
            j = int(np.argmax(bad))
            raise DatasetError(
                f"episode {e.episode_index}: column 'task_index' is {int(rows[j])} ({meta.tasks[int(rows[j])]!r}) "
                f"at frame {j} ({int(bad.sum())} frame(s) in all) but the episode's tasks are {list(e.tasks)}",
                e.data_path)


# Stats that are off by at least this factor do not describe the data ("orders of magnitude"):
# other units, another dataset, or stats left from before the data was edited.
STALE_STATS_FACTOR = 10.0


def _check_stats_describe(meta: DatasetMeta, columns: dict[str, np.ndarray]) -> None:
    """The normalisation stats of the policy inputs and outputs (state, action) must
    describe the data: each dimension's data range is compared with the stats' min..max.
    Data spread or lying far beyond the stats' range, or (whole dataset loaded) stats far
    wider than the data, by `STALE_STATS_FACTOR` or more, is refused; a selection of
    episodes may legitimately span less than the whole dataset's stats."""
    for key, col in columns.items():
        per_stat = meta.stats.get(key, {})
        if not (key == ACTION or key.startswith("observation.")) or not np.issubdtype(col.dtype, np.floating) \
                or not {"min", "max"} <= set(per_stat) or not len(col):
            continue
        values = col.reshape(len(col), -1).astype(np.float64)
        smin, smax = (np.asarray(per_stat[s], dtype=np.float64).reshape(-1) for s in ("min", "max"))
        if smin.shape[0] != values.shape[1] or smax.shape[0] != values.shape[1]:
            continue  # a shape problem, reported by the meta checks
        dmin, dmax = values.min(axis=0), values.max(axis=0)
        eps = 1e-3 * np.maximum(1.0, np.maximum(np.abs(smin), np.abs(smax)))
        stats_span, data_span = smax - smin, dmax - dmin
        beyond = np.maximum(smin - dmin, dmax - smax)  # how far the data leaves the stats' range
        stale = (data_span > STALE_STATS_FACTOR * stats_span + eps) | (beyond > STALE_STATS_FACTOR * stats_span + eps)
        if meta.selection is None:
            stale |= stats_span > STALE_STATS_FACTOR * data_span + eps
        if stale.any():
            d = int(np.argmax(stale))
            raise DatasetError(
                f"stats of '{meta.stored_name(key)}' do not describe the data (stale? other units?): dimension {d} "
                f"spans [{dmin[d]:.6g}, {dmax[d]:.6g}] in the data but [{smin[d]:.6g}, {smax[d]:.6g}] in the stats",
                _stats_path(meta))


def _stats_path(meta: DatasetMeta) -> Path:
    """The file the dataset's stats come from."""
    if meta.version == "v3.0":
        return meta.root / (STATS_JSON if (meta.root / STATS_JSON).is_file() else EPISODES_DIR)
    return meta.root / (EPISODES_STATS_JSONL if (meta.root / EPISODES_STATS_JSONL).is_file() else STATS_JSON)


def _check_finite(meta: DatasetMeta, columns: dict[str, np.ndarray]) -> None:
    """NaN or inf in a state or action would surface much later as "loss became nan" (or as
    nan action errors) without a word about the data; name the column and the first frame.
    Other columns (rewards, complementary info) are no policy's input and are left alone."""
    for key, col in columns.items():
        if not (key == ACTION or key.startswith(OBS_PREFIX)) or not np.issubdtype(col.dtype, np.floating):
            continue
        bad = ~np.isfinite(col.reshape(len(col), -1)).all(axis=1)
        if bad.any():
            row = int(np.argmax(bad))
            ep = next((e for e in meta.episodes if e.dataset_from_index <= row < e.dataset_to_index), None)
            where = (f"episode {ep.episode_index} frame {row - ep.dataset_from_index}" if ep is not None
                     else f"global frame {row}")
            raise DatasetError(f"column '{meta.stored_name(key)}' holds NaN or inf in {int(bad.sum())} frame(s), "
                               f"first at {where}", ep.data_path if ep is not None else meta.root)


def iter_problems_videos(meta: DatasetMeta) -> Iterator[str]:
    """Open each mp4 and compare its stream with info.json (cheap: headers only)."""
    from robotrain.data.video import decode_frames_at, probe_video  # local: keeps format.py importable without av

    for key in meta.camera_keys:
        h, w, _ = meta.camera_shape(key)
        paths = {ep.videos[key].path for ep in meta.episodes}
        for path in sorted(paths):
            if not path.is_file():
                continue  # already reported as missing
            try:
                probe = probe_video(path)
            except DatasetError as exc:
                yield str(exc)
                continue
            if (probe.height, probe.width) != (h, w):
                yield str(DatasetError(
                    f"stream is {probe.height}x{probe.width} but features.{key}.shape says {h}x{w}", path))
            if probe.fps is not None and abs(probe.fps - meta.fps) > 0.01:
                yield str(DatasetError(f"fps mismatch: stream is {probe.fps:g} fps but 'fps' is {meta.fps}", path))
            # Headers can promise frames a truncated or re-encoded file no longer has: decode
            # the last frame any episode needs from this file (one seek per file).
            last_ep = max((ep for ep in meta.episodes if ep.videos[key].path == path),
                          key=lambda ep: ep.videos[key].from_timestamp + ep.length / meta.fps)
            t_last = last_ep.videos[key].from_timestamp + (last_ep.length - 1) / meta.fps
            try:
                decode_frames_at(path, [t_last])
            except DatasetError as exc:
                yield str(DatasetError(f"cannot decode the frame at {t_last:.3f}s that episode "
                                       f"{last_ep.episode_index} needs (truncated?): {exc.reason}", path))


def inspect_dataset(root: str | Path) -> tuple[DatasetMeta, list[str]]:
    """What `robotrain dataset info` shows: the metadata that could be read, and every
    problem the meta files and the data files' presence and footers reveal (nothing is
    decoded). Raises DatasetError only when info.json itself cannot be read."""
    problems = _Problems(collect=True)
    meta = _load(root, problems)
    return meta, problems.items


def validate_dataset(root: str | Path) -> list[str]:
    """Every problem found in a dataset (empty list: clean). Used by `robotrain dataset validate`."""
    problems = _Problems(collect=True)
    try:
        meta = _load(root, problems)
    except DatasetError as exc:
        return problems.items + [str(exc)]
    if problems.items:
        # Data-level checks would only repeat the same problems in other words.
        return problems.items + list(iter_problems_videos(meta))
    try:
        load_frame_table(meta)
    except DatasetError as exc:
        problems.items.append(str(exc))
    problems.items.extend(iter_problems_videos(meta))
    return problems.items
