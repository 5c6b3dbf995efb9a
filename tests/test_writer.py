"""DatasetWriter writes what LeRobot 0.4.4 writes (schemas compared with its fixture), and
what it writes reads back: state/action bit-exact, video frames at from_timestamp + t."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

from robotrain.data import stats as stats_lib
from robotrain.data import writer as writer_mod
from robotrain.data.writer import DatasetWriter, WriterInputError
from robotrain.errors import DatasetError

CAMS = {"observation.images.front": (48, 64), "observation.images.wrist": (48, 64)}
# LeRobot's codec is AV1 (SVT-AV1); a PyAV build without it makes the writer fall back to H.264.
HAS_SVTAV1 = writer_mod.probe_encoder("libsvtav1", 48, 64, writer_mod.encoder_options("libsvtav1", None, 2, 12)) is None
DEFAULT_CODEC = "av1" if HAS_SVTAV1 else "h264"
TASKS = ["Pick up the cube and place it in the bowl", "Push the cube to the left"]


def synthetic_frames(T: int, h: int, w: int, seed: int) -> np.ndarray:
    """Smooth gradients with a moving white square: codec-friendly like real camera images."""
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.empty((T, h, w, 3), np.uint8)
    for t in range(T):
        out[t, ..., 0] = np.clip(xx * 160 // max(w - 1, 1) + 2 * t + seed * 9, 0, 255)
        out[t, ..., 1] = np.clip(yy * 160 // max(h - 1, 1) + 3 * t, 0, 255)
        out[t, ..., 2] = (seed * 60 + t) % 256
        x0 = (2 * t) % max(w - 12, 1)
        out[t, 10:22, x0:x0 + 12] = 255
    return out


def make_episode(T: int, seed: int, cams=CAMS) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    state = rng.uniform(-30, 30, (T, 6)).astype(np.float32)
    action = rng.uniform(-30, 30, (T, 6)).astype(np.float32)
    images = {k: synthetic_frames(T, h, w, seed + i) for i, (k, (h, w)) in enumerate(cams.items())}
    return state, action, images


def write_dataset(root: Path, lengths=(20, 25, 15), cams=CAMS, **kwargs):
    episodes = []
    with DatasetWriter(root, camera_shapes=cams, **kwargs) as w:
        for i, T in enumerate(lengths):
            ep = make_episode(T, seed=i, cams=cams)
            w.add_episode(TASKS[i % 2], *ep)
            episodes.append(ep)
    return episodes


def read_episodes_meta(root: Path) -> dict[str, list]:
    files = sorted((root / "meta/episodes").glob("chunk-*/file-*.parquet"))
    rows: dict[str, list] = {}
    for f in files:
        for k, v in pq.read_table(f).to_pydict().items():
            rows.setdefault(k, []).extend(v)
    return rows


def decode_video(path: Path) -> list[tuple[float, np.ndarray]]:
    with av.open(str(path)) as c:
        return [(float(f.time), f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("w") / "ds"
    episodes = write_dataset(root)
    return root, episodes


# --- schemas against LeRobot's own files ---------------------------------------------
FILES = ["data/chunk-000/file-000.parquet", "meta/tasks.parquet", "meta/episodes/chunk-000/file-000.parquet"]


@pytest.mark.parametrize("rel", FILES)
def test_parquet_schema_matches_lerobot(dataset, lerobot_fixtures, rel):
    root, _ = dataset
    ours = pq.read_schema(root / rel)
    theirs = pq.read_schema(lerobot_fixtures / "so101_fixture_v30" / rel)
    assert ours.names == theirs.names
    assert [f.type for f in ours] == [f.type for f in theirs]


def test_info_and_stats_match_lerobot(dataset, lerobot_fixtures):
    root, episodes = dataset
    fx = lerobot_fixtures / "so101_fixture_v30" / "meta"
    ours, theirs = json.loads((root / "meta/info.json").read_text()), json.loads((fx / "info.json").read_text())
    assert list(ours) == list(theirs)
    assert list(ours["features"]) == list(theirs["features"])
    for key, ft in theirs["features"].items():
        mine = ours["features"][key]
        assert list(mine) == list(ft) and mine["dtype"] == ft["dtype"] and mine["names"] == ft["names"]
        if ft["dtype"] == "video":
            assert list(mine["info"]) == list(ft["info"])
            assert mine["shape"] == [*CAMS[key], 3] and mine["info"]["video.codec"] == DEFAULT_CODEC
        else:
            assert mine["shape"] == ft["shape"]
    assert ours["total_episodes"] == 3 and ours["total_frames"] == 60 and ours["total_tasks"] == 2
    assert ours["splits"] == {"train": "0:3"}
    s_ours, s_theirs = json.loads((root / "meta/stats.json").read_text()), json.loads((fx / "stats.json").read_text())
    assert set(s_ours) == set(s_theirs)
    for key in s_theirs:
        assert list(s_ours[key]) == list(s_theirs[key])
        for stat in s_theirs[key]:
            assert np.shape(s_ours[key][stat]) == np.shape(s_theirs[key][stat]), (key, stat)


def test_tasks_and_episode_rows(dataset):
    root, _ = dataset
    tasks = pq.read_table(root / "meta/tasks.parquet").to_pydict()
    assert tasks == {"task_index": [0, 1], "__index_level_0__": TASKS}
    pandas_meta = json.loads(pq.read_schema(root / "meta/tasks.parquet").metadata[b"pandas"])
    assert pandas_meta["index_columns"] == ["__index_level_0__"]
    rows = read_episodes_meta(root)
    assert rows["episode_index"] == [0, 1, 2] and rows["length"] == [20, 25, 15]
    assert rows["tasks"] == [[TASKS[0]], [TASKS[1]], [TASKS[0]]]
    assert rows["dataset_from_index"] == [0, 20, 45] and rows["dataset_to_index"] == [20, 45, 60]
    assert rows["videos/observation.images.front/from_timestamp"] == pytest.approx([0, 20 / 30, 45 / 30])
    assert rows["videos/observation.images.front/to_timestamp"] == pytest.approx([20 / 30, 45 / 30, 2.0])


# --- read back ----------------------------------------------------------------------
def test_state_action_bit_exact(dataset):
    root, episodes = dataset
    table = pq.read_table(root / "data/chunk-000/file-000.parquet")
    cols = table.to_pydict()
    assert pq.ParquetFile(root / "data/chunk-000/file-000.parquet").metadata.num_row_groups == 3
    state = np.array(cols["observation.state"], np.float32)
    action = np.array(cols["action"], np.float32)
    np.testing.assert_array_equal(state, np.concatenate([e[0] for e in episodes]))
    np.testing.assert_array_equal(action, np.concatenate([e[1] for e in episodes]))
    assert cols["index"] == list(range(60))
    assert cols["episode_index"] == [0] * 20 + [1] * 25 + [2] * 15
    assert cols["frame_index"] == list(range(20)) + list(range(25)) + list(range(15))
    assert cols["task_index"] == [0] * 20 + [1] * 25 + [0] * 15
    np.testing.assert_array_equal(np.array(cols["timestamp"], np.float32)[20:23],
                                  (np.arange(3) / 30).astype(np.float32))


def frames_at_timestamps(root: Path, key: str, rows: dict, ts_by_ep: list[np.ndarray]):
    """Yield (episode, frame, decoded rgb) looked up at from_timestamp + timestamp."""
    cache: dict[tuple[int, int], list] = {}
    for ep, ts in enumerate(ts_by_ep):
        chunk, file = rows[f"videos/{key}/chunk_index"][ep], rows[f"videos/{key}/file_index"][ep]
        path = root / writer_mod.VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=file)
        decoded = cache.setdefault((chunk, file), decode_video(path))
        times = np.array([t for t, _ in decoded])
        for i, t in enumerate(ts):
            query = rows[f"videos/{key}/from_timestamp"][ep] + float(t)
            j = int(np.argmin(np.abs(times - query)))
            assert abs(times[j] - query) < 1e-4, (ep, i, times[j], query)
            yield ep, i, decoded[j][1]


def test_video_frames_decode_at_timestamps(dataset):
    root, episodes = dataset
    rows = read_episodes_meta(root)
    cols = pq.read_table(root / "data/chunk-000/file-000.parquet").to_pydict()
    ts = np.array(cols["timestamp"], np.float32)
    ep_idx = np.array(cols["episode_index"])
    ts_by_ep = [ts[ep_idx == e] for e in range(3)]
    for key in CAMS:
        errors = [np.abs(rgb.astype(int) - episodes[ep][2][key][i].astype(int)).mean()
                  for ep, i, rgb in frames_at_timestamps(root, key, rows, ts_by_ep)]
        assert len(errors) == 60
        assert np.mean(errors) < 8.0, np.mean(errors)  # AV1 crf 30 on smooth 48x64 frames


def test_dataset_stats(dataset):
    root, episodes = dataset
    s = stats_lib.stats_from_json(json.loads((root / "meta/stats.json").read_text()))
    state = np.concatenate([e[0] for e in episodes]).astype(np.float64)
    np.testing.assert_allclose(s["observation.state"]["mean"], state.mean(0), rtol=1e-10)
    np.testing.assert_allclose(s["observation.state"]["std"], state.std(0), rtol=1e-9)
    np.testing.assert_array_equal(s["observation.state"]["min"], state.min(0))
    assert s["observation.state"]["count"].tolist() == [60]
    assert s["index"]["max"].tolist() == [59] and s["index"]["min"].dtype == np.int64
    front = np.concatenate([e[2]["observation.images.front"] for e in episodes]) / 255.0  # (N, H, W, 3)
    img = s["observation.images.front"]
    assert img["mean"].shape == (3, 1, 1) and img["count"].tolist() == [60]
    np.testing.assert_allclose(img["mean"].ravel(), front.mean((0, 1, 2)), atol=0.02)
    np.testing.assert_allclose(img["std"].ravel(), front.std((0, 1, 2)), atol=0.02)
    assert (img["min"] >= 0).all() and (img["max"] <= 1).all()
    assert (img["q01"] <= img["q50"]).all() and (img["q50"] <= img["q99"]).all()


# --- files: rollover, chunks, atomicity ------------------------------------------------
def test_rollover_with_tiny_limits(tmp_path):
    root = tmp_path / "ds"
    lengths = (6, 8, 4, 6, 5)
    episodes = write_dataset(root, lengths=lengths, data_files_size_in_mb=1e-6, video_files_size_in_mb=1e-6,
                             chunks_size=2)
    rows = read_episodes_meta(root)
    # Every episode in its own file; two files per chunk.
    assert rows["data/chunk_index"] == [0, 0, 1, 1, 2] and rows["data/file_index"] == [0, 1, 0, 1, 0]
    for key in CAMS:
        assert rows[f"videos/{key}/chunk_index"] == [0, 0, 1, 1, 2]
        assert rows[f"videos/{key}/from_timestamp"] == [0.0] * 5
    assert rows["meta/episodes/chunk_index"] == [0, 0, 1, 1, 2]  # meta files roll over too
    data = pq.read_table(root / "data/chunk-002/file-000.parquet").to_pydict()
    np.testing.assert_array_equal(np.array(data["observation.state"], np.float32), episodes[4][0])
    assert data["index"] == list(range(sum(lengths[:4]), sum(lengths)))
    assert len(decode_video(root / "videos/observation.images.front/chunk-001/file-001.mp4")) == 6


def test_several_episodes_per_file_then_rollover(tmp_path):
    root = tmp_path / "ds"
    lengths = (10,) * 6
    cams = {"observation.images.front": (48, 64)}
    # Size one episode's video, then allow about two and a half episodes per file.
    probe = tmp_path / "probe"
    write_dataset(probe, lengths=(10,), cams=cams)
    ep_mb = (probe / "videos/observation.images.front/chunk-000/file-000.mp4").stat().st_size / 1024**2
    episodes = write_dataset(root, lengths=lengths, cams=cams, video_files_size_in_mb=2.5 * ep_mb)
    rows = read_episodes_meta(root)
    files = rows["videos/observation.images.front/file_index"]
    assert max(files) >= 1 and len(set(files)) < len(files), files
    key = "observation.images.front"
    ts_by_ep = [np.arange(10) / 30 for _ in lengths]
    errs = [np.abs(rgb.astype(int) - episodes[ep][2][key][i].astype(int)).mean()
            for ep, i, rgb in frames_at_timestamps(root, key, rows, ts_by_ep)]
    assert len(errs) == 60 and np.mean(errs) < 8.0
    for ep in range(1, 6):  # from_timestamp continues within a file, restarts in a new one
        same = files[ep] == files[ep - 1]
        expected = rows[f"videos/{key}/to_timestamp"][ep - 1] if same else 0.0
        assert rows[f"videos/{key}/from_timestamp"][ep] == pytest.approx(expected)


def test_nothing_visible_until_finalize(tmp_path):
    root = tmp_path / "ds"
    w = DatasetWriter(root, camera_shapes=CAMS)
    w.add_episode(TASKS[0], *make_episode(5, 0))
    assert not root.exists()
    w.finalize()
    assert (root / "meta/info.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no temp dirs left


def test_error_inside_with_leaves_nothing(tmp_path):
    root = tmp_path / "ds"
    with pytest.raises(RuntimeError):
        with DatasetWriter(root, camera_shapes=CAMS) as w:
            w.add_episode(TASKS[0], *make_episode(5, 0))
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_existing_root_and_empty_dataset_refused(tmp_path):
    (tmp_path / "old").mkdir()
    with pytest.raises(DatasetError, match="already exists"):
        DatasetWriter(tmp_path / "old")
    w = DatasetWriter(tmp_path / "new", camera_shapes={})
    with pytest.raises(DatasetError, match="no episodes"):
        w.finalize()
    assert not (tmp_path / "new").exists()


def test_h264_and_no_camera_datasets(tmp_path):
    episodes = write_dataset(tmp_path / "h264", lengths=(5, 6), codec="libx264")
    rows = read_episodes_meta(tmp_path / "h264")
    ts_by_ep = [np.arange(n) / 30 for n in (5, 6)]
    errs = [np.abs(rgb.astype(int) - episodes[ep][2]["observation.images.front"][i].astype(int)).mean()
            for ep, i, rgb in frames_at_timestamps(tmp_path / "h264", "observation.images.front", rows, ts_by_ep)]
    assert len(errs) == 11 and np.mean(errs) < 8.0
    info = json.loads((tmp_path / "h264/meta/info.json").read_text())
    assert info["features"]["observation.images.front"]["info"]["video.codec"] == "h264"
    with av.open(str(tmp_path / "h264/videos/observation.images.front/chunk-000/file-000.mp4")) as c:
        assert c.streams.video[0].codec_context.name == "h264"
    write_dataset(tmp_path / "nocam", lengths=(5,), cams={})
    info = json.loads((tmp_path / "nocam/meta/info.json").read_text())
    assert info["video_path"] is None and not (tmp_path / "nocam/videos").exists()


def test_overwrite_replaces_only_on_finalize(tmp_path):
    write_dataset(tmp_path / "ds", lengths=(4,))
    with DatasetWriter(tmp_path / "ds", camera_shapes=CAMS, overwrite=True) as w:
        w.add_episode(TASKS[1], *make_episode(7, 1))
        assert json.loads((tmp_path / "ds/meta/info.json").read_text())["total_frames"] == 4
    assert json.loads((tmp_path / "ds/meta/info.json").read_text())["total_frames"] == 7
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


def test_overwrite_refuses_a_folder_that_is_not_a_dataset(tmp_path):
    run = tmp_path / "run"  # e.g. a training run given as --out by mistake
    (run / "checkpoints").mkdir(parents=True)
    (run / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(WriterInputError, match="not a LeRobot dataset"):
        DatasetWriter(run, camera_shapes=CAMS, overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "metrics.jsonl"]
    (tmp_path / "empty").mkdir()
    DatasetWriter(tmp_path / "empty", camera_shapes=CAMS, overwrite=True).abort()  # an empty folder may go


def test_av1_falls_back_to_h264(tmp_path, monkeypatch):
    real = writer_mod.probe_encoder
    monkeypatch.setattr(writer_mod, "probe_encoder",
                        lambda enc, *a: "no svt" if enc == "libsvtav1" else real(enc, *a))
    write_dataset(tmp_path / "ds", lengths=(4,))
    info = json.loads((tmp_path / "ds/meta/info.json").read_text())
    assert info["features"]["observation.images.wrist"]["info"]["video.codec"] == "h264"


# --- bad input --------------------------------------------------------------------------
def _ok(T=4):
    return make_episode(T, 0)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda s, a, im: ("", s, a, im), "task"),
        (lambda s, a, im: ("t", s[:, :5], a, im), "state"),
        (lambda s, a, im: ("t", s.tolist(), a, im), "state"),
        (lambda s, a, im: ("t", s[:0], a[:0], {k: v[:0] for k, v in im.items()}), "empty"),
        (lambda s, a, im: ("t", s, a[:3], im), "action"),
        (lambda s, a, im: ("t", s, a.astype(str), im), "action"),
        (lambda s, a, im: ("t", np.where(s > 0, np.nan, s), a, im), "NaN"),
        (lambda s, a, im: ("t", s, a, {"observation.images.front": im["observation.images.front"]}), "images"),
        (lambda s, a, im: ("t", s, a, {**im, "observation.images.front": im["observation.images.front"][:3]}),
         "front"),
        (lambda s, a, im: ("t", s, a, {**im, "observation.images.wrist": im["observation.images.wrist"] / 255.0}),
         "uint8"),
        (lambda s, a, im: ("t", s, a, {**im, "observation.images.wrist": im["observation.images.wrist"][:, :, :32]}),
         "wrist"),
    ],
)
def test_bad_episode_raises_and_writer_stays_usable(tmp_path, mutate, match):
    root = tmp_path / "ds"
    with DatasetWriter(root, camera_shapes=CAMS) as w:
        with pytest.raises(WriterInputError, match=match):
            w.add_episode(*mutate(*_ok()))
        assert w.num_episodes == 0
        w.add_episode("t", *_ok())
    assert json.loads((root / "meta/info.json").read_text())["total_frames"] == 4


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"fps": 0}, "fps"),
        ({"fps": 29.97}, "fps"),
        ({"state_names": ()}, "state_names"),
        ({"action_names": ("a", "a")}, "action_names"),
        ({"camera_shapes": {"front": (48, 64)}}, "camera_shapes"),
        ({"camera_shapes": {"observation.images.front": (47, 64)}}, "even"),
        ({"camera_shapes": {"observation.images.front": (48,)}}, "camera_shapes"),
        ({"codec": "vp9"}, "codec"),
        ({"data_files_size_in_mb": 0}, "data_files_size_in_mb"),
        ({"chunks_size": 0}, "chunks_size"),
    ],
)
def test_bad_writer_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        DatasetWriter(tmp_path / "ds", **kwargs)
    assert not (tmp_path / "ds").exists()


def test_killed_recording_never_looks_complete(tmp_path):
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import os, numpy as np
        from robotrain.data.writer import DatasetWriter
        w = DatasetWriter({str(tmp_path / 'ds')!r}, camera_shapes={{'observation.images.front': (48, 64)}})
        w.add_episode('t', np.zeros((5, 6), np.float32), np.zeros((5, 6), np.float32),
                      {{'observation.images.front': np.zeros((5, 48, 64, 3), np.uint8)}})
        os._exit(1)  # killed before finalize()
    """)
    src = Path(__file__).resolve().parents[1] / "src"
    proc = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(src), "PATH": ""}, timeout=120)
    assert proc.returncode == 1
    assert not (tmp_path / "ds").exists()
    leftovers = list(tmp_path.iterdir())
    assert all(p.name.startswith(".ds.tmp-") and not (p / "meta/info.json").exists() for p in leftovers)


