"""Record scripted-expert demonstrations of the SO-101 sim into a LeRobot v3.0 dataset.

Worker processes (one GL context each) roll out and render episodes; the main process
writes them in seed order with `robotrain.data.writer.DatasetWriter`, so the dataset is
the same whatever the number of workers. Only successful episodes are kept (failed
seeds are counted and skipped). Frames travel from workers as .npy files in a temporary
directory (memory-mapped by the writer), not through pipes.

Units written to the dataset (also in its README.md and meta/robotrain_sim.json):
joint positions in degrees for the five arm joints (LeRobot's `use_degrees=True`
convention on the real `so101_follower`) and 0..100 for the gripper (0 closed).

Example:
    MUJOCO_GL=egl robotrain sim record --episodes 75 --out data/so101_sim --size 480x640 --workers 2
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import logging
import multiprocessing
import os
import shutil
import tempfile
import time
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from robotrain.constants import (
    OBS_IMAGES_PREFIX,
    SIM_MAX_CUBE_MARGIN_M,
    SIM_MAX_CUBE_YAW_MARGIN_DEG,
    SO101_FPS,
    SO101_JOINT_NAMES,
    SO101_ROBOT_TYPE,
    SO101_TASK,
)
from robotrain.data.writer import DatasetWriter
from robotrain.errors import ConfigError, RecordingStopped, SimulationError
from robotrain.system.files import atomic_write_json, atomic_write_text, process_exists
from robotrain.system.signals import SigtermHandler

log = logging.getLogger(__name__)

UNITS_NOTE = (
    "Joint positions (observation.state and action) are in degrees for shoulder_pan, "
    "shoulder_lift, elbow_flex, wrist_flex and wrist_roll (0 deg = middle of the joint range; "
    "LeRobot's so101_follower with use_degrees=True), and 0..100 for the gripper (0 = closed, "
    "100 = fully open)."
)


@dataclass(frozen=True)
class RecordConfig:
    """Everything that decides the recorded dataset's content."""

    episodes: int = 75
    height: int = 480
    width: int = 640
    seed: int = 0
    max_steps: int = 300  # per episode (10 s at 30 Hz); the expert usually finishes in 6-9 s
    only_successful: bool = True  # skip episodes where the expert failed
    # LeRobot's AV1. (A hang seen here came from SVT-AV1 making its threads SCHED_FIFO 99 as
    # root; data/mp4.py undoes that, see keep_scheduling.)
    codec: str = "libsvtav1"
    # DART: execute the expert's actions plus smooth noise of this std (degrees, arm joints)
    # but store the clean actions, so the data shows recoveries (expert.ExecutionNoise).
    action_noise_deg: float = 0.0
    # Extra execution noise on wrist_roll alone (std, degrees), same DART scheme: cloned
    # policies turned the jaws too little for cubes at large yaw and never corrected it.
    wrist_roll_noise_deg: float = 0.0
    # Widen the cube's placement range by this much on every side (SO101PickPlaceEnv's
    # cube_margin), so the evaluated workspace's edges lie inside the demonstrations.
    cube_margin_mm: float = 0.0
    # Widen the cube's yaw range the same way (SO101PickPlaceEnv's cube_yaw_margin_deg).
    cube_yaw_margin_deg: float = 0.0
    # The expert turns the jaws onto the cube's faces late, over the hover, where the wrist
    # camera shows the cube large, instead of at the first step (ScriptedExpert.reset).
    late_wrist_turn: bool = False

    def __post_init__(self) -> None:
        max_mm = 1000.0 * SIM_MAX_CUBE_MARGIN_M  # the env's bounds, checked here before any worker starts
        if not 0.0 <= self.cube_margin_mm <= max_mm:
            raise ConfigError(f"--cube-margin-mm must be in [0, {max_mm:g}], got {self.cube_margin_mm}")
        if not 0.0 <= self.cube_yaw_margin_deg <= SIM_MAX_CUBE_YAW_MARGIN_DEG:
            raise ConfigError(f"--cube-yaw-margin-deg must be in [0, {SIM_MAX_CUBE_YAW_MARGIN_DEG:g}], "
                              f"got {self.cube_yaw_margin_deg}")
        if self.action_noise_deg < 0:
            raise ConfigError(f"--action-noise must be >= 0, got {self.action_noise_deg}")
        if self.wrist_roll_noise_deg < 0:
            raise ConfigError(f"--wrist-roll-noise must be >= 0, got {self.wrist_roll_noise_deg}")
        if self.episodes < 1:
            raise ConfigError(f"--episodes must be >= 1, got {self.episodes}")
        if self.max_steps < 2:
            raise ConfigError(f"--max-steps must be >= 2, got {self.max_steps}")
        if self.height < 16 or self.width < 16:
            raise ConfigError(f"--size must be at least 16x16, got {self.height}x{self.width}")


