"""Recipes: one TOML file, one command, record -> train -> evaluate -> report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

from robotrain.errors import ConfigError
from robotrain.recipes.recipe import builtin_recipes, load_recipe, with_overrides

TINY = """
description = "a tiny smoke recipe"
[record]
episodes = 2
height = 32
width = 32
max_steps = 60
only_successful = false
codec = "libx264"
[train]
preset = "act_sim_demo"
steps = 3
batch_size = 2
num_workers = 0
eval_freq = 0
save_freq = 0
log_freq = 1
image_size = [32, 32]
[train.policy]
dim_model = 32
n_heads = 2
dim_feedforward = 64
n_encoder_layers = 1
n_decoder_layers = 1
n_vae_encoder_layers = 1
latent_dim = 8
chunk_size = 5
n_action_steps = 5
[eval]
episodes = 2
max_steps = 10
videos = 0
[eval.policy_overrides]
n_action_steps = 1
temporal_ensemble_coeff = 0.01
"""


def test_builtin_recipes_load_and_build_their_train_config(tmp_path: Path) -> None:
    names = builtin_recipes()
    assert {"act_sim", "smolvla_sim"} <= set(names)
    for name in names:
        recipe = load_recipe(name)
        assert recipe.description and recipe.eval.seed >= 10_000  # evaluated on unseen placements
        config = recipe.train_config(tmp_path / "ds", tmp_path / "run", resume=False)
        assert config.steps >= 1 and config.policy is not None


def test_seed_and_steps_overrides_keep_a_spanning_schedule() -> None:
    recipe = with_overrides(load_recipe("smolvla_sim"), seed=2000, steps=50)
    assert recipe.train["seed"] == 2000 and recipe.train["steps"] == 50
    assert recipe.train["policy"]["scheduler_decay_steps"] == 50


@pytest.mark.parametrize(("text", "message"), [
    ("[record]\n[train]\n[eval]\n[extra]\n", "unknown recipe section"),
    ("[record]\nepisodez = 3\n[train]\n[eval]\n", "episodez"),
    ("[record]\n[train]\n", r"needs a \[eval\] table"),
    ("[record]\n[train]\n[eval]\nepisodes = 0\n", "episodes must be >= 1"),
    ("[record\n", "not valid TOML"),
])
def test_bad_recipes_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_recipe(path)
    with pytest.raises(ConfigError, match="no recipe file"):
        load_recipe(tmp_path / "missing.toml")


def test_recipe_runs_end_to_end_then_reuses_every_stage(tmp_path: Path) -> None:
    pytest.importorskip("mujoco")
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY)
    out = tmp_path / "out"
    res = run_cli("recipe", "run", str(recipe), "--out", str(out), "--workers", "1", "--no-progress", timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((out / "recipe_summary.json").read_text())
    info = json.loads(Path(summary["eval_info"]).read_text())
    assert info["aggregated"]["n_episodes"] == 2 and info["aggregated"]["seeds"][0] == 10_000
    assert info["policy"]["type"] == "act" and info["policy"]["step"] == 3
    assert info["policy_overrides"] == {"n_action_steps": 1, "temporal_ensemble_coeff": 0.01}
    assert info["recipe"] == str(recipe)
    assert (out / "report" / "report.md").is_file()
    again = run_cli("recipe", "run", str(recipe), "--out", str(out), "--workers", "1", "--no-progress", timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    for stage in ("reusing dataset", "reusing trained run", "reusing evaluation"):
        assert stage in again.stdout
    # Another policy run on the same data: --dataset skips recording.
    other = run_cli("recipe", "run", str(recipe), "--out", str(tmp_path / "other"), "--dataset", str(out / "dataset"),
                    "--seed", "7", "--workers", "1", "--no-progress", timeout=300)
    assert other.returncode == 0, other.stderr[-3000:]
    assert not (tmp_path / "other" / "dataset").exists()
    assert json.loads((tmp_path / "other" / "train" / "config.json").read_text())["seed"] == 7
