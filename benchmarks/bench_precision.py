"""float32 against bf16 autocast for ACT training on this CPU: is bf16 faster, and does it
learn the same? The answer sets `training/precision.py`'s CPU_BF16_WHEN_NATIVE.

1. Speed: two copies of the `act_sim_demo` preset's ACT (96x128 frames, 2 cameras, batch 8,
   the same initial weights and batch), one stepped in float32 and one under bf16 autocast,
   alternately (fp32, bf16, fp32, ...) so load on the machine hits both alike; the medians
   of the timed steps, their spread (25th-75th percentile) and the ratio.
2. Loss: `robotrain train --preset act_sim_demo` on a dataset for `--loss-steps` steps,
   float32 with two seeds (their difference is the run-to-run noise) and bf16 with the
   same two seeds (or those of `--bf16-seeds`); the mean training loss over the last fifth
   of the steps of each run, and the curves (`--out`).
   bf16 matches when its loss differs from float32's (same seed) by no more than the two
   float32 seeds differ from each other (or 2% of the loss, whichever is larger).

Run on a quiet machine (both parts take minutes to an hour on 2 cores; only part 1 is timed):
    env PYTHONPATH=src python benchmarks/bench_precision.py --dataset data/sim100 --loss-steps 2000 \\
        --bf16-seeds 1000 --runs-dir runs/precision --out docs/bench/precision_cpu
Check that it works (seconds to minutes; the numbers mean nothing):
    nice -n 10 env PYTHONPATH=src python benchmarks/bench_precision.py --quick
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATASET = REPO / "tests" / "fixtures" / "so101_fixture_v30"


def speed(pairs: int, warmup: int) -> dict[str, float]:
    """Interleaved fp32 / bf16 training steps of the demo preset's ACT; medians and spread."""
    from robotrain.constants import ACTION, ACTION_IS_PAD, OBS_STATE, TASK
    from robotrain.evaluation.offline import batch_to_device
    from robotrain.policies import get_policy_class
    from robotrain.training.config import parse_train_config
    from robotrain.training.loop import Runtime, train_step
    from robotrain.training.memory import placeholder_stats, so101_features
    from robotrain.training.optim import make_optimizer

    config = parse_train_config(["--preset", "act_sim_demo", "--device", "cpu"], check_paths=False)
    features = so101_features()
    torch.manual_seed(0)
    fp32 = get_policy_class("act")(config.policy, features, placeholder_stats(features)).train()
    bf16 = copy.deepcopy(fp32)
    runs = {"fp32": (fp32, None), "bf16": (bf16, torch.bfloat16)}
    optimizers = {name: make_optimizer(policy) for name, (policy, _) in runs.items()}
    h, w = config.policy.image_size
    b, chunk = config.batch_size, config.policy.chunk_size
    g = torch.Generator().manual_seed(0)
    host = {k: torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8, generator=g) for k in features.camera_keys}
    host |= {OBS_STATE: torch.randn(b, 6, generator=g), ACTION: torch.randn(b, chunk, 6, generator=g),
             ACTION_IS_PAD: torch.zeros(b, chunk, dtype=torch.bool), TASK: ["pick"] * b}
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for i in range(warmup + pairs):
        for name, (policy, dtype) in runs.items():
            rt = Runtime(device=torch.device("cpu"), amp_dtype=dtype)
            t0 = time.perf_counter()
            batch = batch_to_device(host, rt.device)
            params = [p for p in policy.parameters() if p.requires_grad]
            train_step(policy, params, batch, optimizers[name], None, config.policy.optimizer_grad_clip_norm, rt)
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    out: dict[str, float] = {}
    for name, values in times.items():
        q25, q50, q75 = np.percentile(values, [25, 50, 75])
        out |= {f"{name}_median_s": float(q50), f"{name}_q25_s": float(q25), f"{name}_q75_s": float(q75)}
    out["speedup"] = out["fp32_median_s"] / out["bf16_median_s"]
    return out


def logged_losses(run_dir: Path) -> list[tuple[int, float]]:
    """(step, training loss) pairs of a run's metrics.jsonl ([] when there is none)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(r["step"], r["train/loss"]) for r in records if "train/loss" in r]


def loss_curve(dataset: str, steps: int, seed: int, amp: str, workdir: Path) -> list[tuple[int, float]]:
    """(step, training loss) of a `robotrain train` run, logged 50 times; a run already in
    `workdir` that reached `steps` is read, not repeated."""
    run_dir = workdir / f"{amp}_seed{seed}"
    done = logged_losses(run_dir)
    if done and done[-1][0] >= steps:
        return done
    log_freq = max(1, steps // 50)
    cmd = [sys.executable, "-m", "robotrain", "train", "--preset", "act_sim_demo", "--dataset", dataset,
           "--steps", str(steps), "--seed", str(seed), "--amp", amp, "--device", "cpu", "--output-dir", str(run_dir),
           "--eval-freq", "0", "--val-fraction", "0", "--save-freq", "0", "--log-freq", str(log_freq),
           "--keep-last", "1", "--tensorboard", "false", "--overwrite", "true"]  # a partial run is redone
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{amp} seed {seed} failed: {(proc.stderr or proc.stdout).strip().splitlines()[-3:]}")
    return logged_losses(run_dir)


def precision_name(amp: str) -> str:
    """How a run's `--amp` value is printed: "fp32" for "off", else the value."""
    return "fp32" if amp == "off" else amp