@dataclass
class RecordResult:
    path: Path
    recorded: int
    discarded: int
    episode_seeds: list[int]  # seed of each recorded episode, by episode_index
    discarded_seeds: list[int]
    frames: int
    seconds: float


# --- worker side -------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _worker_init(cfg: RecordConfig, frame_dir: str) -> None:
    """Build this worker's env from the recording's config (picklable: it travels to spawned workers)."""
    from robotrain.sim.env import SO101PickPlaceEnv  # MuJoCo in the workers only: the parent renders nothing

    _WORKER["env"] = SO101PickPlaceEnv(image_size=(cfg.height, cfg.width), max_episode_steps=cfg.max_steps,
                                       terminate_on_success=False, cube_margin=cfg.cube_margin_mm / 1000.0,
                                       cube_yaw_margin_deg=cfg.cube_yaw_margin_deg)
    _WORKER["cfg"] = cfg
    _WORKER["dir"] = Path(frame_dir)


def _worker_episode(seed: int) -> dict[str, Any]:
    """Roll out one expert episode; save its frames as .npy (unless it failed and is dropped)."""
    from robotrain.sim.expert import run_episode

    cfg: RecordConfig = _WORKER["cfg"]
    ep = run_episode(_WORKER["env"], seed, action_noise_deg=cfg.action_noise_deg,
                     wrist_roll_noise_deg=cfg.wrist_roll_noise_deg, late_wrist_turn=cfg.late_wrist_turn)
    out = {"seed": seed, "success": ep["success"], "state": ep["state"], "action": ep["action"], "images": {}}
    if ep["success"] or not cfg.only_successful:
        for key, frames in ep["images"].items():
            path = _WORKER["dir"] / f"{seed}_{key.removeprefix(OBS_IMAGES_PREFIX)}.npy"
            np.save(path, frames)  # (T, H, W, 3) uint8
            out["images"][key] = str(path)
    return out


FRAME_DIR_PREFIX = "robotrain-frames-"  # + "<recorder pid>-<random>"; hidden (leading ".") beside the output
SHM = Path("/dev/shm")


def _frame_tmpdir(near: Path) -> Path:
    """RAM-backed /dev/shm when it has room for a few episodes, else beside the output.
    The name carries our pid so a later recording can tell a dead recorder's leftovers."""
    prefix = f"{FRAME_DIR_PREFIX}{os.getpid()}-"
    if SHM.is_dir() and shutil.disk_usage(SHM).free > 4 * 1024**3:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=SHM))
    near.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="." + prefix, dir=near))


def remove_dead_frame_dirs(*roots: Path) -> list[Path]:
    """Delete frame directories left by recorders that were killed (SIGKILL, a crash) in
    `roots`; they can hold gigabytes, in RAM when under /dev/shm. Returns what was removed."""
    removed = []
    for root in roots:
        if not root.is_dir():
            continue
        for path in [*root.glob(FRAME_DIR_PREFIX + "*"), *root.glob("." + FRAME_DIR_PREFIX + "*")]:
            pid_text = path.name.lstrip(".").removeprefix(FRAME_DIR_PREFIX).split("-", 1)[0]
            if not pid_text.isdigit() or process_exists(int(pid_text)):
                continue  # still recording, or an older name without a pid: may be in use
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
            log.info("removed frames left by a killed recording: %s", path)
    return removed


class _SigtermStopsRecording(SigtermHandler):
    """SIGTERM raises RecordingStopped in the main thread, so record_dataset's cleanup
    deletes the half-written dataset and the temporary frames (the default action would kill
    the process and leave both, the frames possibly in RAM under /dev/shm). Once cleanup has
    begun (`cleaning`), a SIGTERM is only noted, so it cannot cut the cleanup short; a
    SIGTERM to the whole process group may also surface first as a dead worker pool, which
    `stopped_error` turns into the same RecordingStopped."""

    MESSAGE = "SIGTERM: recording stopped; nothing was written"

    def __init__(self) -> None:
        super().__init__()
        self.received = False
        self.cleaning = False

    def on_sigterm(self, signum: int) -> None:
        self.received = True
        if not self.cleaning:
            self.cleaning = True
            raise RecordingStopped(self.MESSAGE)

    def stopped_error(self) -> RecordingStopped | None:
        return RecordingStopped(self.MESSAGE) if self.received else None


