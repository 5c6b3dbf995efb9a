"""v2.1 -> v3.0 conversion: LeRobot's own v2.1 fixture and generated v2.1 datasets are
converted, then both sides are read back (pyarrow, PyAV) and compared frame by frame."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from robotrain.data import stats as stats_lib
from robotrain.data import writer as writer_mod
from robotrain.data.convert import ConversionReport, convert_v21_to_v30
from robotrain.data.mp4 import keep_scheduling
from robotrain.errors import DatasetError
from test_writer import DEFAULT_CODEC, FILES, HAS_SVTAV1, read_episodes_meta, synthetic_frames

V21_DATA = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
V21_VIDEO = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
CAMS = {"observation.images.front": (48, 64), "observation.images.wrist": (48, 64)}
TASKS = ["Pick up the cube and place it in the bowl", "Push the cube to the left"]


def encode_clip(path: Path, frames: np.ndarray, codec: str = "libsvtav1", fps: int = 30) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.options = {"g": "2", "crf": "30", "preset": "12"} if codec == "libsvtav1" else {"g": "2", "bf": "0"}
        with keep_scheduling():  # SVT-AV1 would leave the test process SCHED_FIFO 99
            s.codec_context.open()
        for i, rgb in enumerate(frames):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            f.pts = i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)


def write_v21(root: Path, lengths=(12, 15, 9), cams=CAMS, codecs=None, chunks_size=1000, extra=False) -> None:
    """A v2.1 dataset laid out as LeRobot 0.3 writes it (one parquet + one mp4 per episode);
    `extra` adds scalar `next.reward` (float32) and `next.done` (bool) columns."""
    features = {
        "action": writer_mod.vector_feature(writer_mod.SO101_JOINT_NAMES),
        "observation.state": writer_mod.vector_feature(writer_mod.SO101_JOINT_NAMES),
        **{k: writer_mod.video_feature(h, w, 30, "av1") for k, (h, w) in cams.items()},
        **writer_mod.default_frame_features(),
    }
    if extra:
        features["next.reward"] = {"dtype": "float32", "shape": [1], "names": None}
        features["next.done"] = {"dtype": "bool", "shape": [1], "names": None}
    schema = writer_mod.data_schema(features)
    ep_lines, stat_lines, start = [], [], 0
    for ep, T in enumerate(lengths):
        rng = np.random.default_rng(ep)
        fi = np.arange(T)
        cols = {
            "action": rng.uniform(-30, 30, (T, 6)).astype(np.float32),
            "observation.state": rng.uniform(-30, 30, (T, 6)).astype(np.float32),
            "timestamp": (fi / 30).astype(np.float32), "frame_index": fi, "episode_index": np.full(T, ep),
            "index": np.arange(start, start + T), "task_index": np.full(T, ep % 2),
        }
        if extra:
            cols["next.reward"] = rng.uniform(0, 1, T).astype(np.float32)
            cols["next.done"] = fi == T - 1
        chunk = ep // chunks_size
        path = root / V21_DATA.format(episode_chunk=chunk, episode_index=ep)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(writer_mod.columns_to_table(cols, schema), path)
        stats = {k: stats_lib.compute_feature_stats(v) for k, v in cols.items()}
        for i, (key, (h, w)) in enumerate(cams.items()):
            frames = synthetic_frames(T, h, w, ep + 3 * i)
            encode_clip(root / V21_VIDEO.format(episode_chunk=chunk, video_key=key, episode_index=ep), frames,
                        codec=(codecs or {}).get(ep, "libsvtav1" if HAS_SVTAV1 else "libx264"))
            stats[key] = stats_lib.compute_image_stats(frames)
        stats = {k: {s: v for s, v in fs.items() if s in ("min", "max", "mean", "std", "count")}
                 for k, fs in stats.items()}
        ep_lines.append({"episode_index": ep, "tasks": [TASKS[ep % 2]], "length": T})
        stat_lines.append({"episode_index": ep, "stats": stats_lib.stats_to_json(stats)})
        start += T
    info = {
        "codebase_version": "v2.1", "robot_type": "so101_follower", "total_episodes": len(lengths),
        "total_frames": start, "total_tasks": 2, "total_videos": len(lengths) * len(cams),
        "total_chunks": (len(lengths) - 1) // chunks_size + 1, "chunks_size": chunks_size, "fps": 30,
        "splits": {"train": f"0:{len(lengths)}"}, "data_path": V21_DATA, "video_path": V21_VIDEO,
        "features": features,
    }
    (root / "meta").mkdir(parents=True, exist_ok=True)
    (root / "meta/info.json").write_text(json.dumps(info, indent=4))
    (root / "meta/episodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ep_lines))
    (root / "meta/episodes_stats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in stat_lines))
    (root / "meta/tasks.jsonl").write_text(
        "".join(json.dumps({"task_index": i, "task": t}) + "\n" for i, t in enumerate(TASKS)))


def read_v21_frames(root: Path) -> pa.Table:
    info = json.loads((root / "meta/info.json").read_text())
    n = info["total_episodes"]
    cs = info["chunks_size"]
    return pa.concat_tables([pq.read_table(root / info["data_path"].format(episode_chunk=e // cs, episode_index=e))
                             for e in range(n)])


def read_v30_frames(root: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(f) for f in sorted((root / "data").glob("chunk-*/file-*.parquet"))])


def decode_all(path: Path) -> list[tuple[float, np.ndarray]]:
    with av.open(str(path)) as c:
        return [(float(f.time), f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]


def compare_datasets(src: Path, out: Path, exact_video: bool) -> float:
    """Every frame's columns equal; every video frame found at from_timestamp + timestamp
    and equal to the source clip's frame (exact for stream copy). Returns the mean pixel error."""
    a, b = read_v21_frames(src), read_v30_frames(out)
    assert a.num_rows == b.num_rows
    for name in b.column_names:
        assert a.column(name).to_pylist() == b.column(name).to_pylist(), name
    info = json.loads((src / "meta/info.json").read_text())
    cs = info["chunks_size"]
    rows = read_episodes_meta(out)
    ts = np.array(b.column("timestamp").to_pylist(), np.float32)
    ep_col = np.array(b.column("episode_index").to_pylist())
    errors = []
    for key, ft in info["features"].items():
        if ft["dtype"] != "video":
            continue
        decoded_files: dict = {}
        for ep in range(info["total_episodes"]):
            loc = (rows[f"videos/{key}/chunk_index"][ep], rows[f"videos/{key}/file_index"][ep])
            if loc not in decoded_files:
                decoded_files[loc] = decode_all(out / writer_mod.VIDEO_PATH.format(
                    video_key=key, chunk_index=loc[0], file_index=loc[1]))
            times = np.array([t for t, _ in decoded_files[loc]])
            source = decode_all(src / info["video_path"].format(episode_chunk=ep // cs, video_key=key,
                                                                episode_index=ep))
            for i, t in enumerate(ts[ep_col == ep]):
                query = rows[f"videos/{key}/from_timestamp"][ep] + float(t)
                j = int(np.argmin(np.abs(times - query)))
                assert abs(times[j] - query) < 1e-4, (key, ep, i)
                got, want = decoded_files[loc][j][1], source[i][1]
                if exact_video:
                    np.testing.assert_array_equal(got, want)
                errors.append(np.abs(got.astype(int) - want.astype(int)).mean())
    return float(np.mean(errors)) if errors else 0.0


