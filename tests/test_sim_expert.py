"""The scripted expert: IK reaches top-down poses, episodes succeed, plans vary by seed."""

from __future__ import annotations

import numpy as np
import pytest

from robotrain.sim.env import SO101PickPlaceEnv, make_vector_env
from robotrain.sim.expert import IKSolver, ScriptedExpert, run_episode


@pytest.fixture(scope="module")
def env():
    e = SO101PickPlaceEnv(render=False, terminate_on_success=False)
    yield e
    e.close()


def test_ik_reaches_top_down_grasp_poses(env):
    ik = IKSolver(env.model)
    q0 = env.data.qpos[:5].copy()
    for target in ([0.2, -0.05, 0.015], [0.3, 0.05, 0.015], [0.2, 0.17, 0.07]):
        yaw = np.arctan2(target[1], target[0])
        q = ik.solve(q0, np.array(target), IKSolver.top_down(yaw))
        pos, R = ik.forward(q)
        assert np.linalg.norm(pos - target) < 1e-3
        assert R[2, 2] > 0.999  # gripper pointing straight down


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_expert_succeeds(env, seed):
    ep = run_episode(env, seed)
    assert ep["success"], f"expert failed on seed {seed}"
    assert ep["state"].shape == ep["action"].shape and ep["action"].shape[1] == 6
    assert len(ep["action"]) <= env.max_episode_steps
    assert ep["action"][:, 5].min() >= 0 and ep["action"][:, 5].max() <= 100


def test_demonstrations_vary_by_seed_and_repeat_per_seed(env):
    a, b, c = run_episode(env, 7), run_episode(env, 7), run_episode(env, 8)
    np.testing.assert_array_equal(a["action"], b["action"])
    assert len(a["action"]) != len(c["action"]) or not np.allclose(a["action"], c["action"])


def test_expert_plan_reaches_every_phase(env):
    env.reset(seed=5)
    ex = ScriptedExpert(env)
    ex.reset(env, np.random.default_rng(5))
    times = [ex.waypoint_time(i) for i in range(len(ex.waypoints))]
    assert times == sorted(times) and times[-1] < env.max_episode_steps / 30


def test_vector_env_steps_in_subprocesses():
    venv = make_vector_env(2, render=False, max_episode_steps=5)
    try:
        obs, info = venv.reset(seed=0)
        assert obs["observation.state"].shape == (2, 6)
        obs, reward, terminated, truncated, info = venv.step(obs["observation.state"])
        assert reward.shape == (2,) and not truncated.any()
    finally:
        venv.close()


def test_execution_noise_perturbs_states_but_keeps_clean_labels(env):
    """DART recording: the stored actions are the expert's clean plan (identical to a
    noiseless rollout of the same seed), while the arm, and so the states, go off it."""
    clean, noisy = run_episode(env, 3), run_episode(env, 3, action_noise_deg=1.0)
    n = min(len(clean["action"]), len(noisy["action"]))
    np.testing.assert_array_equal(clean["action"][:n], noisy["action"][:n])
    offset = np.abs(noisy["state"][:n, :5] - clean["state"][:n, :5]).mean()
    assert 0.3 < offset < 10.0, offset  # off the plan by about the noise, not lost
    assert noisy["success"]  # 1 degree of execution noise still completes the task here
    with pytest.raises(ValueError, match="action_noise_deg"):
        run_episode(env, 3, action_noise_deg=-1.0)


def test_wrist_roll_noise_turns_the_jaws_during_the_approach_only(env):
    """Roll DART: clean labels; the state's wrist_roll goes off the plan while the arm
    approaches and is back on it at the grasp, which still succeeds."""
    clean, noisy = run_episode(env, 3), run_episode(env, 3, wrist_roll_noise_deg=12.0)
    expert = ScriptedExpert(env)
    env.reset(seed=3)
    expert.reset(env, np.random.default_rng([3, 7]))
    hover, close = (int(expert.waypoint_time(i) * 30) for i in (2, 4))
    n = min(len(clean["action"]), len(noisy["action"]))
    np.testing.assert_array_equal(clean["action"][:n], noisy["action"][:n])
    roll_off = np.abs(noisy["state"][:n, 4] - clean["state"][:n, 4])
    assert roll_off[:hover].max() > 5.0  # degrees off the plan during the approach
    assert roll_off[close] < 1.0  # faded out before the jaws close
    np.testing.assert_allclose(noisy["state"][:hover, :4], clean["state"][:hover, :4], atol=0.5)  # roll only
    assert noisy["success"]
    with pytest.raises(ValueError, match="wrist_roll_noise_deg"):
        run_episode(env, 3, wrist_roll_noise_deg=-1.0)