# --- frame by frame ---------------------------------------------------------------------
def test_frame_by_frame_equals_whole_episode(tmp_path):
    state, action, images = make_episode(9, 0)
    with DatasetWriter(tmp_path / "a", camera_shapes=CAMS) as w:
        w.add_episode(TASKS[0], state, action, images)
    with DatasetWriter(tmp_path / "b", camera_shapes=CAMS) as w:
        with w.begin_episode(TASKS[0]) as ep:
            for t in range(9):
                ep.add_frame(state[t], action[t], {k: v[t] for k, v in images.items()})
            assert ep.num_frames == 9
    for rel in FILES:
        assert pq.read_table(tmp_path / "a" / rel).equals(pq.read_table(tmp_path / "b" / rel))
    for key in CAMS:
        a, b = (decode_video(tmp_path / d / f"videos/{key}/chunk-000/file-000.mp4") for d in "ab")
        assert all(np.array_equal(x[1], y[1]) and x[0] == y[0] for x, y in zip(a, b)) and len(a) == 9


def test_discarded_episode_leaves_no_trace(tmp_path):
    root = tmp_path / "ds"
    state, action, images = make_episode(6, 0)
    with DatasetWriter(root, camera_shapes=CAMS) as w:
        ep = w.begin_episode("dropped")
        ep.add_frame(state[0], action[0], {k: v[0] for k, v in images.items()})
        with pytest.raises(DatasetError, match="still open"):
            w.begin_episode("another")
        ep.discard()
        with pytest.raises(RuntimeError):
            with w.begin_episode("dropped too") as ep2:
                ep2.add_frame(state[0], action[0], {k: v[0] for k, v in images.items()})
                raise RuntimeError("robot fell over")
        assert w.add_episode(TASKS[1], state, action, images) == 0
    info = json.loads((root / "meta/info.json").read_text())
    assert info["total_episodes"] == 1 and info["total_frames"] == 6 and info["total_tasks"] == 1
    assert pq.read_table(root / "meta/tasks.parquet").to_pydict()["__index_level_0__"] == [TASKS[1]]
    assert not (root / writer_mod.CLIPS_DIR).exists()
    assert len(decode_video(root / "videos/observation.images.front/chunk-000/file-000.mp4")) == 6


