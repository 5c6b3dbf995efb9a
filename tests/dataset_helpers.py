"""Helpers for the dataset tests: writable copies of the LeRobot fixtures, edits to them."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

V30 = "so101_fixture_v30"
V21 = "so101_fixture_v21"
FRONT = "observation.images.front"
WRIST = "observation.images.wrist"


def writable_copy(src: Path, dst: Path) -> Path:
    """Copy a (read-only) fixture and make the copy writable."""
    shutil.copytree(src, dst, copy_function=shutil.copyfile)
    for dirpath, dirnames, filenames in os.walk(dst):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o644)
    return dst


def edit_info(root: Path, **changes: Any) -> None:
    path = root / "meta" / "info.json"
    info = json.loads(path.read_text())
    info.update(changes)
    path.write_text(json.dumps(info, indent=4))


def edit_feature(root: Path, key: str, **changes: Any) -> None:
    path = root / "meta" / "info.json"
    info = json.loads(path.read_text())
    info["features"][key].update(changes)
    path.write_text(json.dumps(info, indent=4))


def rewrite_v30_episodes(root: Path, **columns: list) -> None:
    path = root / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    table = pq.read_table(path)
    for name, values in columns.items():
        i = table.column_names.index(name)
        table = table.set_column(i, name, pa.array(values, type=table.schema.field(name).type))
    pq.write_table(table, path)


def v30_video(root: Path, key: str = FRONT) -> Path:
    return root / "videos" / key / "chunk-000" / "file-000.mp4"


def v30_data(root: Path) -> Path:
    return root / "data" / "chunk-000" / "file-000.parquet"


def truncate(path: Path, keep_fraction: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])


def corrupt(path: Path) -> None:
    """Overwrite the file with garbage of the same size."""
    size = path.stat().st_size
    path.write_bytes(bytes((i * 131 + 7) % 256 for i in range(size)))


def declare_channel_first(root: Path, names: tuple[str, str, str] = ("channels", "height", "width")) -> None:
    """Declare every camera channel-first (`[3, H, W]` with `names`), as datasets ported
    from other stacks do; the videos are unchanged."""
    path = root / "meta" / "info.json"
    info = json.loads(path.read_text())
    for feature in info["features"].values():
        if feature["dtype"] == "video":
            h, w, c = feature["shape"]
            feature["shape"], feature["names"] = [c, h, w], list(names)
    path.write_text(json.dumps(info, indent=4))


def rename_on_disk(root: Path, names: dict[str, str]) -> None:
    """Rename features in a v3.0 dataset's files (info.json, data and episodes parquet
    columns, stats.json, video folders), as a dataset exported by another stack names them."""
    info_path = root / "meta" / "info.json"
    info = json.loads(info_path.read_text())
    info["features"] = {names.get(k, k): v for k, v in info["features"].items()}
    info_path.write_text(json.dumps(info, indent=4))
    stats_path = root / "meta" / "stats.json"
    stats_path.write_text(json.dumps({names.get(k, k): v for k, v in json.loads(stats_path.read_text()).items()}))

    def column(name: str) -> str:
        parts = name.split("/")
        if len(parts) == 3 and parts[0] in ("videos", "stats"):
            parts[1] = names.get(parts[1], parts[1])
            return "/".join(parts)
        return names.get(name, name)

    for path in [*(root / "data").rglob("*.parquet"), *(root / "meta" / "episodes").rglob("*.parquet")]:
        table = pq.read_table(path)
        pq.write_table(table.rename_columns([column(c) for c in table.column_names]), path)
    for old, new in names.items():
        if (root / "videos" / old).is_dir():
            (root / "videos" / old).rename(root / "videos" / new)