def test_late_wrist_turn_aligns_the_jaws_over_the_hover(env):
    """--late-wrist-turn: the plan starts at the natural roll and turns onto the cube's faces
    between most of the approach and mid-descent; the grasp is as aligned and succeeds."""
    seed = 3  # a cube ~30 deg off the natural jaw orientation
    default, late = run_episode(env, seed), run_episode(env, seed, late_wrist_turn=True)
    assert late["success"] and abs(env._info()["grasp_yaw_error_deg"]) < 3.0  # degrees, like the default expert
    env.reset(seed=seed)
    expert = ScriptedExpert(env)
    expert.reset(env, np.random.default_rng([seed, 7]), late_wrist_turn=True)
    natural = np.arctan2(env.cube_pos()[1], env.cube_pos()[0])
    assert expert.jaw_yaw(0.0) == pytest.approx(natural)
    assert abs(np.rad2deg(expert.yaw - natural)) > 20.0
    hover, close = (int(expert.waypoint_time(i) * 30) for i in (1, 4))
    assert expert.jaw_yaw(expert.waypoint_time(3)) == pytest.approx(expert.yaw)
    roll_default, roll_late = default["action"][:, 4], late["action"][:, 4]
    assert abs(roll_late[0] - roll_default[0]) > 20.0  # not turned at the start...
    assert abs(roll_late[hover // 2] - roll_default[hover // 2]) > 20.0  # ...nor halfway to the cube
    assert abs(roll_late[close] - roll_default[close]) < 1.0  # turned by the close command


def test_execution_noise_statistics():
    from robotrain.sim.expert import ExecutionNoise

    noise = ExecutionNoise(2.0, np.random.default_rng(0))
    x = np.stack([noise.step() for _ in range(20000)])
    assert x.shape == (20000, 5)
    assert abs(x.std() - 2.0) < 0.2  # stationary std as asked
    lag1 = np.corrcoef(x[:-1, 0], x[1:, 0])[0, 1]
    assert lag1 > 0.8  # smooth: consecutive offsets are strongly correlated (tau 0.3 s)


def test_grasp_error_moves_the_grasp_and_a_large_one_fails(env):
    exact = run_episode(env, 0)
    missed = run_episode(env, 0, grasp_error=(0.0, 0.03))  # 3 cm beside a 3 cm cube
    assert exact["success"] and not missed["success"]
    turned = run_episode(env, 0, yaw_error=np.deg2rad(10.0))
    roll = 4  # wrist_roll
    assert abs(turned["action"][40, roll] - exact["action"][40, roll]) == pytest.approx(10.0, abs=1.5)


def test_grasp_diagnostics_read_the_grasp_error_back(env):
    """info['grasp_offset_mm'] is where the cube was relative to the jaws at the close
    command: the expert's deliberate error shows up across the jaws, and a lifted cube is
    noted; before any close command the offset is NaN."""
    _, info = env.reset(seed=0)
    assert np.all(np.isnan(info["grasp_offset_mm"])) and not info["cube_lifted"]
    exact = run_episode(env, 0)
    offset = env._info()["grasp_offset_mm"]
    assert exact["success"] and env._info()["cube_lifted"]
    assert abs(offset[1]) < 2.5 and abs(offset[0]) < 2.5  # the expert's own noise is ~1 mm
    run_episode(env, 0, grasp_error=(0.0, 0.006))
    assert abs(abs(env._info()["grasp_offset_mm"][1]) - 6.0) < 1.5
    missed = run_episode(env, 0, grasp_error=(0.0, 0.03))
    assert not missed["success"] and not env._info()["cube_lifted"]


def test_grasp_yaw_error_reads_the_jaws_turn_back(env):
    """info['grasp_yaw_error_deg']: the jaws' angle off the cube's faces at the close
    command, ~0 for the expert, the expert's deliberate yaw error when it has one."""
    _, info = env.reset(seed=0)
    assert np.isnan(info["grasp_yaw_error_deg"])
    run_episode(env, 0)
    assert abs(env._info()["grasp_yaw_error_deg"]) < 1.0
    run_episode(env, 0, yaw_error=np.deg2rad(15.0))
    assert abs(abs(env._info()["grasp_yaw_error_deg"]) - 15.0) < 2.0
