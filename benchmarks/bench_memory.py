"""`robotrain plan`'s predicted peak memory against the measured peak of real training steps.

Each point is one subprocess (so its peak RSS is its own) that resolves the training flags
with `parse_train_config`, builds the policy and AdamW exactly as `robotrain train` does,
and runs `--steps` real training steps (`training.loop.train_step`: forward, backward,
clip, AdamW) on a synthetic batch shaped like the loader's (uint8 frames at the policy's
input size, state, the action window, `action_is_pad`, task strings) for the SO-101 layout
(2 cameras, 6 joints). It prints the prediction `robotrain plan` makes for the same flags
(computed in the parent, which never builds real weights), the measured peak (RSS on CPU,
max allocated on CUDA) and the error. Only peak memory is compared: RSS does not depend on
the machine's load, so the table can be taken on a busy machine.

    nice -n 10 env PYTHONPATH=src python benchmarks/bench_memory.py            # the docs/benchmarks.md table
    nice -n 10 env PYTHONPATH=src python benchmarks/bench_memory.py --points act-240x320-b2
    PYTHONPATH=src python benchmarks/bench_memory.py --points act-ckpt-off act-ckpt-on   # checkpointing ratio

Add `--flags="--device cuda"` to measure on a GPU (every point then runs there), and
`--recorded-h100` to compare the plan with the H100 peaks in docs/benchmarks.md (no runs).
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

# name -> `robotrain train` flags (no dataset: `plan` and this script use the SO-101 layout).
POINTS: dict[str, list[str]] = {
    "act-240x320-b2": ["--policy", "act", "--image-size", "240x320", "--batch-size", "2"],
    "act-240x320-b8": ["--policy", "act", "--image-size", "240x320", "--batch-size", "8"],
    "act-480x640-b4": ["--policy", "act", "--image-size", "480x640", "--batch-size", "4"],
    "smolvla_sim-128-b8": ["--preset", "smolvla_sim", "--batch-size", "8"],
    "smolvla_sim-128-b32": ["--preset", "smolvla_sim", "--batch-size", "32"],
    "smolvla_sim-256-b16": ["--preset", "smolvla_sim", "--image-size", "256x256", "--batch-size", "16"],
    "act-ckpt-off": ["--policy", "act", "--image-size", "240x320", "--batch-size", "8"],
    "act-ckpt-on": ["--policy", "act", "--image-size", "240x320", "--batch-size", "8",
                    "--policy.gradient_checkpointing", "true"],
    "smolvla-ckpt-off": ["--preset", "smolvla_sim", "--batch-size", "32"],
    "smolvla-ckpt-on": ["--preset", "smolvla_sim", "--batch-size", "32", "--policy.gradient_checkpointing", "true"],
    "act-480x640-b4-ckpt": ["--policy", "act", "--image-size", "480x640", "--batch-size", "4",
                            "--policy.gradient_checkpointing", "true"],
    "smolvla-256-b16-ckpt": ["--preset", "smolvla_sim", "--image-size", "256x256", "--batch-size", "16",
                             "--policy.gradient_checkpointing", "true"],
}
# The children feed batches themselves: no DataLoader workers to predict.
POINTS = {name: flags + ["--num-workers", "0"] for name, flags in POINTS.items()}
# Peak CUDA memory (max allocated, MiB) of ACT at LeRobot's defaults, bf16 autocast, measured
# on an H100 by bench_train.py (docs/benchmarks.md): (image size, batch) -> MiB.
H100_RECORDED = {("480x640", 32): 6615, ("240x320", 32): 2653, ("224x224", 32): 2149,
                 ("480x640", 64): 12465, ("240x320", 64): 4522, ("224x224", 64): 3524}
DEFAULT_POINTS = [n for n in POINTS if "ckpt" not in n]


def measure(flags: list[str], steps: int) -> dict[str, Any]:
    """Child: real training steps for `flags`; returns the peak and the mean step time."""
    import numpy as np
    import torch

    from robotrain.constants import ACTION, ACTION_IS_PAD, OBS_STATE, SO101_TASK, TASK
    from robotrain.evaluation.offline import batch_to_device
    from robotrain.policies import get_policy_class
    from robotrain.training.config import parse_train_config
    from robotrain.training.loop import setup_runtime, training_stats
    from robotrain.training.memory import so101_features
    from robotrain.training.optim import make_optimizer, make_scheduler
    from robotrain.training.loop import train_step

    config = parse_train_config(flags, check_paths=False)
    rt = setup_runtime(config)
    features = so101_features()
    stats = {k: {"mean": np.zeros(6, np.float32), "std": np.ones(6, np.float32)} for k in (OBS_STATE, ACTION)}
    stats = training_stats(stats, features.camera_keys, config.use_imagenet_stats)
    torch.manual_seed(0)
    policy = get_policy_class(config.policy_type)(config.policy, features, stats).to(rt.device)
    optimizer = make_optimizer(policy)
    scheduler = make_scheduler(optimizer, policy.config)
    params = [p for p in policy.parameters() if p.requires_grad]
    size, _ = config.image_input()
    h, w = size or features.image_shape[1:]
    b, chunk = config.batch_size, policy.config.chunk_size
    g = torch.Generator().manual_seed(0)
    host = {key: torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8, generator=g) for key in features.camera_keys}
    host[OBS_STATE] = torch.randn(b, features.state_dim, generator=g)
    host[ACTION] = torch.randn(b, chunk, features.action_dim, generator=g)
    host[ACTION_IS_PAD] = torch.zeros(b, chunk, dtype=torch.bool)
    host[TASK] = [SO101_TASK] * b
    policy.train()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        batch = batch_to_device(host, rt.device, config.channels_last)
        train_step(policy, params, batch, optimizer, scheduler, policy.config.optimizer_grad_clip_norm, rt)
        del batch
        if rt.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    if rt.device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(rt.device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {"peak_bytes": int(peak), "step_s": float(np.median(times[1:] or times)), "device": str(rt.device)}


def predict(flags: list[str], budget: int | None = None) -> dict[str, Any]:
    from robotrain.training.config import parse_train_config
    from robotrain.training.memory import plan_memory

    config = parse_train_config(flags, check_paths=False)
    return plan_memory(config, budget=budget).to_dict()


def recorded_h100() -> None:
    """The plan against the H100 peaks recorded earlier (no run: the plan only needs the flags)."""
    print("| ACT, H100, bf16 | recorded max allocated | predicted (without the CUDA context) | error |")
    print("|---|---|---|---|")
    for (size, batch), mib in H100_RECORDED.items():
        plan = predict(["--policy", "act", "--image-size", size, "--batch-size", str(batch), "--device", "cuda",
                        "--num-workers", "8"], budget=80 * 2**30)
        allocated = (plan["peak_bytes"] - plan["breakdown"]["runtime"]) / 2**20
        print(f"| {size} batch {batch} | {mib:,} MiB | {allocated:,.0f} MiB | {allocated / mib - 1:+.1%} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", nargs="+", default=DEFAULT_POINTS, choices=sorted(POINTS))
    ap.add_argument("--steps", type=int, default=3, help="training steps per point (AdamW's state appears at the 1st)")
    ap.add_argument("--flags", default="", help="extra `robotrain train` flags for every point, e.g. '--amp bf16'")
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--recorded-h100", action="store_true",
                    help="only compare the plan with the H100 peaks recorded in docs/benchmarks.md (no runs)")
    ap.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print("RESULT " + json.dumps(measure(args.child, args.steps)))
        return 0
    if args.recorded_h100:
        recorded_h100()
        return 0
    rows = []
    for name in args.points:
        flags = POINTS[name] + shlex.split(args.flags)
        predicted = predict(flags)
        cmd = [sys.executable, __file__, "--steps", str(args.steps), "--child", *flags]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            print(f"{name}: failed\n{proc.stderr[-3000:]}", file=sys.stderr)
            return 1
        measured = json.loads(lines[-1][len("RESULT "):])
        row = {"point": name, "flags": " ".join(flags), "predicted_bytes": predicted["peak_bytes"],
               "measured_bytes": measured["peak_bytes"], "step_s": measured["step_s"], "device": measured["device"],
               "breakdown": predicted["breakdown"]}
        row["error"] = row["predicted_bytes"] / row["measured_bytes"] - 1
        rows.append(row)
        print(f"  {name}: predicted {row['predicted_bytes'] / 2**20:,.0f} MiB, measured "
              f"{row['measured_bytes'] / 2**20:,.0f} MiB ({row['error']:+.1%}), step {row['step_s']:.2f} s",
              file=sys.stderr, flush=True)
    print("| point | flags | predicted | measured | error |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['point']} | `{r['flags']}` | {r['predicted_bytes'] / 2**20:,.0f} MiB | "
              f"{r['measured_bytes'] / 2**20:,.0f} MiB | {r['error']:+.1%} |")
    by_name = {r["point"]: r for r in rows}
    for policy in ("act", "smolvla"):
        off, on = by_name.get(f"{policy}-ckpt-off"), by_name.get(f"{policy}-ckpt-on")
        if off and on:
            print(f"{policy} gradient checkpointing: peak x{on['measured_bytes'] / off['measured_bytes']:.2f}, "
                  f"step time x{on['step_s'] / off['step_s']:.2f} (one run each: time only on a quiet machine)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
