"""Write one expert episode as an mp4 (H.264 via PyAV), both cameras side by side.

A preview for people, not dataset storage (datasets are written by `robotrain.data`).

Example:
    MUJOCO_GL=egl robotrain sim video --seed 0 --out ep.mp4 --size 240x320
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robotrain.constants import OBS_IMAGES_PREFIX, SO101_FPS
from robotrain.errors import SimulationError
from robotrain.io_utils import atomic_path


def write_mp4(path: str | Path, frames: np.ndarray, fps: int = SO101_FPS) -> Path:
    """frames (T, H, W, 3) uint8 -> H.264 mp4 at `path` (written atomically)."""
    import av

    path = Path(path)
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:  # yuv420p needs even sizes
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "23", "preset": "veryfast"}
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return path


def episode_video(out: str | Path, seed: int, height: int, width: int) -> tuple[Path, bool, int]:
    """Render the expert's episode for `seed`; returns (path, success, number of frames)."""
    from robotrain.sim.env import SO101PickPlaceEnv
    from robotrain.sim.expert import run_episode

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
    import matplotlib.image

    from robotrain.sim.env import SO101PickPlaceEnv
    from robotrain.sim.expert import GRASP_CLOSED_WAYPOINT, ScriptedExpert

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