# --- main side -----------------------------------------------------------------------------
def record_dataset(out: str | Path, cfg: RecordConfig, workers: int | None = None, overwrite: bool = False,
                   progress: bool = True) -> RecordResult:
    """Record `cfg.episodes` successful expert episodes into a new dataset at `out`."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise ConfigError("output already exists; choose a new --out (or pass --overwrite)", out)
    workers = max(1, min(workers or (os.cpu_count() or 1), cfg.episodes))
    max_attempts = 2 * cfg.episodes + 10
    cameras = ("front", "wrist")
    camera_shapes = {OBS_IMAGES_PREFIX + c: (cfg.height, cfg.width) for c in cameras}
    remove_dead_frame_dirs(SHM, out.parent)
    frame_dir = _frame_tmpdir(out.parent)
    t0 = time.perf_counter()
    recorded, frames, discarded, seeds = 0, 0, [], []
    writer = DatasetWriter(out, fps=SO101_FPS, robot_type=SO101_ROBOT_TYPE, state_names=SO101_JOINT_NAMES,
                           action_names=SO101_JOINT_NAMES, camera_shapes=camera_shapes, codec=cfg.codec,
                           overwrite=overwrite)
    bar = _progress(progress, cfg.episodes)
    init_args = (cfg, str(frame_dir))
    stop = _SigtermStopsRecording()
    try:
        with stop:
            with _executor(workers, init_args) as pool, bar:
                task = bar.add_task("recording", total=cfg.episodes, discarded=0)
                pending: collections.deque[cf.Future] = collections.deque()
                next_seed = cfg.seed
                while recorded < cfg.episodes:
                    # Keep the pool busy with exactly as many seeds as still needed (plus spares
                    # once failures appear); results are consumed in seed order.
                    while len(pending) < max(workers, cfg.episodes - recorded) and len(pending) < 2 * workers:
                        if next_seed - cfg.seed >= max_attempts:
                            break
                        pending.append(pool.submit(_worker_episode, next_seed))
                        next_seed += 1
                    if not pending:
                        raise SimulationError(f"the expert failed {len(discarded)} of {max_attempts} episodes; "
                                              f"only {recorded} recorded (seeds {discarded[:10]}...)")
                    ep = pending.popleft().result()
                    if not ep["success"] and cfg.only_successful:
                        discarded.append(ep["seed"])
                        bar.update(task, discarded=len(discarded))
                        log.info("seed %d: expert failed, episode discarded", ep["seed"])
                        continue
                    if recorded >= cfg.episodes:
                        continue
                    images = {k: np.load(p, mmap_mode="r") for k, p in ep["images"].items()}
                    writer.add_episode(SO101_TASK, ep["state"], ep["action"], images)
                    del images
                    for p in ep["images"].values():
                        Path(p).unlink(missing_ok=True)
                    recorded += 1
                    seeds.append(ep["seed"])
                    frames += len(ep["action"])
                    bar.update(task, advance=1)
                for f in pending:
                    f.cancel()
            stop.cleaning = True  # a SIGTERM from here on is noted only: the dataset gets completed
            writer.finalize()
            _write_docs(out, cfg, seeds, discarded)
    except BaseException as exc:
        stop.cleaning = True
        writer.abort()
        stopped = stop.stopped_error()
        if stopped is not None and not isinstance(exc, RecordingStopped):
            raise stopped from exc
        if isinstance(exc, BrokenProcessPool):
            raise SimulationError("a recording process died (killed by the system, out of memory?); "
                                  "the partial dataset was removed, run the command again", out) from exc
        raise
    finally:
        shutil.rmtree(frame_dir, ignore_errors=True)
    seconds = time.perf_counter() - t0
    return RecordResult(out, recorded, len(discarded), seeds, discarded, frames, seconds)


class _InlineExecutor(cf.Executor):
    """One worker: run episodes in this process (no spawn cost; tests, tiny datasets)."""

    def __init__(self, init_args: tuple) -> None:
        _worker_init(*init_args)

    def submit(self, fn, /, *args, **kwargs) -> cf.Future:  # type: ignore[override]
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # surfaces at .result(), like a pool
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        _WORKER.pop("cfg", None)
        env = _WORKER.pop("env", None)
        if env is not None:
            env.close()


def _executor(workers: int, init_args: tuple) -> cf.Executor:
    """Render processes (spawned: each needs its own GL context), or inline for one worker."""
    if workers == 1:
        return _InlineExecutor(init_args)
    return cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                  initializer=_worker_init, initargs=init_args)


def _progress(enabled: bool, total: int):
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("discarded {task.fields[discarded]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        disable=not enabled,
    )


def _write_docs(root: Path, cfg: RecordConfig, seeds: list[int], discarded: list[int]) -> None:
    """Units and provenance next to the data: a README.md dataset card and a JSON record."""
    meta = {
        "generator": "robotrain sim record",
        "env": "robotrain/SO101PickPlace-v0",
        "joint_units": {"shoulder_pan.pos": "deg", "shoulder_lift.pos": "deg", "elbow_flex.pos": "deg",
                        "wrist_flex.pos": "deg", "wrist_roll.pos": "deg", "gripper.pos": "0..100 (0 closed)"},
        "use_degrees": True,
        "units_note": UNITS_NOTE,
        "config": asdict(cfg),
        "recorded_episodes": len(seeds),
        "episode_seeds": seeds,
        "discarded_seeds": discarded,
    }
    atomic_write_json(root / "meta" / "robotrain_sim.json", meta)
    atomic_write_text(root / "README.md", f"""# SO-101 simulated pick-and-place (robotrain)

