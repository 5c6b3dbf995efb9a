"""The training config (`TrainConfig`) and how `robotrain train ARGS` resolves it:
defaults < preset < `--config FILE.json` < flags, validated before any data is read.

    robotrain train --dataset data/so101 --policy act --steps 1000 --policy.dim_model 256
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from pathlib import Path
from typing import Any

from robotrain.config.flags import (
    add_dataclass_flags,
    convert,
    flags_to_overrides,
    from_dict,
    merge,
    to_dict,
)
from robotrain.training.presets import PRESETS
from robotrain.errors import ConfigError
from robotrain.system.files import read_json

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
RUN_FILES = ("metrics.jsonl", "config.json", "checkpoints", "eval", "tensorboard", "resume_changes.jsonl")
"""What a training run writes in its directory (what --overwrite deletes, and nothing else)."""
RESUME_MUST_MATCH = ("dataset", "policy_type", "batch_size", "seed", "episodes", "val_fraction", "image_size",
                     "resize_mode", "state_noise_std", "use_imagenet_stats", "init_from")
"""Settings that decide the data and the model: --resume refuses to change them silently."""
RESUME_MAY_CHANGE_POLICY = ("n_action_steps", "temporal_ensemble_coeff", "num_steps", "use_cache",
                            "gradient_checkpointing")
"""Policy settings that change neither the weights nor the data (inference, memory)."""


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False
AMP_CHOICES = ("auto", "bf16", "off")
MEMORY_CHECK_CHOICES = ("error", "warn", "off")
LOADER_CHOICES = ("dataloader", "batched")


@dataclasses.dataclass
class TrainConfig:
    """Everything `robotrain train` needs; saved as `config.json` in the run directory.

    The policy's own settings (architecture, optimizer, scheduler) live in `policy`, a
    policy config dataclass, and are set with dotted flags (`--policy.dim_model 256`).
    """

    dataset: str = ""
    """Path of a local LeRobot dataset (v3.0 or v2.1)."""
    policy_type: str = "act"
    """Registered policy name (`--policy act`); picks the class of `policy`."""
    policy: Any = None
    """The policy config (set its fields as --policy.<field>)."""

    steps: int = 100_000
    """Number of optimizer updates."""
    batch_size: int = 8
    """Samples per optimizer update *per process*; with DDP the global batch is K x this."""
    num_workers: int = 2
    """DataLoader worker processes (0 loads batches in the training process)."""
    seed: int = 1000
    """Seeds model init, the sampler and dropout; runs with the same seed are identical on CPU."""

    log_freq: int = 100
    """Log metrics every N steps."""
    save_freq: int = 20_000
    """Save a checkpoint every N steps (and always after the last step); 0 saves only at the end."""
    eval_freq: int = 5_000
    """Offline action error on the held-out episodes every N steps; 0 disables."""
    eval_max_samples: int = 256
    """At most this many evenly spaced held-out frames per offline evaluation."""
    val_fraction: float = 0.1
    """Fraction of episodes held out for offline evaluation (0 trains on every episode)."""
    episodes: tuple[int, ...] | None = None
    """Use only these episodes (e.g. 0,1,2), split as above; None uses every episode. Only
    their files need to be on disk (a partial download trains on the episodes it has)."""
    rename: dict[str, str] | None = None
    """Feature rename map, dataset name -> name used (e.g. state=observation.state,
    actions=action,image=observation.images.front) for datasets exported with other names;
    saved with the run, so eval and resumed runs read the dataset the same way."""
    keep_last: int = 3
    """Keep the last k checkpoints (0 keeps all)."""

    output_dir: str | None = None
    """Run directory; default outputs/train/<timestamp>_<policy>."""
    resume: bool = False
    """Continue the run in --output-dir from its `checkpoints/last`."""
    overwrite: bool = False
    """Start afresh in an --output-dir that already holds a run (finished or killed): its
    metrics, config, checkpoints and evaluations are deleted first. Without it (or --resume)
    such a directory is refused, so one run never appends to another's metrics."""
    allow_resume_changes: bool = False
    """Let --resume continue with another dataset, policy setting or batch size than the run
    was started with (each change is logged in the run's resume_changes.jsonl); without it
    such a resume is refused naming the difference."""
    state_noise_std: float = 0.0
    """Gaussian noise (joint units, e.g. degrees) added to `observation.state` in every
    training batch; 0 disables. Why: near the grasp an imitation policy tends to copy its
    own proprioception, so closed-loop drift goes uncorrected (docs/results.md, session 4;
    `python -m robotrain.sim.grasp_probe` measures it); a noisy state makes the images carry
    the position. Offline evaluation and rollouts always see the clean state."""
    init_from: str | None = None
    """Start a new run from this checkpoint's weights (a `checkpoints/<step>` dir or its
    `pretrained_model/`, ours or LeRobot's) instead of a random init: fine-tuning, like
    lerobot-train's --policy.path. The policy settings must build the same architecture;
    step, optimizer and lr schedule start fresh; normalisation uses this run's dataset."""

    device: str = "auto"
    """"auto" (cuda if available, else cpu), "cpu", "cuda", "cuda:N" or "mps"."""
    amp: str = "auto"
    """Mixed precision: "auto" (bf16 autocast on CUDA; on a CPU only where it computes bf16
    natively and was measured faster: training/precision.py; else fp32), "bf16" (also on
    CPU), "off"."""
    compile: bool = False
    """Run the policy through torch.compile."""
    channels_last: bool = False
    """Use the channels_last memory format for images and conv weights (faster on GPUs)."""

    image_size: tuple[int, int] | None = None
    """Shortcut (e.g. 240x320) for the policy's image input (ACT's `image_size`, SmolVLA's
    `resize_imgs_with_padding`); the policy config is the one place the size lives, and the
    frame cache, the loader and the rollout all fit frames to it."""
    resize_mode: str | None = None
    """Shortcut for the policy's resize mode: "resize" (stretch) or "pad" (aspect kept,
    padded left/top); None keeps the policy's own (ACT: "resize", SmolVLA: "pad")."""
    memory_check: str = "error"
    """When `robotrain plan`'s prediction for this run exceeds the device's memory (the RAM
    on a CPU): "error" stops before the data and the optimiser exist, naming the estimate
    and the largest batch that fits; "warn" logs that and goes on (the prediction is
    within ~15% of measured peaks, see docs/benchmarks.md); "off" skips the prediction."""
    use_cache: bool = True
    """Decode videos once into a memory-mapped uint8 cache (else decode per sample)."""
    loader: str = "dataloader"
    """How training batches are made: "dataloader" (torch's DataLoader, --num-workers
    processes building them sample by sample) or "batched" (whole batches gathered from the
    frame cache by --num-workers threads of the training process, nothing pickled:
    data/batch_loader.py). The same batches either way. Measured on 2 cores
    (benchmarks/bench_loader.py, docs/benchmarks.md): 4.1x DataLoader's samples/s at
    2x240x320 and 4.7x at 2x480x640; "dataloader" stays the default because on a CPU the
    loader is 1-2% of an ACT step, until a GPU training run shows the gain end to end."""
    frames_on_device: bool = False
    """Copy the whole frame cache into accelerator memory once; DataLoader workers then send
    frame indices and each batch's images are one gather on the device, so image bytes never
    cross shared memory or PCIe per step (the GPU data_s bottleneck; the cache must fit in
    60 percent of the free device memory: 75 SO-101 episodes at 240x320 take 7.4 GB)."""
    use_imagenet_stats: bool = True
    """Normalise camera images with ImageNet's mean/std instead of the dataset's, as
    lerobot-train does by default (`dataset.use_imagenet_stats`); the stats saved in the
    checkpoint are the ones used, so LeRobot and robotrain reload it identically."""
    ddp_find_unused_parameters: bool = False
    """With torchrun: let DDP tolerate parameters that get no gradient in a step (slower)."""
    tensorboard: bool = True
    """Also write TensorBoard events when the tensorboard package is installed."""

    def image_input(self) -> tuple[tuple[int, int] | None, str]:
        """((H, W) or None, resize mode) the policy is fed at: its config's, after the
        `--image-size` / `--resize-mode` shortcuts were applied to it (`apply_image_size`)."""
        return self.policy.image_input()

    def validate(self, check_paths: bool = True) -> None:
        """Reject bad values before any data is loaded, naming the flag and the value."""

        def bad(flag: str, reason: str) -> ConfigError:
            return ConfigError(f"--{flag}: {reason}")

        for name in ("steps", "batch_size", "log_freq"):
            if getattr(self, name) < 1:
                raise bad(name.replace("_", "-"), f"must be >= 1, got {getattr(self, name)}")
        for name in ("num_workers", "save_freq", "eval_freq", "keep_last", "eval_max_samples"):
            if getattr(self, name) < 0:
                raise bad(name.replace("_", "-"), f"must be >= 0, got {getattr(self, name)}")
        if not (math.isfinite(self.state_noise_std) and self.state_noise_std >= 0.0):
            raise bad("state-noise-std", f"must be a finite number >= 0, got {self.state_noise_std}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise bad("val-fraction", f"must be in [0, 1), got {self.val_fraction}")
        if self.eval_freq > 0 and self.val_fraction == 0.0:
            raise bad("eval-freq", "offline evaluation needs held-out episodes; set --val-fraction > 0 or --eval-freq 0")
        if self.device.split(":")[0] not in DEVICE_CHOICES:
            raise bad("device", f"must be one of {DEVICE_CHOICES} (or cuda:N), got {self.device!r}")
        if self.amp not in AMP_CHOICES:
            raise bad("amp", f"must be one of {AMP_CHOICES}, got {self.amp!r}")
        if self.resize_mode not in (None, "resize", "pad"):
            raise bad("resize-mode", f"must be 'resize' or 'pad', got {self.resize_mode!r}")
        if self.image_size is not None and min(self.image_size) < 1:
            raise bad("image-size", f"must be positive HxW, got {self.image_size}")
        if self.loader not in LOADER_CHOICES:
            raise bad("loader", f"must be one of {LOADER_CHOICES}, got {self.loader!r}")
        if self.loader == "batched" and not self.use_cache:
            raise bad("loader", "'batched' gathers frames from the frame cache; drop --use-cache false")
        if self.memory_check not in MEMORY_CHECK_CHOICES:
            raise bad("memory-check", f"must be one of {MEMORY_CHECK_CHOICES}, got {self.memory_check!r}")
        if self.frames_on_device and not self.use_cache:
            raise bad("frames-on-device", "needs the frame cache; drop --use-cache false")
        if self.policy is None:
            raise bad("policy", "no policy config was built")
        if check_paths:
            if not self.dataset:
                raise bad("dataset", "required (path of a local LeRobot dataset)")
            if not Path(self.dataset).is_dir():
                raise ConfigError("dataset directory not found (--dataset)", self.dataset)
        if self.resume and self.overwrite:
            raise bad("overwrite", "cannot be combined with --resume (one continues the run, the other deletes it)")
        if not self.resume and not self.overwrite and self.output_dir:
            held = sorted(n for n in RUN_FILES if (Path(self.output_dir) / n).exists())
            if held:
                raise ConfigError(f"--output-dir already holds a run ({', '.join(held)}); pass --resume to continue "
                                  "it, --overwrite to start it afresh, or pick another directory", self.output_dir)
        if self.output_dir and check_paths and self.dataset and _inside(Path(self.output_dir), Path(self.dataset)):
            raise ConfigError("--output-dir is inside the dataset (--dataset); checkpoints and metrics there would "
                              "be read as dataset files or deleted with it: pick a folder outside it",
                              self.output_dir)
        # A resumed run holds its own weights, so its parent checkpoint may be gone by then.
        if self.init_from is not None and not self.resume and not Path(self.init_from).is_dir():
            raise ConfigError("checkpoint directory not found (--init-from)", self.init_from)
        if self.resume:
            if not self.output_dir:
                raise bad("resume", "needs --output-dir, the run directory to continue")
            last = Path(self.output_dir) / "checkpoints" / "last"
            if not last.exists():
                raise ConfigError("--resume: no checkpoint to resume from (checkpoints/last missing)", self.output_dir)
            changes = self.resume_changes()
            if changes and not self.allow_resume_changes:
                raise ConfigError(f"--resume with other settings than the run was started with: {'; '.join(changes)}. "
                                  "Drop those flags to continue it exactly, or pass --allow-resume-changes "
                                  "to change them deliberately", Path(self.output_dir) / "config.json")

    def resume_changes(self) -> list[str]:
        """What differs, in what decides the data and the model, from the run's saved
        config.json: "batch_size: 8 -> 16", ... (steps, logging, device and the like may change)."""
        path = Path(self.output_dir or "") / "config.json"
        if not path.is_file():
            return []
        saved = read_json(path, ConfigError, expect=dict)
        now = to_dict(self)
        out = []
        for key in RESUME_MUST_MATCH:
            before, after = saved.get(key), now.get(key)
            if key == "dataset" and before and after:
                before, after = str(Path(before).resolve()), str(Path(after).resolve())
            if before != after:
                out.append(f"{key}: {before!r} -> {after!r}")
        saved_policy, now_policy = saved.get("policy") or {}, now.get("policy") or {}
        for key in sorted(set(saved_policy) | set(now_policy)):
            if key not in RESUME_MAY_CHANGE_POLICY and saved_policy.get(key) != now_policy.get(key):
                out.append(f"policy.{key}: {saved_policy.get(key)!r} -> {now_policy.get(key)!r}")
        return out


class _Parser(argparse.ArgumentParser):
    """argparse that raises ConfigError instead of exiting, so the CLI prints one line."""

    def error(self, message: str) -> typing.NoReturn:  # type: ignore[override]
        raise ConfigError(message)


def _base_parser(add_help: bool) -> _Parser:
    parser = _Parser(prog="robotrain train", add_help=add_help, allow_abbrev=False,
                     description="Train a policy on a LeRobot dataset. Example: robotrain train "
                                 "--dataset data/so101 --policy act --steps 1000 --image-size 240x320")
    parser.add_argument("--config", metavar="FILE.json", help="load settings from a JSON file; flags override it")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="start from a named preset")
    parser.add_argument("--policy", "--policy.type", "--policy-type", "--policy_type", dest="policy_type",
                        metavar="NAME", help="policy to train (act, smolvla, ...)")
    return parser