def final_loss(curve: list[tuple[int, float]], steps: int) -> float:
    """Mean training loss over the last fifth of the run."""
    tail = [loss for step, loss in curve if step > 0.8 * steps] or [curve[-1][1]]
    return float(np.mean(tail))


def plot_curves(curves: dict[str, list[tuple[int, float]]], path: Path) -> None:
    """Every run's training loss against its step, float32 solid and bf16 dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, curve in curves.items():
        steps, losses = zip(*curve)
        ax.plot(steps, losses, "--" if name.startswith("bf16") else "-", label=name, linewidth=1.2)
    ax.set(xlabel="step", ylabel="training loss (l1 + kl_weight x KL)", yscale="log",
           title="ACT (act_sim_demo) on this CPU: float32 against bf16 autocast")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=30, help="timed (fp32, bf16) step pairs")
    ap.add_argument("--warmup", type=int, default=3, help="untimed pairs first")
    ap.add_argument("--dataset", default=str(DEFAULT_DATASET), help="dataset for the loss comparison")
    ap.add_argument("--loss-steps", type=int, default=600, help="training steps per loss run (0 skips part 2)")
    ap.add_argument("--seeds", type=int, nargs=2, default=[1000, 2000], help="float32 runs (their difference: the noise)")
    ap.add_argument("--bf16-seeds", type=int, nargs="+", help="bf16 runs (default: --seeds)")
    ap.add_argument("--runs-dir", help="keep the training runs here (default: a temporary folder); finished runs "
                                       "found there are reused, so an interrupted comparison resumes")
    ap.add_argument("--out", help="keep the loss curves here: loss_curves.json and loss_curves.png")
    ap.add_argument("--quick", action="store_true", help="a few steps of each part, to check the script works")
    args = ap.parse_args()
    if args.quick:
        args.pairs, args.warmup, args.loss_steps = 2, 1, 6
    from robotrain.system.environment import cpu_flags, cpu_has_native_bf16

    print(f"CPU native bf16: {cpu_has_native_bf16()} "
          f"({sorted(cpu_flags() & {'avx2', 'avx512f', 'avx512_bf16', 'amx_bf16'})}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    s = speed(args.pairs, args.warmup)
    print(f"speed, act_sim_demo ACT step (median [25-75%] of {args.pairs} interleaved pairs): "
          f"fp32 {s['fp32_median_s']:.3f} s [{s['fp32_q25_s']:.3f}-{s['fp32_q75_s']:.3f}], "
          f"bf16 {s['bf16_median_s']:.3f} s [{s['bf16_q25_s']:.3f}-{s['bf16_q75_s']:.3f}], "
          f"fp32/bf16 = {s['speedup']:.2f}x")
    faster = s["bf16_q75_s"] < s["fp32_q25_s"]  # the spreads do not overlap
    print(f"bf16 faster: {'yes' if faster else 'no'}")
    if args.loss_steps <= 0:
        return 0
    bf16_seeds = args.bf16_seeds or args.seeds
    runs = [(amp, seed) for seed in args.seeds for amp in ("off", "bf16") if amp == "off" or seed in bf16_seeds]
    runs += [("bf16", seed) for seed in bf16_seeds if seed not in args.seeds]
    with tempfile.TemporaryDirectory(prefix="bench_precision_") as tmp:
        workdir = Path(args.runs_dir or tmp)
        curves = {(amp, seed): loss_curve(args.dataset, args.loss_steps, seed, amp, workdir) for amp, seed in runs}
    loss = {key: final_loss(curve, args.loss_steps) for key, curve in curves.items()}
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        named = {f"{precision_name(amp)} seed {seed}": curve for (amp, seed), curve in curves.items()}
        (out / "loss_curves.json").write_text(json.dumps({"dataset": args.dataset, "steps": args.loss_steps,
                                                          "speed": s, "curves": named}, indent=1) + "\n")
        plot_curves(named, out / "loss_curves.png")
        print(f"curves: {out / 'loss_curves.json'}, {out / 'loss_curves.png'}")
    a, b = args.seeds
    noise = abs(loss["off", a] - loss["off", b])
    diffs = [abs(loss["bf16", seed] - loss["off", seed]) for seed in bf16_seeds if ("off", seed) in loss]
    for seed in sorted({seed for _, seed in runs}):
        values = ", ".join(f"{precision_name(amp)} {loss[amp, seed]:.4f}"
                           for amp in ("off", "bf16") if (amp, seed) in loss)
        print(f"loss over the last fifth of {args.loss_steps} steps, seed {seed}: {values}")
    if not diffs:
        print("no bf16 run shares a seed with a float32 run: no verdict")
        return 1
    tolerance = max(noise, 0.02 * loss["off", a])
    matches = max(diffs) <= tolerance
    print(f"run-to-run noise (fp32 seed {a} vs {b}): {noise:.4f}; bf16 vs fp32: {max(diffs):.4f}")
    print(f"loss within run-to-run noise: {'yes' if matches else 'no'}")
    if args.quick:
        print("quick run: too few steps for a verdict")
    else:
        print("set CPU_BF16_WHEN_NATIVE = True" if faster and matches and cpu_has_native_bf16()
              else "keep CPU_BF16_WHEN_NATIVE = False")
    return 0


if __name__ == "__main__":
    sys.exit(main())