Task: "{SO101_TASK}". Robot type `{SO101_ROBOT_TYPE}`, {SO101_FPS} fps, cameras `front` and `wrist`
({cfg.height}x{cfg.width}). {len(seeds)} successful scripted-expert episodes (seeds from {cfg.seed};
{len(discarded)} failed seeds discarded), recorded in MuJoCo with `robotrain sim record`.
{_noise_sentence(cfg.action_noise_deg, cfg.wrist_roll_noise_deg)}{_margin_sentence(cfg.cube_margin_mm, cfg.cube_yaw_margin_deg)}{_turn_sentence(cfg.late_wrist_turn)}
## Units
{UNITS_NOTE}
To train on this data and run on a real SO-101, set `use_degrees=True` on the follower.

Details: `meta/robotrain_sim.json`.
""")


def _noise_sentence(action_noise_deg: float, wrist_roll_noise_deg: float = 0.0) -> str:
    if action_noise_deg <= 0 and wrist_roll_noise_deg <= 0:
        return "The recorded actions are the ones executed.\n"
    parts = []
    if action_noise_deg > 0:
        parts.append(f"std {action_noise_deg:g} deg on the five arm joints")
    if wrist_roll_noise_deg > 0:
        parts.append(f"std {wrist_roll_noise_deg:g} deg on wrist_roll during the approach, faded out "
                     "before the grasp (`--wrist-roll-noise`)")
    return (f"Recorded with execution noise (DART): the arm executed each action plus smooth noise of "
            f"{' and '.join(parts)}; `action` holds the expert's clean actions, `observation.state` "
            "the perturbed states.\n")


def _margin_sentence(cube_margin_mm: float, cube_yaw_margin_deg: float = 0.0) -> str:
    wider = []
    if cube_margin_mm > 0:
        wider.append(f"positions from a range {cube_margin_mm:g} mm wider on every side (`--cube-margin-mm`)")
    if cube_yaw_margin_deg > 0:
        wider.append(f"yaws from a range {cube_yaw_margin_deg:g} deg wider on each side (`--cube-yaw-margin-deg`)")
    if not wider:
        return ""
    return (f"Cube {' and '.join(wider)} than the evaluation's, so the evaluated placements' edges "
            "are inside the data.\n")


def _turn_sentence(late_wrist_turn: bool) -> str:
    if not late_wrist_turn:
        return ""
    return ("The expert turns the jaws onto the cube's faces late, over the hover above the cube and the "
            "first half of the descent (`--late-wrist-turn`), so the turn is seen by the wrist camera.\n")


def record_summary(result: RecordResult) -> str:
    return (f"wrote {result.path}: {result.recorded} episodes, {result.frames} frames, "
            f"{result.discarded} failed episodes discarded, {result.seconds:.1f} s")

