"""Read finished (or running) training runs for reports: ours and LeRobot's.

Three kinds of input become one `RunData`, so a report can put a LeRobot run beside ours:

- a robotrain run directory: `metrics.jsonl` (one JSON object per line, written by
  train.py), `config.json` (resolved train config), any `eval_info.json` below it;
- a LeRobot console log (a file, or a `*.log` / `*.txt` file directly inside a directory)
  with lines `step:1K smpl:8K ep:20 epch:0.50 loss:0.123 grdn:4.5 lr:1.0e-05 updt_s:0.2
  data_s:0.01`, plus, in a directory, LeRobot's `checkpoints/*/pretrained_model/
  train_config.json` for batch size, device and policy type;
- a directory holding only `eval_info.json` files (e.g. the output of `robotrain eval --sim`
  or `lerobot-eval`).

Simulation results are every `eval_info.json` found anywhere below a run directory
(e.g. `RUN/eval/eval_info.json`, `RUN/eval/step_020000/eval_info.json`).

Records are normalised to our metric names (`train/loss`, `train/grad_norm`, ...), so
report.py never needs to know where a run came from.

Example:
    python -c "from robotrain.reports.runs import load_run; print(load_run('outputs/act'))"
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robotrain.constants import (
    CONFIG_JSON,
    EVAL_ACTION_ERROR,
    EVAL_INFO_JSON,
    METRICS_JSONL,
    ROBOTRAIN_CONFIG_JSON,
    ROBOTRAIN_SECTION,
    TRAIN_CONFIG_JSON,
    TRAIN_DATA_S,
    TRAIN_GRAD_NORM,
    TRAIN_LOSS,
    TRAIN_LR,
    TRAIN_PEAK_MEM_MB,
    TRAIN_SAMPLES_PER_S,
    TRAIN_UPDT_S,
)
from robotrain.errors import RobotrainError
from robotrain.system.files import read_json, read_utf8
from robotrain.evaluation.statistics import wilson_interval

logger = logging.getLogger(__name__)

# Keys of a training line that are not loss terms.
NON_LOSS_TRAIN_KEYS = frozenset(
    {
        TRAIN_GRAD_NORM,
        TRAIN_LR,
        TRAIN_UPDT_S,
        TRAIN_DATA_S,
        TRAIN_SAMPLES_PER_S,
        TRAIN_PEAK_MEM_MB,
    }
)
LEROBOT_LOG_SUFFIXES = (".log", ".txt")
_BIG_NUMBER_SUFFIXES = {"": 1.0, "K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12, "Q": 1e15}
_BIG_NUMBER_RE = re.compile(r"^(-?[0-9.]+(?:e[-+]?\d+)?)([KMBTQ]?)$")
_LOG_TOKEN_RE = re.compile(r"(\w+):(\S+)")


@dataclass
class SimEval:
    """One closed-loop evaluation (an `eval_info.json`)."""

    path: Path
    n_episodes: int
    successes: int
    ci95: tuple[float, float]
    avg_sum_reward: float | None = None
    avg_max_reward: float | None = None
    seeds: list[int | None] = field(default_factory=list)
    per_episode_success: list[bool] = field(default_factory=list)
    mean_time_to_success_s: float | None = None
    n_cube_lifted: int | None = None
    """Episodes that picked the cube up (our sim's grasp diagnostic; None for other envs)."""
    median_abs_grasp_offset_across_mm: float | None = None
    """Median distance of the cube's centre across the jaws' closing axis at the close
    command (our sim; a grasp fails beyond about 5 mm)."""
    median_abs_grasp_yaw_error_deg: float | None = None
    """Median angle between the jaws and the cube's nearest faces at the close command (our
    sim; the misses of policies that do not turn the wrist)."""

    @property
    def pc_success(self) -> float:
        return 100.0 * self.successes / self.n_episodes


@dataclass
class RunData:
    """Everything a report needs from one run, in our metric names."""

    label: str
    path: Path
    source: str
    """"robotrain", "lerobot" or "eval-only"."""
    policy: str | None = None
    device: str | None = None
    batch_size: int | None = None
    train: list[dict[str, float]] = field(default_factory=list)
    """Training lines: step, samples, train/loss, train/<component>, train/grad_norm, ..."""
    offline_evals: list[dict[str, Any]] = field(default_factory=list)
    """Offline-eval lines: step, samples, eval/action_error, eval/first_action_error, ..."""
    sim_evals: list[SimEval] = field(default_factory=list)
    init_from: str | None = None
    """The checkpoint a fine-tuning run started from (`--init-from`): its samples count
    from that start, so they exclude what the starting checkpoint was trained on."""


# --------------------------------------------------------------------------- helpers
def _as_success(value: Any, where: str, path: Path) -> bool:
    """An episode's outcome: true/false (or 0/1, as some writers store it). Anything else,
    "maybe" or null, would otherwise count by Python truthiness."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    raise RobotrainError(f"{where} must be true or false, got {value!r}", path)


def _find_key(obj: Any, names: tuple[str, ...]) -> Any:
    """First value under any of `names`, at the top level first, then nested (BFS).

    Train configs differ in nesting (`batch_size` vs `training.batch_size`,
    `policy.device` vs `device`); reports only need a few scalar fields from them.
    """
    queue = [obj]
    while queue:
        cur = queue.pop(0)
        if isinstance(cur, dict):
            for name in names:
                if name in cur and not isinstance(cur[name], (dict, list)):
                    return cur[name]
            queue.extend(v for v in cur.values() if isinstance(v, dict))
    return None


def _policy_type(config: dict[str, Any]) -> str | None:
    policy = config.get("policy")
    if isinstance(policy, str):
        return policy
    if isinstance(policy, dict):
        for key in ("type", "name"):
            if isinstance(policy.get(key), str):
                return policy[key]
    value = _find_key(config, ("policy_type", "policy_name"))
    return str(value) if value is not None else None


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    return None


def parse_big_number(text: str) -> tuple[float, float]:
    """Parse LeRobot's `format_big_number` output: "123" -> (123, 1), "12K" -> (12000, 1000).

    The second value is the unit of the printed digits: LeRobot prints 0 decimals, so
    "12K" means anything in [11500, 12500); a unit of 1 means the value is exact.
    """
    m = _BIG_NUMBER_RE.match(text.strip())
    if not m:
        raise ValueError(f"not a number: {text!r}")
    unit = _BIG_NUMBER_SUFFIXES[m.group(2)]
    return float(m.group(1)) * unit, unit


# --------------------------------------------------------------------- eval_info.json
def load_eval_info(path: Path) -> SimEval:
    """Parse an `eval_info.json`: ours / LeRobot <= 0.3 (`per_episode` + `aggregated`) or
    LeRobot >= 0.4 (`per_task[].metrics.successes` + `overall`)."""
    info = read_json(path, expect=dict)
    agg = info.get("aggregated") or info.get("overall") or {}
    if not isinstance(agg, dict):
        raise RobotrainError("'aggregated' must be an object", path)
    per_ep = info.get("per_episode")
    seeds: list[int | None] = []
    successes_list: list[bool] = []
    tts: list[float] = []
    if isinstance(per_ep, list) and per_ep:
        for i, ep in enumerate(per_ep):
            if not isinstance(ep, dict) or "success" not in ep:
                raise RobotrainError(f"per_episode[{i}] has no 'success' field", path)
            successes_list.append(_as_success(ep["success"], f"per_episode[{i}].success", path))
            seeds.append(ep.get("seed"))
            t = _as_float(ep.get("time_to_success_s"))
            if ep["success"] and t is not None:
                tts.append(t)
        n, k = len(successes_list), sum(successes_list)
    elif isinstance(info.get("per_task"), list) and info["per_task"]:
        # LeRobot >= 0.4: {"per_task": [{"task_group", "task_id", "metrics": {"successes": [...]}}]}
        for i, task in enumerate(info["per_task"]):
            metrics = task.get("metrics") if isinstance(task, dict) else None
            if not isinstance(metrics, dict) or not isinstance(metrics.get("successes"), list):
                raise RobotrainError(f"per_task[{i}] has no metrics.successes list", path)
            successes_list += [_as_success(x, f"per_task[{i}].metrics.successes[{j}]", path)
                               for j, x in enumerate(metrics["successes"])]
        if not successes_list:
            raise RobotrainError("per_task lists no episodes", path)
        n, k = len(successes_list), sum(successes_list)
    else:
        n_raw, pc = agg.get("n_episodes"), _as_float(agg.get("pc_success"))
        if not isinstance(n_raw, int) or n_raw < 1 or pc is None:
            raise RobotrainError(
                "no 'per_episode' list and no aggregated 'n_episodes' + 'pc_success'", path
            )
        n, k = n_raw, int(round(pc / 100.0 * n_raw))
    return SimEval(
        path=path,
        n_episodes=n,
        successes=k,
        ci95=wilson_interval(k, n),
        avg_sum_reward=_as_float(agg.get("avg_sum_reward")),
        avg_max_reward=_as_float(agg.get("avg_max_reward")),
        seeds=seeds,
        per_episode_success=successes_list,
        mean_time_to_success_s=(sum(tts) / len(tts)) if tts else None,
        n_cube_lifted=agg["n_cube_lifted"] if isinstance(agg.get("n_cube_lifted"), int) else None,
        median_abs_grasp_offset_across_mm=_grasp_offset_across(agg.get("median_abs_grasp_offset_mm")),
        median_abs_grasp_yaw_error_deg=_as_float(agg.get("median_abs_grasp_yaw_error_deg")),
    )


def _grasp_offset_across(value: Any) -> float | None:
    """The across-the-jaws component of `median_abs_grasp_offset_mm` (closing, across, vertical)."""
    if isinstance(value, list) and len(value) == 3:
        return _as_float(value[1])
    return None


def find_eval_infos(root: Path) -> list[SimEval]:
    """Every `eval_info.json` below `root` (sorted by path), parsed."""
    return [load_eval_info(p) for p in sorted(root.rglob(EVAL_INFO_JSON)) if p.is_file()]


# ------------------------------------------------------------------ robotrain runs
def load_metrics_jsonl(path: Path) -> tuple[list[dict[str, float]], list[dict[str, Any]]]:
    """Split `metrics.jsonl` into training lines and offline-eval lines.

    A malformed *last* line is skipped with a warning (a run killed mid-write); a
    malformed line anywhere else is an error.
    """
    try:
        lines = read_utf8(path).splitlines()
    except OSError as exc:
        raise RobotrainError(f"cannot read: {exc.strerror or exc}", path) from exc
    train: list[dict[str, float]] = []
    evals: list[dict[str, Any]] = []
    nonblank = [i for i, line in enumerate(lines) if line.strip()]
    for i in nonblank:
        try:
            rec = json.loads(lines[i])
            if not isinstance(rec, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            if i == nonblank[-1]:
                logger.warning("%s: skipping malformed last line %d (run interrupted?)", path, i + 1)
                continue
            raise RobotrainError(f"line {i + 1} is not a JSON object ({exc})", path) from exc
        if "step" not in rec:
            raise RobotrainError(f"line {i + 1} has no 'step'", path)
        for key in ("step", TRAIN_LOSS):
            if key in rec and (isinstance(rec[key], bool) or not isinstance(rec[key], (int, float))):
                raise RobotrainError(f"line {i + 1}: '{key}' must be a number, got {rec[key]!r}", path)
        if EVAL_ACTION_ERROR in rec:
            evals.append(rec)
        elif TRAIN_LOSS in rec:
            train.append({k: float(v) for k, v in rec.items() if _as_float(v) is not None})
    if not train:
        logger.warning("%s: no training lines (a run that has not logged yet?)", path)
    return train, evals


def _first_str(path: Path, key: str) -> str | None:
    """`key` of the first metrics line that has it as a string (e.g. a resolved device)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get(key), str):
                return rec[key]
    return None


