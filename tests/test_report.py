from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from robotrain.errors import RobotrainError
from robotrain.reports.report import matched_grid, write_report
from robotrain.reports.runs import load_eval_info, load_run, parse_big_number, parse_lerobot_log

from conftest import run_cli


def make_run(root: Path, name: str, policy: str, batch: int, components: list[str], n_steps: int = 20,
             eval_every: int = 5, successes: list[bool] | None = None) -> Path:
    run = root / name
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"batch_size": batch, "device": "cpu", "policy": {"type": policy}}))
    lines = []
    for step in range(1, n_steps + 1):
        rec = {"step": step, "samples": step * batch, "epoch": step / 100, "train/loss": 5.0 / step,
               "train/grad_norm": 10.0 / math.sqrt(step), "train/lr": 1e-4 * min(1.0, step / 5),
               "train/updt_s": 0.2, "train/data_s": 0.01, "train/samples_per_s": batch / 0.21,
               "train/peak_mem_mb": 1000.0 + step, "time": 1000.0 + step}
        for c in components:
            rec[f"train/{c}"] = 2.0 / step
        lines.append(json.dumps(rec))
        if step % eval_every == 0:
            lines.append(json.dumps({"step": step, "samples": step * batch, "eval/action_error": 10.0 / step,
                                     "eval/first_action_error": 5.0 / step,
                                     "eval/action_error_per_joint": [1.0 / step] * 6}))
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    if successes is not None:
        (run / "eval").mkdir()
        per = [{"episode_ix": i, "sum_reward": float(s), "max_reward": float(s), "success": s, "seed": 100 + i,
                "steps": 300} for i, s in enumerate(successes)]
        agg = {"avg_sum_reward": sum(successes) / len(successes), "avg_max_reward": 0.5,
               "pc_success": 100 * sum(successes) / len(successes), "n_episodes": len(successes),
               "eval_s": 1.0, "eval_ep_s": 0.1, "pc_success_ci95": [0.0, 1.0]}
        (run / "eval" / "eval_info.json").write_text(json.dumps({"per_episode": per, "aggregated": agg}))
    return run


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    a = make_run(tmp_path, "act", "act", 8, ["l1_loss", "kld_loss"], successes=[True] * 8 + [False] * 2)
    b = make_run(tmp_path, "smolvla", "smolvla", 4, ["flow_mse"], n_steps=40,
                 successes=[True] * 5 + [False] * 5)
    return a, b


def test_report_from_two_runs(two_runs: tuple[Path, Path], tmp_path: Path, lerobot_fixtures: Path) -> None:
    out = tmp_path / "rep"
    res = write_report([*two_runs, lerobot_fixtures / "lerobot_train_log.txt"], out)
    md = res.markdown.read_text()
    for heading in ("## Throughput", "## Training curves", "## Sample efficiency", "## Success in simulation"):
        assert heading in md
    # throughput row per run, with device and batch size
    assert "| act | robotrain | act | cpu | 8 |" in md
    assert "| lerobot_train_log | lerobot |" in md
    # every plot referenced exists and is a PNG
    names = {"train_loss.png", "train_l1_loss.png", "train_kld_loss.png", "train_flow_mse.png",
             "train_grad_norm.png", "train_lr.png", "sample_efficiency.png", "success.png"}
    assert names <= {p.name for p in res.plots}
    for name in names:
        assert f"]({name})" in md
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # losses are different quantities: the report says so
    assert "different quantities" in md
    # success table with Wilson interval (8/10 -> [49.0, 94.3])
    assert "[49.0, 94.3]" in md and "[23.7, 76.3]" in md
    # same seeds -> paired comparison: only A = 3, only B = 0
    assert "| act: eval/eval_info.json | smolvla: eval/eval_info.json | 10 | 5 | 3 | 0 | 2 |" in md


def test_matched_grid_interpolates_inside_overlap(two_runs: tuple[Path, Path]) -> None:
    runs = [load_run(p) for p in two_runs]
    grid = matched_grid(runs)
    # act evaluated at 40..160 samples, smolvla at 20..160: overlap 40..160
    assert grid[0] == 40 and grid[-1] == 160
    from robotrain.reports.report import interp_at

    # smolvla at 40 samples = step 10 -> 1.0 exactly; act at 40 samples = step 5 -> 2.0
    assert interp_at(runs[1], "eval/action_error", grid)[0] == pytest.approx(1.0)
    assert interp_at(runs[0], "eval/action_error", grid)[0] == pytest.approx(2.0)
    # act at 60 samples lies between its evals at 40 (2.0) and 80 (1.0)
    assert interp_at(runs[0], "eval/action_error", [60.0])[0] == pytest.approx(1.5)


