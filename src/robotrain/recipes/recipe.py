"""Recipes: a whole experiment in one file, run by one command from an empty folder.

A recipe is a TOML file with four sections, each the settings of one stage:

    [record]   sim/record.py's RecordConfig (episodes, height, width, seed, late_wrist_turn, ...)
    [train]    training/config.py's TrainConfig as in a --config file (`preset` names a
               starting preset; [train.policy] holds the policy's fields)
    [eval]     sim evaluation: episodes, seed (first of the unseen placements), max_steps,
               videos, [eval.policy_overrides] (inference settings, e.g. temporal ensembling)
    [report]   (optional) enabled = true

`run_recipe` runs record -> train -> evaluate -> report under one output folder and reuses
every stage whose result is already there (a killed run resumes its training), so running
the same command twice costs nothing the second time. Built-in recipes live beside this
module (`robotrain recipe list`).

    robotrain recipe run smolvla_sim --out outputs/smolvla_sim
    robotrain recipe run my_recipe.toml --out outputs/mine --seed 2000
"""

from __future__ import annotations

import dataclasses
import os
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robotrain.config.flags import from_dict, merge
from robotrain.constants import EVAL_INFO_JSON
from robotrain.errors import ConfigError
from robotrain.system.files import atomic_write_json, read_json

# The stages import torch, MuJoCo and matplotlib inside their functions: `robotrain --help`
# imports this module (through cli/demo.py and cli/recipe.py) and must stay light.

BUILTIN_DIR = Path(__file__).resolve().parent
RECIPE_SUFFIX = ".toml"


