"""Checkpoints in LeRobot's layout, written atomically, safetensors and JSON only.

```
<run>/checkpoints/<step:06d>/pretrained_model/
    config.json                 policy config in LeRobot's field names (+ input/output_features)
    model.safetensors           policy.state_dict() (LeRobot's key names)
    train_config.json           the training config in LeRobot's keys only (LeRobot parses it strictly)
    robotrain_config.json       our full training config + fps, world_size (what LeRobot lacks)
    policy_preprocessor.json    + policy_preprocessor_step_3_normalizer_processor.safetensors
    policy_postprocessor.json   + policy_postprocessor_step_0_unnormalizer_processor.safetensors
<run>/checkpoints/<step:06d>/training_state/
    optimizer_state.safetensors optimizer_param_groups.json scheduler_state.json
    rng_state.safetensors       training_step.json
<run>/checkpoints/last -> <step:06d>
```
A checkpoint directory is built under a temporary name and renamed into place, then
`last` is swapped atomically, so a killed run never leaves a half-written checkpoint that
looks complete and `last` always points at a complete one. No pickle anywhere: a
checkpoint can be loaded without executing code.

`load_policy(dir)` rebuilds a policy from a `pretrained_model/` directory, ours or one
written by LeRobot itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from robotrain.config import flags as config_flags
from robotrain.constants import (
    ACTION,
    CHECKPOINTS_DIR,
    CONFIG_JSON,
    LAST_CHECKPOINT,
    MODEL_SAFETENSORS,
    OBS_STATE,
    PRETRAINED_MODEL_DIR,
    ROBOTRAIN_CONFIG_JSON,
    ROBOTRAIN_SECTION,
    TRAIN_CONFIG_JSON,
    TRAINING_STATE_DIR,
)
from robotrain.errors import CheckpointError, ConfigError, RobotrainError
from robotrain.system.files import atomic_directory, atomic_path, read_json, write_safetensors
from robotrain.policies.normalize import unflatten_stats
from robotrain.policies import Policy, PolicyConfig, PolicyFeatures, get_policy_class
from robotrain.checkpoints.reexpress import io_features, reexpress_state_dict

logger = logging.getLogger(__name__)

PREPROCESSOR_JSON = "policy_preprocessor.json"
POSTPROCESSOR_JSON = "policy_postprocessor.json"
# The statistics files of LeRobot's ACT (the normaliser is preprocessor step 3); other
# policies' step indices differ, so readers follow the processor descriptions.
PREPROCESSOR_STATS = "policy_preprocessor_step_3_normalizer_processor.safetensors"
POSTPROCESSOR_STATS = "policy_postprocessor_step_0_unnormalizer_processor.safetensors"
OPTIMIZER_STATE = "optimizer_state.safetensors"
OPTIMIZER_PARAM_GROUPS = "optimizer_param_groups.json"
SCHEDULER_STATE = "scheduler_state.json"
RNG_STATE = "rng_state.safetensors"
TRAINING_STEP = "training_step.json"
PRETRAINED_FILES = (CONFIG_JSON, MODEL_SAFETENSORS, PREPROCESSOR_JSON, POSTPROCESSOR_JSON)
"""Every checkpoint's files, plus the statistics files its processor descriptions name."""
TRAINING_STATE_FILES = (OPTIMIZER_STATE, OPTIMIZER_PARAM_GROUPS, SCHEDULER_STATE, RNG_STATE, TRAINING_STEP)


# --- policy config <-> LeRobot's config.json ---------------------------------------------


def features_from_lerobot(config: Mapping[str, Any], fps: int = 30, where: Path | None = None) -> PolicyFeatures:
    """PolicyFeatures from config.json's `input_features` / `output_features`."""
    try:
        return PolicyFeatures.from_lerobot(config, fps=fps)
    except ConfigError as exc:
        raise CheckpointError(exc.reason, where) from None


def policy_config_to_lerobot(config: PolicyConfig, features: PolicyFeatures) -> dict[str, Any]:
    """config.json content, as the policy writes it for LeRobot."""
    return config.to_lerobot_dict(features)


def policy_config_from_lerobot(config_class: type[PolicyConfig], data: Mapping[str, Any]) -> PolicyConfig:
    """A policy config from config.json; LeRobot-only keys (device, push_to_hub, ...) are dropped."""
    return config_class.from_lerobot_dict(dict(data))


