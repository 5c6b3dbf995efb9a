"""A small bridge between config dataclasses and command-line flags (house rule 2).

Every field of a dataclass becomes a flag (`--batch-size` / `--batch_size`); fields of a
nested config become dotted flags (`--policy.dim_model 256`). Help text comes from the
string literal written under each field (the dataclass "docstring per field" style), so
`--help` is free. Values are converted from text with the field's type hint
(int, float, bool, str, tuple, Optional, dict as JSON) and a bad value raises
`ConfigError` naming the flag.

Precedence when resolving a config: dataclass defaults < preset < `--config FILE.json`
< flags. Example:

    robotrain train --dataset data/so101 --policy act --steps 1000 --policy.dim_model 256
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import json
import math
import textwrap
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from robotrain.errors import ConfigError

_NONE_WORDS = ("none", "null")
_TRUE_WORDS = ("1", "true", "yes", "on")
_FALSE_WORDS = ("0", "false", "no", "off")


# --- field documentation ------------------------------------------------------------


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """`{field: docstring}` from the string literals written under dataclass fields.

    Walks the MRO so inherited fields keep their documentation. Classes whose source is
    unavailable (e.g. built in a REPL) simply give no help text.
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _field_help(cls: type, f: dataclasses.Field) -> str:
    return f.metadata.get("help") or field_docs(cls).get(f.name, "")


# --- type conversion ------------------------------------------------------------------


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    """(inner type, accepts None) for `X | None` / `Optional[X]`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        if len(args) == 1:
            return args[0], optional
        return tp, optional
    return tp, False


def _parse_tuple_text(text: str) -> list[str]:
    """'240x320', '240,320', '(240, 320)', '[0.9, 0.95]' -> ['240', '320']."""
    body = text.strip().strip("()[]")
    if not body:
        return []
    sep = "x" if "x" in body and "," not in body else ","
    return [p.strip() for p in body.split(sep) if p.strip()]


def convert(value: Any, tp: Any, name: str) -> Any:
    """Convert `value` (flag text or JSON value) to type `tp`; ConfigError names `name`."""
    inner, optional = _strip_optional(tp)
    if value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS and inner is not str):
        if optional:
            return None
        raise ConfigError(f"{name} may not be None")
    if isinstance(value, str) and optional and inner is str and value.strip().lower() in _NONE_WORDS:
        return None
    origin = typing.get_origin(inner)
    try:
        if inner is Any:
            return value
        if inner is bool:
            if isinstance(value, bool):
                return value
            word = str(value).strip().lower()
            if word in _TRUE_WORDS:
                return True
            if word in _FALSE_WORDS:
                return False
            raise ValueError("expected true/false")
        if inner is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError("expected an integer")
            return int(value)
        if inner is float:
            if isinstance(value, bool):
                raise ValueError("expected a number")
            return float(value)
        if inner is str:
            if not isinstance(value, str):
                raise ValueError("expected a string")
            return value
        if inner in (Path,):
            return Path(value)
        if origin is typing.Literal:
            choices = typing.get_args(inner)
            if value not in choices:
                raise ValueError(f"expected one of {list(choices)}")
            return value
        if origin is tuple or inner is tuple:
            items = _parse_tuple_text(value) if isinstance(value, str) else list(value)
            args = typing.get_args(inner)
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(convert(v, args[0], name) for v in items)
            if args and len(items) != len(args):
                raise ValueError(f"expected {len(args)} values, got {len(items)}")
            return tuple(convert(v, a, name) for v, a in zip(items, args)) if args else tuple(items)
        if origin is list or inner is list:
            items = _parse_tuple_text(value) if isinstance(value, str) else list(value)
            (arg,) = typing.get_args(inner) or (Any,)
            return [convert(v, arg, name) for v in items]
        if origin is dict or inner is dict:
            parsed = json.loads(value) if isinstance(value, str) else value
            if not isinstance(parsed, dict):
                raise ValueError("expected a JSON object")
            return dict(parsed)
    except ConfigError:
        raise
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"invalid value {value!r} for {name}: {exc}") from None
    if dataclasses.is_dataclass(inner):
        raise ConfigError(f"{name} is a group of settings; set its fields as {name}.<field>")
    return value


def type_hints(cls: type) -> dict[str, Any]:
    """Resolved field types (works with `from __future__ import annotations`)."""
    return typing.get_type_hints(cls)


# --- dataclass <-> dict ----------------------------------------------------------------


def to_dict(obj: Any) -> Any:
    """A JSON-ready copy of a (nested) dataclass: tuples become lists, Paths strings."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        policy_type = getattr(type(obj), "type", None)
        if isinstance(policy_type, str) and policy_type:
            out["type"] = policy_type
        for f in dataclasses.fields(obj):
            out[f.name] = to_dict(getattr(obj, f.name))
        return out
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def from_dict(cls: type, data: Mapping[str, Any], prefix: str = "", nested: Mapping[str, type] | None = None,
              ignore: tuple[str, ...] = ()) -> Any:
    """Build dataclass `cls` from a (possibly partial) dict, converting every value.

    Unknown keys raise ConfigError naming them (a typo must not be silently ignored);
    `ignore` lists keys that may be present and are dropped (e.g. "type").
    `nested` maps a field name to the dataclass to build for it (the policy config,
    whose class depends on the chosen policy). `__post_init__` ValueErrors become
    ConfigErrors naming the group.
    """
    hints = type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields) - set(ignore))
    if unknown:
        raise ConfigError(f"unknown setting(s) {[prefix + k for k in unknown]} for {cls.__name__}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        if name in ignore:
            continue
        sub = (nested or {}).get(name)
        if sub is not None:
            if isinstance(value, sub):
                kwargs[name] = value
            else:
                kwargs[name] = from_dict(sub, value or {}, prefix=f"{prefix}{name}.", ignore=("type",))
        else:
            flag = f"--{prefix}{name}" if prefix else f"--{name.replace('_', '-')}"
            kwargs[name] = convert(value, hints[name], flag)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        where = prefix.rstrip(".") or cls.__name__
        raise ConfigError(f"invalid {where} config: {exc}") from None


def merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict update (override wins), returning a new dict."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """`set_dotted(d, "policy.dim_model", 256)` -> d["policy"]["dim_model"] = 256."""
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def load_json_config(path: str | Path) -> dict[str, Any]:
    """A config file (JSON object), or ConfigError naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError("config file not found", path) from None
    except (OSError, ValueError) as exc:  # ValueError: bad JSON or not UTF-8
        raise ConfigError(f"cannot read config file: {exc}", path) from None
    if not isinstance(data, dict):
        raise ConfigError("config file must hold a JSON object", path)
    return data


# --- argparse --------------------------------------------------------------------------


def add_dataclass_flags(
    parser: argparse.ArgumentParser,
    cls: type,
    prefix: str = "",
    nested: Mapping[str, type] | None = None,
    skip: tuple[str, ...] = (),
) -> None:
    """Add one flag per field of `cls`; nested dataclass fields get dotted flags.

    Flags store raw text under `dest=<dotted name>` with no default, so only what the
    user typed is in the namespace; conversion happens in `from_dict` (one place).
    """
    hints = type_hints(cls)
    group = parser.add_argument_group(f"{prefix.rstrip('.') or cls.__name__} settings") if prefix else parser
    fields = [f for f in dataclasses.fields(cls) if f.init and f.name not in skip]
    for f in sorted(fields, key=lambda f: f.name in (nested or {})):  # nested groups listed last
        sub = (nested or {}).get(f.name)
        if sub is not None:
            add_dataclass_flags(parser, sub, prefix=f"{prefix}{f.name}.")
            continue
        dotted = prefix + f.name
        names = [f"--{dotted}"]
        if "_" in dotted:  # top-level flags show the dashed form first, dotted ones LeRobot's
            dashed = f"--{dotted.replace('_', '-')}"
            names = [dashed, *names] if not prefix else [*names, dashed]
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
        )
        inner, _ = _strip_optional(hints[f.name])
        metavar = getattr(inner, "__name__", str(inner)).upper().replace("[", "").replace("]", "")
        help_text = _field_help(cls, f)
        extra: dict[str, Any] = {"nargs": "?", "const": "true"} if inner is bool else {}  # `--resume` alone
        group.add_argument(*names, dest=dotted, default=argparse.SUPPRESS, metavar=metavar,
                           # argparse %-formats help strings: a docstring's "%" must be doubled
                           help=f"{help_text} (default: {to_dict(default)!r})".strip().replace("%", "%%"), **extra)


