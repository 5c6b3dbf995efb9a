"""Write one expert episode as an mp4 (H.264 via PyAV), both cameras side by side.

A preview for people, not dataset storage (datasets are written by `robotrain.data`).

Example:
    MUJOCO_GL=egl robotrain sim video --seed 0 --out ep.mp4 --size 240x320
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robotrain.constants import OBS_IMAGES_PREFIX, SO101_FPS
from robotrain.data.mp4 import write_preview_mp4
from robotrain.errors import SimulationError
from robotrain.sim.env import SO101PickPlaceEnv
from robotrain.sim.expert import GRASP_CLOSED_WAYPOINT, ScriptedExpert, run_episode
from robotrain.system.files import atomic_path


def write_mp4(path: str | Path, frames: np.ndarray, fps: int = SO101_FPS) -> Path:
    """frames (T, H, W, 3) uint8 -> H.264 mp4 at `path` (written atomically by robotrain.data)."""
    return write_preview_mp4(path, frames, fps)


def episode_video(out: str | Path, seed: int, height: int, width: int) -> tuple[Path, bool, int]:
    """Render the expert's episode for `seed`; returns (path, success, number of frames)."""
    env = SO101PickPlaceEnv(image_size=(height, width), terminate_on_success=False)
    try:
        ep = run_episode(env, seed)
    finally:
        env.close()
    front, wrist = ep["images"][OBS_IMAGES_PREFIX + "front"], ep["images"][OBS_IMAGES_PREFIX + "wrist"]
    if len(front) == 0:
        raise SimulationError(f"seed {seed}: the episode has no frames")
    return write_mp4(out, np.concatenate([front, wrist], axis=2)), ep["success"], len(front)


def grasp_snapshot(out: str | Path, seed: int = 0, height: int = 480, width: int = 640) -> Path:
    """PNG of both cameras at the moment the expert has closed the gripper on the cube.

    Example (the image in the README):
        MUJOCO_GL=egl python -c "from robotrain.sim.video import grasp_snapshot; grasp_snapshot('docs/sim_cameras.png')"
    """
    import matplotlib.image  # only for this picture: `sim video` does without matplotlib

    env = SO101PickPlaceEnv(image_size=(height, width), cameras=(), terminate_on_success=False)
    try:
        env.reset(seed=seed)
        expert = ScriptedExpert(env)
        expert.reset(env, np.random.default_rng([seed, 7]))
        t_grasp = expert.waypoint_time(GRASP_CLOSED_WAYPOINT)
        while expert.t < t_grasp:
            env.step(expert.act(env))
        image = np.concatenate([env.render_camera("front"), env.render_camera("wrist")], axis=1)
    finally:
        env.close()
    out = Path(out)
    with atomic_path(out) as tmp:
        matplotlib.image.imsave(tmp, image, format="png")
    return out