def test_frame_by_frame_bad_input(tmp_path):
    state, action, images = make_episode(3, 0)
    frame = {k: v[0] for k, v in images.items()}
    with DatasetWriter(tmp_path / "ds", camera_shapes=CAMS) as w:
        ep = w.begin_episode(TASKS[0])
        with pytest.raises(WriterInputError, match="no frames"):
            ep.save()
        with pytest.raises(WriterInputError, match="state"):
            ep.add_frame(state[:2], action[0], frame)
        with pytest.raises(WriterInputError, match="action"):
            ep.add_frame(state[0], action[0, :5], frame)
        with pytest.raises(WriterInputError, match="wrist"):
            ep.add_frame(state[0], action[0], {**frame, "observation.images.wrist": frame["observation.images.wrist"][:8]})
        with pytest.raises(WriterInputError, match="images"):
            ep.add_frame(state[0], action[0], {})
        with pytest.raises(DatasetError, match="still open"):
            w.finalize()
        ep.add_frame(state[0], action[0], frame)
        assert ep.save() == 0
        with pytest.raises(DatasetError, match="already saved"):
            ep.add_frame(state[0], action[0], frame)
    assert json.loads((tmp_path / "ds/meta/info.json").read_text())["total_frames"] == 1


def test_video_files_respect_the_size_limit(tmp_path):
    cams = {"observation.images.front": (48, 64)}
    probe = tmp_path / "probe"
    write_dataset(probe, lengths=(10,), cams=cams)
    clip_bytes = (probe / "videos/observation.images.front/chunk-000/file-000.mp4").stat().st_size
    limit_mb = 3.5 * clip_bytes / 1024**2
    write_dataset(tmp_path / "ds", lengths=(10,) * 8, cams=cams, video_files_size_in_mb=limit_mb)
    files = sorted((tmp_path / "ds/videos/observation.images.front").glob("chunk-*/file-*.mp4"))
    assert len(files) >= 2
    # packets are counted exactly; the mp4 header/index adds a little on top
    assert all(f.stat().st_size <= limit_mb * 1024**2 + 2048 for f in files), [f.stat().st_size for f in files]
