"""Scripted expert for `robotrain/SO101PickPlace-v0`: IK plus a smooth waypoint plan.

The plan (approach above the cube with the jaws open, descend, close, lift, carry over
the bowl, lower, open, retreat) is a list of Cartesian waypoints for the point between
the fingertip pads, joined by minimum-jerk segments. Each control step the target point
(gripper pointing straight down, jaws across two cube faces) is turned into five arm
joint angles by damped-least-squares IK on the MuJoCo model, warm-started from the last
solution (with `late_wrist_turn` the jaws turn onto the cube's faces only over the hover).
Segment durations, heights, speeds and small smooth position noise are
randomised per episode (from the seed), so demonstrations vary like human teleoperation.
Actions come out in the env's units (degrees, gripper 0..100).

Example (physics only, prints the success rate):
    MUJOCO_GL=egl python -m robotrain.sim.expert --episodes 20

`--grasp-error-mm DX DY` / `--yaw-error-deg D` make the expert grasp that far from the
cube, which measures how precise a cloned policy has to be (docs/sim.md).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass

import mujoco
import numpy as np

from robotrain.constants import OBS_STATE, SO101_FPS
from robotrain.sim import scene
from robotrain.sim.env import SO101PickPlaceEnv

log = logging.getLogger(__name__)

ARM_DOFS = 5  # shoulder_pan .. wrist_roll; the gripper is commanded directly
WRIST_ROLL = scene.JOINTS.index("wrist_roll")  # its index in the joint order (4)
CLOSED_PAD_GAP = 2 * scene.CUBE_HALF  # jaw gap when holding the cube
FIXED_JAW_CLEARANCE = 0.006  # m: aim this far off-centre, towards the moving jaw
GRASP_CLOSED_WAYPOINT = 5  # index in the plan: the jaws have closed on the cube
LATE_TURN_START = 0.6  # fraction of the approach after which a late wrist turn begins
LATE_TURN_END = 0.5  # fraction of the descent by which it has ended (jaws still above the cube)


class IKSolver:
    """Damped least squares on position + orientation of a point on the gripper body."""

    def __init__(self, model: mujoco.MjModel, damping: float = 0.03, iters: int = 60, tol: float = 2e-4) -> None:
        self.model = model
        self.data = mujoco.MjData(model)
        self.damping, self.iters, self.tol = damping, iters, tol
        self.body = model.body(scene.GRIPPER_BODY).id
        self.qadr = np.array([model.joint(j).qposadr[0] for j in scene.JOINTS[:ARM_DOFS]])
        self.dofs = np.array([model.joint(j).dofadr[0] for j in scene.JOINTS[:ARM_DOFS]])
        self.lo = model.jnt_range[[model.joint(j).id for j in scene.JOINTS[:ARM_DOFS]], 0]
        self.hi = model.jnt_range[[model.joint(j).id for j in scene.JOINTS[:ARM_DOFS]], 1]
        self.point_local, self.jaw_axis_local = self._grasp_point()

    def _grasp_point(self) -> tuple[np.ndarray, np.ndarray]:
        """Point between the pads when they hold the cube, in the gripper body frame, shifted
        towards the moving jaw; and the unit fixed->moving pad direction in that frame."""
        m, d = self.model, self.data
        gq = m.joint("gripper").qposadr[0]
        f_id, m_id = m.geom(scene.JAW_PADS[0]).id, m.geom(scene.JAW_PADS[1]).id
        pad_half = m.geom_size[f_id, 0] + m.geom_size[m_id, 0]  # half-thicknesses across the gap
        best = None
        for angle in np.linspace(-0.17, 1.0, 400):
            d.qpos[:] = 0
            d.qpos[gq] = angle
            mujoco.mj_kinematics(m, d)
            gap = np.linalg.norm(d.geom_xpos[m_id] - d.geom_xpos[f_id]) - pad_half
            if best is None or abs(gap - CLOSED_PAD_GAP) < best[0]:
                R = d.xmat[self.body].reshape(3, 3)
                origin = d.xpos[self.body]
                mid = (d.geom_xpos[m_id] + d.geom_xpos[f_id]) / 2
                axis = d.geom_xpos[m_id] - d.geom_xpos[f_id]
                axis /= np.linalg.norm(axis)
                best = (abs(gap - CLOSED_PAD_GAP), R.T @ (mid - origin), R.T @ axis)
        _, mid_local, axis_local = best
        return mid_local + FIXED_JAW_CLEARANCE * axis_local, axis_local

    def forward(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Arm joints (rad, 5) -> (grasp point world pos, gripper body rotation matrix)."""
        d = self.data
        d.qpos[self.qadr] = q
        mujoco.mj_kinematics(self.model, d)
        R = d.xmat[self.body].reshape(3, 3).copy()
        return d.xpos[self.body] + R @ self.point_local, R

    @staticmethod
    def top_down(yaw: float) -> np.ndarray:
        """Gripper body orientation pointing straight down (body -z = world -z) with the
        body x axis (across the jaws) at `yaw` in the table plane."""
        x = np.array([np.cos(yaw), np.sin(yaw), 0.0])
        z = np.array([0.0, 0.0, 1.0])
        return np.stack([x, np.cross(z, x), z], axis=1)

    def solve(self, q0: np.ndarray, target_pos: np.ndarray, target_rot: np.ndarray) -> np.ndarray:
        m, d = self.model, self.data
        q = np.clip(np.asarray(q0, dtype=np.float64).copy(), self.lo, self.hi)
        jacp = np.zeros((3, m.nv))
        jacr = np.zeros((3, m.nv))
        quat = np.zeros(4)
        rotvec = np.zeros(3)
        for _ in range(self.iters):
            pos, R = self.forward(q)
            err_p = target_pos - pos
            mujoco.mju_mat2Quat(quat, (target_rot @ R.T).reshape(-1))
            mujoco.mju_quat2Vel(rotvec, quat, 1.0)
            err = np.concatenate([err_p, 0.1 * rotvec])  # 0.1 m per rad
            if np.linalg.norm(err) < self.tol:
                break
            mujoco.mj_comPos(m, d)
            mujoco.mj_jac(m, d, jacp, jacr, pos, self.body)
            J = np.concatenate([jacp[:, self.dofs], 0.1 * jacr[:, self.dofs]])  # (6, 5)
            dq = J.T @ np.linalg.solve(J @ J.T + self.damping**2 * np.eye(6), err)
            q = np.clip(q + dq, self.lo, self.hi)
        return q


