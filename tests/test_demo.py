"""`robotrain demo --quick` end to end (tiny sizes) and its reuse of finished stages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

from robotrain.training.presets import PRESETS, preset_act_sim_demo
from robotrain.recipes.demo import DemoConfig, train_config
from robotrain.errors import ConfigError


def test_quick_demo_end_to_end_then_reused(tmp_path: Path) -> None:
    pytest.importorskip("mujoco")
    out = tmp_path / "demo"
    res = run_cli("demo", "--quick", "--out", str(out), "--no-progress", timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "[4/4] report" in res.stdout and "95% Wilson CI" in res.stdout
    assert (out / "dataset" / "meta" / "info.json").is_file()
    assert (out / "train" / "checkpoints" / "last" / "pretrained_model" / "model.safetensors").is_file()
    evals = list((out / "train" / "eval").glob("*/eval_info.json"))
    assert len(evals) == 1
    info = json.loads(evals[0].read_text())
    assert info["aggregated"]["n_episodes"] == 2 and info["aggregated"]["seeds"][0] == 10_000
    assert len(list((out / "train" / "eval").glob("*/videos/*.mp4"))) == 1
    report = (out / "report" / "report.md").read_text()
    assert "Sim" in report or "success" in report.lower()
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["aggregated"]["n_episodes"] == 2

    again = run_cli("demo", "--quick", "--out", str(out), "--no-progress", timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    for stage in ("reusing dataset", "reusing trained run", "reusing evaluation"):
        assert stage in again.stdout


def test_demo_preset_is_registered_and_valid(tmp_path: Path) -> None:
    assert PRESETS["act_sim_demo"] is preset_act_sim_demo
    cfg = DemoConfig(out=str(tmp_path))
    tc = train_config(cfg, tmp_path, tmp_path / "train", resume=False)
    assert tc.policy.image_size == (96, 128) and tc.steps == cfg.steps
    assert tc.policy.optimizer_lr == preset_act_sim_demo()["policy"]["optimizer_lr"]


@pytest.mark.parametrize("flags,message", [
    (["--steps", "0"], "--steps must be >= 1"),
    (["--eval-episodes", "0"], "--eval-episodes must be >= 1"),
    (["--episodes", "1"], "--episodes must be >= 2"),
])
def test_demo_bad_flags(tmp_path: Path, flags: list[str], message: str) -> None:
    res = run_cli("demo", "--quick", "--out", str(tmp_path / "d"), *flags)
    assert res.returncode != 0 and message in res.stderr and "Traceback" not in res.stderr


def test_demo_config_validation() -> None:
    with pytest.raises(ConfigError, match="--videos"):
        DemoConfig(videos=-1).validate()