def stats_file_name(processor: str, step: int, kind: str) -> str:
    """LeRobot's name for a normaliser step's statistics: the step's index is part of it
    (ACT: `policy_preprocessor_step_3_normalizer_processor.safetensors`, SmolVLA: step 5)."""
    return f"{processor}_step_{step}_{kind}_processor.safetensors"


def _write_processors(dest: Path, config: PolicyConfig, config_json: Mapping[str, Any],
                      stats: Mapping[str, Mapping[str, Any]]) -> None:
    """LeRobot's pre/post-processor descriptions and their normalizer statistics files."""
    norm_map = dict(config_json.get("normalization_mapping") or {})
    inputs, outputs = config_json["input_features"], config_json["output_features"]
    device = {"registry_name": "device_processor", "config": {"device": "cpu", "float_dtype": None}}
    pre_steps: list[dict[str, Any]] = [
        {"registry_name": "rename_observations_processor", "config": {"rename_map": {}}},
        {"registry_name": "to_batch_processor", "config": {}},
        *config.lerobot_preprocessor_steps(),
        device,
    ]
    pre_stats = stats_file_name("policy_preprocessor", len(pre_steps), "normalizer")
    pre_steps.append({"registry_name": "normalizer_processor",
                      "config": {"eps": 1e-8, "features": {**inputs, **outputs}, "norm_map": norm_map},
                      "state_file": pre_stats})
    post_stats = stats_file_name("policy_postprocessor", 0, "unnormalizer")
    post_steps = [
        {"registry_name": "unnormalizer_processor",
         "config": {"eps": 1e-8, "features": dict(outputs), "norm_map": norm_map},
         "state_file": post_stats},
        device,
    ]
    flat = flatten_stats(stats)
    (dest / PREPROCESSOR_JSON).write_text(json.dumps(_processor_json("policy_preprocessor", pre_steps), indent=2) + "\n")
    (dest / POSTPROCESSOR_JSON).write_text(json.dumps(_processor_json("policy_postprocessor", post_steps), indent=2) + "\n")
    write_safetensors(flat, str(dest / pre_stats))
    write_safetensors(flat, str(dest / post_stats))