def flags_to_overrides(namespace: argparse.Namespace) -> dict[str, Any]:
    """The flags the user typed, as a nested dict of raw strings."""
    overrides: dict[str, Any] = {}
    for dotted, value in vars(namespace).items():
        set_dotted(overrides, dotted, value)
    return overrides


# --- the training config ---------------------------------------------------------------

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
AMP_CHOICES = ("auto", "bf16", "off")


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
    """Use only these episodes (e.g. 0,1,2), split as above; None uses every episode."""
    keep_last: int = 3
    """Keep the last k checkpoints (0 keeps all)."""

    output_dir: str | None = None
    """Run directory; default outputs/train/<timestamp>_<policy>."""
    resume: bool = False
    """Continue the run in --output-dir from its `checkpoints/last`."""
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
    """Mixed precision: "auto" (bf16 autocast on CUDA, fp32 on CPU), "bf16" (also on CPU), "off"."""
    compile: bool = False
    """Run the policy through torch.compile."""
    channels_last: bool = False
    """Use the channels_last memory format for images and conv weights (faster on GPUs)."""

    image_size: tuple[int, int] | None = None
    """Shortcut (e.g. 240x320): sets the policy's image_size and the dataset cache size."""
    resize_mode: str = "resize"
    """How frames are fitted to image_size: "resize" or "pad" (aspect kept); "pad" also sets the
    policy's resize_mode when it has one."""
    use_cache: bool = True
    """Decode videos once into a memory-mapped uint8 cache (else decode per sample)."""
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

    def data_image_size(self) -> tuple[int, int] | None:
        """The (H, W) frames are resized to: the shortcut, else the policy's image_size."""
        return self.image_size or getattr(self.policy, "image_size", None)

    def data_resize_mode(self) -> str:
        """How frames are fitted to that size: the policy's resize_mode when it has one."""
        return getattr(self.policy, "resize_mode", None) or self.resize_mode

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
        if self.resize_mode not in ("resize", "pad"):
            raise bad("resize-mode", f"must be 'resize' or 'pad', got {self.resize_mode!r}")
        if self.image_size is not None and min(self.image_size) < 1:
            raise bad("image-size", f"must be positive HxW, got {self.image_size}")
        if self.frames_on_device and not self.use_cache:
            raise bad("frames-on-device", "needs the frame cache; drop --use-cache false")
        if self.policy is None:
            raise bad("policy", "no policy config was built")
        if check_paths:
            if not self.dataset:
                raise bad("dataset", "required (path of a local LeRobot dataset)")
            if not Path(self.dataset).is_dir():
                raise ConfigError("dataset directory not found (--dataset)", self.dataset)
        if not self.resume and self.output_dir and (Path(self.output_dir) / "checkpoints").exists():
            raise ConfigError("--output-dir already holds checkpoints; pass --resume to continue it or pick "
                              "another directory", self.output_dir)
        # A resumed run holds its own weights, so its parent checkpoint may be gone by then.
        if self.init_from is not None and not self.resume and not Path(self.init_from).is_dir():
            raise ConfigError("checkpoint directory not found (--init-from)", self.init_from)
        if self.resume:
            if not self.output_dir:
                raise bad("resume", "needs --output-dir, the run directory to continue")
            last = Path(self.output_dir) / "checkpoints" / "last"
            if not last.exists():
                raise ConfigError("--resume: no checkpoint to resume from (checkpoints/last missing)", self.output_dir)


