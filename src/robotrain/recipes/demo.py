"""`robotrain demo`: the whole pipeline on the simulated SO-101 in one command.

    record sim demos (scripted expert) -> train ACT -> closed-loop eval in sim (+ videos) -> report

Everything lands under one directory (default `outputs/demo/`):

    outputs/demo/dataset/            LeRobot v3.0 dataset recorded by the expert
    outputs/demo/train/              run dir: config.json, metrics.jsonl, checkpoints/ (LeRobot layout)
    outputs/demo/train/eval/<step>/  eval_info.json (success rate, 95% Wilson interval) + videos/
    outputs/demo/report/report.md    tables and plots (robotrain.reports.report)

Each stage is skipped when its result already exists (a complete dataset, a run at the
requested step count, an eval of the requested size), so running the demo twice redoes
nothing; a training run stopped early is resumed from its last checkpoint.

Evaluation seeds start at `EVAL_SEED` (10000), far from the recording seeds (0, 1, ...),
so the policy is scored on cube/bowl placements it never saw.

Example:
    MUJOCO_GL=egl robotrain demo                 # ~15 min on 2 CPU cores
    MUJOCO_GL=egl robotrain demo --quick --out /tmp/demo_quick   # tiny, under a minute
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robotrain.config.flags import from_dict
from robotrain.constants import EVAL_INFO_JSON
from robotrain.errors import ConfigError
from robotrain.system.files import atomic_write_json, read_json
from robotrain.training.config import TrainConfig, apply_image_size
from robotrain.training.presets import preset_act_sim_demo

logger = logging.getLogger(__name__)

EVAL_SEED = 10_000
"""First sim seed of the evaluation episodes (recording uses seeds 0, 1, ...)."""


@dataclass
class DemoConfig:
    """What the demo records, trains and evaluates; `quick_demo_config()` is the tiny one."""

    out: str = "outputs/demo"
    """Directory holding dataset/, train/, report/."""
    episodes: int = 40
    """Expert episodes recorded into the dataset."""
    image_size: tuple[int, int] = (96, 128)
    """Recorded camera size = ACT's input size (the sim renders it directly in eval too)."""
    steps: int = 1500
    """ACT optimizer steps."""
    batch_size: int = 8
    """Samples per step."""
    eval_episodes: int = 30
    """Closed-loop sim episodes for the success rate."""
    videos: int = 2
    """Videos of the first evaluation episodes."""
    max_steps: int = 300
    """Steps per sim episode (30 Hz; the expert needs ~207)."""
    workers: int | None = None
    """Sim processes for recording and evaluation (default: CPU cores)."""
    quick: bool = False
    """Tiny sizes everywhere (tests, smoke checks): nothing it produces is a meaningful policy."""
    progress: bool = True
    """Progress bars for each stage."""

    def validate(self) -> None:
        for name in ("episodes", "steps", "batch_size", "eval_episodes", "max_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.videos < 0:
            raise ConfigError(f"--videos must be >= 0, got {self.videos}")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {self.workers}")
        if min(self.image_size) < 16:
            raise ConfigError(f"image size must be at least 16x16, got {self.image_size}")
        if self.episodes < 2:
            raise ConfigError(f"--episodes must be >= 2 (one is held out for offline eval), got {self.episodes}")


def quick_demo_config(out: str) -> DemoConfig:
    """A demo that runs end to end in well under a minute: 2 short episodes at 32x32, a
    few steps of a tiny ACT, 2 eval episodes cut at 20 steps."""
    return DemoConfig(out=out, episodes=2, image_size=(32, 32), steps=4, batch_size=2, eval_episodes=2,
                      videos=1, max_steps=20, workers=1, quick=True)


def act_policy_overrides(quick: bool) -> dict[str, Any]:
    """The ACT fields the demo sets: the `act_sim_demo` preset, or a tiny model for --quick."""
    if not quick:
        return dict(preset_act_sim_demo()["policy"])
    return {"dim_model": 32, "n_heads": 2, "dim_feedforward": 64, "n_encoder_layers": 1, "n_decoder_layers": 1,
            "n_vae_encoder_layers": 1, "latent_dim": 8, "chunk_size": 5, "n_action_steps": 5}


# ------------------------------------------------------------------------------ stages
def _stage(n: int, title: str) -> None:
    print(f"\n[{n}/4] {title}", flush=True)


def record_stage(cfg: DemoConfig, root: Path) -> Path:
    """Record `cfg.episodes` expert episodes at `cfg.image_size` unless a complete dataset is there."""
    # lazily, like every heavy import here: `robotrain --help` imports this module (cli/demo.py)
    from robotrain.data.format import load_meta
    from robotrain.sim.record import RecordConfig, record_dataset, record_summary

    dataset = root / "dataset"
    if (dataset / "meta" / "info.json").is_file():
        meta = load_meta(dataset)
        shape = meta.camera_shape(meta.camera_keys[0])[:2] if meta.camera_keys else None
        if meta.total_episodes >= cfg.episodes and tuple(shape or ()) == tuple(cfg.image_size):
            print(f"reusing dataset {dataset} ({meta.total_episodes} episodes, {meta.total_frames} frames)")
            return dataset
        raise ConfigError(f"{dataset} holds {meta.total_episodes} episodes at {shape}, not {cfg.episodes} at "
                          f"{cfg.image_size}; delete it or pick another --out", dataset)
    h, w = cfg.image_size
    rec = RecordConfig(episodes=cfg.episodes, height=h, width=w, seed=0, max_steps=300 if not cfg.quick else 60,
                       only_successful=not cfg.quick, codec="libx264")
    result = record_dataset(dataset, rec, workers=cfg.workers, progress=cfg.progress)
    print(record_summary(result))
    return dataset


def train_config(cfg: DemoConfig, dataset: Path, run_dir: Path, resume: bool) -> TrainConfig:
    """The TrainConfig of the demo run: the `act_sim_demo` preset plus the demo's sizes."""
    from robotrain.policies import get_policy_class

    data = preset_act_sim_demo()
    data.update(dataset=str(dataset), output_dir=str(run_dir), resume=resume, steps=cfg.steps,
                batch_size=cfg.batch_size, image_size=list(cfg.image_size), policy=act_policy_overrides(cfg.quick))
    if cfg.quick:
        data.update(num_workers=0, log_freq=1, eval_freq=0, save_freq=0, tensorboard=False)
    config = from_dict(TrainConfig, data, nested={"policy": get_policy_class("act").config_class})
    return apply_image_size(config)


def _checkpoint_step(run_dir: Path) -> int | None:
    from robotrain.checkpoints.store import resolve_last

    last = resolve_last(run_dir / "checkpoints")
    if last is None:
        return None
    try:
        return int(last.name)
    except ValueError:
        return None


def train_stage(cfg: DemoConfig, dataset: Path, root: Path) -> Path:
    """Train ACT unless `train/` already holds a checkpoint at `cfg.steps` (resumes a shorter one)."""
    from robotrain.training.loop import train

    run_dir = root / "train"
    step = _checkpoint_step(run_dir)
    if step is not None and step >= cfg.steps:
        print(f"reusing trained run {run_dir} (checkpoint at step {step})")
        return run_dir
    if step is not None:
        print(f"resuming {run_dir} from step {step} to {cfg.steps}")
    config = train_config(cfg, dataset, run_dir, resume=step is not None)
    t0 = time.perf_counter()
    train(config)
    print(f"trained {cfg.steps} steps x batch {cfg.batch_size} = {cfg.steps * cfg.batch_size} samples "
          f"in {time.perf_counter() - t0:.0f} s")
    return run_dir


def eval_stage(cfg: DemoConfig, run_dir: Path) -> dict[str, Any]:
    """Roll the last checkpoint out in the sim unless an eval of the same size and seeds exists."""
    from robotrain.evaluation.rollout import default_eval_dir, evaluate_checkpoint_in_sim

    ckpt = run_dir / "checkpoints" / "last"
    out = default_eval_dir(ckpt)
    info_path = out / EVAL_INFO_JSON
    if info_path.is_file():
        info = read_json(info_path, expect=dict)
        agg = info.get("aggregated", {})
        if agg.get("n_episodes") == cfg.eval_episodes and (agg.get("seeds") or [None])[0] == EVAL_SEED:
            print(f"reusing evaluation {info_path}")
            return info
    return evaluate_checkpoint_in_sim(ckpt, cfg.eval_episodes, seed=EVAL_SEED, n_envs=cfg.workers, videos=cfg.videos,
                                      out_dir=out, device="cpu", max_steps=cfg.max_steps, progress=cfg.progress)


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Record (if absent) -> train (if not done) -> evaluate (if not done) -> report.

    Returns the paths and the aggregated sim result; prints each stage as it goes.
    """
    from robotrain.evaluation.rollout import format_sim_result
    from robotrain.reports.report import write_report

    cfg.validate()
    os.environ.setdefault("MUJOCO_GL", "egl")
    root = Path(cfg.out)
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    times: dict[str, float] = {}

    _stage(1, f"dataset: {cfg.episodes} expert episodes at {cfg.image_size[0]}x{cfg.image_size[1]}")
    t = time.perf_counter()
    dataset = record_stage(cfg, root)
    times["record_s"] = time.perf_counter() - t

    _stage(2, f"train ACT: {cfg.steps} steps x batch {cfg.batch_size}")
    t = time.perf_counter()
    run_dir = train_stage(cfg, dataset, root)
    times["train_s"] = time.perf_counter() - t

    _stage(3, f"evaluate in sim: {cfg.eval_episodes} episodes (seeds {EVAL_SEED}+), {cfg.videos} videos")
    t = time.perf_counter()
    info = eval_stage(cfg, run_dir)
    times["eval_s"] = time.perf_counter() - t
    print(format_sim_result(info))

    _stage(4, "report")
    t = time.perf_counter()
    report = write_report([run_dir], root / "report")
    times["report_s"] = time.perf_counter() - t
    times["total_s"] = time.perf_counter() - t0

    summary = {
        "dataset": str(dataset), "run_dir": str(run_dir), "report": str(report.markdown),
        "videos": info.get("video_paths", []), "aggregated": info["aggregated"], "times": times,
        "config": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("progress",)},
    }
    atomic_write_json(root / "demo_summary.json", summary)
    print("\nrobotrain demo done in {:.0f} s".format(times["total_s"]))
    print(f"  dataset  {dataset}")
    print(f"  run      {run_dir}  (checkpoints/last/pretrained_model is a LeRobot-layout policy)")
    print(f"  eval     {default_eval_dir_of(run_dir)}")
    for path in summary["videos"]:
        print(f"  video    {path}")
    print(f"  report   {report.markdown}")
    return summary


def default_eval_dir_of(run_dir: Path) -> Path:
    from robotrain.evaluation.rollout import default_eval_dir

    return default_eval_dir(run_dir / "checkpoints" / "last")
