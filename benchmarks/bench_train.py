"""Training throughput vs image resolution: encoder tokens, updt_s, data_s, samples/s and
peak memory at 480x640, 240x320 and 224x224 with the same batch, each as a ratio to 480x640.

Every (size, batch) point is a separate `robotrain train` process (so peak memory is its
own), after the frame cache for that size has been built here. Times are means over the
steps after `--warmup`. On CPU keep the batch small; on a GPU:

    PYTHONPATH=src nice -n 10 python benchmarks/bench_train.py --policy act --batch-size 2 --steps 6
    PYTHONPATH=src python benchmarks/bench_train.py --policy act --batch-size 32 64 --steps 30 --num-workers 8 \\
        --dataset data/so101 --output bench_train.json

Extra training flags go after `--`, e.g. `-- --policy.dim_model 256 --amp off`, or
`-- --frames-on-device` to hold the frame cache in GPU memory (compare data_s with a run
without it on the same machine).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATASET = REPO / "tests" / "fixtures" / "so101_fixture_v30"
SIZES = ("480x640", "240x320", "224x224")


def encoder_tokens(policy_type: str, dataset: str, size: tuple[int, int], extra: list[str]) -> int:
    """The policy's encoder token count at `size` (built on the meta device: no memory)."""
    import torch

    from robotrain.training.config import parse_train_config
    from robotrain.data.format import load_meta
    from robotrain.policies import get_policy_class
    from robotrain.policies.base import PolicyFeatures

    config = parse_train_config(["--policy", policy_type, "--dataset", dataset,
                                 "--image-size", f"{size[0]}x{size[1]}", *extra])
    meta = load_meta(dataset)
    with torch.device("meta"):
        policy = get_policy_class(policy_type)(config.policy, PolicyFeatures.from_meta(meta), meta.stats)
    if hasattr(policy, "encoder_token_count"):
        return int(policy.encoder_token_count())
    cams = len(meta.camera_keys)  # ResNet stride 32 + latent and state tokens (ACT's layout)
    return cams * math.ceil(size[0] / 32) * math.ceil(size[1] / 32) + 2


def build_cache(dataset: str, size: tuple[int, int]) -> None:
    from robotrain.data.dataset import LeRobotDataset

    LeRobotDataset(dataset, image_size=size, image_dtype="uint8")


def run_point(args: argparse.Namespace, size: str, batch: int, workdir: Path, extra: list[str]) -> dict[str, Any]:
    run_dir = workdir / f"{size}_bs{batch}"
    cmd = [sys.executable, "-m", "robotrain", "train", "--policy", args.policy, "--dataset", args.dataset,
           "--image-size", size, "--batch-size", str(batch), "--steps", str(args.steps), "--log-freq", "1",
           "--save-freq", str(args.steps + 1), "--eval-freq", "0", "--val-fraction", "0",
           "--num-workers", str(args.num_workers), "--device", args.device, "--output-dir", str(run_dir),
           "--keep-last", "1", *extra]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-5:]
        return {"size": size, "batch_size": batch, "error": " | ".join(tail)}
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steady = [r for r in records if "train/loss" in r and r["step"] > args.warmup] or records[-1:]

    def mean(key: str) -> float:
        return sum(r[key] for r in steady) / len(steady)

    updt, data = mean("train/updt_s"), mean("train/data_s")
    return {"size": size, "batch_size": batch, "updt_s": updt, "data_s": data,
            "samples_per_s": mean("train/samples_per_s"), "peak_mem_mb": records[-1]["train/peak_mem_mb"],
            "loss": steady[-1]["train/loss"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="act")
    parser.add_argument("--dataset", default=str(DEFAULT_DATASET))
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), help="the first is the reference")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[2])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2, help="steps left out of the means")
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--output", help="also write the results as JSON")
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if args.steps <= args.warmup:
        parser.error("--steps must exceed --warmup")

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        for size in args.sizes:
            from robotrain.data.images import parse_hw

            hw = parse_hw(size, "--sizes")
            build_cache(args.dataset, hw)
            tokens = encoder_tokens(args.policy, args.dataset, hw, extra)
            for batch in args.batch_size:
                point = run_point(args, size, batch, Path(tmp), extra)
                point["encoder_tokens"] = tokens
                results.append(point)
                print(f"  {size} bs{batch}: {point}", file=sys.stderr, flush=True)

    keys = ("encoder_tokens", "updt_s", "data_s", "samples_per_s", "peak_mem_mb")
    print(f"\n{args.policy} training throughput vs resolution (ratios to {args.sizes[0]}, same batch)")
    print(f"{'size':<10}{'batch':>6}" + "".join(f"{k:>16}" for k in keys) + "".join(f"{k + ' x':>18}" for k in keys))
    for batch in args.batch_size:
        ref = next(r for r in results if r["batch_size"] == batch and r["size"] == args.sizes[0])
        for r in (r for r in results if r["batch_size"] == batch):
            if "error" in r or "error" in ref:
                print(f"{r['size']:<10}{batch:>6}  failed: {r.get('error') or ref.get('error')}")
                continue
            values = "".join(f"{r[k]:>16.4g}" for k in keys)
            ratios = "".join(f"{r[k] / ref[k] if ref[k] else float('nan'):>18.3f}" for k in keys)
            print(f"{r['size']:<10}{batch:>6}{values}{ratios}")
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