def _fill_samples(records: list[dict[str, Any]], batch_size: int | None) -> None:
    for rec in records:
        if "samples" not in rec and batch_size:
            rec["samples"] = rec["step"] * batch_size


def load_robotrain_run(run_dir: Path, label: str) -> RunData:
    train, evals = load_metrics_jsonl(run_dir / METRICS_JSONL)
    config_path = run_dir / CONFIG_JSON
    config: dict[str, Any] = {}
    if config_path.is_file():
        config = read_json(config_path, expect=dict)
    else:
        logger.warning("%s: missing; batch size, device and policy are unknown", config_path)
    batch = _find_key(config, ("batch_size",))
    device = _find_key(config, ("device",))
    # train.py saves the requested device ("auto") and the per-process batch; the
    # checkpoint's train_config.json (or a metrics line) may hold the resolved values.
    ckpt_cfg = _lerobot_train_config(run_dir)
    ckpt_policy = ckpt_cfg.get("policy") if isinstance(ckpt_cfg.get("policy"), dict) else {}
    if device in (None, "auto"):
        device = ckpt_policy.get("device") or _first_str(run_dir / METRICS_JSONL, "device") or device
    ours = _robotrain_ckpt_config(run_dir) or ckpt_cfg.get(ROBOTRAIN_SECTION)  # older: inside train_config.json
    world = _find_key(ours, ("world_size",)) if isinstance(ours, dict) else None
    if isinstance(batch, (int, float)) and isinstance(world, int) and world > 1:
        batch = int(batch) * world  # the global batch: what one optimizer step sees
    run = RunData(
        label=label,
        path=run_dir,
        source="robotrain",
        policy=_policy_type(config),
        device=str(device) if device is not None else None,
        batch_size=int(batch) if isinstance(batch, (int, float)) else None,
        train=train,
        offline_evals=evals,
        sim_evals=find_eval_infos(run_dir),
        init_from=str(config["init_from"]) if config.get("init_from") else None,
    )
    _fill_samples(run.train, run.batch_size)
    _fill_samples(run.offline_evals, run.batch_size)
    return run


