"""Recording a tiny sim dataset through the CLI and reading it back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO_ROOT, killed_by_the_system, run_cli


def test_record_tiny_dataset_and_read_back(tmp_path):
    pytest.importorskip("robotrain.data.writer", reason="needs the dataset writer (branch data-write)")
    out = tmp_path / "sim_ds"
    res = run_cli("sim", "record", "--episodes", "2", "--out", str(out), "--size", "48x64", "--workers", "1",
                  "--max-steps", "12", "--keep-failures", "--codec", "libx264", "--no-progress")
    assert res.returncode == 0, res.stderr
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["total_episodes"] == 2 and info["total_frames"] == 24
    assert info["robot_type"] == "so101_follower" and info["fps"] == 30
    assert info["features"]["observation.images.front"]["shape"][:2] == [48, 64]
    assert "use_degrees=True" in (out / "README.md").read_text()
    assert json.loads((out / "meta" / "robotrain_sim.json").read_text())["joint_units"]["gripper.pos"].startswith("0..100")

    try:
        from robotrain.data.format import load_meta
    except ImportError:
        return  # reader not merged yet
    meta = load_meta(out)
    assert meta.total_episodes == 2 and meta.camera_keys == ("observation.images.front", "observation.images.wrist")
    res = run_cli("dataset", "validate", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    from robotrain.data.dataset import LeRobotDataset

    ds = LeRobotDataset(out, use_cache=False)
    item = ds[len(ds) - 1]
    assert item["observation.images.wrist"].shape == (3, 48, 64)
    assert item["task"] == "Pick up the cube and place it in the bowl"


def test_record_in_worker_processes_keeps_seed_order(tmp_path):
    """Two spawned render workers; successful episodes only, written in seed order."""
    pytest.importorskip("robotrain.data.writer", reason="needs the dataset writer (branch data-write)")
    from robotrain.sim.record import RecordConfig, record_dataset

    cfg = RecordConfig(episodes=2, height=32, width=32, seed=5, codec="libx264", cube_margin_mm=20,
                       cube_yaw_margin_deg=5, wrist_roll_noise_deg=4, late_wrist_turn=True)
    res = record_dataset(tmp_path / "ds", cfg, workers=2, progress=False)
    assert res.recorded == 2 and res.discarded == 0
    meta = json.loads((tmp_path / "ds" / "meta" / "robotrain_sim.json").read_text())
    assert meta["recorded_episodes"] == 2 and meta["episode_seeds"] == [5, 6] == res.episode_seeds
    card = (tmp_path / "ds" / "README.md").read_text()
    assert meta["config"]["cube_margin_mm"] == 20 and "20 mm wider" in card
    assert meta["config"]["cube_yaw_margin_deg"] == 5 and "5 deg wider" in card
    assert meta["config"]["wrist_roll_noise_deg"] == 4 and "4 deg on wrist_roll during the approach" in card
    assert meta["config"]["late_wrist_turn"] is True and "`--late-wrist-turn`" in card


@pytest.mark.slow  # spawns 2 render workers
def test_a_dead_render_worker_is_an_error_and_leaves_no_dataset(tmp_path, monkeypatch, killed_worker_marker):
    pytest.importorskip("robotrain.data.writer", reason="needs the dataset writer (branch data-write)")
    import robotrain.sim.record as record
    from robotrain.errors import SimulationError

    monkeypatch.setattr(record, "_worker_episode", killed_by_the_system)
    cfg = record.RecordConfig(episodes=2, height=32, width=32, seed=5, codec="libx264")
    with pytest.raises(SimulationError, match="recording process died"):
        record.record_dataset(tmp_path / "ds", cfg, workers=2, progress=False)
    assert list(tmp_path.iterdir()) == []
    assert killed_worker_marker.exists()


def test_an_error_in_one_worker_recording_keeps_its_own_type(tmp_path, monkeypatch):
    """With --workers 1 episodes run inline, and no process pool was ever imported."""
    pytest.importorskip("robotrain.data.writer", reason="needs the dataset writer (branch data-write)")
    import robotrain.sim.record as record

    def fails(seed: int) -> dict:
        raise ValueError("expert exploded")

    monkeypatch.setattr(record, "_worker_episode", fails)
    cfg = record.RecordConfig(episodes=1, height=32, width=32, seed=5, codec="libx264")
    with pytest.raises(ValueError, match="expert exploded"):
        record.record_dataset(tmp_path / "ds", cfg, workers=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_record_rejects_bad_flags(tmp_path):
    res = run_cli("sim", "record", "--episodes", "2", "--out", str(tmp_path / "x"), "--size", "big")
    assert res.returncode == 2 and "HEIGHTxWIDTH" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("sim", "record", "--episodes", "0", "--out", str(tmp_path / "x"))
    assert res.returncode == 2 and "--episodes" in res.stderr
    res = run_cli("sim", "record", "--episodes", "1", "--out", str(tmp_path / "x"), "--cube-margin-mm", "-5")
    assert res.returncode == 2 and "--cube-margin-mm" in res.stderr
    res = run_cli("sim", "record", "--episodes", "1", "--out", str(tmp_path / "x"), "--wrist-roll-noise", "-1")
    assert res.returncode == 2 and "--wrist-roll-noise" in res.stderr
    res = run_cli("sim", "record", "--episodes", "1", "--out", str(tmp_path / "x"), "--cube-yaw-margin-deg", "20")
    assert res.returncode == 2 and "--cube-yaw-margin-deg" in res.stderr
    (tmp_path / "exists").mkdir()
    res = run_cli("sim", "record", "--episodes", "1", "--out", str(tmp_path / "exists"))
    assert res.returncode == 2 and "already exists" in res.stderr


def test_video_writes_mp4(tmp_path):
    out = tmp_path / "ep.mp4"
    res = run_cli("sim", "video", "--seed", "1", "--out", str(out), "--size", "48x64")
    assert res.returncode == 0, res.stderr
    import av

    with av.open(str(out)) as c:
        s = c.streams.video[0]
        assert (s.codec_context.width, s.codec_context.height) == (128, 48)  # two cameras side by side
        assert s.codec_context.name == "h264"


def test_sigterm_to_the_process_group_removes_partial_dataset_and_frames(tmp_path):
    """What `timeout` or a scheduler does: SIGTERM to the recorder and its render workers.
    It must exit 143 and leave neither a half-written dataset nor frames in /dev/shm."""
    from robotrain.sim.record import FRAME_DIR_PREFIX, SHM

    out = tmp_path / "ds"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "src"), MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "robotrain", "sim", "record", "--episodes", "500", "--out", str(out), "--size", "32x32",
         "--workers", "2", "--codec", "libx264", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    mine = f"{FRAME_DIR_PREFIX}{proc.pid}-*"
    try:
        deadline = time.time() + 120
        while not list(tmp_path.glob(".ds.tmp-*")) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        time.sleep(4)  # some episodes in flight and written
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert list(SHM.glob(mine)) + list(tmp_path.glob("." + mine))  # its frames exist while recording
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, err[-2000:]
    assert "robotrain: stopped: SIGTERM: recording stopped; nothing was written" in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".ds.tmp-*"))
    assert not list(SHM.glob(mine)) and not list(tmp_path.glob("." + mine))


def test_frames_of_killed_recorders_are_removed_and_live_ones_kept(tmp_path):
    from robotrain.sim.record import FRAME_DIR_PREFIX, remove_dead_frame_dirs

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no longer runs
    dead = tmp_path / f"{FRAME_DIR_PREFIX}{gone.pid}-abc"
    dead_hidden = tmp_path / f".{FRAME_DIR_PREFIX}{gone.pid}-def"
    live = tmp_path / f"{FRAME_DIR_PREFIX}{os.getpid()}-ghi"
    legacy = tmp_path / f"{FRAME_DIR_PREFIX}xyz123"  # an old name without a pid: left alone
    for d in (dead, dead_hidden, live, legacy):
        d.mkdir()
        (d / "0_front.npy").write_bytes(b"x")
    removed = remove_dead_frame_dirs(tmp_path, tmp_path / "missing")
    assert sorted(removed) == sorted([dead, dead_hidden])
    assert live.is_dir() and legacy.is_dir() and not dead.exists() and not dead_hidden.exists()
