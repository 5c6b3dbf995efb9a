"""`robotrain eval`: score a checkpoint offline on a dataset's episodes (or in sim).

Offline mode prints a per-joint table of the mean absolute action error (joint units) of
the predicted chunks and of the first action, next to a constant mean-action baseline,
and writes the numbers as JSON.

Examples:
    robotrain eval --checkpoint outputs/train/run/checkpoints/last --dataset data/so101 --episodes 8 9
    robotrain eval --checkpoint outputs/train/run/checkpoints/last --sim --episodes 50 --seed 0 --videos 3
    robotrain eval --checkpoint ... --sim --policy.n_action_steps 1 --policy.temporal_ensemble_coeff 0.01

Sim mode rolls the policy out closed-loop in `robotrain/SO101PickPlace-v0` (episode i is
seeded `seed + i`, so two checkpoints evaluated with one seed face the same episodes),
prints the success rate with its 95% Wilson interval and writes `eval_info.json` and
videos to --out (default: `<run>/eval/<step>/`, where `robotrain report RUN` finds them).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from robotrain.cli import int_at_least
from robotrain.constants import ACTION, EVAL_INFO_JSON, PRETRAINED_MODEL_DIR
from robotrain.errors import CheckpointError, ConfigError
from robotrain.system.files import atomic_write_json

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="evaluate a checkpoint: offline action error (or --sim rollouts)")
    parser.add_argument("--checkpoint", required=True,
                        help="a checkpoint dir (<run>/checkpoints/<step> or .../last) or its pretrained_model/")
    parser.add_argument("--dataset", help="LeRobot dataset to score against (offline mode)")
    parser.add_argument("--episodes", type=int, nargs="+",
                        help="offline: episode indices (default: every episode); --sim: number of sim episodes "
                             "(default 50)")
    parser.add_argument("--batch-size", type=int_at_least(1), default=8)
    parser.add_argument("--max-samples", type=int_at_least(0), default=0,
                        help="at most N evenly spaced frames (0: all)")
    parser.add_argument("--image-size", help="HxW the frames are resized to (default: the policy's input shape)")
    parser.add_argument("--rename", metavar="OLD=NEW,...",
                        help="offline: feature rename map, e.g. state=observation.state,actions=action (default: the "
                             "one the checkpoint was trained with)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda")
    parser.add_argument("--output", help="JSON file for the results (default: <checkpoint>/eval_offline.json)")
    infer = parser.add_argument_group("inference settings (override the checkpoint's, like lerobot-eval)")
    infer.add_argument("--policy.n_action_steps", dest="n_action_steps", type=int, metavar="N",
                       help="actions executed from each predicted chunk before predicting again")
    infer.add_argument("--policy.temporal_ensemble_coeff", dest="temporal_ensemble_coeff", type=float,
                       metavar="C", help="ACT temporal ensembling (paper: 0.01); needs --policy.n_action_steps 1")
    infer.add_argument("--policy.num_steps", dest="num_steps", type=int, metavar="N",
                       help="SmolVLA flow-matching denoising steps")
    sim = parser.add_argument_group("sim rollouts (--sim)")
    sim.add_argument("--sim", action="store_true", help="roll the policy out in the SO-101 sim instead")
    sim.add_argument("--n-episodes", type=int, default=None, help="same as --episodes N with --sim")
    sim.add_argument("--seed", type=int, default=0, help="episode i is seeded seed+i (default 0)")
    sim.add_argument("--videos", type=int, default=0, help="record videos of the first K episodes (default 0)")
    sim.add_argument("--out", help="directory for eval_info.json and videos/ (default: <run>/eval/<step>)")
    sim.add_argument("--n-envs", type=int, default=None, help="parallel sim processes (default: CPU cores)")
    sim.add_argument("--max-steps", type=int, default=300, help="steps per episode, 30 Hz (default 300 = 10 s)")
    sim.add_argument("--render-size", help="HxW the sim renders its cameras at (default: the size of the frames the "
                                           "policy was trained on; frames are then fitted to its input as the "
                                           "frame cache fitted the training frames)")
    sim.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def policy_overrides(args: argparse.Namespace) -> dict[str, int | float]:
    """The --policy.* inference settings given on the command line (for `load_policy`)."""
    names = ("n_action_steps", "temporal_ensemble_coeff", "num_steps")
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def run(args: argparse.Namespace) -> int:
    if args.sim:
        return run_sim(args)
    if not args.dataset:
        raise ConfigError("--dataset is required for offline evaluation (or pass --sim)")
    return run_offline(args)


def sim_episode_count(args: argparse.Namespace) -> int:
    """`--episodes N` (or `--n-episodes N`) as a count of sim episodes; 50 by default."""
    if args.n_episodes is not None and args.episodes is not None:
        raise ConfigError("--sim: give the number of episodes once (--episodes N or --n-episodes N)")
    if args.episodes is not None:
        if len(args.episodes) != 1:
            raise ConfigError(f"--episodes: with --sim it is one number of episodes, got {args.episodes}")
        n = args.episodes[0]
    else:
        n = args.n_episodes if args.n_episodes is not None else 50
    if n < 1:
        raise ConfigError(f"--episodes: must be >= 1, got {n}")
    return n


def run_sim(args: argparse.Namespace) -> int:
    """Closed-loop rollouts in the SO-101 sim via `robotrain.evaluation.rollout.evaluate_checkpoint_in_sim`."""
    from robotrain.data.images import parse_hw  # lazily, like every heavy import here: see robotrain.cli
    from robotrain.evaluation.rollout import default_eval_dir, evaluate_checkpoint_in_sim, format_sim_result

    n = sim_episode_count(args)
    if args.dataset:
        raise ConfigError("--dataset is for offline evaluation; drop it with --sim")
    if args.videos < 0:
        raise ConfigError(f"--videos must be >= 0, got {args.videos}")
    if args.n_envs is not None and args.n_envs < 1:
        raise ConfigError(f"--n-envs must be >= 1, got {args.n_envs}")
    if args.max_steps < 1:
        raise ConfigError(f"--max-steps must be >= 1, got {args.max_steps}")
    checkpoint = Path(args.checkpoint)
    if not checkpoint.is_dir():
        raise CheckpointError("checkpoint directory not found (--checkpoint)", checkpoint)
    render_size = parse_hw(args.render_size, "--render-size") if args.render_size else None
    overrides = policy_overrides(args)
    out = Path(args.out) if args.out else default_eval_dir(checkpoint, overrides)
    info = evaluate_checkpoint_in_sim(checkpoint, n, seed=args.seed, n_envs=args.n_envs, videos=min(args.videos, n),
                                      out_dir=out, device=args.device, max_steps=args.max_steps,
                                      render_size=render_size, progress=not args.no_progress,
                                      overrides=overrides)
    print(format_sim_result(info))
    for path in info.get("video_paths", []):
        print(f"video {path}")
    print(f"wrote {out / EVAL_INFO_JSON}")
    return 0


def run_offline(args: argparse.Namespace) -> int:
    import torch

    from robotrain.checkpoints.store import load_policy, load_stats, read_robotrain_config
    from robotrain.data.dataset import LeRobotDataset
    from robotrain.data.format import load_meta
    from robotrain.data.rename import parse_rename, rename_features
    from robotrain.data.images import parse_hw
    from robotrain.evaluation.offline import format_table, offline_action_error

    checkpoint = Path(args.checkpoint)
    pretrained = checkpoint / PRETRAINED_MODEL_DIR if (checkpoint / PRETRAINED_MODEL_DIR).is_dir() else checkpoint
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    overrides = policy_overrides(args)
    policy = load_policy(pretrained, device=device, overrides=overrides)
    image_size, resize_mode = policy.config.image_input()  # what the policy was trained on
    if args.image_size:
        image_size = parse_hw(args.image_size, "--image-size")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    # The names the policy was trained with: the run's rename map, unless --rename says otherwise.
    rename = parse_rename(args.rename) if args.rename else read_robotrain_config(pretrained).get("rename")
    meta = rename_features(load_meta(args.dataset, args.episodes), rename)  # only the chosen episodes are read
    if policy.features.fps != meta.fps:
        policy.features = dataclasses.replace(policy.features, fps=int(meta.fps))
    dataset = LeRobotDataset(meta, delta_timestamps=policy.delta_timestamps(), image_size=image_size,
                             resize_mode=resize_mode)
    baseline = load_stats(pretrained)[ACTION]["mean"]  # the training-set mean action
    result = offline_action_error(policy, dataset, batch_size=args.batch_size,
                                  baseline_action=baseline, max_samples=args.max_samples or None)
    names = (dataset.meta.features.get(ACTION) or {}).get("names")
    print(format_table(result, names if isinstance(names, list) else None))
    output = Path(args.output) if args.output else pretrained.parent / "eval_offline.json"
    atomic_write_json(output, {
        "checkpoint": str(checkpoint), "dataset": str(args.dataset), "episodes": args.episodes, "rename": rename,
        "num_samples": result.num_samples, "num_steps": result.num_steps, "policy_overrides": overrides or None,
        "policy": dataclasses.asdict(result.policy),
        "mean_action_baseline": dataclasses.asdict(result.baseline) if result.baseline else None,
        **result.to_metrics(),
    })
    print(f"wrote {output}")
    return 0
