"""Closed-loop evaluation against a fake env with the sim's spaces and a fake policy."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import av
import gymnasium as gym
import numpy as np
import pytest
import torch

from robotrain.constants import OBS_STATE, SO101_TASK, TASK
from robotrain.errors import ConfigError, SimulationError
from robotrain.evaluation.rollout import evaluate_in_sim

FAKE_ID = "robotrain_test/FakeSO101-v0"
FRONT, WRIST = "observation.images.front", "observation.images.wrist"
H, W = 24, 32


class FakeSO101(gym.Env):
    """Same observation/action spaces as the sim. Succeeds (and terminates) after
    `3 + seed % 4` steps when the seed is even; odd seeds time out at 12 steps."""

    def __init__(self, image_size: tuple[int, int] = (H, W)) -> None:
        self.h, self.w = image_size
        img = gym.spaces.Box(0, 255, (self.h, self.w, 3), np.uint8)
        self.observation_space = gym.spaces.Dict({
            OBS_STATE: gym.spaces.Box(-360.0, 360.0, (6,), np.float32), FRONT: img, WRIST: img})
        self.action_space = gym.spaces.Box(-360.0, 360.0, (6,), np.float32)
        self.seed_ = 0
        self.t = 0
        self.state = np.zeros(6, np.float32)

    def _obs(self) -> dict:
        front = np.full((self.h, self.w, 3), (self.seed_ * 10) % 256, np.uint8)
        wrist = np.full((self.h, self.w, 3), (self.t * 20) % 256, np.uint8)
        return {OBS_STATE: self.state.copy(), FRONT: front, WRIST: wrist}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.seed_ = int(seed) if seed is not None else -1
        self.t = 0
        self.state = np.full(6, float(self.seed_), np.float32)
        return self._obs(), {"is_success": False}

    def step(self, action):
        self.t += 1
        self.state = np.asarray(action, np.float32)
        success = self.seed_ % 2 == 0 and self.t >= 3 + self.seed_ % 4
        return self._obs(), float(success), success, self.t >= 12, {"is_success": success}


if FAKE_ID not in gym.registry:
    gym.register(FAKE_ID, entry_point=FakeSO101)


@dataclass(frozen=True)
class _Features:
    camera_keys: tuple[str, ...] = (FRONT, WRIST)
    image_shape: tuple[int, int, int] = (3, 16, 16)


class _Config:
    def image_input(self) -> tuple[tuple[int, int], str]:
        return (16, 16), "resize"  # the fake env renders 24x32: the rollout fits its frames


class FakePolicy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = _Features()
        self.config = _Config()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.resets = 0
        self.calls = 0

    def reset(self) -> None:
        self.resets += 1

    def select_action(self, batch) -> torch.Tensor:
        self.calls += 1
        state = batch[OBS_STATE]
        assert state.dtype == torch.float32 and state.shape[1] == 6
        for key in self.features.camera_keys:
            img = batch[key]
            assert img.shape == (state.shape[0], 3, 16, 16) and img.dtype == torch.float32
            assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0
        assert batch[TASK] == [SO101_TASK] * state.shape[0]
        assert not torch.is_grad_enabled()
        return state + 1.0


def _run(tmp_path: Path, **kw) -> dict:
    kw.setdefault("progress", False)
    kw.setdefault("n_envs", 1)
    return evaluate_in_sim(FakePolicy(), env_id=FAKE_ID, out_dir=tmp_path, **kw)


def test_eval_info_schema_and_values(tmp_path: Path) -> None:
    info = _run(tmp_path, n_episodes=6, seed=10, n_envs=1)
    saved = json.loads((tmp_path / "eval_info.json").read_text())
    assert saved == json.loads(json.dumps(info))
    per = saved["per_episode"]
    assert [e["episode_ix"] for e in per] == list(range(6))
    assert [e["seed"] for e in per] == list(range(10, 16))
    for e in per:
        assert set(e) >= {"episode_ix", "sum_reward", "max_reward", "success", "seed", "steps"}
        assert "grasp_offset_mm" not in e  # only envs that report it get the grasp fields
        assert e["success"] == (e["seed"] % 2 == 0)
        assert e["steps"] == (3 + e["seed"] % 4 if e["success"] else 12)
        if e["success"]:
            assert e["time_to_success_s"] == pytest.approx(e["steps"] / 30)
    agg = saved["aggregated"]
    assert set(agg) >= {"avg_sum_reward", "avg_max_reward", "pc_success", "n_episodes", "eval_s", "eval_ep_s",
                        "pc_success_ci95"}
    assert agg["pc_success"] == 50.0 and agg["n_episodes"] == 6
    assert agg["pc_success_ci95"] == pytest.approx([18.76, 81.24], abs=0.01)


def test_same_episodes_whatever_the_number_of_envs(tmp_path: Path) -> None:
    one = _run(tmp_path / "a", n_episodes=5, seed=3, n_envs=1)
    two = _run(tmp_path / "b", n_episodes=5, seed=3, n_envs=2, max_steps=50)
    strip = lambda info: [{k: e[k] for k in ("seed", "success", "steps", "sum_reward")} for e in info["per_episode"]]
    assert strip(one) == strip(two)


def test_policy_reset_once_per_batch(tmp_path: Path) -> None:
    policy = FakePolicy()
    evaluate_in_sim(policy, n_episodes=3, seed=0, n_envs=1, env_id=FAKE_ID, progress=False)
    assert policy.resets == 3
    assert policy.training  # the mode it had before is restored
    policy = FakePolicy()
    evaluate_in_sim(policy, n_episodes=3, seed=0, n_envs=2, env_id=FAKE_ID, progress=False)
    assert policy.resets == 2  # envs of a batch run in lockstep: one reset per batch


def test_max_steps_cuts_episodes(tmp_path: Path) -> None:
    info = _run(tmp_path, n_episodes=2, seed=1, max_steps=4)
    assert [e["steps"] for e in info["per_episode"]] == [4, 4]


def test_video_written_and_decodable(tmp_path: Path) -> None:
    info = _run(tmp_path, n_episodes=3, seed=0, videos=2, env_kwargs={"image_size": (24, 30)})
    paths = [Path(p) for p in info["video_paths"]]
    assert [p.name for p in paths] == ["eval_episode_0.mp4", "eval_episode_1.mp4"]
    assert not (tmp_path / "videos" / "eval_episode_2.mp4").exists()
    for p, ep in zip(paths, info["per_episode"]):
        with av.open(str(p)) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264"
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        # initial frame + one per step + 0.5 s hold at 30 fps
        assert len(frames) == 1 + ep["steps"] + 15
        h, w = frames[0].shape[:2]
        assert w == 2 * 30 and h == 24 + 16  # two cameras side by side + status bar
        bar = frames[-1][24:26, 3 * w // 4 :].reshape(-1, 3).mean(axis=0)  # top rows of the bar, right
        if ep["success"]:
            assert bar[1] > bar[0] + 40  # green
        else:
            assert bar[0] > bar[1] + 40  # red
        assert p.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="n_episodes"):
        _run(tmp_path, n_episodes=0)
    with pytest.raises(ConfigError, match="out_dir"):
        evaluate_in_sim(FakePolicy(), 1, n_envs=1, env_id=FAKE_ID, videos=1, progress=False)


def test_policy_error_leaves_no_partial_video(tmp_path: Path) -> None:
    class Boom(FakePolicy):
        def select_action(self, batch):
            if self.calls >= 2:
                raise RuntimeError("boom")
            return super().select_action(batch)

    with pytest.raises(RuntimeError, match="boom"):
        evaluate_in_sim(Boom(), 2, n_envs=1, env_id=FAKE_ID, videos=1, out_dir=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []  # no partial video, no empty videos/ folder, no eval_info.json


def test_same_step_autoreset_vector_env() -> None:
    """Gymnasium's same-step autoreset puts the final obs/info under final_obs/final_info."""
    from gymnasium.vector import AutoresetMode

    from robotrain.evaluation.rollout import _EnvBatch

    env = gym.make_vec(FAKE_ID, num_envs=2, vectorization_mode="sync",
                       vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP})
    batch = _EnvBatch(env, vector=True)
    try:
        obs = batch.reset([2, 3])  # seed 2 succeeds at step 5
        for t in range(5):
            obs, rew, done, infos = batch.step(obs[OBS_STATE] + 1.0)
        assert done.tolist() == [True, False]
        assert infos[0]["is_success"] and not infos[1].get("is_success", False)
        assert float(obs[OBS_STATE][0, 0]) == 2 + 5  # the final state, not the reset one
        assert int(obs[FRONT][0, 0, 0, 0]) == 20  # seed 2's camera, not a new episode's
    finally:
        batch.close()