def min_jerk(s: np.ndarray | float) -> np.ndarray | float:
    s = np.clip(s, 0.0, 1.0)
    return 10 * s**3 - 15 * s**4 + 6 * s**5


@dataclass
class Waypoint:
    duration: float  # s to reach this waypoint from the previous one
    pos: np.ndarray  # (3,) grasp point, world m
    gripper: float  # env units 0..100


class ScriptedExpert:
    """One episode's plan; call `reset(env, rng)` then `act(env)` every step."""

    def __init__(self, env: SO101PickPlaceEnv) -> None:
        self.ik = IKSolver(env.model)
        self.waypoints: list[Waypoint] = []
        self.t = 0.0

    @property
    def done(self) -> bool:
        return self.t >= self._total - 1e-9

    @staticmethod
    def _natural_yaw(cube_pos: np.ndarray) -> float:
        """The arm's natural jaw orientation over the cube: jaw axis along the reach
        direction, wrist_roll ~ 0."""
        return float(np.arctan2(cube_pos[1], cube_pos[0]))

    def _choose_yaw(self, cube_pos: np.ndarray, cube_yaw: float) -> float:
        """Jaw axis across a pair of cube faces, the one nearest the natural orientation."""
        natural = self._natural_yaw(cube_pos)
        cands = cube_yaw + np.arange(-4, 5) * np.pi / 2
        return float(cands[np.argmin(np.abs(cands - natural))])

    def reset(self, env: SO101PickPlaceEnv, rng: np.random.Generator,
              grasp_error: tuple[float, float] = (0.0, 0.0), yaw_error: float = 0.0,
              late_wrist_turn: bool = False) -> None:
        """Plan the episode. `grasp_error` (m, world x/y) and `yaw_error` (rad) misplace the
        approach, descent and grasp on purpose, to measure the grasp's tolerance.

        `late_wrist_turn` keeps the jaws at the arm's natural orientation (wrist_roll ~ 0)
        for most of the approach and turns them onto the cube's faces only over its last part,
        the hover and the first half of the descent, where the wrist camera sees the cube
        large. By default the jaws are aligned from the first step, when the cube is a few
        pixels in the front camera; every later frame then shows the roll already right, and a
        cloned policy learns to copy it from the state instead of reading it from the images."""
        cube, bowl = env.cube_pos(), env.bowl_pos()
        self.yaw = self._choose_yaw(cube, env.cube_yaw()) + yaw_error
        self.start_yaw = self._natural_yaw(cube) if late_wrist_turn else self.yaw
        cube = cube + np.array([grasp_error[0], grasp_error[1], 0.0])
        q_arm = env.joint_positions()[:ARM_DOFS]
        start, _ = self.ik.forward(q_arm)
        self.q = q_arm

        speed = rng.uniform(0.8, 1.2)
        jit = lambda: rng.uniform(0.85, 1.15) * speed  # noqa: E731
        hover = rng.uniform(0.05, 0.08)
        grasp_z = scene.CUBE_HALF + rng.uniform(-0.003, 0.004)
        carry_z = rng.uniform(0.10, 0.13)
        release_z = scene.BOWL_WALL_HEIGHT + scene.CUBE_HALF + rng.uniform(0.02, 0.035)
        g_open = rng.uniform(45, 60)
        bowl_target = bowl + np.append(rng.uniform(-0.01, 0.01, 2), 0.0)
        above_cube = np.array([cube[0], cube[1], grasp_z + hover])
        above_bowl = np.array([bowl_target[0], bowl_target[1], carry_z])
        g0 = float(env.to_env_units(env.joint_positions())[5])
        W = Waypoint
        self.waypoints = [
            W(0.0, start, g0),
            W(1.3 * jit(), above_cube, g_open),
            W(rng.uniform(0.05, 0.3), above_cube, g_open),
            W(0.8 * jit(), np.array([cube[0], cube[1], grasp_z]), g_open),
            W(0.45 * jit(), np.array([cube[0], cube[1], grasp_z]), 0.0),
            W(rng.uniform(0.1, 0.25), np.array([cube[0], cube[1], grasp_z]), 0.0),
            W(0.8 * jit(), np.array([cube[0], cube[1], carry_z]), 0.0),
            W(1.2 * jit(), above_bowl, 0.0),
            W(0.5 * jit(), np.array([bowl_target[0], bowl_target[1], release_z]), 0.0),
            W(0.3 * jit(), np.array([bowl_target[0], bowl_target[1], release_z]), g_open),
            W(rng.uniform(0.1, 0.3), np.array([bowl_target[0], bowl_target[1], release_z]), g_open),
            W(0.9 * jit(), np.array([0.2, bowl_target[1] * 0.5, 0.12]), g_open * 0.6),
        ]
        self._starts = np.cumsum([w.duration for w in self.waypoints])
        self._total = float(self._starts[-1])
        approach, descent = self.waypoints[1].duration, self.waypoints[3].duration
        self._turn_start = LATE_TURN_START * approach
        self._turn_end = float(self._starts[2]) + LATE_TURN_END * descent
        # Smooth noise: a few random sinusoids per axis, ~2 mm and ~1 unit of gripper.
        self._freq = rng.uniform(0.2, 1.2, size=(3, 4))
        self._phase = rng.uniform(0, 2 * np.pi, size=(3, 4))
        self._amp = rng.uniform(0.0, 0.0008, size=(3, 4))
        self._g_noise = rng.uniform(-1.0, 1.0)
        self.t = 0.0

    def waypoint_time(self, index: int) -> float:
        """Plan time (s) at which waypoint `index` is reached."""
        return float(self._starts[index])

    def jaw_yaw(self, t: float) -> float:
        """Yaw (rad) of the jaw axis at plan time t: `start_yaw` turning to `yaw` (a no-op
        unless the plan has a late wrist turn)."""
        s = min_jerk((t - self._turn_start) / (self._turn_end - self._turn_start))
        return float(self.start_yaw + s * (self.yaw - self.start_yaw))

    def target(self, t: float) -> tuple[np.ndarray, float, float]:
        """(grasp point, gripper units, yaw) at plan time t."""
        i = int(np.searchsorted(self._starts, t, side="right"))
        if i >= len(self.waypoints):
            w = self.waypoints[-1]
            return w.pos, w.gripper, self.yaw
        a, b = self.waypoints[i - 1], self.waypoints[i]
        s = min_jerk((t - self._starts[i - 1]) / max(b.duration, 1e-6))
        pos = a.pos + s * (b.pos - a.pos)
        grip = a.gripper + s * (b.gripper - a.gripper)
        return pos, grip, self.jaw_yaw(t)

    def act(self, env: SO101PickPlaceEnv) -> np.ndarray:
        """The next action (env units, (6,)) and advance the plan clock by one control step."""
        pos, grip, yaw = self.target(self.t)
        noise = (self._amp * np.sin(2 * np.pi * self._freq * self.t + self._phase)).sum(axis=1)
        self.q = self.ik.solve(self.q, pos + noise, IKSolver.top_down(yaw))
        self.t += 1.0 / SO101_FPS
        full = np.append(self.q, 0.0)
        action = env.to_env_units(full)
        action[5] = np.clip(grip + (self._g_noise if grip > 5 else 0.0), 0.0, 100.0)
        return action.astype(np.float32)