def parse_train_config(argv: list[str], check_paths: bool = True) -> TrainConfig:
    """Resolve defaults < preset < --config file < flags into a validated TrainConfig.

    With --resume and no --config, the run directory's saved config.json is the base,
    so `robotrain train --resume --output-dir RUN` continues with the same settings.
    """
    # torch comes with the policies; `robotrain --help` imports this module (cli/train.py).
    from robotrain.policies import get_policy_class

    pre = _base_parser(add_help=False)
    pre.add_argument("--resume", nargs="?", const="true", default=None)
    pre.add_argument("--output-dir", "--output_dir", dest="output_dir")
    pre.add_argument("-h", "--help", action="store_true")
    known, _ = pre.parse_known_args(argv)

    base: dict[str, Any] = {}
    if known.preset:
        base = merge(base, PRESETS[known.preset]())
    if known.config:
        base = merge(base, read_json(Path(known.config), ConfigError, missing="config file not found", expect=dict))
    elif known.resume is not None and convert(known.resume, bool, "--resume") and known.output_dir:
        saved = Path(known.output_dir) / "config.json"
        if saved.is_file():
            base = merge(base, read_json(saved, ConfigError, expect=dict))
        elif (Path(known.output_dir) / "checkpoints").is_dir() and not any(
                a.split("=")[0] == "--dataset" for a in argv):
            # Without it every flag falls back to its default, and the first complaint would be
            # a confusing "--dataset: required".
            raise ConfigError("--resume: the run's config.json is missing; restore it or pass the run's flags "
                              "again (--config FILE or --dataset ... --policy ...)", saved)
    policy_type = known.policy_type or base.get("policy_type") or (base.get("policy") or {}).get("type") or "act"
    config_class = get_policy_class(policy_type).config_class

    parser = _base_parser(add_help=True)
    add_dataclass_flags(parser, TrainConfig, nested={"policy": config_class}, skip=("policy_type",))
    if known.help:
        parser.print_help()
        raise SystemExit(0)
    namespace = parser.parse_args(argv)
    for meta_flag in ("config", "preset", "policy_type"):
        delattr(namespace, meta_flag)
    data = merge(base, flags_to_overrides(namespace))
    data["policy_type"] = policy_type
    policy_data = dict(data.get("policy") or {})
    if policy_data.get("type", policy_type) != policy_type:
        policy_data = {}  # a config file for another policy: keep only its shared settings
    data["policy"] = {k: v for k, v in policy_data.items() if k != "type"}
    config = from_dict(TrainConfig, data, nested={"policy": config_class})
    config = apply_image_size(config)
    config.validate(check_paths=check_paths)
    return config


def apply_image_size(config: TrainConfig) -> TrainConfig:
    """Set the policy's image input from the `--image-size HxW` / `--resize-mode` shortcuts."""
    if config.policy is None:
        return config
    size = tuple(config.image_size) if config.image_size is not None else None
    try:
        config.policy = config.policy.with_image_input(size, config.resize_mode)  # type: ignore[arg-type]
    except (ConfigError, ValueError) as exc:
        raise ConfigError(f"--image-size/--resize-mode: {exc}") from None
    return config