@dataclass
class EvalSpec:
    """The closed-loop evaluation of the trained policy."""

    episodes: int = 50
    """Sim episodes, seeded seed, seed + 1, ..."""
    seed: int = 10_000
    """First seed: 10000 and up are cube/bowl placements no recording (seeds 0, 1, ...) used."""
    max_steps: int = 300
    """Steps per episode (30 Hz)."""
    videos: int = 2
    """Videos of the first episodes."""
    policy_overrides: dict[str, Any] = field(default_factory=dict)
    """Inference settings, e.g. {n_action_steps = 1, temporal_ensemble_coeff = 0.01}."""

    def validate(self) -> None:
        for name in ("episodes", "max_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"[eval] {name} must be >= 1, got {getattr(self, name)}")
        if self.videos < 0:
            raise ConfigError(f"[eval] videos must be >= 0, got {self.videos}")


@dataclass
class Recipe:
    """A parsed recipe file (see the module docstring)."""

    name: str
    description: str
    record: dict[str, Any]
    train: dict[str, Any]
    eval: EvalSpec
    report: bool = True
    source: str = ""
    """Where it came from (a file path or a built-in name)."""
    workers: int | None = None
    """Sim processes for recording and evaluation (default: CPU cores); not part of the file."""
    dataset: str | None = None
    """An existing dataset to train on instead of recording one; not part of the file."""

    def record_config(self) -> Any:
        from robotrain.sim.record import RecordConfig

        return from_dict(RecordConfig, self.record, prefix="record.", keys=True)

    def train_settings(self) -> dict[str, Any]:
        """[train] laid over its named preset, as a --config file would hold it."""
        from robotrain.training.presets import PRESETS

        body = dict(self.train)
        preset = body.pop("preset", None)
        data: dict[str, Any] = {}
        if preset is not None:
            if preset not in PRESETS:
                raise ConfigError(f"[train] preset must be one of {sorted(PRESETS)}, got {preset!r}", self.source)
            data = PRESETS[preset]()
        return merge(data, body)

    def train_config(self, dataset: Path, run_dir: Path, resume: bool) -> Any:
        """The TrainConfig: the named preset, then [train], then the stage's paths."""
        from robotrain.policies import get_policy_class
        from robotrain.training.config import TrainConfig, apply_image_size

        data = self.train_settings()
        data.update(dataset=str(dataset), output_dir=str(run_dir), resume=resume)
        policy_type = data.get("policy_type", "act")
        config = from_dict(TrainConfig, data, nested={"policy": get_policy_class(policy_type).config_class})
        config = apply_image_size(config)
        config.validate(check_paths=False)
        return config


def builtin_recipes() -> dict[str, Path]:
    """Recipes shipped with robotrain, by name."""
    return {p.stem: p for p in sorted(BUILTIN_DIR.glob(f"*{RECIPE_SUFFIX}"))}


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A recipe from a TOML file, or a built-in one by name; ConfigError names the file and
    the key for anything unknown or malformed."""
    path = Path(name_or_path)
    if not path.is_file():
        found = builtin_recipes().get(str(name_or_path))
        if found is None:
            raise ConfigError(f"no recipe file {str(name_or_path)!r} and no built-in recipe of that name "
                              f"(built-in: {', '.join(builtin_recipes()) or 'none'})")
        path = found
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read recipe: {exc}", path) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", path) from None
    unknown = sorted(set(data) - {"description", "record", "train", "eval", "report"})
    if unknown:
        raise ConfigError(f"unknown recipe section(s) {unknown}; known: record, train, eval, report", path)
    for section in ("record", "train", "eval"):
        if not isinstance(data.get(section), dict):
            raise ConfigError(f"the recipe needs a [{section}] table", path)
    report = data.get("report", {"enabled": True})
    if not isinstance(report, dict) or set(report) - {"enabled"}:
        raise ConfigError("[report] takes only `enabled = true|false`", path)
    recipe = Recipe(name=path.stem, description=str(data.get("description", "")), record=data["record"],
                    train=data["train"], eval=from_dict(EvalSpec, data["eval"], prefix="eval.", keys=True),
                    report=bool(report.get("enabled", True)), source=str(path))
    recipe.eval.validate()
    recipe.record_config()  # checked now: a bad [record] must not wait for anything
    return recipe


# --------------------------------------------------------------------------- stages
def record_stage(recipe: Recipe, root: Path, progress: bool = True) -> Path:
    """Record the [record] dataset unless a complete one is there (refuses a different one)."""
    from robotrain.data.format import load_meta
    from robotrain.sim.record import record_dataset, record_summary

    rec = recipe.record_config()
    dataset = root / "dataset"
    if (dataset / "meta" / "info.json").is_file():
        meta = load_meta(dataset)
        shape = meta.camera_shape(meta.camera_keys[0])[:2] if meta.camera_keys else None
        if meta.total_episodes >= rec.episodes and tuple(shape or ()) == (rec.height, rec.width):
            print(f"reusing dataset {dataset} ({meta.total_episodes} episodes, {meta.total_frames} frames)")
            return dataset
        raise ConfigError(f"{dataset} holds {meta.total_episodes} episodes at {shape}, not {rec.episodes} at "
                          f"{(rec.height, rec.width)}; delete it or pick another --out", dataset)
    result = record_dataset(dataset, rec, workers=recipe.workers, progress=progress)
    print(record_summary(result))
    return dataset


def last_step(run_dir: Path) -> int | None:
    """The step of `run_dir/checkpoints/last`, or None."""
    from robotrain.checkpoints.store import resolve_last

    last = resolve_last(run_dir / "checkpoints")
    if last is None:
        return None
    try:
        return int(last.name)
    except ValueError:
        return None


def train_stage(recipe: Recipe, dataset: Path, root: Path) -> Path:
    """Train unless `train/` already holds the final checkpoint (resumes a shorter run)."""
    from robotrain.training.loop import train

    run_dir = root / "train"
    step = last_step(run_dir)
    config = recipe.train_config(dataset, run_dir, resume=step is not None)
    if step is not None and step >= config.steps:
        print(f"reusing trained run {run_dir} (checkpoint at step {step})")
        return run_dir
    if step is not None:
        print(f"resuming {run_dir} from step {step} to {config.steps}")
    t0 = time.perf_counter()
    train(config)
    print(f"trained {config.steps} steps x batch {config.batch_size} = {config.steps * config.batch_size} samples "
          f"in {time.perf_counter() - t0:.0f} s")
    return run_dir


def eval_stage(recipe: Recipe, run_dir: Path, progress: bool = True) -> tuple[dict[str, Any], Path]:
    """Roll the last checkpoint out unless an evaluation with the same settings exists;
    returns eval_info and the folder holding it."""
    from robotrain.checkpoints.store import resolve_checkpoint
    from robotrain.evaluation.rollout import default_eval_dir, evaluate_checkpoint_in_sim

    spec = recipe.eval
    ckpt = resolve_checkpoint(run_dir / "checkpoints" / "last")
    overrides = dict(spec.policy_overrides) or None
    out = default_eval_dir(ckpt, overrides)
    info_path = out / EVAL_INFO_JSON
    if info_path.is_file():
        info = read_json(info_path, ConfigError, expect=dict)
        agg = info.get("aggregated", {})
        if agg.get("n_episodes") == spec.episodes and (agg.get("seeds") or [None])[0] == spec.seed:
            print(f"reusing evaluation {info_path}")
            return info, out
    info = evaluate_checkpoint_in_sim(ckpt, spec.episodes, seed=spec.seed, n_envs=recipe.workers,
                                      videos=min(spec.videos, spec.episodes), out_dir=out, device="auto",
                                      max_steps=spec.max_steps, progress=progress, overrides=overrides,
                                      metadata={"recipe": recipe.source})
    return info, out


def run_recipe(recipe: Recipe, out: str | Path, progress: bool = True, title: str = "recipe") -> dict[str, Any]:
    """record -> train -> evaluate -> report under `out`; returns (and writes to
    `<out>/<title>_summary.json`) the paths, the sim result and each stage's wall time."""
    from robotrain.evaluation.rollout import format_sim_result
    from robotrain.reports.report import write_report

    os.environ.setdefault("MUJOCO_GL", "egl")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    rec = recipe.record_config()
    t0 = time.perf_counter()
    times: dict[str, float] = {}
    n_stages = 4 if recipe.report else 3

    def stage(n: int, text: str) -> float:
        print(f"\n[{n}/{n_stages}] {text}", flush=True)
        return time.perf_counter()

    if recipe.dataset is not None:
        t = stage(1, f"dataset: {recipe.dataset} (given, not recorded)")
        dataset = Path(recipe.dataset)
        if not (dataset / "meta" / "info.json").is_file():
            raise ConfigError("not a LeRobot dataset (no meta/info.json) (--dataset)", dataset)
    else:
        t = stage(1, f"dataset: {rec.episodes} expert episodes at {rec.height}x{rec.width}")
        dataset = record_stage(recipe, root, progress)
    times["record_s"] = time.perf_counter() - t

    train_cfg = recipe.train_config(dataset, root / "train", resume=last_step(root / "train") is not None)
    t = stage(2, f"train {train_cfg.policy_type}: {train_cfg.steps} steps x batch {train_cfg.batch_size}")
    run_dir = train_stage(recipe, dataset, root)
    times["train_s"] = time.perf_counter() - t

    t = stage(3, f"evaluate in sim: {recipe.eval.episodes} episodes (seeds {recipe.eval.seed}+), "
                 f"{recipe.eval.videos} videos")
    info, eval_dir = eval_stage(recipe, run_dir, progress)
    times["eval_s"] = time.perf_counter() - t
    print(format_sim_result(info))

    report_path = None
    if recipe.report:
        t = stage(4, "report")
        report_path = str(write_report([run_dir], root / "report").markdown)
        times["report_s"] = time.perf_counter() - t
    times["total_s"] = time.perf_counter() - t0
    summary = {
        "recipe": recipe.source, "dataset": str(dataset), "run_dir": str(run_dir), "report": report_path,
        "eval_info": str(eval_dir / EVAL_INFO_JSON), "videos": info.get("video_paths", []),
        "aggregated": info["aggregated"], "policy": info.get("policy"), "times": times,
        "train_samples": train_cfg.steps * train_cfg.batch_size,
    }
    atomic_write_json(root / f"{title}_summary.json", summary)
    print(f"\n{title} done in {times['total_s']:.0f} s")
    print(f"  dataset  {dataset}")
    print(f"  run      {run_dir}  (checkpoints/last/pretrained_model is a LeRobot-layout policy)")
    print(f"  eval     {eval_dir}")
    for path in summary["videos"]:
        print(f"  video    {path}")
    if report_path:
        print(f"  report   {report_path}")
    return summary


def with_overrides(recipe: Recipe, seed: int | None = None, steps: int | None = None) -> Recipe:
    """A copy with the training seed and/or step count replaced (the command line's --seed/--steps)."""
    train = dict(recipe.train)
    if seed is not None:
        train["seed"] = seed
    if steps is not None:
        train["steps"] = steps
        if "scheduler_decay_steps" in (recipe.train_settings().get("policy") or {}):
            # a schedule that spans the run keeps spanning it
            train["policy"] = {**(train.get("policy") or {}), "scheduler_decay_steps": steps}
    return dataclasses.replace(recipe, train=train)