def _processor_json(name: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": name, "steps": steps}


def processor_stats_files(pretrained_dir: Path) -> list[Path]:
    """The statistics files the pre/post-processor descriptions name (those of
    normalizer/unnormalizer steps), or LeRobot's ACT names where there is no description."""
    files = []
    for name in (POSTPROCESSOR_JSON, PREPROCESSOR_JSON):
        path = pretrained_dir / name
        if not path.is_file():
            continue
        data = read_json(path, CheckpointError)
        steps = data.get("steps") if isinstance(data, dict) else None
        if not isinstance(steps, list):
            raise CheckpointError("no 'steps' list", path)
        files += [pretrained_dir / s["state_file"] for s in steps
                  if isinstance(s, dict) and "normalizer" in str(s.get("registry_name")) and s.get("state_file")]
    return files or [pretrained_dir / POSTPROCESSOR_STATS, pretrained_dir / PREPROCESSOR_STATS]


def flatten_stats(stats: Mapping[str, Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """`{"action": {"mean": x}}` -> `{"action.mean": float32 tensor}` (LeRobot's keys)."""
    flat: dict[str, torch.Tensor] = {}
    for key, per_stat in stats.items():
        for stat, value in per_stat.items():
            array = np.asarray(value)
            if array.dtype.kind not in "fiub":
                continue
            flat[f"{key}.{stat}"] = torch.as_tensor(np.atleast_1d(array).astype(np.float32)).contiguous()
    return flat


def _unshared(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached CPU tensors; tensors sharing storage are cloned (safetensors refuses shared)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, tensor in state.items():
        t = tensor.detach().cpu()
        ptr = t.untyped_storage().data_ptr() if t.numel() else -1
        if ptr in seen or not t.is_contiguous():
            t = t.contiguous().clone()
        if ptr != -1:
            seen.add(ptr)
        out[key] = t
    return out


def save_pretrained(dest: Path, policy: Policy, stats: Mapping[str, Mapping[str, Any]],
                    train_config: Mapping[str, Any] | None = None) -> None:
    """Write a complete `pretrained_model/` directory into `dest` (already created)."""
    config_json = policy_config_to_lerobot(policy.config, policy.features)
    (dest / CONFIG_JSON).write_text(json.dumps(config_json, indent=4) + "\n")
    write_safetensors(_unshared(policy.state_dict()), str(dest / MODEL_SAFETENSORS), metadata={"format": "pt"})
    _write_processors(dest, policy.config, config_json, stats)
    if train_config is not None:
        # train_config.json must stay loadable by LeRobot's TrainPipelineConfig (draccus
        # rejects unknown keys), so our own section goes to a file of its own.
        lerobot_part = {k: v for k, v in train_config.items() if k != ROBOTRAIN_SECTION}
        (dest / TRAIN_CONFIG_JSON).write_text(json.dumps(lerobot_part, indent=4) + "\n")
        if ROBOTRAIN_SECTION in train_config:
            (dest / ROBOTRAIN_CONFIG_JSON).write_text(json.dumps(train_config[ROBOTRAIN_SECTION], indent=4) + "\n")


def read_robotrain_config(pretrained_dir: Path) -> dict[str, Any]:
    """Our own training config saved with a checkpoint ({} for LeRobot's checkpoints):
    robotrain_config.json, or the "robotrain" key of train_config.json in older checkpoints."""
    path = pretrained_dir / ROBOTRAIN_CONFIG_JSON
    if path.is_file():
        data = read_json(path, CheckpointError)
    elif (pretrained_dir / TRAIN_CONFIG_JSON).is_file():
        train_config = read_json(pretrained_dir / TRAIN_CONFIG_JSON, CheckpointError)
        data = train_config.get(ROBOTRAIN_SECTION) if isinstance(train_config, dict) else None
        path = pretrained_dir / TRAIN_CONFIG_JSON
    else:
        return {}
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CheckpointError("our training config must be a JSON object", path)
    return data


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError("missing file", path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"unreadable safetensors file: {exc}", path) from None


def load_stats(pretrained_dir: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """The normalisation statistics saved beside a model (pre- and post-processor files)."""
    pretrained_dir = Path(pretrained_dir)
    flat: dict[str, torch.Tensor] = {}
    for path in processor_stats_files(pretrained_dir):
        flat.update(_read_safetensors(path))
    return unflatten_stats({k: v.numpy() for k, v in flat.items()})


def check_stats(stats: Mapping[str, Mapping[str, Any]], features: PolicyFeatures, where: Path) -> None:
    """Normalisation statistics must be finite and shaped like the features they normalise
    (state (S,), action (A,), a camera's per channel): a NaN std or a stale (7,) mean would
    otherwise surface as NaN actions or a shape error deep inside the first batch."""
    expected: dict[str, tuple[tuple[int, ...], ...]] = {
        OBS_STATE: ((features.state_dim,),), ACTION: ((features.action_dim,),),
        **{key: ((features.image_shape[0], 1, 1), (features.image_shape[0],)) for key in features.camera_keys},
    }
    for key, per_stat in stats.items():
        for stat, value in per_stat.items():
            array = np.asarray(value)
            if array.dtype.kind in "fc" and not np.all(np.isfinite(array)):
                raise CheckpointError(f"normalisation statistic {key}.{stat} holds NaN or inf", where)
            shapes = expected.get(key)
            if shapes and stat in ("mean", "std", "min", "max") and array.shape not in shapes:
                raise CheckpointError(f"normalisation statistic {key}.{stat} has shape {list(array.shape)}; "
                                      f"the policy's {key} needs {list(shapes[0])}", where)


def state_dict_mismatch(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> str | None:
    """The keys of `state` missing, unexpected or mis-shaped against `own`, in words; None if
    every key and shape matches."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if not (missing or unexpected or wrong):
        return None
    parts = []
    if missing:
        parts.append(f"missing keys {missing[:20]}{' ...' if len(missing) > 20 else ''} ({len(missing)})")
    if unexpected:
        parts.append(f"unexpected keys {unexpected[:20]}{' ...' if len(unexpected) > 20 else ''} "
                     f"({len(unexpected)})")
    if wrong:
        parts.append("shape mismatch " + ", ".join(
            f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in wrong[:10]))
    return "; ".join(parts)


def load_state_dict_strict(policy: torch.nn.Module, state: Mapping[str, torch.Tensor], where: Path) -> None:
    """Load weights; any missing, unexpected or mis-shaped key, or a NaN/inf weight, is a
    CheckpointError listing them (a policy with NaN weights only ever outputs NaN actions)."""
    mismatch = state_dict_mismatch(policy.state_dict(), state)
    if mismatch:
        raise CheckpointError("weights do not match the policy: " + mismatch, where)
    own = policy.state_dict()
    wrong_kind = [f"{k} ({state[k].dtype}, the policy's is {own[k].dtype})" for k in own
                  if own[k].is_floating_point() != state[k].is_floating_point()]
    if wrong_kind:
        raise CheckpointError(f"{len(wrong_kind)} weight tensor(s) of the wrong kind, e.g. {wrong_kind[:3]}", where)
    broken = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise CheckpointError(f"{len(broken)} weight tensor(s) hold NaN or inf, e.g. {broken[:3]}", where)
    policy.load_state_dict(dict(state), strict=True)


def find_pretrained_dir(path: str | Path) -> Path:
    """`path` itself, or its `pretrained_model/` when given a step dir or `last`."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError("checkpoint directory not found", path)
    return path / PRETRAINED_MODEL_DIR if (path / PRETRAINED_MODEL_DIR).is_dir() else path


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint path with its links followed once, now: `RUN/checkpoints/last` becomes
    `RUN/checkpoints/000500` (or its `pretrained_model/`), so a training run that moves
    `last` while an evaluation runs cannot change which weights the result belongs to."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError("checkpoint directory not found", path)
    return path.resolve()


def checkpoint_identity(pretrained_dir: str | Path) -> dict[str, Any]:
    """What a result was computed with: the policy type, the training step (from the
    checkpoint's training_state/training_step.json or its `<step>/` folder name, else
    None) and the sha256 of its model.safetensors, so a committed eval_info.json can be
    tied to exactly one set of weights."""
    pretrained_dir = find_pretrained_dir(pretrained_dir)
    config_json = read_json(pretrained_dir / CONFIG_JSON, CheckpointError)
    step: int | None = None
    step_file = pretrained_dir.parent / TRAINING_STATE_DIR / TRAINING_STEP
    if step_file.is_file():
        value = read_json(step_file, CheckpointError)
        step = int(value["step"]) if isinstance(value, dict) and isinstance(value.get("step"), int) else None
    elif pretrained_dir.name == PRETRAINED_MODEL_DIR and pretrained_dir.parent.name.isdigit():
        step = int(pretrained_dir.parent.name)
    digest = hashlib.sha256()
    weights = pretrained_dir / MODEL_SAFETENSORS
    try:
        with open(weights, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise CheckpointError(f"cannot read: {exc.strerror}", weights) from None
    return {"type": config_json.get("type") if isinstance(config_json, dict) else None, "step": step,
            "model_sha256": digest.hexdigest(), "checkpoint": str(pretrained_dir)}


def init_weights_from(policy: Policy, checkpoint: str | Path) -> None:
    """Overwrite `policy`'s weights with a checkpoint's (ours or LeRobot's) to fine-tune it.

    Only the weights move: the normalisation statistics stay those of the dataset being
    trained on (as lerobot-train does with `--policy.path`), and the optimizer and lr
    schedule start fresh. The architecture must match exactly; a different policy type or
    any missing, extra or mis-shaped weight is a CheckpointError naming them.

    Unlike lerobot-train, a policy that supports it (ACT) has its state/action layers
    re-expressed in the new statistics (`robotrain.checkpoints.reexpress`), so fine-tuning starts from
    exactly the checkpoint's actions instead of ones shifted by the change of statistics.
    A checkpoint whose statistics cannot be read is copied as it is, with a warning.
    """
    pretrained_dir = find_pretrained_dir(checkpoint)
    config_json = read_json(pretrained_dir / CONFIG_JSON, CheckpointError)
    kind = config_json.get("type") if isinstance(config_json, dict) else None
    if kind != policy.name:
        raise CheckpointError(f"--init-from holds a {kind!r} policy, this run trains {policy.name!r}",
                              pretrained_dir / CONFIG_JSON)
    load_state_dict_strict(policy, _read_safetensors(pretrained_dir / MODEL_SAFETENSORS),
                           pretrained_dir / MODEL_SAFETENSORS)
    _reexpress_in_own_stats(policy, pretrained_dir)


def _reexpress_in_own_stats(policy: Policy, pretrained_dir: Path) -> None:
    """Rewrite `policy`'s freshly copied weights from the checkpoint's statistics into its own."""
    features = io_features(policy)
    if not features:
        return
    try:
        source = load_policy(pretrained_dir)
        state, converted = reexpress_state_dict(source, policy.normalizer, keys=features)  # type: ignore[arg-type]
    except RobotrainError as exc:
        logger.warning("weights copied without re-expressing them in this dataset's statistics: %s", exc)
        return
    if converted:
        own = policy.state_dict()
        policy.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
        logger.info("--init-from weights re-expressed in this dataset's statistics (%s)", ", ".join(converted))


def load_policy(pretrained_dir: str | Path, device: str | torch.device = "cpu",
                overrides: Mapping[str, Any] | None = None) -> Policy:
    """Rebuild a policy from a `pretrained_model/` directory (ours or LeRobot's).

    `overrides` replaces config fields before the policy is built, for settings that only
    change inference, e.g. `{"n_action_steps": 1, "temporal_ensemble_coeff": 0.01}` (as
    lerobot-eval's `--policy.n_action_steps`); an unknown field is a ConfigError.

    Example: `policy = load_policy("outputs/train/run/checkpoints/last/pretrained_model")`.
    """
    pretrained_dir = find_pretrained_dir(pretrained_dir)
    config_json = read_json(pretrained_dir / CONFIG_JSON, CheckpointError)
    if not isinstance(config_json, dict) or "type" not in config_json:
        raise CheckpointError("config.json has no policy 'type'", pretrained_dir / CONFIG_JSON)
    # Our robotrain_config.json keeps every policy field (config.json holds only LeRobot's, so
    # that LeRobot can read it) and the dataset fps; LeRobot's own checkpoints lack both.
    fps, full_config = 30, dict(config_json)
    ours = read_robotrain_config(pretrained_dir)
    if ours:
        fps = int(ours.get("fps", fps))
        if isinstance(ours.get("policy"), dict) and ours["policy"].get("type", config_json["type"]) == config_json["type"]:
            full_config.update(ours["policy"])
    # The weights come from model.safetensors below, not from where training started.
    full_config.pop("pretrained", None)
    try:
        policy_class = get_policy_class(config_json["type"])
    except ConfigError as exc:
        raise CheckpointError(f"'type': {exc.reason}", pretrained_dir / CONFIG_JSON) from None
    if overrides:
        known = {f.name for f in dataclasses.fields(policy_class.config_class) if f.init}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"unknown {config_json['type']} policy setting(s) {unknown}; "
                              f"known: {', '.join(sorted(known))}")
        full_config.update(overrides)
    try:
        config = policy_config_from_lerobot(policy_class.config_class, full_config)
    except (ValueError, TypeError, ConfigError) as exc:
        reason = exc.reason if isinstance(exc, ConfigError) else str(exc)
        if overrides:
            raise ConfigError(f"invalid policy config with overrides {dict(overrides)}: {reason}") from None
        where = pretrained_dir / (ROBOTRAIN_CONFIG_JSON if ours else CONFIG_JSON)
        raise CheckpointError(f"invalid policy config: {reason}", where) from None
    features = features_from_lerobot(config_json, fps=fps, where=pretrained_dir / CONFIG_JSON)
    stats = load_stats(pretrained_dir)
    stats_file = processor_stats_files(pretrained_dir)[-1]
    check_stats(stats, features, stats_file)
    try:
        policy = policy_class(config, features, stats)
    except ConfigError as exc:  # e.g. statistics missing for a feature the policy normalises
        raise CheckpointError(exc.reason, stats_file if "statistic" in exc.reason else pretrained_dir) from None
    load_state_dict_strict(policy, _read_safetensors(pretrained_dir / MODEL_SAFETENSORS),
                           pretrained_dir / MODEL_SAFETENSORS)
    return policy.to(device).eval()


# --- training state ------------------------------------------------------------------------


def rng_state() -> dict[str, torch.Tensor]:
    """Python, NumPy and torch RNG states as tensors (LeRobot's key names; no pickle)."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    assert np_name == "MT19937"
    state = {
        "py_rng_version": torch.tensor([py_version], dtype=torch.int64),
        "py_rng_state": torch.tensor(py_state, dtype=torch.int64),
        "np_rng_state_values": torch.tensor(np.asarray(np_keys, dtype=np.int64)),
        "np_rng_state_index": torch.tensor([np_pos], dtype=torch.int64),
        "np_rng_has_gauss": torch.tensor([np_has_gauss], dtype=torch.int64),
        "np_rng_cached_gaussian": torch.tensor([np_gauss], dtype=torch.float64),
        "torch_rng_state": torch.get_rng_state(),
    }
    if py_gauss is not None:
        state["py_rng_gauss_next"] = torch.tensor([py_gauss], dtype=torch.float64)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["torch_cuda_rng_state"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: Mapping[str, torch.Tensor]) -> None:
    gauss = float(state["py_rng_gauss_next"][0]) if "py_rng_gauss_next" in state else None
    random.setstate((int(state["py_rng_version"][0]), tuple(int(v) for v in state["py_rng_state"]), gauss))
    np.random.set_state((
        "MT19937",
        state["np_rng_state_values"].numpy().astype(np.uint32),
        int(state["np_rng_state_index"][0]),
        int(state["np_rng_has_gauss"][0]),
        float(state["np_rng_cached_gaussian"][0]),
    ))
    torch.set_rng_state(state["torch_rng_state"])
    if "torch_cuda_rng_state" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["torch_cuda_rng_state"])


def save_training_state(dest: Path, step: int, optimizer: torch.optim.Optimizer,
                        scheduler: torch.optim.lr_scheduler.LRScheduler | None) -> None:
    """Optimizer tensors as safetensors (`<param id>.<name>`), everything else as JSON."""
    opt = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for param_id, per_param in opt["state"].items():
        for name, value in per_param.items():
            tensors[f"{param_id}.{name}"] = torch.as_tensor(value)
    write_safetensors(_unshared(tensors), str(dest / OPTIMIZER_STATE))
    (dest / OPTIMIZER_PARAM_GROUPS).write_text(json.dumps(config_flags.to_dict(opt["param_groups"]), indent=4))
    sched = scheduler.state_dict() if scheduler is not None else {}
    sched = {k: v for k, v in sched.items() if k != "lr_lambdas"}
    (dest / SCHEDULER_STATE).write_text(json.dumps(config_flags.to_dict(sched), indent=4))
    write_safetensors(rng_state(), str(dest / RNG_STATE))
    (dest / TRAINING_STEP).write_text(json.dumps({"step": step}, indent=4))


def load_training_state(src: Path, optimizer: torch.optim.Optimizer,
                        scheduler: torch.optim.lr_scheduler.LRScheduler | None) -> int:
    """Restore optimizer, scheduler and RNGs from `training_state/`; returns the step."""
    missing = [name for name in TRAINING_STATE_FILES if not (src / name).is_file()]
    if missing:
        raise CheckpointError(f"incomplete training state, missing {missing}", src)
    tensors = _read_safetensors(src / OPTIMIZER_STATE)
    groups = read_json(src / OPTIMIZER_PARAM_GROUPS, CheckpointError, expect=list)
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        param_id, _, name = key.partition(".")
        state.setdefault(int(param_id), {})[name] = value
    current = optimizer.state_dict()["param_groups"]
    if len(groups) != len(current) or any(len(a["params"]) != len(b["params"]) for a, b in zip(groups, current)):
        raise CheckpointError("optimizer parameter groups do not match the policy", src / OPTIMIZER_PARAM_GROUPS)
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"optimizer state does not match: {exc}", src / OPTIMIZER_STATE) from None
    if scheduler is not None:
        sched = read_json(src / SCHEDULER_STATE, CheckpointError, expect=dict)
        sched["lr_lambdas"] = [None] * len(current)
        scheduler.load_state_dict(sched)
    set_rng_state(_read_safetensors(src / RNG_STATE))
    step = read_json(src / TRAINING_STEP, CheckpointError)
    step = step.get("step") if isinstance(step, dict) else None
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"'step' must be a non-negative integer, got {step!r}", src / TRAINING_STEP)
    return step


# --- the component that owns checkpointing ---------------------------------------------------


def resolve_last(checkpoints_dir: Path) -> Path | None:
    """The checkpoint `last` points at (a symlink, or a pointer file where symlinks fail)."""
    last = checkpoints_dir / LAST_CHECKPOINT
    if last.is_symlink() or last.is_dir():
        target = last.resolve()
        return target if target.is_dir() else None
    if last.is_file():
        target = checkpoints_dir / last.read_text().strip()
        return target if target.is_dir() else None
    return None


def check_complete(checkpoint_dir: Path) -> None:
    """CheckpointError naming what is missing from a `<step>/` directory."""
    if not checkpoint_dir.is_dir():
        raise CheckpointError("checkpoint not found", checkpoint_dir)
    pretrained = checkpoint_dir / PRETRAINED_MODEL_DIR
    missing = [f"{PRETRAINED_MODEL_DIR}/{n}" for n in PRETRAINED_FILES if not (pretrained / n).is_file()]
    if not missing:
        missing = [f"{PRETRAINED_MODEL_DIR}/{p.name}" for p in processor_stats_files(pretrained) if not p.is_file()]
    missing += [f"{TRAINING_STATE_DIR}/{n}" for n in TRAINING_STATE_FILES
                if not (checkpoint_dir / TRAINING_STATE_DIR / n).is_file()]
    if missing:
        raise CheckpointError(f"incomplete checkpoint, missing {missing}", checkpoint_dir)


class Checkpointer:
    """Decides when to save (`should_save`), writes checkpoints, keeps the last k, resumes."""

    def __init__(self, run_dir: str | Path, save_freq: int, total_steps: int, keep_last: int = 0) -> None:
        self.dir = Path(run_dir) / CHECKPOINTS_DIR
        self.save_freq = save_freq
        self.total_steps = total_steps
        self.keep_last = keep_last

    def should_save(self, step: int) -> bool:
        """Every `save_freq` steps, and always after the last step."""
        return step == self.total_steps or (self.save_freq > 0 and step % self.save_freq == 0)

    def last(self) -> Path | None:
        return resolve_last(self.dir)

    def save(self, step: int, policy: Policy, optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LRScheduler | None,
             stats: Mapping[str, Mapping[str, Any]], train_config: Mapping[str, Any]) -> Path:
        """Write `checkpoints/<step:06d>/` atomically, then point `last` at it."""
        final = self.dir / f"{step:06d}"
        with atomic_directory(final) as tmp:
            tmp.chmod(0o755)  # mkdtemp makes it private; checkpoints are meant to be shared
            (tmp / PRETRAINED_MODEL_DIR).mkdir()
            (tmp / TRAINING_STATE_DIR).mkdir()
            save_pretrained(tmp / PRETRAINED_MODEL_DIR, policy, stats, train_config)
            save_training_state(tmp / TRAINING_STATE_DIR, step, optimizer, scheduler)
        self._point_last(final.name)
        self._prune()
        logger.info("saved checkpoint %s", final)
        return final

    def _point_last(self, name: str) -> None:
        link = self.dir / LAST_CHECKPOINT
        tmp = self.dir / f".{LAST_CHECKPOINT}.tmp-{os.getpid()}"
        try:
            if tmp.is_symlink() or tmp.exists():
                tmp.unlink()
            os.symlink(name, tmp, target_is_directory=True)
            os.replace(tmp, link)
        except OSError:  # no symlinks here (some filesystems): a pointer file instead
            tmp.unlink(missing_ok=True)
            if link.is_symlink():
                link.unlink()
            with atomic_path(link) as pointer:
                pointer.write_text(name + "\n")

    def _prune(self) -> None:
        for stale in self.dir.glob(".*.tmp-*"):  # left by a run killed mid-save
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
        if self.keep_last <= 0:
            return
        steps = sorted(p for p in self.dir.iterdir() if p.is_dir() and not p.is_symlink() and p.name.isdigit())
        last = self.last()
        for old in steps[: -self.keep_last]:
            if last is None or old.resolve() != last:
                shutil.rmtree(old, ignore_errors=True)

    def resume(self, policy: Policy, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler | None) -> int:
        """Load weights, optimizer, scheduler and RNGs from `last`; returns its step."""
        last = self.last()
        if last is None:
            raise CheckpointError("nothing to resume: checkpoints/last is missing or dangling", self.dir)
        check_complete(last)
        load_state_dict_strict(policy, _read_safetensors(last / PRETRAINED_MODEL_DIR / MODEL_SAFETENSORS),
                               last / PRETRAINED_MODEL_DIR / MODEL_SAFETENSORS)
        return load_training_state(last / TRAINING_STATE_DIR, optimizer, scheduler)
