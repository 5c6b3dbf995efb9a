"""Gymnasium env `robotrain/SO101PickPlace-v0`: pick up the cube and place it in the bowl.

Units (the real SO-101 follower's, LeRobot `use_degrees=True` convention):
- `observation.state` and `action` are 6 joint positions in `SO101_JOINT_NAMES` order:
  degrees for shoulder_pan, shoulder_lift, elbow_flex, wrist_flex, wrist_roll (0 deg is
  the middle of each joint's range, as after LeRobot's calibration), and 0..100 for the
  gripper, mapped linearly from the sim actuator's ctrl range [-0.1745, 1.7453] rad
  (0 = closed, 100 = fully open).
- The action is a target position for each joint (position control, like the real
  servos); it is clipped to the joint ranges.

Timing: 30 Hz control. Physics runs at 0.002 s; 1/30 s is 16.67 physics steps, so steps
alternate 17/17/16 substeps and the sim clock stays exactly on the 30 Hz grid. Episodes
are 300 steps (10 s), then `truncated`.

Grasp diagnostics (in `info`, for explaining failures rather than scoring them):
`cube_lifted` turns true once the cube's centre has been 2 cm above its resting height;
`grasp_offset_mm` is where the cube's centre was relative to the jaws at the first step
the gripper was commanded closed (below 10 after having been open): (along the closing
axis from the midpoint between the pads, across it horizontally, vertically) in mm, NaN
until then. The grasp fails beyond about 5 mm across (docs/sim.md), so a policy's
misses can be read as a bias or a spread of this number.

Reward is 1.0 on a success step, else 0.0. `info["is_success"]` is true when the cube
rests inside the bowl (centre within the inner radius, low in the bowl, nearly still)
and no part of the arm touches it (the gripper let go). With `terminate_on_success`
(default) the episode ends there.

Rendering: `cameras=()` (or `render=False`) turns images off; physics-only rollouts are
fast enough for tests and expert evaluation. Images are uint8 (H, W, 3).

Example:
    MUJOCO_GL=egl python -c "import gymnasium as gym, robotrain.sim; e = gym.make('robotrain/SO101PickPlace-v0', image_size=(96, 128)); o, _ = e.reset(seed=0); print({k: v.shape for k, v in o.items()})"
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import weakref
from collections.abc import Sequence
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")
logging.getLogger("OpenGL").setLevel(logging.WARNING)  # PyOpenGL's INFO chatter when mujoco loads EGL

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from gymnasium import spaces  # noqa: E402

from robotrain.constants import (  # noqa: E402
    OBS_IMAGES_PREFIX,
    OBS_STATE,
    SIM_MAX_CUBE_MARGIN_M,
    SIM_MAX_CUBE_YAW_MARGIN_DEG,
    SO101_FPS,
)
from robotrain.errors import ConfigError, SimulationError  # noqa: E402
from robotrain.sim import scene  # noqa: E402

ENV_ID = "robotrain/SO101PickPlace-v0"
EPISODE_STEPS = 300  # 10 s at 30 Hz
GRIPPER_MAX = 100.0

# Start pose (env units) the arm is reset to (plus a little noise): gripper raised above
# the workspace, half open.
HOME_POSE = np.array([0.0, -60.0, 60.0, 70.0, 0.0, 30.0])
HOME_NOISE_DEG = 3.0

# Success thresholds.
SUCCESS_MAX_SPEED = 0.05  # m/s: the cube is resting
SUCCESS_MAX_Z = scene.BOWL_BASE_THICKNESS + 1.8 * scene.CUBE_HALF  # centre low in the bowl

# Grasp diagnostics.
LIFTED_HEIGHT = 0.02  # m above the resting height: the cube was picked up
GRIPPER_CLOSE_COMMAND = 10.0  # env units: a gripper target below this is a close command


# Close GL contexts before interpreter teardown: a Renderer freed after MuJoCo's atexit
# eglTerminate prints a spurious EGLError. Our hook is registered after the first
# context exists, so (atexit runs last-in first-out) it runs before eglTerminate.
_LIVE_ENVS: "weakref.WeakSet[SO101PickPlaceEnv]" = weakref.WeakSet()
_EXIT_HOOK_REGISTERED = False


def _close_live_envs() -> None:
    for env in list(_LIVE_ENVS):
        try:
            env.close()
        except Exception:  # teardown: nothing useful left to do
            pass


class SO101PickPlaceEnv(gym.Env):
    """SO-101 arm, a 3 cm cube and a bowl on a table (see module docstring for units)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": SO101_FPS}

    def __init__(
        self,
        image_size: Sequence[int] = (scene.DEFAULT_HEIGHT, scene.DEFAULT_WIDTH),
        cameras: Sequence[str] = scene.CAMERAS,
        render: bool = True,
        max_episode_steps: int = EPISODE_STEPS,
        terminate_on_success: bool = True,
        visual_cell: float = scene.DEFAULT_VISUAL_CELL,
        render_mode: str | None = "rgb_array",
        cube_margin: float = 0.0,
        cube_yaw_margin_deg: float = 0.0,
    ) -> None:
        """`cube_margin` (m) widens the cube's x and y sampling ranges by that much on every
        side, `cube_yaw_margin_deg` its yaw range. For recording only: demonstrations that
        reach past the evaluated placements put their edges inside the training data, where
        cloned policies missed most without them (docs/sim.md). Evaluation uses 0."""
        height, width = (int(v) for v in image_size)
        if not 0.0 <= cube_margin <= SIM_MAX_CUBE_MARGIN_M:
            raise ConfigError(f"cube_margin must be in [0, {SIM_MAX_CUBE_MARGIN_M:g}] m, got {cube_margin}")
        if not 0.0 <= cube_yaw_margin_deg <= SIM_MAX_CUBE_YAW_MARGIN_DEG:
            raise ConfigError(f"cube_yaw_margin_deg must be in [0, {SIM_MAX_CUBE_YAW_MARGIN_DEG:g}], "
                              f"got {cube_yaw_margin_deg}")
        if height < 16 or width < 16:
            raise ConfigError(f"image_size must be at least 16x16, got {height}x{width}")
        unknown = [c for c in cameras if c not in scene.CAMERAS]
        if unknown:
            raise ConfigError(f"unknown camera(s) {unknown}; choose from {list(scene.CAMERAS)}")
        cameras = tuple(cameras) if render else ()
        if max_episode_steps < 1:
            raise ConfigError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        self.height, self.width = height, width
        self.cameras = cameras
        self.max_episode_steps = int(max_episode_steps)
        self.terminate_on_success = terminate_on_success
        self.render_mode = render_mode
        self.cube_margin = float(cube_margin)
        self.cube_yaw_margin_deg = float(cube_yaw_margin_deg)

        self.model = scene.build_model(scene.SceneConfig(height=height, width=width, visual_cell=visual_cell))
        self.data = mujoco.MjData(self.model)
        m = self.model
        self._qpos_adr = np.array([m.joint(j).qposadr[0] for j in scene.JOINTS])
        self._dof_adr = np.array([m.joint(j).dofadr[0] for j in scene.JOINTS])
        self._act_ids = np.array([m.actuator(j).id for j in scene.JOINTS])
        self._ctrl_lo = m.actuator_ctrlrange[self._act_ids, 0].copy()
        self._ctrl_hi = m.actuator_ctrlrange[self._act_ids, 1].copy()
        self._cube_qpos = m.joint("cube").qposadr[0]
        self._cube_dof = m.joint("cube").dofadr[0]
        self._cube_geom = m.geom("cube").id
        self._bowl_mocap = m.body_mocapid[m.body("bowl").id]
        self._arm_bodies = {m.body(b).id for b in scene.ARM_BODIES}
        self._pad_geoms = [m.geom(name).id for name in scene.JAW_PADS]  # fixed, moving
        self._substeps_per_second = round(1.0 / m.opt.timestep)  # 500

        low, high = self.to_env_units(self._ctrl_lo), self.to_env_units(self._ctrl_hi)
        self.action_space = spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)
        obs_spaces: dict[str, spaces.Space] = {
            OBS_STATE: spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)
        }
        for cam in self.cameras:
            obs_spaces[OBS_IMAGES_PREFIX + cam] = spaces.Box(0, 255, (height, width, 3), dtype=np.uint8)
        self.observation_space = spaces.Dict(obs_spaces)

        self._renderer: mujoco.Renderer | None = None
        self._step = 0
        self._reset_grasp_diagnostics()
        _LIVE_ENVS.add(self)

    # --- unit conversion ----------------------------------------------------------
    def to_env_units(self, q: np.ndarray) -> np.ndarray:
        """Sim joint positions / ctrl (rad, (..., 6)) -> env units (deg x5, gripper 0..100)."""
        q = np.asarray(q, dtype=np.float64)
        out = np.rad2deg(q)
        out[..., 5] = (q[..., 5] - self._ctrl_lo[5]) / (self._ctrl_hi[5] - self._ctrl_lo[5]) * GRIPPER_MAX
        return out

    def to_sim_units(self, a: np.ndarray) -> np.ndarray:
        """Env units (deg x5, gripper 0..100, (..., 6)) -> sim radians."""
        a = np.asarray(a, dtype=np.float64)
        out = np.deg2rad(a)
        out[..., 5] = self._ctrl_lo[5] + a[..., 5] / GRIPPER_MAX * (self._ctrl_hi[5] - self._ctrl_lo[5])
        return out

    # --- gym API -----------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        m, d, rng = self.model, self.data, self.np_random
        mujoco.mj_resetData(m, d)
        home = HOME_POSE + rng.uniform(-HOME_NOISE_DEG, HOME_NOISE_DEG, size=6) * np.array([1, 1, 1, 1, 1, 0])
        q = self.to_sim_units(home)
        d.qpos[self._qpos_adr] = q
        d.ctrl[self._act_ids] = q
        (x_lo, x_hi), (y_lo, y_hi), margin = scene.CUBE_X_RANGE, scene.CUBE_Y_RANGE, self.cube_margin
        cube_xy = np.array([rng.uniform(x_lo - margin, x_hi + margin), rng.uniform(y_lo - margin, y_hi + margin)])
        (yaw_lo, yaw_hi), yaw_margin = scene.CUBE_YAW_RANGE_DEG, self.cube_yaw_margin_deg
        yaw = np.deg2rad(rng.uniform(yaw_lo - yaw_margin, yaw_hi + yaw_margin))
        bowl_xy = np.array([rng.uniform(*scene.BOWL_X_RANGE), rng.uniform(*scene.BOWL_Y_RANGE)])
        if options:
            cube_xy = np.asarray(options.get("cube_xy", cube_xy), dtype=np.float64)
            yaw = float(options.get("cube_yaw", yaw))
            bowl_xy = np.asarray(options.get("bowl_xy", bowl_xy), dtype=np.float64)
        c = self._cube_qpos
        d.qpos[c : c + 3] = [cube_xy[0], cube_xy[1], scene.CUBE_HALF]
        d.qpos[c + 3 : c + 7] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
        d.mocap_pos[self._bowl_mocap] = [bowl_xy[0], bowl_xy[1], 0.0]
        mujoco.mj_forward(m, d)
        self._step = 0
        self._reset_grasp_diagnostics()
        return self._observation(), self._info()

    def step(self, action):
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (6,) or not np.all(np.isfinite(action)):
            raise SimulationError(f"action must be 6 finite joint targets, got {np.asarray(action).tolist()}")
        self._note_close_command(float(action[5]))
        ctrl = np.clip(self.to_sim_units(action), self._ctrl_lo, self._ctrl_hi)
        self.data.ctrl[self._act_ids] = ctrl
        mujoco.mj_step(self.model, self.data, nstep=self._substeps(self._step))
        self._step += 1
        info = self._info()
        success = info["is_success"]
        terminated = bool(success and self.terminate_on_success)
        truncated = self._step >= self.max_episode_steps and not terminated
        return self._observation(), float(success), terminated, truncated, info

    def render(self) -> np.ndarray | None:
        """Both (or the configured) cameras side by side, (H, W * n_cams, 3) uint8."""
        cams = self.cameras or scene.CAMERAS
        return np.concatenate([self.render_camera(c) for c in cams], axis=1)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # --- helpers -----------------------------------------------------------------------
    def _substeps(self, k: int) -> int:
        """Physics steps for control step k so step k ends at sim time (k+1)/30 s."""
        per = self._substeps_per_second
        return round((k + 1) * per / SO101_FPS) - round(k * per / SO101_FPS)

    def render_camera(self, camera: str) -> np.ndarray:
        if self._renderer is None:
            try:
                self._renderer = mujoco.Renderer(self.model, self.height, self.width)
            except Exception as exc:
                raise SimulationError(f"cannot create an offscreen GL context (MUJOCO_GL={os.environ.get('MUJOCO_GL')}): {exc}") from exc
            global _EXIT_HOOK_REGISTERED
            if not _EXIT_HOOK_REGISTERED:
                atexit.register(_close_live_envs)
                _EXIT_HOOK_REGISTERED = True
        self._renderer.update_scene(self.data, camera=camera)
        return self._renderer.render()

    def _observation(self) -> dict[str, np.ndarray]:
        obs = {OBS_STATE: self.to_env_units(self.data.qpos[self._qpos_adr]).astype(np.float32)}
        for cam in self.cameras:
            obs[OBS_IMAGES_PREFIX + cam] = self.render_camera(cam)
        return obs

    def cube_pos(self) -> np.ndarray:
        return self.data.qpos[self._cube_qpos : self._cube_qpos + 3].copy()

    def cube_yaw(self) -> float:
        """Cube rotation about the vertical (rad); meaningful while it sits flat."""
        w, _, _, z = self.data.qpos[self._cube_qpos + 3 : self._cube_qpos + 7]
        return float(2 * np.arctan2(z, w))

    def joint_positions(self) -> np.ndarray:
        """The six joint positions in sim units (rad), SO-101 order."""
        return self.data.qpos[self._qpos_adr].copy()

    def bowl_pos(self) -> np.ndarray:
        return self.data.mocap_pos[self._bowl_mocap].copy()

    def jaw_frame_offset(self) -> np.ndarray:
        """The cube's centre relative to the midpoint between the jaw pads (m): along the
        fixed->moving pad direction (flattened onto the table), across it horizontally,
        and vertically. Meaningful while the gripper points down, as in a grasp."""
        fixed, moving = (self.data.geom_xpos[g] for g in self._pad_geoms)
        return to_jaw_frame(self.cube_pos() - (fixed + moving) / 2, moving - fixed)

    def jaw_yaw_error_deg(self) -> float:
        """Angle (deg, in [-45, 45)) from the nearest pair of cube faces to the jaws' closing
        direction, in the table plane: 0 when the jaws close square on the cube. The cube's
        90 deg symmetry makes any pair of faces equivalent."""
        fixed, moving = (self.data.geom_xpos[g] for g in self._pad_geoms)
        closing = moving - fixed
        angle = np.degrees(np.arctan2(closing[1], closing[0]) - self.cube_yaw())
        return float((angle + 45.0) % 90.0 - 45.0)

    def _reset_grasp_diagnostics(self) -> None:
        self._cube_lifted = False
        self._gripper_was_open = False
        self._grasp_offset = np.full(3, np.nan)
        self._grasp_yaw_error = float("nan")

    def _note_close_command(self, gripper_target: float) -> None:
        """Record the jaw-frame cube offset at the first close command of the episode."""
        if gripper_target >= GRIPPER_CLOSE_COMMAND:
            self._gripper_was_open = True
        elif self._gripper_was_open and np.isnan(self._grasp_offset[0]):
            self._grasp_offset = self.jaw_frame_offset()
            self._grasp_yaw_error = self.jaw_yaw_error_deg()

    def arm_touches_cube(self) -> bool:
        d, m = self.data, self.model
        for i in range(d.ncon):
            g1, g2 = d.contact.geom1[i], d.contact.geom2[i]
            if self._cube_geom in (g1, g2):
                other = g2 if g1 == self._cube_geom else g1
                if m.geom_bodyid[other] in self._arm_bodies:
                    return True
        return False

    def _info(self) -> dict[str, Any]:
        cube = self.cube_pos()
        bowl = self.bowl_pos()
        dist = float(np.linalg.norm(cube[:2] - bowl[:2]))
        speed = float(np.linalg.norm(self.data.qvel[self._cube_dof : self._cube_dof + 3]))
        in_bowl = dist < scene.BOWL_INNER_RADIUS and cube[2] - bowl[2] < SUCCESS_MAX_Z
        touching = self.arm_touches_cube()
        success = bool(in_bowl and speed < SUCCESS_MAX_SPEED and not touching)
        self._cube_lifted = self._cube_lifted or bool(cube[2] > scene.CUBE_HALF + LIFTED_HEIGHT)
        return {"is_success": success, "cube_in_bowl": bool(in_bowl), "arm_touches_cube": touching,
                "cube_pos": cube, "bowl_pos": bowl, "cube_lifted": self._cube_lifted,
                "grasp_offset_mm": 1000.0 * self._grasp_offset, "grasp_yaw_error_deg": self._grasp_yaw_error}