def test_convert_lerobot_fixture(tmp_path, lerobot_fixtures):
    src = tmp_path / "v21"
    shutil.copytree(lerobot_fixtures / "so101_fixture_v21", src)
    report = convert_v21_to_v30(src, tmp_path / "v30")
    assert isinstance(report, ConversionReport)
    assert report.episodes == 3 and report.frames == 135 and report.verified_rows == 135
    assert set(report.video_mode.values()) == {"stream-copy"} and report.max_pixel_error == 0
    assert "stream-copy" in report.summary() and "135 frames" in report.summary()
    out = tmp_path / "v30"
    for rel in FILES:  # same parquet schemas as LeRobot 0.4.4's own v3.0 files
        ours, theirs = pq.read_schema(out / rel), pq.read_schema(lerobot_fixtures / "so101_fixture_v30" / rel)
        if rel.startswith("meta/episodes"):  # image quantiles absent: v2.1 had none, stats copied
            theirs = pa.schema([f for f in theirs if not (f.name.startswith("stats/observation.images")
                                                         and f.name.split("/")[-1].startswith("q"))])
        assert ours.names == theirs.names and [f.type for f in ours] == [f.type for f in theirs]
    info = json.loads((out / "meta/info.json").read_text())
    fx_info = json.loads((lerobot_fixtures / "so101_fixture_v30/meta/info.json").read_text())
    assert list(info) == list(fx_info) and info["features"] == fx_info["features"]
    assert info["total_frames"] == 135 and info["codebase_version"] == "v3.0"
    assert compare_datasets(src, out, exact_video=True) == 0.0
    rows = read_episodes_meta(out)
    assert rows["videos/observation.images.front/from_timestamp"] == pytest.approx([0, 48 / 30, 101 / 30])
    assert rows["tasks"] == [[TASKS[0]], [TASKS[1]], [TASKS[0]]]
    assert pq.read_table(out / "meta/tasks.parquet").to_pydict()["__index_level_0__"] == TASKS


def test_convert_generated_with_rollover_and_chunks(tmp_path):
    src = tmp_path / "v21"
    write_v21(src, lengths=(8, 10, 6, 7, 9), chunks_size=2)
    report = convert_v21_to_v30(src, tmp_path / "v30", data_files_size_in_mb=1e-6, video_files_size_in_mb=1e-6,
                                chunks_size=2)
    out = tmp_path / "v30"
    assert report.data_files == 5 and report.video_files == {k: 5 for k in CAMS}
    rows = read_episodes_meta(out)
    assert rows["data/chunk_index"] == [0, 0, 1, 1, 2] and rows["data/file_index"] == [0, 1, 0, 1, 0]
    assert rows["videos/observation.images.wrist/chunk_index"] == [0, 0, 1, 1, 2]
    assert compare_datasets(src, out, exact_video=True) == 0.0


