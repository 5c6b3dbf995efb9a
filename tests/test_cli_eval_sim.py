"""`robotrain eval --sim` and `robotrain dataset preview` wired end to end (tiny sizes)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from robotrain.checkpoints.store import save_pretrained
from robotrain.constants import ACTION, OBS_STATE
from robotrain.policies.act.config import ACTConfig
from robotrain.policies.act.model import ACTPolicy
from robotrain.policies.base import PolicyFeatures

CAMS = ("observation.images.front", "observation.images.wrist")


def _tiny_checkpoint(root: Path) -> Path:
    """A run-shaped checkpoint (`<run>/checkpoints/000010/pretrained_model`) of a tiny ACT."""
    cfg = ACTConfig(dim_model=16, n_heads=2, dim_feedforward=32, n_encoder_layers=1, n_decoder_layers=1,
                    n_vae_encoder_layers=1, latent_dim=4, chunk_size=4, n_action_steps=4, image_size=(32, 32))
    feats = PolicyFeatures(state_dim=6, action_dim=6, camera_keys=CAMS, image_shape=(3, 32, 32))

    def st(shape: tuple[int, ...]) -> dict[str, np.ndarray]:
        return {"mean": np.zeros(shape, np.float32), "std": np.ones(shape, np.float32),
                "min": np.zeros(shape, np.float32), "max": np.ones(shape, np.float32)}

    stats = {OBS_STATE: st((6,)), ACTION: st((6,)), CAMS[0]: st((3, 1, 1)), CAMS[1]: st((3, 1, 1))}
    ckpt = root / "run" / "checkpoints" / "000010"
    (ckpt / "pretrained_model").mkdir(parents=True)
    save_pretrained(ckpt / "pretrained_model", ACTPolicy(cfg, feats, stats), stats)
    return ckpt


def test_eval_sim_cli_writes_eval_info_and_video(tmp_path: Path) -> None:
    pytest.importorskip("mujoco")
    ckpt = _tiny_checkpoint(tmp_path)
    out = tmp_path / "eval"
    res = run_cli("eval", "--checkpoint", str(ckpt), "--sim", "--episodes", "2", "--seed", "3", "--videos", "1",
                  "--max-steps", "4", "--n-envs", "1", "--out", str(out), "--no-progress", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    assert "95% Wilson CI" in res.stdout and "success 0/2" in res.stdout
    info = json.loads((out / "eval_info.json").read_text())
    assert info["aggregated"]["n_episodes"] == 2 and info["aggregated"]["seeds"] == [3, 4]
    assert [e["steps"] for e in info["per_episode"]] == [4, 4]
    assert (out / "videos" / "eval_episode_0.mp4").is_file() and (out / "videos" / "eval_episode_0.png").is_file()
    assert not (out / "videos" / "eval_episode_1.mp4").exists()
    # What was evaluated, and how: enough to tie the result to its weights and rerun it.
    weights = (ckpt / "pretrained_model" / "model.safetensors").read_bytes()
    assert info["policy"]["type"] == "act" and info["policy"]["step"] == 10
    assert info["policy"]["model_sha256"] == hashlib.sha256(weights).hexdigest()
    assert info["settings"]["seed"] == 3 and info["settings"]["max_steps"] == 4
    assert info["settings"]["env_kwargs"] == {"image_size": [32, 32]} and info["policy_overrides"] == {}
    assert info["software"]["torch"] and info["software"]["mujoco"] and "cpu_native_bf16" in info["software"]


def test_eval_of_last_is_filed_under_the_step_it_resolved_to(tmp_path: Path, monkeypatch) -> None:
    """`last` is resolved once, at the start: moving it while the evaluation runs (a
    training run saving a new step) changes neither the weights nor where the result goes."""
    pytest.importorskip("mujoco")
    import shutil

    from robotrain.checkpoints import store
    from robotrain.evaluation.rollout import evaluate_checkpoint_in_sim

    ckpt = _tiny_checkpoint(tmp_path)
    last = ckpt.parent / "last"
    last.symlink_to(ckpt.name)
    real_load = store.load_policy

    def trainer_saves_step_20_meanwhile(path, **kwargs):
        shutil.copytree(ckpt, ckpt.parent / "000020")
        last.unlink()
        last.symlink_to("000020")
        return real_load(path, **kwargs)

    monkeypatch.setattr(store, "load_policy", trainer_saves_step_20_meanwhile)
    info = evaluate_checkpoint_in_sim(last, 1, n_envs=1, max_steps=2, device="cpu", progress=False)
    assert info["policy"]["step"] == 10 and info["policy"]["checkpoint"].endswith("000010/pretrained_model")
    assert (tmp_path / "run" / "eval" / "000010" / "eval_info.json").is_file()
    assert not (tmp_path / "run" / "eval" / "000020").exists()


def test_eval_sim_default_out_is_the_runs_eval_dir(tmp_path: Path) -> None:
    pytest.importorskip("mujoco")
    ckpt = _tiny_checkpoint(tmp_path)
    res = run_cli("eval", "--checkpoint", str(ckpt), "--sim", "--n-episodes", "1", "--max-steps", "2",
                  "--n-envs", "1", "--no-progress", "--device", "cpu", "--render-size", "48x64")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "run" / "eval" / "000010" / "eval_info.json").is_file()


def test_eval_sim_inference_overrides_get_their_own_dir(tmp_path: Path) -> None:
    """--policy.* inference settings (temporal ensembling here) apply to the rollout, are
    recorded in eval_info.json and land beside, not over, the plain evaluation."""
    pytest.importorskip("mujoco")
    ckpt = _tiny_checkpoint(tmp_path)
    res = run_cli("eval", "--checkpoint", str(ckpt), "--sim", "--n-episodes", "1", "--max-steps", "3",
                  "--n-envs", "1", "--no-progress", "--device", "cpu", "--render-size", "48x64",
                  "--policy.n_action_steps", "1", "--policy.temporal_ensemble_coeff", "0.01")
    assert res.returncode == 0, res.stderr
    out = tmp_path / "run" / "eval" / "000010_n_action_steps=1_temporal_ensemble_coeff=0.01"
    info = json.loads((out / "eval_info.json").read_text())
    assert info["policy_overrides"] == {"n_action_steps": 1, "temporal_ensemble_coeff": 0.01}
    assert not (tmp_path / "run" / "eval" / "000010").exists()


def test_load_policy_overrides(tmp_path: Path) -> None:
    from robotrain.checkpoints.store import load_policy
    from robotrain.errors import ConfigError

    pretrained = _tiny_checkpoint(tmp_path) / "pretrained_model"
    assert load_policy(pretrained).config.n_action_steps == 4
    policy = load_policy(pretrained, overrides={"n_action_steps": 1, "temporal_ensemble_coeff": 0.01})
    assert policy.config.n_action_steps == 1 and policy.config.temporal_ensemble_coeff == 0.01
    with pytest.raises(ConfigError, match="unknown act policy setting"):
        load_policy(pretrained, overrides={"n_action_stepz": 1})
    with pytest.raises(ConfigError, match="n_action_steps must be 1"):
        load_policy(pretrained, overrides={"temporal_ensemble_coeff": 0.01})


@pytest.mark.parametrize("flags,message", [
    (["--episodes", "1", "2"], "one number of episodes"),
    (["--episodes", "0"], "must be >= 1"),
    (["--videos", "-1"], "--videos must be >= 0"),
    (["--render-size", "big"], "--render-size: expected HxW"),
    (["--episodes", "2", "--n-episodes", "2"], "once"),
    (["--policy.temporal_ensemble_coeff", "0.01"], "n_action_steps must be 1"),
    (["--policy.n_action_steps", "x"], "invalid int value"),
])
def test_eval_sim_bad_flags_one_line(tmp_path: Path, flags: list[str], message: str) -> None:
    ckpt = _tiny_checkpoint(tmp_path)
    res = run_cli("eval", "--checkpoint", str(ckpt), "--sim", *flags)
    assert res.returncode != 0
    assert message in res.stderr and "Traceback" not in res.stderr


def test_eval_sim_missing_checkpoint(tmp_path: Path) -> None:
    res = run_cli("eval", "--checkpoint", str(tmp_path / "nope"), "--sim", "--episodes", "1")
    assert res.returncode != 0 and "checkpoint directory not found" in res.stderr and "Traceback" not in res.stderr


def test_dataset_preview_cli(lerobot_fixtures: Path, tmp_path: Path) -> None:
    res = run_cli("dataset", "preview", str(lerobot_fixtures / "so101_fixture_v30"), "--episode", "0",
                  "--out", str(tmp_path / "p"), "--frames", "3")
    assert res.returncode == 0, res.stderr
    pngs = sorted(p.name for p in (tmp_path / "p").glob("*.png"))
    assert pngs == ["episode_000000_frames.png", "episode_000000_trajectories.png"]


def test_dataset_preview_cli_unknown_episode(lerobot_fixtures: Path, tmp_path: Path) -> None:
    res = run_cli("dataset", "preview", str(lerobot_fixtures / "so101_fixture_v30"), "--episode", "99",
                  "--out", str(tmp_path / "p"))
    assert res.returncode != 0 and "episode 99" in res.stderr and "Traceback" not in res.stderr