def test_parse_lerobot_log_fixture(lerobot_fixtures: Path) -> None:
    recs, facts = parse_lerobot_log(lerobot_fixtures / "lerobot_train_log.txt")
    assert facts["batch_size"] == 4
    assert [r["step"] for r in recs] == [1, 2, 3, 4]
    assert recs[0]["samples"] == 4
    assert recs[0]["train/loss"] == pytest.approx(61.499)
    assert recs[1]["train/grad_norm"] == pytest.approx(304.465)
    assert recs[2]["train/lr"] == pytest.approx(1e-5)
    assert recs[3]["train/updt_s"] == pytest.approx(0.225)
    assert recs[3]["train/data_s"] == pytest.approx(0.025)
    assert recs[3]["train/samples_per_s"] == pytest.approx(4 / 0.25)


def test_lerobot_big_numbers_are_rebuilt(tmp_path: Path) -> None:
    assert parse_big_number("1K") == (1000.0, 1000.0)
    assert parse_big_number("12") == (12.0, 1.0)
    assert parse_big_number("2.5M")[0] == 2.5e6
    steps = [200, 400, 600, 800, 1000, 1200, 1400, 1600]
    shown = ["200", "400", "600", "800", "1K", "1K", "1K", "2K"]
    log = tmp_path / "train.log"
    log.write_text("".join(
        f"INFO x.py:1 step:{s} smpl:{s} ep:0 epch:0.1 loss:1.0 grdn:1.0 lr:1.0e-04 updt_s:0.1 data_s:0.0\n"
        for s in shown))
    recs, _ = parse_lerobot_log(log)
    assert [r["step"] for r in recs] == steps
    # no batch size known -> samples rebuilt from smpl the same way
    assert [r["samples"] for r in recs] == steps


def test_lerobot_dir_with_log_and_checkpoint(tmp_path: Path, lerobot_fixtures: Path) -> None:
    run = tmp_path / "lerobot_run"
    (run / "checkpoints" / "000004").mkdir(parents=True)
    shutil.copytree(lerobot_fixtures / "lerobot_act_checkpoint" / "pretrained_model",
                    run / "checkpoints" / "000004" / "pretrained_model")
    shutil.copy(lerobot_fixtures / "lerobot_train_log.txt", run / "train.log")
    loaded = load_run(run)
    assert (loaded.source, loaded.policy, loaded.device, loaded.batch_size) == ("lerobot", "act", "cpu", 4)
    assert len(loaded.train) == 4