# -------------------------------------------------------------------- LeRobot runs
def _reconstruct(values: list[tuple[float, float]]) -> list[float]:
    """Undo `format_big_number` rounding ("1K" for 1000..1499) of a regular sequence.

    LeRobot logs every `log_freq` steps, so the exact early values (below 1000) give the
    stride; the rounded later ones are rebuilt from it when they agree with it.
    """
    raw = [v for v, _ in values]
    exact_idx = [i for i, (_, unit) in enumerate(values) if unit == 1.0]
    if len(exact_idx) < 2 or len(exact_idx) == len(values):
        return raw
    i0, i1 = exact_idx[0], exact_idx[1]
    stride = (raw[i1] - raw[i0]) / (i1 - i0)
    rebuilt = [raw[i0] + (i - i0) * stride for i in range(len(values))]
    for (v, unit), r in zip(values, rebuilt):
        # A rounded value "12K" means [11.5K, 12.5K]: check the rebuilt value lies there.
        if abs(r - v) > 0.5 * unit + 1e-9:
            logger.warning("LeRobot log values are irregular; using rounded values as printed")
            return raw
    return rebuilt


def parse_lerobot_log(path: Path) -> tuple[list[dict[str, float]], dict[str, Any]]:
    """Training records (our metric names) and facts (batch_size, device) from a console log."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise RobotrainError(f"cannot read: {exc.strerror or exc}", path) from exc
    rows: list[dict[str, str]] = []
    for line in re.split(r"[\r\n]+", text):
        pos = line.find("step:")
        if pos < 0 or "loss:" not in line:
            continue
        tokens = dict(_LOG_TOKEN_RE.findall(line[pos:]))
        if "step" in tokens and "loss" in tokens:
            rows.append(tokens)
    facts: dict[str, Any] = {}
    m = re.search(r"Effective batch size: \d+ x \d+ = (\d+)", text) or re.search(r"'batch_size': (\d+)", text)
    if m:
        facts["batch_size"] = int(m.group(1))
    m = re.search(r"'device': '(\w+)'", text)
    if m:
        facts["device"] = m.group(1)
    if not rows:
        return [], facts
    try:
        steps = _reconstruct([parse_big_number(r["step"]) for r in rows])
        samples = _reconstruct([parse_big_number(r.get("smpl", "nan")) for r in rows]) if all(
            "smpl" in r for r in rows
        ) else [math.nan] * len(rows)
    except ValueError as exc:
        raise RobotrainError(f"malformed LeRobot log line ({exc})", path) from exc
    names = {"loss": TRAIN_LOSS, "grdn": TRAIN_GRAD_NORM, "lr": TRAIN_LR,
             "updt_s": TRAIN_UPDT_S, "data_s": TRAIN_DATA_S, "epch": "epoch"}
    records: list[dict[str, float]] = []
    for row, step, smpl in zip(rows, steps, samples):
        rec: dict[str, float] = {"step": step}
        if facts.get("batch_size"):
            rec["samples"] = step * facts["batch_size"]  # exact, unlike the rounded smpl
        elif not math.isnan(smpl):
            rec["samples"] = smpl
        for key, ours in names.items():
            if key in row:
                try:
                    rec[ours] = float(row[key].rstrip("%"))
                except ValueError as exc:
                    raise RobotrainError(f"malformed value {key}:{row[key]!r} in a step line", path) from exc
        step_s = rec.get(TRAIN_UPDT_S, 0.0) + rec.get(TRAIN_DATA_S, 0.0)
        if facts.get("batch_size") and step_s > 0:
            rec[TRAIN_SAMPLES_PER_S] = facts["batch_size"] / step_s
        records.append(rec)
    return records, facts


def _checkpoint_json(run_dir: Path, name: str) -> dict[str, Any]:
    """`name` from the run's newest checkpoint's pretrained_model/ ({} when there is none)."""
    ckpt = run_dir / "checkpoints"
    candidates = sorted(ckpt.glob(f"*/pretrained_model/{name}")) if ckpt.is_dir() else []
    candidates += sorted(run_dir.glob(f"pretrained_model/{name}"))
    if not candidates:
        return {}
    return read_json(candidates[-1], expect=dict)


def _lerobot_train_config(run_dir: Path) -> dict[str, Any]:
    return _checkpoint_json(run_dir, TRAIN_CONFIG_JSON)


def _robotrain_ckpt_config(run_dir: Path) -> dict[str, Any]:
    """Our own config saved beside train_config.json (world_size, fps, every flag)."""
    return _checkpoint_json(run_dir, ROBOTRAIN_CONFIG_JSON)


def _is_lerobot_log(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read(2_000_000)
    except OSError:
        return False
    return re.search(r"step:\S+ smpl:\S+ .*loss:", head) is not None


def load_lerobot_run(log: Path | None, run_dir: Path | None, label: str) -> RunData:
    records: list[dict[str, float]] = []
    facts: dict[str, Any] = {}
    if log is not None:
        records, facts = parse_lerobot_log(log)
        if not records:
            raise RobotrainError(
                "no LeRobot training lines (`step:… smpl:… loss:… updt_s:… data_s:…`) found", log
            )
    cfg = _lerobot_train_config(run_dir) if run_dir is not None else {}
    batch = cfg.get("batch_size", facts.get("batch_size"))
    policy = cfg.get("policy") if isinstance(cfg.get("policy"), dict) else {}
    run = RunData(
        label=label,
        path=log if log is not None else run_dir,  # type: ignore[arg-type]
        source="lerobot",
        policy=policy.get("type") if policy else None,
        device=policy.get("device") or facts.get("device"),
        batch_size=int(batch) if isinstance(batch, int) else None,
        train=records,
        sim_evals=find_eval_infos(run_dir) if run_dir is not None else [],
    )
    if run.batch_size and "batch_size" not in facts:
        for rec in run.train:
            rec["samples"] = rec["step"] * run.batch_size
            step_s = rec.get(TRAIN_UPDT_S, 0.0) + rec.get(TRAIN_DATA_S, 0.0)
            if step_s > 0:
                rec[TRAIN_SAMPLES_PER_S] = run.batch_size / step_s
    return run


# ----------------------------------------------------------------------- dispatch
def load_run(path: str | Path, label: str | None = None) -> RunData:
    """Load a run from a robotrain run dir, a LeRobot log file/dir, or an eval dir."""
    path = Path(path)
    label = label or (path.stem if path.is_file() else path.name) or str(path)
    if not path.exists():
        raise RobotrainError("does not exist", path)
    if path.is_file():
        if path.name == METRICS_JSONL:
            return load_robotrain_run(path.parent, label if label != "metrics" else path.parent.name)
        if path.name == EVAL_INFO_JSON:
            return RunData(label=path.parent.name, path=path, source="eval-only", sim_evals=[load_eval_info(path)])
        return load_lerobot_run(path, None, label)
    if (path / METRICS_JSONL).is_file():
        return load_robotrain_run(path, label)
    logs = [p for p in sorted(path.iterdir())
            if p.suffix in LEROBOT_LOG_SUFFIXES and p.is_file() and _is_lerobot_log(p)]
    if len(logs) > 1:
        logger.warning("%s: several LeRobot logs, using %s", path, logs[0].name)
    if logs or (path / "checkpoints").is_dir() or (path / "pretrained_model").is_dir():
        return load_lerobot_run(logs[0] if logs else None, path, label)
    sims = find_eval_infos(path)
    if sims:
        return RunData(label=label, path=path, source="eval-only", sim_evals=sims)
    raise RobotrainError(
        f"not a run: no {METRICS_JSONL}, LeRobot log (*.log/*.txt with step: lines), "
        f"checkpoints/ or {EVAL_INFO_JSON} found",
        path,
    )