# --- presets: plain functions returning partial configs ---------------------------------


def preset_act_so101() -> dict[str, Any]:
    """ACT on an SO-101 dataset at LeRobot's defaults, with 240x320 frames (4x fewer tokens)."""
    return {"policy_type": "act", "batch_size": 8, "steps": 100_000, "image_size": [240, 320]}


def preset_smolvla_so101() -> dict[str, Any]:
    """SmolVLA fine-tuning on an SO-101 dataset (LeRobot's recipe: bs 64, 20k steps)."""
    return {"policy_type": "smolvla", "batch_size": 64, "steps": 20_000}


def preset_act_sim_demo() -> dict[str, Any]:
    """ACT sized for 2 CPU cores on the SO-101 sim (`robotrain demo`): 96x128 frames, a
    narrow transformer, short chunks re-planned often, lr 1e-4 for the random backbone too
    (measured recipe: docs/results.md)."""
    return {"policy_type": "act", "batch_size": 8, "steps": 1500, "image_size": [96, 128], "num_workers": 1,
            "log_freq": 50, "save_freq": 500, "eval_freq": 500, "eval_max_samples": 64, "keep_last": 0,
            "policy": {"dim_model": 256, "n_heads": 8, "dim_feedforward": 1024, "n_encoder_layers": 2,
                       "n_decoder_layers": 1, "n_vae_encoder_layers": 2, "latent_dim": 32,
                       "chunk_size": 30, "n_action_steps": 10,
                       "optimizer_lr": 1e-4, "optimizer_lr_backbone": 1e-4}}


def preset_debug() -> dict[str, Any]:
    """A few steps with frequent logging/saving/eval to check a setup end to end."""
    return {"steps": 20, "batch_size": 2, "num_workers": 0, "log_freq": 1, "save_freq": 10, "eval_freq": 10,
            "eval_max_samples": 8}


PRESETS: dict[str, typing.Callable[[], dict[str, Any]]] = {
    "act_so101": preset_act_so101,
    "smolvla_so101": preset_smolvla_so101,
    "act_sim_demo": preset_act_sim_demo,
    "debug": preset_debug,
}


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
        base = merge(base, load_json_config(known.config))
    elif known.resume is not None and convert(known.resume, bool, "--resume") and known.output_dir:
        saved = Path(known.output_dir) / "config.json"
        if saved.is_file():
            base = merge(base, load_json_config(saved))
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
    """`--image-size HxW` / `--resize-mode pad` also set the policy's fields when it has them."""
    if config.policy is None:
        return config
    names = {f.name for f in dataclasses.fields(config.policy)}
    changes: dict[str, Any] = {}
    if config.image_size is not None and "image_size" in names and config.policy.image_size != config.image_size:
        changes["image_size"] = tuple(config.image_size)
    if config.resize_mode != "resize" and "resize_mode" in names:
        changes["resize_mode"] = config.resize_mode
    if changes:
        try:
            config.policy = dataclasses.replace(config.policy, **changes)
        except ValueError as exc:
            raise ConfigError(f"--image-size/--resize-mode: {exc}") from None
    return config
