"""Meta parsing and validation of LeRobot v3.0 / v2.1 datasets (fixtures written by LeRobot)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import run_cli
from dataset_helpers import (
    FRONT,
    V21,
    V30,
    WRIST,
    corrupt,
    edit_feature,
    edit_info,
    rewrite_v30_episodes,
    truncate,
    v30_data,
    v30_video,
    writable_copy,
)

from robotrain.data.format import DatasetMeta, load_frame_table, load_meta, validate_dataset
from robotrain.errors import DatasetError

TASKS = ["Pick up the cube and place it in the bowl", "Push the cube to the left"]


@pytest.mark.parametrize("name,version,frames,lengths", [(V30, "v3.0", 123, [41, 42, 40]),
                                                         (V21, "v2.1", 135, [48, 53, 34])])
def test_load_meta_fixtures(lerobot_fixtures: Path, name: str, version: str, frames: int, lengths: list[int]) -> None:
    meta = load_meta(lerobot_fixtures / name)
    assert isinstance(meta, DatasetMeta)
    assert meta.version == version and meta.fps == 30 and meta.robot_type == "so101_follower"
    assert meta.camera_keys == (FRONT, WRIST)
    assert meta.state_dim == 6 and meta.action_dim == 6
    assert meta.total_frames == frames and meta.total_episodes == 3
    assert meta.tasks == TASKS
    assert [e.length for e in meta.episodes] == lengths
    assert [e.episode_index for e in meta.episodes] == [0, 1, 2]
    assert meta.episodes[1].dataset_from_index == lengths[0]
    assert meta.episodes[1]["dataset_to_index"] == lengths[0] + lengths[1]
    assert meta.episodes[1].tasks == (TASKS[1],)
    assert meta.camera_shape(FRONT) == (96, 128, 3)
    # image stats per channel [3, 1, 1] in [0, 1], kept as stored
    for stat in ("mean", "std", "min", "max"):
        assert meta.stats[FRONT][stat].shape == (3, 1, 1)
    assert 0.0 <= meta.stats[FRONT]["mean"].min() and meta.stats[FRONT]["max"].max() <= 1.0
    assert meta.stats["action"]["mean"].shape == (6,)
    assert int(meta.stats["action"]["count"][0]) == frames


def test_v30_stats_as_stored(lerobot_fixtures: Path) -> None:
    root = lerobot_fixtures / V30
    stored = json.loads((root / "meta" / "stats.json").read_text())
    meta = load_meta(root)
    np.testing.assert_allclose(meta.stats["observation.state"]["std"], stored["observation.state"]["std"])
    np.testing.assert_allclose(meta.stats[WRIST]["q99"], stored[WRIST]["q99"])


def test_v21_stats_aggregated_from_episodes(lerobot_fixtures: Path) -> None:
    root = lerobot_fixtures / V21
    meta = load_meta(root)
    table = pq.read_table(root / "data" / "chunk-000" / "episode_000000.parquet")
    per_ep = [json.loads(line)["stats"] for line in (root / "meta" / "episodes_stats.jsonl").read_text().splitlines()]
    assert np.allclose(meta.stats["action"]["min"], np.min([s["action"]["min"] for s in per_ep], axis=0))
    all_actions = np.concatenate([
        np.array(pq.read_table(root / "data" / "chunk-000" / f"episode_{i:06d}.parquet").column("action").to_pylist())
        for i in range(3)
    ])
    np.testing.assert_allclose(meta.stats["action"]["mean"], all_actions.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(meta.stats["action"]["std"], all_actions.std(0), rtol=1e-3, atol=1e-3)
    assert table.num_rows == 48


@pytest.mark.parametrize("name", [V30, V21])
def test_frame_table_matches_parquet(lerobot_fixtures: Path, name: str) -> None:
    meta = load_meta(lerobot_fixtures / name)
    cols = load_frame_table(meta)
    rows = []
    for path in meta.data_files():
        rows += pq.read_table(path).to_pylist()
    assert cols["action"].shape == (meta.total_frames, 6) and cols["action"].dtype == np.float32
    np.testing.assert_array_equal(cols["action"], np.array([r["action"] for r in rows], dtype=np.float32))
    np.testing.assert_array_equal(cols["observation.state"],
                                  np.array([r["observation.state"] for r in rows], dtype=np.float32))
    np.testing.assert_array_equal(cols["index"], np.arange(meta.total_frames))


@pytest.mark.parametrize("name", [V30, V21])
def test_validate_clean(lerobot_fixtures: Path, name: str) -> None:
    assert validate_dataset(lerobot_fixtures / name) == []
    result = run_cli("dataset", "validate", str(lerobot_fixtures / name))
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_cli_info(lerobot_fixtures: Path) -> None:
    result = run_cli("dataset", "info", str(lerobot_fixtures / V30))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for text in ("v3.0", "episodes  3", "frames 123", "fps 30", FRONT, "96x128", TASKS[1], "observation.state"):
        assert text in out


# --------------------------------------------------------------------------- bad inputs
def _damage_missing_info(root: Path) -> None:
    (root / "meta" / "info.json").unlink()


def _damage_invalid_info(root: Path) -> None:
    (root / "meta" / "info.json").write_text("{not json")


def _damage_unknown_version(root: Path) -> None:
    edit_info(root, codebase_version="v9.9")


def _damage_missing_field(root: Path) -> None:
    info = json.loads((root / "meta" / "info.json").read_text())
    del info["fps"]
    (root / "meta" / "info.json").write_text(json.dumps(info))


def _damage_shape(root: Path) -> None:
    edit_feature(root, "action", shape=[7])


def _damage_fps(root: Path) -> None:
    edit_info(root, fps=25)


def _damage_missing_mp4(root: Path) -> None:
    v30_video(root, WRIST).unlink()


def _damage_truncated_parquet(root: Path) -> None:
    truncate(v30_data(root))


def _damage_total_frames(root: Path) -> None:
    edit_info(root, total_frames=124)


def _damage_episode_rows(root: Path) -> None:
    # Episode ranges one frame off the data rows; the video ranges moved along, so only the
    # data rows tell.
    ranges = {}
    for key in (FRONT, WRIST):
        ranges[f"videos/{key}/from_timestamp"] = [0.0, 40 / 30, 83 / 30]
        ranges[f"videos/{key}/to_timestamp"] = [40 / 30, 83 / 30, 123 / 30]
    rewrite_v30_episodes(root, length=[40, 43, 40], dataset_to_index=[40, 83, 123], dataset_from_index=[0, 40, 83],
                         **ranges)


# (damage, text the error must contain, found by load_meta already?, info.json readable?)
BAD_INPUTS = {
    "missing_info": (_damage_missing_info, "info.json", True, False),
    "invalid_info": (_damage_invalid_info, "info.json", True, False),
    "unknown_version": (_damage_unknown_version, "codebase_version", True, False),
    "missing_field": (_damage_missing_field, "'fps'", True, False),
    "shape_mismatch": (_damage_shape, "features.action.shape is [7]", True, True),
    "fps_mismatch": (_damage_fps, "fps", True, False),
    "missing_mp4": (_damage_missing_mp4, "file-000.mp4", True, True),
    "truncated_parquet": (_damage_truncated_parquet, "file-000.parquet", True, True),
    "total_frames": (_damage_total_frames, "total_frames", True, True),
    "episode_rows": (_damage_episode_rows, "episode", False, True),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_python_and_cli(lerobot_fixtures: Path, tmp_path: Path, case: str) -> None:
    damage, text, at_load, info_readable = BAD_INPUTS[case]
    root = writable_copy(lerobot_fixtures / V30, tmp_path / "ds")
    damage(root)
    if at_load:
        with pytest.raises(DatasetError, match=re.escape(text)) as info:
            load_meta(root)
        assert str(root) in str(info.value)
    else:
        meta = load_meta(root)
        with pytest.raises(DatasetError, match=re.escape(text)):
            load_frame_table(meta)
    problems = validate_dataset(root)
    assert problems and any(text in p for p in problems), problems

    # CLI: `cache` fails in one line; `info` too when info.json is unreadable, else it shows the
    # metadata and then lists the problem; `validate` lists it
    result = run_cli("dataset", "cache", str(root), "--cache-dir", str(tmp_path / "cache"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("robotrain: error:") and text in lines[0], result.stderr
    result = run_cli("dataset", "info", str(root))
    assert "Traceback" not in result.stderr
    if not info_readable:
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and text in result.stderr
    elif at_load:
        assert result.returncode == 1 and "episodes  3" in result.stdout and TASKS[1] in result.stdout
        assert "problem(s) in" in result.stderr and text in result.stderr, result.stderr
    else:  # found in the data rows: `info` does not read them
        assert result.returncode == 0 and "episodes  3" in result.stdout
    result = run_cli("dataset", "validate", str(root))
    assert result.returncode == 1 and "Traceback" not in result.stderr and text in result.stderr


def test_wrong_resolution_found_by_validate(lerobot_fixtures: Path, tmp_path: Path) -> None:
    root = writable_copy(lerobot_fixtures / V21, tmp_path / "ds")
    info = json.loads((root / "meta" / "info.json").read_text())
    info["features"][FRONT]["shape"] = [100, 128, 3]
    info["features"][FRONT]["info"]["video.height"] = 100
    (root / "meta" / "info.json").write_text(json.dumps(info))
    problems = validate_dataset(root)
    assert len(problems) == 3  # one per front-camera mp4
    assert all("96x128" in p and "100x128" in p and "episode_00000" in p for p in problems)


def test_corrupt_mp4_found_by_validate(lerobot_fixtures: Path, tmp_path: Path) -> None:
    root = writable_copy(lerobot_fixtures / V21, tmp_path / "ds")
    bad = root / "videos" / "chunk-000" / WRIST / "episode_000001.mp4"
    corrupt(bad)
    problems = validate_dataset(root)
    assert len(problems) == 1 and "episode_000001.mp4" in problems[0] and WRIST in problems[0]
    result = run_cli("dataset", "validate", str(root))
    assert result.returncode == 1 and "episode_000001.mp4" in result.stderr


def test_validate_finds_a_video_that_lost_its_last_frames(lerobot_fixtures: Path, tmp_path: Path) -> None:
    """A cut-off mp4 can keep headers that promise every frame; the last needed one is decoded."""
    root = writable_copy(lerobot_fixtures / V30, tmp_path / "ds")
    video = v30_video(root, WRIST)
    truncate(video, 0.95)  # only the last episode's last frames go
    problems = validate_dataset(root)
    assert len(problems) == 1 and str(video) in problems[0] and "cannot decode the frame at" in problems[0], problems


def test_nan_in_the_data_names_the_column_episode_and_frame(lerobot_fixtures: Path, tmp_path: Path) -> None:
    root = writable_copy(lerobot_fixtures / V30, tmp_path / "ds")
    table = pq.read_table(v30_data(root))
    actions = table.column("action").to_pylist()
    meta = load_meta(root)
    row = meta.episodes[1].dataset_from_index + 3
    actions[row][2] = float("nan")
    actions[row + 5][0] = float("inf")
    table = table.set_column(table.schema.get_field_index("action"), "action",
                             pa.array(actions, type=table.schema.field("action").type))
    pq.write_table(table, v30_data(root))
    expected = "column 'action' holds NaN or inf in 2 frame(s), first at episode 1 frame 3"
    with pytest.raises(DatasetError, match=re.escape(expected)):
        load_frame_table(load_meta(root))
    assert [p for p in validate_dataset(root) if expected in p]


def test_validate_collects_all_problems(lerobot_fixtures: Path, tmp_path: Path) -> None:
    root = writable_copy(lerobot_fixtures / V30, tmp_path / "ds")
    _damage_missing_mp4(root)
    _damage_shape(root)
    problems = validate_dataset(root)
    assert any("file-000.mp4" in p for p in problems) and any("action" in p for p in problems)


def test_info_shows_what_it_can_read_then_every_problem(lerobot_fixtures: Path, tmp_path: Path) -> None:
    root = writable_copy(lerobot_fixtures / V21, tmp_path / "ds")
    gone = [root / "data" / "chunk-000" / "episode_000001.parquet",
            root / "videos" / "chunk-000" / WRIST / "episode_000000.mp4",
            root / "videos" / "chunk-000" / FRONT / "episode_000002.mp4"]
    for path in gone:
        path.unlink()
    (root / "meta" / "tasks.jsonl").unlink()
    result = run_cli("dataset", "info", str(root))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    for text in ("v2.1", "episodes  3", "frames 135", "fps 30", "observation.state", FRONT, "96x128"):
        assert text in result.stdout, result.stdout
    problems = [ln for ln in result.stderr.splitlines() if ln.startswith("  - ")]
    assert len(problems) == 4, result.stderr
    assert "tasks.jsonl: file is missing" in problems[0]
    for path, episode in zip(gone, (1, 0, 2)):
        assert any(str(path) in p and f"(episode {episode})" in p for p in problems), (path, problems)


def test_a_file_given_as_the_dataset_says_so(tmp_path: Path) -> None:
    (tmp_path / "data.parquet").write_bytes(b"PAR1")
    with pytest.raises(DatasetError, match="is a file; a LeRobot dataset is a folder"):
        load_meta(tmp_path / "data.parquet")