def to_jaw_frame(vector: np.ndarray, closing: np.ndarray) -> np.ndarray:
    """A world vector as (along the jaws' closing direction flattened onto the table, across
    it horizontally, vertical). `closing` points from the fixed to the moving jaw. The one
    convention for every grasp offset (the env's diagnostics, `grasp_probe`)."""
    along = np.asarray(closing, dtype=np.float64) * np.array([1.0, 1.0, 0.0])
    along /= max(float(np.linalg.norm(along)), 1e-9)
    across = np.cross([0.0, 0.0, 1.0], along)
    vector = np.asarray(vector, dtype=np.float64)
    return np.array([vector @ along, vector @ across, vector[2]])


def _make_env(kwargs: dict[str, Any]) -> SO101PickPlaceEnv:
    return SO101PickPlaceEnv(**kwargs)


def make_vector_env(n: int, context: str = "spawn", **kwargs: Any) -> gym.vector.AsyncVectorEnv:
    """`n` envs in subprocesses (one GL context each) for fast evaluation.

    Example: `venv = make_vector_env(2, render=False); obs, info = venv.reset(seed=0)`
    (sub-env i is seeded `seed + i`).
    """
    if n < 1:
        raise ConfigError(f"number of envs must be >= 1, got {n}")
    fns = [functools.partial(_make_env, dict(kwargs)) for _ in range(n)]
    return gym.vector.AsyncVectorEnv(fns, context=context)
