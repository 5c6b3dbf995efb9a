"""The SO-101 pick-and-place env: API, units, determinism, success detection."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import robotrain.sim  # noqa: F401  (registers the env)
from robotrain.constants import OBS_STATE
from robotrain.errors import ConfigError, SimulationError
from robotrain.sim import scene
from robotrain.data.images import parse_hw
from robotrain.sim.env import ENV_ID, SO101PickPlaceEnv

SMALL = (48, 64)


@pytest.fixture(scope="module")
def env():
    e = SO101PickPlaceEnv(render=False, terminate_on_success=False)
    yield e
    e.close()


def test_registered_env_renders_both_cameras_at_requested_size():
    e = gym.make(ENV_ID, image_size=SMALL)
    try:
        obs, info = e.reset(seed=1)
        assert set(obs) == {OBS_STATE, "observation.images.front", "observation.images.wrist"}
        for cam in ("front", "wrist"):
            img = obs[f"observation.images.{cam}"]
            assert img.shape == (*SMALL, 3) and img.dtype == np.uint8
            assert img.std() > 5  # not a blank frame
        assert obs[OBS_STATE].shape == (6,) and obs[OBS_STATE].dtype == np.float32
        assert e.observation_space.contains(obs)
        obs, reward, terminated, truncated, info = e.step(obs[OBS_STATE])
        assert reward == 0.0 and not terminated and not truncated and info["is_success"] is False
    finally:
        e.close()


def test_spaces_and_units(env):
    obs, _ = env.reset(seed=0)
    low, high = env.action_space.low, env.action_space.high
    assert env.action_space.shape == (6,)
    assert low[5] == pytest.approx(0.0, abs=1e-3) and high[5] == pytest.approx(100.0, abs=1e-3)
    assert high[0] == pytest.approx(110.0, abs=0.1)  # shoulder_pan +-1.9199 rad in degrees
    q = np.array([0.1, -0.2, 0.3, 0.4, -0.5, 0.0])
    np.testing.assert_allclose(env.to_sim_units(env.to_env_units(q)), q, atol=1e-12)
    assert env.to_env_units(env._ctrl_lo)[5] == pytest.approx(0.0)
    assert "observation.images.front" not in obs  # rendering off


def test_seeded_reset_and_rollout_are_deterministic(env):
    def rollout(seed):
        obs, info = env.reset(seed=seed)
        states = [obs[OBS_STATE]]
        for k in range(15):
            obs, *_ = env.step(obs[OBS_STATE] + np.array([5, -5, 5, 0, 0, 10]) * np.sin(k / 3))
            states.append(obs[OBS_STATE])
        return np.array(states), info["cube_pos"], info["bowl_pos"]

    a, b, c = rollout(3), rollout(3), rollout(4)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.allclose(a[1], c[1])  # another seed, another cube


def test_cube_and_bowl_stay_in_documented_ranges(env):
    for seed in range(20):
        _, info = env.reset(seed=seed)
        x, y, _ = info["cube_pos"]
        assert scene.CUBE_X_RANGE[0] <= x <= scene.CUBE_X_RANGE[1]
        assert scene.CUBE_Y_RANGE[0] <= y <= scene.CUBE_Y_RANGE[1]
        bx, by, _ = info["bowl_pos"]
        assert scene.BOWL_X_RANGE[0] <= bx <= scene.BOWL_X_RANGE[1]
        assert scene.BOWL_Y_RANGE[0] <= by <= scene.BOWL_Y_RANGE[1]


def _paired_resets(**wide_kwargs):
    """(plain env, its info, widened env, its info) for seeds 0-39, after checking what a
    margin must leave alone: the bowl and the arm's start."""
    plain = SO101PickPlaceEnv(render=False)
    wide = SO101PickPlaceEnv(render=False, **wide_kwargs)
    try:
        for seed in range(40):
            _, a = plain.reset(seed=seed)
            _, b = wide.reset(seed=seed)
            np.testing.assert_allclose(a["bowl_pos"], b["bowl_pos"])
            np.testing.assert_array_equal(plain.joint_positions(), wide.joint_positions())
            yield plain, a, wide, b
    finally:
        plain.close()
        wide.close()


def test_cube_margin_widens_only_the_cube_placement():
    """Same seed, same draws: a margin stretches the cube's x/y range and leaves the cube's
    yaw, the bowl and the arm's start as they were; beyond the old range some of the time."""
    outside = 0
    for plain, _, wide, b in _paired_resets(cube_margin=0.02):
        np.testing.assert_allclose(plain.cube_yaw(), wide.cube_yaw())
        x, y, _ = b["cube_pos"]
        assert scene.CUBE_X_RANGE[0] - 0.02 <= x <= scene.CUBE_X_RANGE[1] + 0.02
        assert scene.CUBE_Y_RANGE[0] - 0.02 <= y <= scene.CUBE_Y_RANGE[1] + 0.02
        outside += not (scene.CUBE_X_RANGE[0] <= x <= scene.CUBE_X_RANGE[1]
                        and scene.CUBE_Y_RANGE[0] <= y <= scene.CUBE_Y_RANGE[1])
    assert outside >= 5  # ~49% of a 14 x 14 cm square lies outside the 10 x 10 cm one
    with pytest.raises(ConfigError, match="cube_margin"):
        SO101PickPlaceEnv(render=False, cube_margin=-0.01)