def test_convert_several_episodes_per_file_and_stats(tmp_path):
    src = tmp_path / "v21"
    write_v21(src, lengths=(8, 10, 6, 7), extra=True)
    report = convert_v21_to_v30(src, tmp_path / "v30", image_stats="recompute")
    out = tmp_path / "v30"
    assert report.video_files == {k: 1 for k in CAMS} and report.image_stats == "recompute"
    rows = read_episodes_meta(out)
    ends = rows["videos/observation.images.front/to_timestamp"]
    assert rows["videos/observation.images.front/from_timestamp"] == pytest.approx([0.0, *ends[:-1]])
    assert compare_datasets(src, out, exact_video=True) == 0.0
    stats = stats_lib.stats_from_json(json.loads((out / "meta/stats.json").read_text()))
    action = np.array(read_v21_frames(src).column("action").to_pylist(), np.float64)
    np.testing.assert_allclose(stats["action"]["mean"], action.mean(0), rtol=1e-9)
    np.testing.assert_allclose(stats["action"]["std"], action.std(0), rtol=1e-9)
    assert stats["observation.images.front"]["q50"].shape == (3, 1, 1)
    assert stats["next.done"]["max"].tolist() == [1] and stats["next.reward"]["mean"].shape == (1,)
    data = pq.read_schema(out / "data/chunk-000/file-000.parquet")
    assert data.field("next.done").type == pa.bool_() and data.field("next.reward").type == pa.float32()
    src_stats = [stats_lib.stats_from_json(json.loads(line)["stats"])
                 for line in (src / "meta/episodes_stats.jsonl").read_text().splitlines()]
    agg = stats_lib.aggregate_stats(src_stats)["observation.images.front"]
    np.testing.assert_allclose(stats["observation.images.front"]["mean"], agg["mean"], atol=0.02)


@pytest.mark.skipif(not HAS_SVTAV1, reason="needs two encoders (SVT-AV1 and x264) to mix")
def test_mixed_codecs_fall_back_to_reencode(tmp_path):
    src = tmp_path / "v21"
    write_v21(src, lengths=(8, 10, 6), cams={"observation.images.front": (48, 64)}, codecs={1: "libx264"})
    report = convert_v21_to_v30(src, tmp_path / "v30")
    assert report.video_mode["observation.images.front"].startswith("re-encode")
    info = json.loads((tmp_path / "v30/meta/info.json").read_text())
    assert info["features"]["observation.images.front"]["info"]["video.codec"] == DEFAULT_CODEC
    err = compare_datasets(src, tmp_path / "v30", exact_video=False)
    assert err < 8.0, err


def test_refuses_bad_source_and_existing_output(tmp_path, lerobot_fixtures):
    with pytest.raises(DatasetError, match="v3.0"):
        convert_v21_to_v30(lerobot_fixtures / "so101_fixture_v30", tmp_path / "a")
    with pytest.raises(DatasetError, match="not found"):
        convert_v21_to_v30(tmp_path / "nope", tmp_path / "b")
    (tmp_path / "exists").mkdir()
    with pytest.raises(DatasetError, match="already exists"):
        convert_v21_to_v30(lerobot_fixtures / "so101_fixture_v21", tmp_path / "exists")
    src = tmp_path / "v21"
    shutil.copytree(lerobot_fixtures / "so101_fixture_v21", src)
    (src / "meta/episodes.jsonl").unlink()
    with pytest.raises(DatasetError, match="episodes.jsonl"):
        convert_v21_to_v30(src, tmp_path / "c")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists", "v21"]


def test_failure_midway_leaves_nothing(tmp_path, lerobot_fixtures):
    src = tmp_path / "v21"
    shutil.copytree(lerobot_fixtures / "so101_fixture_v21", src)
    (src / "videos/chunk-000/observation.images.wrist/episode_000002.mp4").unlink()
    with pytest.raises(DatasetError, match="episode_000002.mp4"):
        convert_v21_to_v30(src, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v21"]  # no output, no temp dir


def test_cli_convert_fixture_then_refuses_existing_out(lerobot_fixtures, tmp_path) -> None:
    from conftest import run_cli

    out = tmp_path / "v30"
    done = run_cli("dataset", "convert", str(lerobot_fixtures / "so101_fixture_v21"), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "stream-copy" in done.stdout
    assert run_cli("dataset", "validate", str(out)).returncode == 0
    again = run_cli("dataset", "convert", str(lerobot_fixtures / "so101_fixture_v21"), "--out", str(out))
    assert again.returncode != 0
    assert again.stderr.count("\n") == 1 and "already exists" in again.stderr