class SlowFakeSO101(FakeSO101):
    """A step that takes long enough to kill a worker in the middle of it."""

    def step(self, action):
        time.sleep(0.5)
        return super().step(action)


@pytest.mark.slow  # spawns 2 env processes
@pytest.mark.parametrize("dead", [0, 1])
@pytest.mark.parametrize("when", ["between steps", "mid-step"])
def test_a_dead_sim_process_is_an_error_not_a_hang(dead: int, when: str) -> None:
    """What the OOM killer does to one env worker in the middle of an evaluation."""
    from robotrain.evaluation.rollout import _EnvBatch

    env = gym.vector.AsyncVectorEnv([SlowFakeSO101, SlowFakeSO101], context="spawn")
    batch = _EnvBatch(env, vector=True)
    obs = batch.reset([2, 3])
    killer = threading.Timer(0.2 if when == "mid-step" else 0.0, env.processes[dead].kill)
    killer.start()
    if when == "between steps":
        killer.join()
        env.processes[dead].join(timeout=30)
    with pytest.raises(SimulationError, match="simulation process died"):
        batch.step(obs[OBS_STATE] + 1.0)
    time.sleep(1.0)  # the live worker has answered by now: gymnasium's close() would wait forever
    closer = threading.Thread(target=batch.close, daemon=True)
    closer.start()
    closer.join(timeout=30)
    assert not closer.is_alive(), "close() hung"
    assert not any(p.is_alive() for p in env.processes)