class ExecutionNoise:
    """Smooth random offsets (degrees) for the five arm joints: an Ornstein-Uhlenbeck
    process with standard deviation `std_deg` (one for all joints, or one per joint) and
    correlation time `tau_s`.

    Why: DART-style recording (Laskey et al., 2017). The expert's plan does not depend on
    where the arm actually is, so executing `action + noise` while storing the clean
    `action` yields demonstrations that visit slightly-off states *and* label them with the
    way back to the plan: the corrections a cloned policy needs after its own small errors.
    """

    def __init__(self, std_deg: float | np.ndarray, rng: np.random.Generator, tau_s: float = 0.3) -> None:
        self.std = np.broadcast_to(np.asarray(std_deg, dtype=np.float64), (ARM_DOFS,)).copy()
        self.rng = rng
        self.decay = float(np.exp(-1.0 / (SO101_FPS * tau_s)))
        self.value = rng.normal(0.0, self.std, ARM_DOFS)

    def step(self) -> np.ndarray:
        """The offset for this control step (then advance the process)."""
        out = self.value.copy()
        self.value = self.decay * self.value + np.sqrt(1 - self.decay**2) * self.rng.normal(0.0, self.std, ARM_DOFS)
        return out


def run_episode(env: SO101PickPlaceEnv, seed: int, settle_steps: int = 10, action_noise_deg: float = 0.0,
                grasp_error: tuple[float, float] = (0.0, 0.0), yaw_error: float = 0.0,
                wrist_roll_noise_deg: float = 0.0, late_wrist_turn: bool = False) -> dict:
    """Roll out the expert from `env.reset(seed=seed)` until its plan ends (+ settle steps)
    or the env stops. Returns states/actions/(images)/success.

    `action_noise_deg` > 0 executes the expert's actions plus `ExecutionNoise` on the arm
    joints but records the clean actions (DART); 0 executes exactly what is recorded.
    `wrist_roll_noise_deg` adds independent noise of that std on wrist_roll alone during
    the approach, fading out over the descent so the grasp itself is clean: the data shows
    the jaws turned off the cube's faces while the wrist camera sees the cube, labelled with
    the turn back (the expert sets the roll at the start, so without it a policy can copy
    its roll from the state and never learns to read it from the images).
    `grasp_error`/`yaw_error`/`late_wrist_turn`: see `ScriptedExpert.reset`."""
    if action_noise_deg < 0 or wrist_roll_noise_deg < 0:
        raise ValueError(f"action_noise_deg and wrist_roll_noise_deg must be >= 0, "
                         f"got {action_noise_deg} and {wrist_roll_noise_deg}")
    obs, info = env.reset(seed=seed)
    expert = ScriptedExpert(env)
    expert.reset(env, np.random.default_rng([seed, 7]), grasp_error, yaw_error, late_wrist_turn)
    noise = ExecutionNoise(action_noise_deg, np.random.default_rng([seed, 11])) if action_noise_deg > 0 else None
    roll_std = np.zeros(ARM_DOFS)
    roll_std[WRIST_ROLL] = wrist_roll_noise_deg
    roll_noise = ExecutionNoise(roll_std, np.random.default_rng([seed, 13])) if wrist_roll_noise_deg > 0 else None
    fade_start, fade_end = expert.waypoint_time(2), expert.waypoint_time(3)  # hover reached, descent done
    frames: dict[str, list] = {k: [] for k in obs if k != OBS_STATE}
    states, actions = [], []
    extra = 0
    success = False
    for _ in range(env.max_episode_steps):
        action = expert.act(env)
        states.append(obs[OBS_STATE])
        actions.append(action)
        for k in frames:
            frames[k].append(obs[k])
        executed = action.copy()
        if noise is not None:
            executed[:ARM_DOFS] += noise.step().astype(np.float32)
        if roll_noise is not None:
            gate = float(np.clip((fade_end - expert.t) / (fade_end - fade_start), 0.0, 1.0))
            executed[:ARM_DOFS] += gate * roll_noise.step().astype(np.float32)
        obs, _, terminated, truncated, info = env.step(executed)
        success = info["is_success"]
        if expert.done:
            extra += 1
        if terminated or truncated or (expert.done and extra >= settle_steps):
            break
    return {
        "seed": seed,
        "success": bool(success),
        "state": np.asarray(states, dtype=np.float32),
        "action": np.asarray(actions, dtype=np.float32),
        "images": {k: np.asarray(v) for k, v in frames.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grasp-error-mm", type=float, nargs=2, default=(0.0, 0.0), metavar=("DX", "DY"),
                        help="grasp this far from the cube centre (world x, y; mm)")
    parser.add_argument("--yaw-error-deg", type=float, default=0.0, help="turn the jaws this far off the cube's faces")
    args = parser.parse_args(argv)
    grasp_error = (args.grasp_error_mm[0] / 1000.0, args.grasp_error_mm[1] / 1000.0)
    logging.basicConfig(level=logging.INFO)
    env = SO101PickPlaceEnv(render=False, terminate_on_success=False)
    ok = 0
    for s in range(args.seed, args.seed + args.episodes):
        r = run_episode(env, s, grasp_error=grasp_error, yaw_error=float(np.deg2rad(args.yaw_error_deg)))
        ok += r["success"]
        if not r["success"]:
            log.info("seed %d failed (%d steps)", s, len(r["action"]))
    print(f"expert success {ok}/{args.episodes} = {ok / args.episodes:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