def test_cli_report(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    out = run_cli("report", *map(str, two_runs), "--out", str(tmp_path / "r"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "r" / "report.md").is_file()


# ------------------------------------------------------------------ bad inputs
def _one_line_error(args: list[str]) -> str:
    out = run_cli("report", *args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("robotrain: error: "), out.stderr
    return lines[0]


def test_cli_missing_run(tmp_path: Path) -> None:
    msg = _one_line_error([str(tmp_path / "nope"), "--out", str(tmp_path / "r")])
    assert "nope" in msg and "does not exist" in msg


def test_bad_inputs_name_the_file(tmp_path: Path, two_runs: tuple[Path, Path]) -> None:
    act, _ = two_runs
    # malformed line in the middle of metrics.jsonl
    lines = (act / "metrics.jsonl").read_text().splitlines()
    lines.insert(3, "{not json")
    (act / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(RobotrainError, match=r"metrics.jsonl: line 4"):
        load_run(act)
    # a truncated LAST line (killed run) is tolerated
    (act / "metrics.jsonl").write_text("\n".join(lines[:3] + lines[4:]) + '\n{"step": 21, "train/lo')
    assert len(load_run(act).train) == 20

    bad_cfg = make_run(tmp_path, "badcfg", "act", 8, [])
    (bad_cfg / "config.json").write_text("{")
    with pytest.raises(RobotrainError, match="config.json: not valid JSON"):
        load_run(bad_cfg)
    (bad_cfg / "config.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(RobotrainError, match="config.json: not UTF-8 text"):
        load_run(bad_cfg)
    (bad_cfg / "config.json").write_text("{}")
    (bad_cfg / "metrics.jsonl").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(RobotrainError, match="metrics.jsonl: not UTF-8 text"):
        load_run(bad_cfg)

    (bad_cfg / "metrics.jsonl").write_text('{"step": "five", "train/loss": 1.0}\n{"step": 6, "train/loss": 1.0}\n')
    with pytest.raises(RobotrainError, match=r"metrics.jsonl: line 1: 'step' must be a number, got 'five'"):
        load_run(bad_cfg)
    (bad_cfg / "metrics.jsonl").write_text('{"step": 5, "train/loss": null}\n{"step": 6, "train/loss": 1.0}\n')
    with pytest.raises(RobotrainError, match=r"line 1: 'train/loss' must be a number, got None"):
        load_run(bad_cfg)

    maybe = make_run(tmp_path, "maybe", "act", 8, [], successes=[True, False])
    info = json.loads((maybe / "eval" / "eval_info.json").read_text())
    info["per_episode"][1]["success"] = "maybe"
    (maybe / "eval" / "eval_info.json").write_text(json.dumps(info))
    with pytest.raises(RobotrainError, match=r"per_episode\[1\].success must be true or false, got 'maybe'"):
        load_run(maybe)

    bad_eval = make_run(tmp_path, "badeval", "act", 8, [], successes=[True])
    (bad_eval / "eval" / "eval_info.json").write_text(json.dumps({"aggregated": {}}))
    with pytest.raises(RobotrainError, match="eval_info.json: no 'per_episode'"):
        load_run(bad_eval)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RobotrainError, match="empty: not a run"):
        load_run(empty)

    not_a_log = tmp_path / "notes.txt"
    not_a_log.write_text("hello\n")
    msg = _one_line_error([str(not_a_log), "--out", str(tmp_path / "r")])
    assert "notes.txt" in msg and "no LeRobot training lines" in msg


def test_eval_info_lerobot_overall_shape(tmp_path: Path) -> None:
    p = tmp_path / "eval_info.json"
    p.write_text(json.dumps({"overall": {"pc_success": 30.0, "n_episodes": 10, "avg_sum_reward": 2.0}}))
    ev = load_eval_info(p)
    assert (ev.successes, ev.n_episodes) == (3, 10)
    assert ev.ci95 == pytest.approx((0.108, 0.603), abs=1e-3)


def test_eval_only_and_direct_paths(tmp_path: Path, two_runs: tuple[Path, Path]) -> None:
    act, _ = two_runs
    assert load_run(act / "metrics.jsonl").label == "act"
    ev = load_run(act / "eval" / "eval_info.json")
    assert ev.source == "eval-only" and ev.sim_evals[0].successes == 8
    only = load_run(act / "eval")
    assert only.source == "eval-only" and len(only.sim_evals) == 1


def test_non_overlapping_eval_ranges(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", "act", 8, [], n_steps=10, eval_every=5)  # evals at 40, 80 samples
    b = make_run(tmp_path, "b", "act", 100, [], n_steps=10, eval_every=5)  # evals at 500, 1000
    res = write_report([a, b], tmp_path / "out")
    assert "do not overlap" in res.markdown.read_text()


def test_resolved_device_and_global_batch_from_checkpoint(tmp_path: Path) -> None:
    run = make_run(tmp_path, "ddp", "act", 8, [])
    cfg = json.loads((run / "config.json").read_text())
    cfg["device"] = "auto"
    (run / "config.json").write_text(json.dumps(cfg))
    pm = run / "checkpoints" / "000020" / "pretrained_model"
    pm.mkdir(parents=True)
    (pm / "train_config.json").write_text(json.dumps({"batch_size": 8, "policy": {"type": "act", "device": "cuda"},
                                                      "robotrain": {"world_size": 2}}))
    loaded = load_run(run)
    assert (loaded.device, loaded.batch_size) == ("cuda", 16)


def test_eval_info_lerobot_04_per_task(tmp_path: Path) -> None:
    p = tmp_path / "eval_info.json"
    p.write_text(json.dumps({
        "per_task": [{"task_group": "so101", "task_id": 0,
                      "metrics": {"sum_rewards": [1, 0, 1], "max_rewards": [1, 0, 1],
                                  "successes": [True, False, True]}}],
        "per_group": {}, "overall": {"pc_success": 66.7, "n_episodes": 3, "avg_sum_reward": 0.67}}))
    ev = load_eval_info(p)
    assert (ev.successes, ev.n_episodes, ev.per_episode_success) == (2, 3, [True, False, True])


def test_fine_tuned_run_names_its_starting_checkpoint(tmp_path: Path, two_runs: tuple[Path, Path]) -> None:
    act, smolvla = two_runs
    cfg = json.loads((act / "config.json").read_text())
    cfg["init_from"] = "/runs/parent/checkpoints/012000"
    (act / "config.json").write_text(json.dumps(cfg))
    assert load_run(act).init_from == "/runs/parent/checkpoints/012000" and load_run(smolvla).init_from is None
    md = write_report([act, smolvla], tmp_path / "rep").markdown.read_text()
    assert "| /runs/parent/checkpoints/012000 |" in md and "| random init |" in md
    assert "counts its samples from its own start" in md


def test_grasp_diagnostics_reach_the_success_table(tmp_path: Path, two_runs: tuple[Path, Path]) -> None:
    act, smolvla = two_runs
    path = act / "eval" / "eval_info.json"
    info = json.loads(path.read_text())
    info["aggregated"].update(n_cube_lifted=9, median_abs_grasp_offset_mm=[1.0, 3.25, 4.0],
                              median_abs_grasp_yaw_error_deg=4.72)
    path.write_text(json.dumps(info))
    ev = load_eval_info(path)
    assert ev.n_cube_lifted == 9 and ev.median_abs_grasp_offset_across_mm == 3.25
    assert ev.median_abs_grasp_yaw_error_deg == 4.72
    md = write_report([act, smolvla], tmp_path / "rep").markdown.read_text()
    assert "| cube lifted | median grasp offset across jaws (mm) | median jaw yaw error (deg) |" in md
    act_row = next(line for line in md.splitlines() if line.startswith("| act | eval/eval_info.json"))
    smolvla_row = next(line for line in md.splitlines() if line.startswith("| smolvla | eval/eval_info.json"))
    assert act_row.endswith("| 9 | 3.25 | 4.7 |") and smolvla_row.endswith("| — | — | — |")