def test_cube_yaw_margin_widens_only_the_cube_yaw():
    """Same seed, same draws: the yaw range stretches from +-30 to +-40 deg; the cube's
    position, the bowl and the arm's start stay as they were."""
    beyond = 0
    for plain, a, wide, b in _paired_resets(cube_yaw_margin_deg=10):
        np.testing.assert_allclose(a["cube_pos"], b["cube_pos"], atol=1e-6)
        yaw_plain, yaw_wide = np.degrees(plain.cube_yaw()), np.degrees(wide.cube_yaw())
        assert abs(yaw_wide) <= 40 + 1e-6
        np.testing.assert_allclose(yaw_wide, yaw_plain * 40 / 30, atol=1e-3)  # one uniform draw, rescaled
        beyond += abs(yaw_wide) > 30
    assert beyond >= 5  # a quarter of the widened range lies beyond +-30 deg
    for bad in (-1.0, 16.0):
        with pytest.raises(ConfigError, match="cube_yaw_margin_deg"):
            SO101PickPlaceEnv(render=False, cube_yaw_margin_deg=bad)


def test_truncates_after_max_steps():
    e = SO101PickPlaceEnv(render=False, max_episode_steps=3)
    obs, _ = e.reset(seed=0)
    flags = [e.step(obs[OBS_STATE])[3] for _ in range(3)]
    assert flags == [False, False, True]
    assert e.data.time == pytest.approx(3 / 30)  # 17+17+16 physics steps of 2 ms


def _hold(env, steps=20):
    obs = None
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(env.to_env_units(env.data.ctrl[:6].copy()))
    return reward, info


def test_success_when_cube_rests_in_bowl_and_gripper_is_away(env):
    env.reset(seed=0, options={"bowl_xy": [0.2, 0.17], "cube_xy": [0.2, 0.17]})  # cube dropped in the bowl
    env.data.qpos[env._cube_qpos + 2] = 0.04  # falls in from above
    reward, info = _hold(env, 30)
    assert info["is_success"] and reward == 1.0


def test_no_success_when_cube_dropped_outside_bowl(env):
    env.reset(seed=0, options={"bowl_xy": [0.2, 0.17], "cube_xy": [0.25, 0.0]})
    reward, info = _hold(env, 30)
    assert not info["is_success"] and not info["cube_in_bowl"] and reward == 0.0


def test_no_success_while_cube_in_bowl_is_still_held(env):
    """Run the expert until it has lowered the cube over the bowl, then put the cube in
    the bowl while the jaws still grip it: in the bowl but held is not a success."""
    from robotrain.sim.expert import ScriptedExpert

    env.reset(seed=2)
    ex = ScriptedExpert(env)
    ex.reset(env, np.random.default_rng(0))
    while ex.t < ex.waypoint_time(6):  # lifted
        env.step(ex.act(env))
    assert env.arm_touches_cube()
    # Move the bowl under the held cube and lower the arm until the cube sits in it.
    cube = env.cube_pos()
    env.data.mocap_pos[env._bowl_mocap] = [cube[0], cube[1], 0.0]
    info = None
    for _ in range(40):
        action = ex.act(env)  # keep gripping (gripper command stays closed while lifting)
        action[5] = 0.0
        cube = env.cube_pos()
        env.data.mocap_pos[env._bowl_mocap] = [cube[0], cube[1], 0.0]
        env.data.mocap_pos[env._bowl_mocap, 2] = cube[2] - scene.CUBE_HALF - scene.BOWL_BASE_THICKNESS
        _, reward, _, _, info = env.step(action)
    assert info["arm_touches_cube"] and info["cube_in_bowl"]
    assert not info["is_success"]


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError):
        SO101PickPlaceEnv(render=False, cameras=("top",))
    with pytest.raises(ConfigError):
        SO101PickPlaceEnv(image_size=(8, 8))
    with pytest.raises(ConfigError):
        parse_hw("640by480", "--size")
    assert parse_hw("96x128", "--size") == (96, 128)


def test_bad_action_is_simulation_error(env):
    env.reset(seed=0)
    with pytest.raises(SimulationError):
        env.step(np.array([0.0, np.nan, 0, 0, 0, 0]))
    with pytest.raises(SimulationError):
        env.step(np.zeros(5))


def test_decimation_keeps_collision_meshes():
    full = scene.build_model(scene.SceneConfig(visual_cell=0.0))
    dec = scene.build_model(scene.SceneConfig(visual_cell=0.002))
    import mujoco

    def faces(m, group):
        return sum(m.mesh_facenum[m.geom_dataid[i]] for i in range(m.ngeom)
                   if m.geom_type[i] == mujoco.mjtGeom.mjGEOM_MESH and m.geom_group[i] == group)

    assert faces(dec, 3) == faces(full, 3)  # collision untouched
    assert faces(dec, 2) < faces(full, 2) / 5  # visual much lighter


def test_missing_asset_package_is_simulation_error(monkeypatch):
    monkeypatch.setattr(scene, "ARM_PACKAGE", "no_such_package_robotrain")
    with pytest.raises(SimulationError, match="not installed"):
        scene.build_model()