def test_expert_replay_succeeds_in_the_real_sim(tmp_path: Path) -> None:
    """Integration with the sim: replaying the scripted expert's actions open-loop on the
    same seeds must succeed, and evaluate_in_sim must see it (physics only, no images)."""
    expert = pytest.importorskip("robotrain.sim.expert")
    from robotrain.sim.env import SO101PickPlaceEnv

    seeds = [0, 1]
    env = SO101PickPlaceEnv(render=False)
    try:
        plans = {s: expert.run_episode(env, s) for s in seeds}
    finally:
        env.close()
    if not all(p["success"] for p in plans.values()):
        pytest.skip("the expert itself failed one of these seeds")

    class Replay(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.episode, self.t = -1, 0

        def reset(self) -> None:
            self.episode, self.t = self.episode + 1, 0

        def select_action(self, batch) -> torch.Tensor:
            actions = plans[seeds[self.episode]]["action"]
            a = actions[min(self.t, len(actions) - 1)]
            self.t += 1
            return torch.as_tensor(a)[None]

    info = evaluate_in_sim(Replay(), len(seeds), seed=0, n_envs=1, out_dir=tmp_path, progress=False,
                           env_kwargs={"render": False})
    assert [e["success"] for e in info["per_episode"]] == [True, True]
    for e in info["per_episode"]:
        assert 0 < e["time_to_success_s"] <= 10.0 and e["steps"] <= 300
        assert e["cube_lifted"] and len(e["grasp_offset_mm"]) == 3 and abs(e["grasp_offset_mm"][1]) < 3.0
        assert abs(e["grasp_yaw_error_deg"]) < 3.0  # the expert closes (nearly) square on the cube
    assert info["aggregated"]["n_cube_lifted"] == 2
    assert len(info["aggregated"]["median_abs_grasp_offset_mm"]) == 3
    assert info["aggregated"]["median_abs_grasp_yaw_error_deg"] < 3.0


def test_evaluate_checkpoint_writes_where_report_looks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from robotrain.checkpoints import store
    from robotrain.evaluation.rollout import default_eval_dir, evaluate_checkpoint_in_sim
    from robotrain.reports.runs import load_run

    loaded = []
    monkeypatch.setattr(store, "load_policy",
                        lambda path, device="cpu", overrides=None: loaded.append((Path(path), device)) or FakePolicy())
    run = tmp_path / "run"
    pretrained = run / "checkpoints" / "000100" / "pretrained_model"
    pretrained.mkdir(parents=True)
    (pretrained / "config.json").write_text('{"type": "fake"}')
    (pretrained / "model.safetensors").write_bytes(b"weights")
    (run / "checkpoints" / "last").symlink_to("000100")
    assert default_eval_dir(run / "checkpoints" / "last") == run / "eval" / "000100"
    evaluate_checkpoint_in_sim(run / "checkpoints" / "last", 2, n_envs=1, env_id=FAKE_ID, progress=False)
    assert loaded[0][0] == pretrained.resolve()
    assert (run / "eval" / "000100" / "eval_info.json").is_file()
    assert len(load_run(run / "eval").sim_evals) == 1


def test_wrong_action_shape_is_a_clear_error(tmp_path: Path) -> None:
    from robotrain.errors import SimulationError

    class Chunky(FakePolicy):
        def select_action(self, batch):
            return super().select_action(batch)[:, None].repeat(1, 5, 1)  # (B, chunk, 6)

    with pytest.raises(SimulationError, match=r"must return \(1, action_dim\).*\(1, 5, 6\)"):
        evaluate_in_sim(Chunky(), 1, n_envs=1, env_id=FAKE_ID, progress=False)


def test_tiny_act_runs_closed_loop(tmp_path: Path) -> None:
    """The real ACT policy (tiny config) through evaluate_in_sim: batch keys, resize, queue."""
    try:
        from robotrain.policies import get_policy_class
        cls = get_policy_class("act")
    except Exception as exc:  # noqa: BLE001 - ACT not merged into this checkout yet
        pytest.skip(f"ACT unavailable: {exc}")
    from robotrain.policies.base import PolicyFeatures

    cfg = cls.config_class(dim_model=32, n_heads=2, dim_feedforward=64, n_encoder_layers=1,
                           n_vae_encoder_layers=1, chunk_size=5, n_action_steps=5, image_size=(32, 32))
    feats = PolicyFeatures(state_dim=6, action_dim=6, camera_keys=(FRONT, WRIST), image_shape=(3, 32, 32))

    def st(shape: tuple[int, ...]) -> dict[str, np.ndarray]:
        return {"mean": np.zeros(shape, np.float32), "std": np.ones(shape, np.float32),
                "min": np.zeros(shape, np.float32), "max": np.ones(shape, np.float32)}

    stats = {OBS_STATE: st((6,)), "action": st((6,)), FRONT: st((3, 1, 1)), WRIST: st((3, 1, 1))}
    policy = cls(cfg, feats, stats)
    info = evaluate_in_sim(policy, 2, seed=1, n_envs=1, env_id=FAKE_ID, out_dir=tmp_path, progress=False,
                           max_steps=8)
    assert [e["steps"] for e in info["per_episode"]] == [8, 5]  # seed 1 times out (cut at 8), seed 2 succeeds at 5
