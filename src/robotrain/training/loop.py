"""The one training loop, for every policy (house rule 4: nothing policy-specific here).

batch -> policy.forward -> loss -> backward -> clip -> AdamW step -> lr schedule, with
logging (console, `metrics.jsonl`, TensorBoard if installed), offline evaluation on held
out episodes, atomic LeRobot-layout checkpoints, exact resume and DDP via torchrun.

Examples:
    robotrain train --dataset data/so101 --policy act --steps 2000 --image-size 240x320
    robotrain train --resume --output-dir outputs/train/2026-11-25_17-00-00_act
    torchrun --nproc_per_node 2 -m robotrain train --dataset data/so101 --policy act

With DDP every process loads `--batch-size` samples, so the global batch is
K x batch_size and one step sees K x batch_size samples (as LeRobot/accelerate count it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import logging
import math
import os
import random
import resource
import shutil
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from robotrain.config import flags as config_flags
from robotrain.checkpoints.store import Checkpointer, init_weights_from, policy_config_to_lerobot
from robotrain.training.config import RUN_FILES, TrainConfig
from robotrain.constants import (
    ACTION,
    CONFIG_JSON,
    IMAGENET_MEAN,
    IMAGENET_STD,
    LOGGED_AT,
    METRICS_JSONL,
    OBS_STATE,
    ROBOTRAIN_SECTION,
    TRAIN_DATA_S,
    TRAIN_GRAD_NORM,
    TRAIN_LOSS,
    TRAIN_LR,
    TRAIN_PEAK_MEM_MB,
    TRAIN_PREFIX,
    TRAIN_SAMPLES_PER_S,
    TRAIN_UPDT_S,
)
from robotrain.data.batch_loader import BatchedLoader
from robotrain.data.dataset import LeRobotDataset, split_episodes
from robotrain.data.device_frames import DeviceFrames
from robotrain.data.rename import check_policy_names, rename_features
from robotrain.data.format import load_meta
from robotrain.errors import ConfigError, TrainingError, TrainingStopped
from robotrain.evaluation.offline import batch_to_device, offline_action_error
from robotrain.system.files import atomic_write_json, atomic_write_text, lock_folder
from robotrain.training.memory import check_memory
from robotrain.training.optim import make_optimizer, make_scheduler
from robotrain.training.precision import autocast_dtype
from robotrain.policies import Policy, PolicyFeatures, get_policy_class
from robotrain.system.signals import SigtermHandler

logger = logging.getLogger(__name__)

RUN_LOCK = ".train.lock"
"""Held by the training process in its run dir (`io_utils.lock_folder`): one writer per run."""


# --- data ------------------------------------------------------------------------------------


class DataSource(Protocol):
    """Where train() gets its data: dataset meta plus map-style train/val datasets.

    `meta` needs fps, camera_keys, state_dim, action_dim, stats, features (info.json's)
    and total_frames/total_episodes; datasets yield LeRobot-style sample dicts.
    """

    meta: Any

    def datasets(self, delta_timestamps: dict[str, list[float]],
                 image_input: tuple[tuple[int, int] | None, str]) -> tuple[Dataset, Dataset | None]:
        """`image_input`: the policy config's `image_input()`, (size or None, resize mode)."""


class LeRobotSource:
    """A local LeRobot dataset split by episode into train / held-out validation.

    With `--episodes` only those episodes are read (their files suffice: a partial
    download trains on what it has) and the held-out ones are drawn from them; `--rename`
    presents the features under the names policies read.
    """

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.meta = rename_features(load_meta(config.dataset, config.episodes), config.rename)
        check_policy_names(self.meta)

    def datasets(self, delta_timestamps: dict[str, list[float]],
                 image_input: tuple[tuple[int, int] | None, str]) -> tuple[Dataset, Dataset | None]:
        cfg = self.config
        train_eps, val_eps = split_episodes(self.meta, val_fraction=cfg.val_fraction, seed=cfg.seed)
        image_size, resize_mode = image_input

        def make(episodes: list[int], frames: str = "pixels") -> Dataset:
            # One meta for both splits: one frame table layout and one frame cache.
            # uint8 frames: 4x less through the workers' shared memory; batch_to_device scales them
            return LeRobotDataset(self.meta, delta_timestamps=delta_timestamps, episodes=episodes,
                                  image_size=image_size, resize_mode=resize_mode, use_cache=cfg.use_cache,
                                  image_dtype="uint8", frames=frames)

        # With frames_on_device the training batches carry cache row indices (see DeviceFrames).
        train_frames = "indices" if cfg.frames_on_device else "pixels"
        return make(list(train_eps), train_frames), (make(list(val_eps)) if len(val_eps) else None)


class _SkipFirst(Sampler[int]):
    """Yields `inner`'s indices after skipping the first `skip` (resume mid-epoch)."""

    def __init__(self, inner: DistributedSampler) -> None:
        self.inner, self.skip = inner, 0

    def __iter__(self) -> Iterator[int]:
        it = iter(self.inner)
        for _ in range(self.skip):
            next(it)
        return it

    def __len__(self) -> int:
        return len(self.inner) - self.skip


def infinite_batches(dataset: Dataset, config: TrainConfig, rank: int, world: int,
                     start_step: int, pin_memory: bool) -> Iterator[dict[str, Any]]:
    """Batches forever, epoch after epoch, in an order fixed by the seed and the epoch.

    Step s always gets the same batch whether or not the run was resumed: the position
    (epoch, batch in epoch) is computed from the step, and shuffling/worker seeds come
    from generators seeded per epoch, never from the global RNG that dropout uses.
    """
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=config.seed,
                                 drop_last=True)
    per_epoch = len(sampler) // config.batch_size
    if per_epoch == 0:
        raise ConfigError(f"--batch-size {config.batch_size} is larger than the {len(sampler)} training frames "
                          f"per process; lower it")
    skipper, generator = _SkipFirst(sampler), torch.Generator()
    epoch, offset = divmod(start_step, per_epoch)
    if config.loader == "batched":  # the same batches, gathered whole in threads (data/batch_loader.py)
        gatherer = BatchedLoader(dataset)  # type: ignore[arg-type]
        while True:
            sampler.set_epoch(epoch)
            skipper.skip = offset * config.batch_size
            order = np.fromiter(skipper, dtype=np.int64)
            batches = (order[i:i + config.batch_size] for i in range(0, len(order) - config.batch_size + 1,
                                                                     config.batch_size))
            yield from gatherer.iterate(batches, threads=config.num_workers, pin_memory=pin_memory)
            epoch, offset = epoch + 1, 0
    loader = DataLoader(dataset, batch_size=config.batch_size, sampler=skipper, num_workers=config.num_workers,
                        drop_last=True, pin_memory=pin_memory, generator=generator,
                        persistent_workers=config.num_workers > 0, worker_init_fn=_ignore_sigterm)
    try:
        while True:
            sampler.set_epoch(epoch)
            skipper.skip = offset * config.batch_size
            generator.manual_seed(config.seed + epoch)
            yield from loader
            epoch, offset = epoch + 1, 0
    finally:
        # Persistent workers live in the loader's iterator until it is garbage-collected,
        # and a traceback can keep it alive: end them now. Left registered, a dead worker
        # makes torch raise again on every later SIGCHLD of this process.
        iterator = getattr(loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()


def _ignore_sigterm(worker_id: int) -> None:
    """DataLoader workers outlive a SIGTERM sent to the whole process group, so the trainer
    can finish its step and save (`StopRequest`); torch would otherwise kill them and raise
    in the trainer wherever it happens to be. They still exit with the trainer (torch's
    watchdog ends workers whose parent is gone) and on the loader's normal shutdown."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def load_device_frames(dataset: Dataset, device: torch.device) -> DeviceFrames:
    """The training dataset's frame cache copied to `device` (--frames-on-device)."""
    cache = getattr(dataset, "cache", None)
    if cache is None or getattr(dataset, "frames", None) != "indices":
        raise ConfigError("--frames-on-device needs a cached LeRobot dataset built with frames='indices'")
    return DeviceFrames(cache, dataset.camera_keys, device)  # type: ignore[attr-defined]


def training_stats(stats: Mapping[str, Mapping[str, Any]], camera_keys: tuple[str, ...],
                   use_imagenet_stats: bool) -> dict[str, dict[str, Any]]:
    """The normalisation statistics a run uses (and saves in its checkpoints).

    With `use_imagenet_stats` (lerobot-train's default) every camera's mean/std become
    ImageNet's, shape (3, 1, 1) like LeRobot's image stats; other stats are unchanged. Why:
    the ResNet backbone expects ImageNet-normalised input, and a dataset's own image std can
    be tiny (the LeRobot fixture's red channel: ~1e-5), which would blow images up ~1e5x.
    """
    out = {key: dict(value) for key, value in stats.items()}
    if use_imagenet_stats:
        for key in camera_keys:
            out.setdefault(key, {})
            out[key]["mean"] = np.asarray(IMAGENET_MEAN, dtype=np.float32).reshape(3, 1, 1)
            out[key]["std"] = np.asarray(IMAGENET_STD, dtype=np.float32).reshape(3, 1, 1)
    return out


# --- runtime: device, processes, precision ----------------------------------------------------


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world: int = 1
    amp_dtype: torch.dtype | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def setup_runtime(config: TrainConfig) -> Runtime:
    """Device and precision; joins the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    name = config.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {config.device}: CUDA is not available on this machine")
    if name == "cuda":  # an explicit index: torch.cuda.set_device rejects a bare "cuda"
        name = f"cuda:{local_rank}"
    device = torch.device(name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Runtime(device=device, rank=rank, world=world, amp_dtype=autocast_dtype(config.amp, device))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_run_dir(config: TrainConfig, rt: Runtime) -> Path:
    """--output-dir or outputs/train/<timestamp>_<policy>, the same on every process."""
    name = config.output_dir or f"outputs/train/{datetime.now():%Y-%m-%d_%H-%M-%S}_{config.policy_type}"
    if rt.distributed:
        holder = [name]
        dist.broadcast_object_list(holder, src=0)
        name = holder[0]
    return Path(name)


def clear_run_files(run_dir: Path) -> None:
    """--overwrite: delete what an earlier run wrote there (RUN_FILES), nothing else."""
    for name in RUN_FILES:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def record_resume_changes(run_dir: Path, config: TrainConfig) -> None:
    """--allow-resume-changes: what changed at this resume, appended to resume_changes.jsonl."""
    changes = config.resume_changes()
    if changes:
        with open(run_dir / "resume_changes.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"time": datetime.now().isoformat(timespec="seconds"), "changes": changes}) + "\n")
        logger.warning("resuming with changed settings (recorded in resume_changes.jsonl): %s", "; ".join(changes))


def peak_memory_mb(device: torch.device) -> float:
    """CUDA max allocated, else the process's peak RSS (Linux reports KiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- logging ----------------------------------------------------------------------------------


class MetricsLogger:
    """`metrics.jsonl` (always), TensorBoard (if installed), console lines; main process only."""

    def __init__(self, run_dir: Path, enabled: bool, resume_step: int | None, tensorboard: bool) -> None:
        self.enabled, self.file, self.tb = enabled, None, None
        if not enabled:
            return
        path = run_dir / METRICS_JSONL
        if resume_step is not None and path.exists():  # drop lines logged after the resumed checkpoint
            keep = [ln for ln in path.read_text().splitlines() if _step_of(ln) <= resume_step]
            atomic_write_text(path, "".join(ln + "\n" for ln in keep))
        self.file = open(path, "a", encoding="utf-8")
        if tensorboard:
            try:  # tensorboard is not one of our dependencies
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:
                logger.debug("tensorboard not installed; metrics.jsonl only")

    def write(self, record: Mapping[str, Any]) -> None:
        if self.file is None:
            return
        self.file.write(json.dumps({**record, LOGGED_AT: time.time()}) + "\n")
        self.file.flush()
        if self.tb is not None:
            for key, value in record.items():
                if "/" in key and isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.tb is not None:
            self.tb.close()


def _step_of(line: str) -> float:
    """The step of a metrics.jsonl line; a torn line (killed mid-write) counts as after any step."""
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return math.inf


class Interval:
    """Sums over one log interval; `summary()` averages them (across processes too)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.n, self.sums, self.updt_s, self.data_s, self.start = 0, {}, 0.0, 0.0, time.perf_counter()

    def add(self, values: Mapping[str, float], updt_s: float, data_s: float) -> None:
        self.n += 1
        self.updt_s += updt_s
        self.data_s += data_s
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value)

    def summary(self, rt: Runtime) -> dict[str, float]:
        keys = sorted(self.sums)
        totals = torch.tensor([self.sums[k] for k in keys] + [self.updt_s, self.data_s], dtype=torch.float64)
        if rt.distributed:  # mean over processes; nccl needs the tensor on the GPU
            totals = totals.to(rt.device)
            dist.all_reduce(totals)
            totals = totals.cpu() / rt.world
        means = (totals / max(self.n, 1)).tolist()
        out = {TRAIN_PREFIX + k: v for k, v in zip(keys, means)}
        out[TRAIN_UPDT_S], out[TRAIN_DATA_S] = means[-2], means[-1]
        return out


def log_line(record: Mapping[str, Any]) -> str:
    """LeRobot-like: `step:… smpl:… ep:… epch:… loss:… grdn:… lr:… updt_s:… data_s:…` + extras."""
    parts = [f"step:{record['step']}", f"smpl:{record['samples']}", f"ep:{record['episodes']:.0f}",
             f"epch:{record['epoch']:.2f}", f"loss:{record[TRAIN_LOSS]:.3f}",
             f"grdn:{record[TRAIN_GRAD_NORM]:.3f}", f"lr:{record[TRAIN_LR]:.1e}",
             f"updt_s:{record[TRAIN_UPDT_S]:.3f}", f"data_s:{record[TRAIN_DATA_S]:.3f}"]
    shown = {TRAIN_LOSS, TRAIN_GRAD_NORM, TRAIN_LR, TRAIN_UPDT_S, TRAIN_DATA_S}
    parts += [f"{k.removeprefix(TRAIN_PREFIX)}:{v:.4g}" for k, v in record.items()
              if k.startswith(TRAIN_PREFIX) and k not in shown and isinstance(v, float)]
    return " ".join(parts)


@contextlib.contextmanager
def progress_bar(enabled: bool, total: int, completed: int) -> Iterator[Any]:
    """A rich progress bar with ETA on a terminal; a no-op object otherwise (logs suffice)."""
    if not (enabled and sys.stderr.isatty()):
        yield None
        return
    with Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
                  TimeRemainingColumn(), TextColumn("{task.fields[info]}"), transient=False) as progress:
        progress.add_task("train", total=total, completed=completed, info="")
        yield progress


# --- one step ---------------------------------------------------------------------------------


def train_step(model: torch.nn.Module, params: list[torch.nn.Parameter], batch: Mapping[str, Any],
               optimizer: torch.optim.Optimizer, scheduler: Any, grad_clip: float,
               rt: Runtime) -> dict[str, float]:
    """forward -> backward -> clip -> AdamW -> lr schedule; returns loss, components, grad norm, lr.

    A non-finite loss or gradient norm raises TrainingError *before* the optimizer
    step, so the weights (and the last checkpoint) stay good.
    """
    lr = optimizer.param_groups[0]["lr"]
    with torch.autocast(rt.device.type, dtype=rt.amp_dtype or torch.float32, enabled=rt.amp_dtype is not None):
        loss, components = model(batch)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else math.inf)
    loss_value, grad_value = torch.stack([loss.detach().float(), grad_norm.float()]).tolist()
    if not (math.isfinite(loss_value) and math.isfinite(grad_value)):
        raise TrainingError(f"loss became {loss_value} (grad norm {grad_value})")
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if scheduler is not None:
        scheduler.step()
    return {"loss": loss_value, **{k: float(v) for k, v in components.items() if k != "loss"},
            "grad_norm": grad_value, "lr": lr}


def lerobot_train_config(config: TrainConfig, policy: Policy, meta: Any, world: int) -> dict[str, Any]:
    """train_config.json: LeRobot's top-level keys, with our full config under "robotrain"
    (save_pretrained writes that section to robotrain_config.json, apart, for LeRobot)."""
    pc = policy.config
    scheduler = None if pc.scheduler == "none" else {
        "type": "cosine_decay_with_warmup", "num_warmup_steps": pc.scheduler_warmup_steps,
        "num_decay_steps": pc.scheduler_decay_steps, "peak_lr": pc.optimizer_lr, "decay_lr": pc.scheduler_decay_lr}
    return {
        "dataset": {"repo_id": f"local/{Path(config.dataset).name}", "root": config.dataset},
        "env": None, "policy": policy_config_to_lerobot(pc, policy.features),
        "output_dir": config.output_dir, "job_name": config.policy_type, "resume": config.resume,
        "seed": config.seed, "num_workers": config.num_workers, "batch_size": config.batch_size,
        "steps": config.steps, "eval_freq": config.eval_freq, "log_freq": config.log_freq,
        "save_checkpoint": True, "save_freq": config.save_freq, "use_policy_training_preset": True,
        "optimizer": {"type": "adamw", "lr": pc.optimizer_lr, "weight_decay": pc.optimizer_weight_decay,
                      "grad_clip_norm": pc.optimizer_grad_clip_norm, "betas": list(pc.optimizer_betas),
                      "eps": pc.optimizer_eps},
        "scheduler": scheduler,
        ROBOTRAIN_SECTION: {**config_flags.to_dict(config), "fps": int(meta.fps), "world_size": world},
    }


# --- the loop ---------------------------------------------------------------------------------


def add_state_noise(batch: dict[str, Any], std: float) -> dict[str, Any]:
    """`batch` with N(0, std^2) noise on `observation.state` (a new dict; the input is left
    alone); `batch` itself when std is 0 or it has no state. Drawn from torch's global RNG,
    which the training seed fixes and checkpoints restore."""
    state = batch.get(OBS_STATE)
    if std <= 0.0 or state is None:
        return batch
    return {**batch, OBS_STATE: state + std * torch.randn_like(state)}


class StopRequest(SigtermHandler):
    """Turns SIGTERM into a request to stop after the current step, so the loop can save a
    checkpoint first instead of dying mid-step and losing everything since the last save.

    Installed only in the main thread (`train` called from another thread keeps the
    default). DataLoader workers ignore SIGTERM (`_ignore_sigterm`), so one sent to the
    whole process group (a scheduler, `timeout`, `kill -- -PGID`) leaves them serving
    batches until the save. With several processes the request is agreed on every step
    (`agreed`), so all ranks stop after the same step and none waits in a collective."""

    def __init__(self) -> None:
        super().__init__()
        self.signum: int | None = None

    def on_sigterm(self, signum: int) -> None:
        self.signum = signum

    def agreed(self, rt: Runtime) -> bool:
        """Whether any process was asked to stop (one tiny all-reduce per step under DDP)."""
        if not rt.distributed:
            return self.signum is not None
        flag = torch.tensor([1.0 if self.signum is not None else 0.0],
                            device=rt.device if rt.device.type == "cuda" else "cpu")
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item() > 0)


def train(config: TrainConfig, data: DataSource | None = None) -> Path:
    """Train `config.policy_type` on `config.dataset` (or on `data`); returns the run directory."""
    config.validate(check_paths=data is None)
    rt = setup_runtime(config)
    batches: Iterator[dict[str, Any]] | None = None
    metrics: MetricsLogger | None = None
    run_lock: IO[str] | None = None
    model: torch.nn.Module | None = None
    try:
        # --- setup: data meta, policy, optimizer, run dir, resume --------------------------
        data = data or LeRobotSource(config)
        meta = data.meta
        seed_everything(config.seed)  # identical initial weights on every process
        features = PolicyFeatures.from_meta(meta)
        stats = training_stats(meta.stats, tuple(meta.camera_keys), config.use_imagenet_stats)
        policy = get_policy_class(config.policy_type)(config.policy, features, stats).to(rt.device)
        if config.init_from and not config.resume:  # fine-tuning; a resumed run holds its own weights
            init_weights_from(policy, config.init_from)  # before anything is written: a bad file costs nothing
        if config.channels_last:
            policy = policy.to(memory_format=torch.channels_last)
        check_memory(config, policy, features, int(meta.total_frames))  # before the data, batches, optimiser
        train_ds, val_ds = data.datasets(policy.delta_timestamps(), config.image_input())
        optimizer = make_optimizer(policy)
        scheduler = make_scheduler(optimizer, policy.config)
        run_dir = resolve_run_dir(config, rt)
        if rt.is_main:
            run_lock = lock_folder(run_dir, RUN_LOCK, "this run directory")
            if config.overwrite:  # under the lock: no other trainer is writing there
                clear_run_files(run_dir)
            if config.resume and config.allow_resume_changes:
                record_resume_changes(run_dir, config)
        config = dataclasses.replace(config, output_dir=str(run_dir))
        checkpointer = Checkpointer(run_dir, config.save_freq, config.steps, config.keep_last)
        seed_everything(config.seed + rt.rank)  # dropout differs per process, the same on every run
        start_step = checkpointer.resume(policy, optimizer, scheduler) if config.resume else 0
        if start_step >= config.steps:
            raise ConfigError(f"--steps {config.steps}: the run is already at step {start_step}; raise --steps")
        train_config = lerobot_train_config(config, policy, meta, rt.world)
        if rt.is_main:
            atomic_write_json(run_dir / CONFIG_JSON, config_flags.to_dict(config))
        model = policy
        if rt.distributed:
            model = torch.nn.parallel.DistributedDataParallel(
                policy, device_ids=[rt.device.index] if rt.device.type == "cuda" else None,
                find_unused_parameters=config.ddp_find_unused_parameters)
        if config.compile:
            model = torch.compile(model)
        params = [p for p in policy.parameters() if p.requires_grad]
        device_frames = load_device_frames(train_ds, rt.device) if config.frames_on_device else None
        batches = infinite_batches(train_ds, config, rt.rank, rt.world, start_step, rt.device.type == "cuda")
        metrics = MetricsLogger(run_dir, rt.is_main, start_step if config.resume else None, config.tensorboard)
        global_batch = config.batch_size * rt.world
        baseline_action = np.asarray(meta.stats[ACTION]["mean"], dtype=np.float32)
        frames_per_episode = meta.total_frames / max(meta.total_episodes, 1)
        if rt.is_main:
            logger.info("run dir %s | %d train frames, %d held-out | global batch %d = %d x %d | %s params %.1fM",
                        run_dir, len(train_ds), len(val_ds) if val_ds is not None else 0, global_batch, rt.world,
                        config.batch_size, config.policy_type, sum(p.numel() for p in params) / 1e6)

        # --- the loop ---------------------------------------------------------------------
        interval, step = Interval(), start_step
        policy.train()
        with (StopRequest() as stop, progress_bar(rt.is_main, config.steps, start_step) as progress,
              _data_worker_deaths_as_errors(checkpointer, run_dir)):
            for step in range(start_step + 1, config.steps + 1):
                is_log_step = step % config.log_freq == 0 or step == config.steps
                is_eval_step = val_ds is not None and config.eval_freq > 0 and (
                    step % config.eval_freq == 0 or step == config.steps)
                is_save_step = checkpointer.should_save(step)
                samples = step * global_batch

                t0 = time.perf_counter()
                batch = batch_to_device(_next_batch(batches, config.num_workers), rt.device, config.channels_last,
                                        device_frames)
                batch = add_state_noise(batch, config.state_noise_std)
                t1 = time.perf_counter()
                try:
                    values = train_step(model, params, batch, optimizer, scheduler,
                                        policy.config.optimizer_grad_clip_norm, rt)
                except TrainingError as exc:
                    last = checkpointer.last()
                    raise TrainingError(f"training stopped at step {step}: {exc.reason}; last good checkpoint: "
                                        f"{last if last is not None else 'none saved yet'}") from None
                interval.add(values, updt_s=time.perf_counter() - t1, data_s=t1 - t0)

                if is_log_step:
                    record = {"step": step, "samples": samples, "epoch": samples / len(train_ds),
                              "episodes": samples / frames_per_episode, **interval.summary(rt), TRAIN_LR: values["lr"]}
                    record[TRAIN_SAMPLES_PER_S] = interval.n * global_batch / (time.perf_counter() - interval.start)
                    record[TRAIN_PEAK_MEM_MB] = peak_memory_mb(rt.device)
                    interval.reset()
                    if rt.is_main:
                        metrics.write(record)
                        _emit(progress, log_line(record))
                t_side = time.perf_counter()  # eval and save time is kept out of samples/s
                if is_eval_step and rt.is_main:
                    result = offline_action_error(policy, val_ds, batch_size=config.batch_size,
                                                  baseline_action=baseline_action, max_samples=config.eval_max_samples)
                    policy.train()
                    metrics.write({"step": step, "samples": samples, **result.to_metrics()})
                    _emit(progress, f"eval step:{step} action_error:{result.policy.action_error:.4f} "
                                    f"first_action_error:{result.policy.first_action_error:.4f} "
                                    f"(mean-action baseline {result.baseline.action_error:.4f})")
                if is_save_step and rt.is_main:
                    checkpointer.save(step, policy, optimizer, scheduler, stats, train_config)
                interval.start += time.perf_counter() - t_side
                if progress is not None:
                    progress.update(progress.task_ids[0], completed=step, info=f"loss {values['loss']:.3f}")
                if step < config.steps and stop.agreed(rt):
                    if rt.is_main and not is_save_step:  # a save step has just written it
                        checkpointer.save(step, policy, optimizer, scheduler, stats, train_config)
                    if rt.distributed:
                        dist.barrier()  # every rank leaves only once the checkpoint is complete
                    raise TrainingStopped(f"SIGTERM at step {step} of {config.steps}; checkpoint "
                                          f"{checkpointer.last()}; continue with: robotrain train --resume "
                                          f"--output-dir {run_dir}")
        if rt.is_main:
            logger.info("done: %d steps, run dir %s", step, run_dir)
        if rt.distributed:
            dist.barrier()  # let rank 0 finish saving before any rank tears down gloo/nccl
        return run_dir
    finally:
        if metrics is not None:
            metrics.close()
        if run_lock is not None:
            run_lock.close()
        if batches is not None:
            batches.close()  # type: ignore[attr-defined]
        if rt.distributed and dist.is_initialized():
            # Drop the DDP wrapper first: its reducer holds the process group, which would then
            # outlive destroy_process_group and be torn down at interpreter exit, where gloo's
            # threads can abort the process ("terminate called without an active exception",
            # seen in 1 of 14 two-process runs on a loaded 2-core machine).
            model = None
            gc.collect()
            dist.destroy_process_group()


def _next_batch(batches: Iterator[dict[str, Any]], num_workers: int) -> dict[str, Any]:
    """next(batches); a worker that died while handing a batch over shows as a reset
    connection or EOF here, which becomes torch's own wording for a dead worker."""
    try:
        return next(batches)
    except (ConnectionError, EOFError) as exc:
        if num_workers == 0:
            raise
        raise RuntimeError(f"DataLoader worker died while handing over a batch ({exc})") from exc


@contextlib.contextmanager
def _data_worker_deaths_as_errors(checkpointer: Checkpointer, run_dir: Path) -> Iterator[None]:
    """A DataLoader worker killed (the OOM killer, a signal) shows as a RuntimeError raised by
    torch's SIGCHLD handler wherever the main thread happens to be (or by `_next_batch`);
    say what happened and how to go on."""
    try:
        yield
    except RuntimeError as exc:
        if not str(exc).startswith("DataLoader worker"):
            raise
        what = str(exc).strip()
        last = checkpointer.last()
        then = (f"last good checkpoint: {last}; continue with: robotrain train --resume --output-dir {run_dir}"
                if last is not None else "no checkpoint was saved yet; run the command again")
        raise TrainingError(f"{what} (out of memory? fewer --num-workers use less); {then}") from exc


def _emit(progress: Any, line: str) -> None:
    if progress is not None:
        progress.console.print(line)
    else:
        logger.info(line)
