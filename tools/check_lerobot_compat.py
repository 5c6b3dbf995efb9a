"""Check by hand, against LeRobot itself, that robotrain's files interoperate with LeRobot.

NOT part of the test suite and NOT run in CI: it needs LeRobot (0.4.4), which robotrain
never depends on. Run it in a SEPARATE virtual environment (never /work/venv):

    python3 -m venv /work/lerobot-venv
    /work/lerobot-venv/bin/pip install lerobot==0.4.4 rich   # lerobot pins torch<2.11: it pulls
                                                              # torch 2.10, torchvision 0.25, av, ...
    cd <robotrain checkout>
    # a checkpoint written by robotrain (any small ACT run):
    PYTHONPATH=src /work/venv/bin/python -m robotrain train --dataset tests/fixtures/so101_fixture_v30 \
        --policy act --policy.dim_model 64 --policy.dim_feedforward 128 --policy.n_heads 4 \
        --policy.n_encoder_layers 1 --policy.n_vae_encoder_layers 1 --policy.chunk_size 10 \
        --policy.n_action_steps 10 --steps 2 --batch-size 2 --num-workers 0 --output-dir /tmp/rt_act
    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONPATH=src /work/lerobot-venv/bin/python \
        tools/check_lerobot_compat.py --robotrain-checkpoint /tmp/rt_act/checkpoints/last/pretrained_model

LeRobot decodes videos with PyAV here (`--video-backend pyav`, the default of this script):
its own default, torchcodec, needs the system FFmpeg libraries (libavutil.so.56-60), which
a bare machine lacks. robotrain is imported from this checkout's src/ (it needs numpy,
pyarrow, av, safetensors, rich; all but rich come with lerobot). LeRobot never goes into
robotrain's own venv, pyproject or CI.

Checks (each prints its max abs difference; the exit status is 1 if any fails):
  policy/lerobot-ckpt   LeRobot's ACTPolicy + its pre/post-processor pipelines vs our
                        `load_policy`, on a checkpoint LeRobot wrote (same actions).
  policy/robotrain-ckpt the same on a checkpoint `robotrain train` wrote (LeRobot loads it).
  dataset/*             LeRobot's LeRobotDataset vs ours on: the LeRobot-written v3.0 fixture,
                        a dataset written by our DatasetWriter, one converted from v2.1 by
                        `robotrain dataset convert` — every key of dataset[i], with an
                        action window (delta_timestamps) so `action_is_pad` is compared too.
  .../train_config      LeRobot's TrainPipelineConfig parses our train_config.json.
  lerobot-train/*       (with --lerobot-train) LeRobot trains on our written and converted
                        datasets, and `lerobot-train --resume` continues a robotrain run.
  policy/train-stats    the normalisation stats `robotrain train` saved vs those lerobot-train
                        saved for the same dataset (ImageNet mean/std for the cameras).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
FIXTURES = REPO / "tests" / "fixtures"  # files LeRobot itself wrote (tests/fixtures/README.md)

# Tolerances: the policies run the same float32 maths in a different order -> ~1e-5;
# images are decoded from the same AV1 files by different decoders / colour conversions.
ACTION_TOL = 1e-3
IMAGE_MAX_TOL = 0.1
IMAGE_MEAN_TOL = 0.01

failures: list[str] = []


def report(name: str, diff: float, tol: float, note: str = "") -> None:
    ok = diff <= tol
    print(f"[{'PASS' if ok else 'FAIL'}] {name}: max abs diff {diff:.3g} (tol {tol:g}){' ' + note if note else ''}")
    if not ok:
        failures.append(name)


def fail(name: str, why: str) -> None:
    print(f"[FAIL] {name}: {why}")
    failures.append(name)


# --------------------------------------------------------------------------- policies


def check_policy(name: str, pretrained: Path) -> None:
    from lerobot.policies.act.modeling_act import ACTPolicy as LeACTPolicy
    from lerobot.policies.factory import make_pre_post_processors

    from robotrain.checkpoints.store import load_policy

    ours = load_policy(pretrained).eval()
    theirs = LeACTPolicy.from_pretrained(str(pretrained)).eval()
    pre, post = make_pre_post_processors(theirs.config, pretrained_path=str(pretrained))

    # same weights, same names
    a, b = ours.state_dict(), theirs.state_dict()
    if set(a) != set(b):
        fail(f"{name}/state_dict-keys", f"only ours: {sorted(set(a) - set(b))[:5]}, only LeRobot: {sorted(set(b) - set(a))[:5]}")
        return
    report(f"{name}/weights", max(float((a[k].float() - b[k].float()).abs().max()) for k in a), 0.0)

    # a fixed raw observation in joint units / [0, 1] images
    cfg = theirs.config
    g = torch.Generator().manual_seed(0)
    batch: dict[str, Any] = {}
    for key, ft in cfg.input_features.items():
        shape = tuple(ft.shape)
        if key == "observation.state":
            batch[key] = torch.randn((2, *shape), generator=g) * 20.0
        else:
            batch[key] = torch.rand((2, *shape), generator=g)

    with torch.no_grad():
        ours_chunk = ours.predict_action_chunk({k: v.clone() for k, v in batch.items()})  # (2, chunk, A)
        theirs.reset()
        norm_chunk = theirs.predict_action_chunk(pre({k: v.clone() for k, v in batch.items()}))
        theirs_chunk = post(norm_chunk)
        theirs.reset()
        ours.reset()
        ours_first = ours.select_action({k: v.clone() for k, v in batch.items()})
        theirs_first = post(theirs.select_action(pre({k: v.clone() for k, v in batch.items()})))
    if ours_chunk.shape != theirs_chunk.shape:
        fail(f"{name}/predict_action_chunk", f"shape ours {tuple(ours_chunk.shape)} vs LeRobot {tuple(theirs_chunk.shape)}")
        return
    scale = float(theirs_chunk.abs().max())
    report(f"{name}/predict_action_chunk", float((ours_chunk - theirs_chunk).abs().max()), ACTION_TOL,
           f"(actions up to {scale:.3g} in joint units, shape {tuple(ours_chunk.shape)})")
    report(f"{name}/select_action", float((ours_first - theirs_first).abs().max()), ACTION_TOL)

    # our normalisation vs LeRobot's processor: normalised state, image and action
    with torch.no_grad():
        normed = pre({k: v.clone() for k, v in batch.items()})
        d = 0.0
        for key in batch:
            d = max(d, float((ours.normalizer.normalize(key, batch[key]) - normed[key]).abs().max()))
        d = max(d, float((ours.normalizer.unnormalize("action", norm_chunk) - theirs_chunk).abs().max()))
    report(f"{name}/normalisation", d, 1e-4)


def check_training_stats(lerobot_ckpt: Path, ours_ckpt: Path) -> None:
    """Both checkpoints trained on the same dataset (so101_fixture_v30) must normalise with
    the same statistics: lerobot-train puts ImageNet mean/std in place of the cameras'
    (dataset.use_imagenet_stats, default true), and robotrain train must too."""
    from safetensors.torch import load_file

    from robotrain.checkpoints.store import PREPROCESSOR_STATS

    a, b = load_file(str(lerobot_ckpt / PREPROCESSOR_STATS)), load_file(str(ours_ckpt / PREPROCESSOR_STATS))
    keys = sorted(k for k in set(a) & set(b)
                  if k.rsplit(".", 1)[-1] in ("mean", "std") and k.startswith(("observation.", "action")))
    if not keys:
        fail("policy/train-stats", "no common mean/std keys")
        return
    worst = max(keys, key=lambda k: float((a[k].float() - b[k].float()).abs().max()))
    report("policy/train-stats (lerobot-train vs robotrain train, same dataset)",
           float((a[worst].float() - b[worst].float()).abs().max()), 1e-6, f"(worst {worst})")


def check_train_config(name: str, pretrained: Path) -> None:
    """LeRobot parses train_config.json strictly (draccus): what `lerobot-train --resume` /
    `--config_path` read. An unknown key, a wrong type or a missing policy fails here."""
    import lerobot.policies.act.configuration_act  # noqa: F401 - registers the "act" choice
    from lerobot.configs.train import TrainPipelineConfig

    cfg = TrainPipelineConfig.from_pretrained(str(pretrained))
    print(f"[PASS] {name}: LeRobot's TrainPipelineConfig reads it (policy {type(cfg.policy).__name__}, "
          f"steps {cfg.steps}, batch {cfg.batch_size}, use_imagenet_stats {cfg.dataset.use_imagenet_stats})")


# --------------------------------------------------------------------------- datasets


def write_tiny_dataset(root: Path) -> Path:
    """2 episodes x 20 frames, two 48x64 cameras, written by our DatasetWriter."""
    from robotrain.data.writer import DatasetWriter

    rng = np.random.default_rng(0)
    cams = {"observation.images.front": (48, 64), "observation.images.wrist": (48, 64)}
    with DatasetWriter(root, fps=30, camera_shapes=cams) as w:
        for e, task in enumerate(["Pick up the cube", "Place the cube in the bowl"]):
            T = 20
            state = rng.normal(0, 30, (T, 6)).astype(np.float32)
            action = rng.normal(0, 30, (T, 6)).astype(np.float32)
            yy, xx = np.mgrid[0:48, 0:64]
            images = {}
            for c, key in enumerate(cams):
                frames = np.zeros((T, 48, 64, 3), np.uint8)
                for t in range(T):  # smooth gradients + a moving square: codec-friendly
                    frames[t, ..., 0] = (xx * 4 + t * 3) % 256
                    frames[t, ..., 1] = (yy * 5 + 40 * c) % 256
                    frames[t, ..., 2] = 128 + 60 * e
                    frames[t, 10:20, 5 + t:15 + t] = 255
                images[key] = frames
            w.add_episode(task, state, action, images)
    return root


def convert_v21(out: Path) -> Path:
    src = FIXTURES / "so101_fixture_v21"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    subprocess.run([sys.executable, "-m", "robotrain", "dataset", "convert", str(src), "--out", str(out)],
                   check=True, env=env)
    return out


def _as_tensor(v: Any) -> torch.Tensor | None:
    if isinstance(v, torch.Tensor):
        return v
    if isinstance(v, np.ndarray | int | float | np.generic):
        return torch.as_tensor(np.asarray(v))
    return None


def check_dataset(name: str, root: Path, cache_dir: Path, video_backend: str) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset as LeDataset

    from robotrain.data.dataset import LeRobotDataset as OurDataset

    fps = 30
    delta = {"action": [i / fps for i in range(10)]}
    try:
        theirs = LeDataset("local/" + root.name, root=root, delta_timestamps=delta, video_backend=video_backend)
    except Exception as exc:  # noqa: BLE001 - report whatever LeRobot raises
        fail(f"{name}/lerobot-load", f"{type(exc).__name__}: {exc}")
        return
    ours = OurDataset(root, delta_timestamps=delta, cache_dir=cache_dir, progress=False)
    if len(theirs) != len(ours):
        fail(f"{name}/len", f"LeRobot {len(theirs)} vs ours {len(ours)}")
        return
    print(f"       {name}: {len(ours)} frames, {theirs.meta.total_episodes} episodes, LeRobot loads it")
    # frame 0, an episode end (padding), the next episode's start, the very last frame
    ends = np.cumsum([e.length for e in ours.meta.episodes])
    picks = sorted({0, 1, int(ends[0]) - 3, int(ends[0]) - 1, int(ends[0]) % len(ours), len(ours) - 1})
    worst: dict[str, float] = {}
    mean_img = 0.0
    for i in picks:
        a, b = ours[i], theirs[i]
        if set(a) != set(b):
            fail(f"{name}/keys[{i}]", f"only ours: {sorted(set(a) - set(b))}, only LeRobot: {sorted(set(b) - set(a))}")
        for key in sorted(set(a) & set(b)):
            va, vb = a[key], b[key]
            if key == "task":
                if va != vb:
                    fail(f"{name}/task[{i}]", f"ours {va!r} vs LeRobot {vb!r}")
                continue
            ta, tb = _as_tensor(va), _as_tensor(vb)
            if ta is None or tb is None:
                fail(f"{name}/{key}[{i}]", f"types ours {type(va).__name__} vs LeRobot {type(vb).__name__}")
                continue
            if tuple(ta.shape) != tuple(tb.shape):
                fail(f"{name}/{key}[{i}]", f"shape ours {tuple(ta.shape)} vs LeRobot {tuple(tb.shape)}")
                continue
            if ta.dtype != tb.dtype:
                fail(f"{name}/{key}[{i}]", f"dtype ours {ta.dtype} vs LeRobot {tb.dtype}")
            diff = (ta.double() - tb.double()).abs()
            worst[key] = max(worst.get(key, 0.0), float(diff.max()) if diff.numel() else 0.0)
            if key.startswith("observation.images."):
                mean_img = max(mean_img, float(diff.mean()))
    print(f"[{'PASS' if not any(f.startswith((name + '/keys', name + '/task')) for f in failures) else 'FAIL'}] {name}/keys+task: "
          f"same keys ({len(worst) + 1}) and task strings in every item")
    for key, d in sorted(worst.items()):
        tol = IMAGE_MAX_TOL if key.startswith("observation.images.") else 0.0
        report(f"{name}/{key}", d, tol, f"(items {picks})")
    report(f"{name}/images-mean", mean_img, IMAGE_MEAN_TOL)


LEROBOT_TRAIN_ARGS = [
    "--policy.type=act", "--policy.dim_model=64", "--policy.dim_feedforward=128", "--policy.n_heads=4",
    "--policy.n_encoder_layers=1", "--policy.n_vae_encoder_layers=1", "--policy.chunk_size=10",
    "--policy.n_action_steps=10", "--policy.pretrained_backbone_weights=null", "--policy.device=cpu",
    "--policy.push_to_hub=false", "--wandb.enable=false", "--steps=2", "--batch_size=2", "--num_workers=0",
    "--save_freq=2", "--log_freq=1", "--eval_freq=0",
]


def _lerobot_train(argv: list[str], log: Path) -> None:
    exe = Path(sys.executable).with_name("lerobot-train")
    env = dict(os.environ, WANDB_MODE="disabled")
    with open(log, "w") as f:
        rc = subprocess.run([str(exe), *argv], stdout=f, stderr=subprocess.STDOUT, env=env, timeout=600).returncode
    if rc != 0:
        raise RuntimeError(f"lerobot-train exited {rc}; see {log}")


def check_lerobot_trains_on(name: str, root: Path, work: Path, video_backend: str) -> None:
    """lerobot-train runs 2 steps on a dataset robotrain wrote and saves a checkpoint."""
    out = work / f"lerobot_train_{root.name}"
    shutil.rmtree(out, ignore_errors=True)
    _lerobot_train([f"--dataset.repo_id=local/{root.name}", f"--dataset.root={root}",
                    f"--dataset.video_backend={video_backend}", f"--output_dir={out}", *LEROBOT_TRAIN_ARGS],
                   work / f"{out.name}.log")
    if not (out / "checkpoints" / "000002" / "pretrained_model" / "model.safetensors").is_file():
        raise RuntimeError(f"no checkpoint in {out}")
    print(f"[PASS] {name}: lerobot-train ran 2 steps on it and saved {out}/checkpoints/000002")


def check_lerobot_resumes(name: str, run_dir: Path, work: Path, video_backend: str) -> None:
    """lerobot-train --resume continues a robotrain run from its last checkpoint: our
    train_config.json, weights, optimizer/scheduler/RNG state in LeRobot's layout."""
    copy = work / "resume_run"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(run_dir, copy, symlinks=True)
    cfg_path = copy / "checkpoints" / "last" / "pretrained_model" / "train_config.json"
    cfg = json.loads(cfg_path.read_text())
    start = int(json.loads((copy / "checkpoints" / "last" / "training_state" / "training_step.json").read_text())["step"])
    cfg["output_dir"] = str(copy)  # relative dataset roots were relative to where training ran
    cfg["dataset"]["root"] = str((REPO / cfg["dataset"]["root"]).resolve()) if cfg["dataset"].get("root") else None
    cfg_path.write_text(json.dumps(cfg, indent=4))
    _lerobot_train([f"--config_path={cfg_path}", "--resume=true", f"--steps={start + 2}",
                    f"--dataset.video_backend={video_backend}", "--wandb.enable=false"], work / "resume_run.log")
    if not (copy / "checkpoints" / f"{start + 2:06d}" / "pretrained_model").is_dir():
        raise RuntimeError(f"no step {start + 2} checkpoint in {copy}; see {work / 'resume_run.log'}")
    print(f"[PASS] {name}: lerobot-train --resume went from step {start} to {start + 2}")


def guarded(name: str, fn: Any, *args: Any) -> None:
    """Run one check; an exception (LeRobot refusing our files, say) is that check's FAIL."""
    try:
        fn(name, *args)
    except Exception as exc:  # noqa: BLE001 - report whatever LeRobot or we raise
        fail(name, f"raised {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lerobot-checkpoint", type=Path,
                   default=FIXTURES / "lerobot_act_checkpoint" / "pretrained_model")
    p.add_argument("--robotrain-checkpoint", type=Path, default=Path("/tmp/rt_act/checkpoints/last/pretrained_model"))
    p.add_argument("--lerobot-dataset", type=Path, default=FIXTURES / "so101_fixture_v30")
    p.add_argument("--workdir", type=Path, default=None, help="where the written/converted datasets go (temp dir)")
    p.add_argument("--video-backend", default="pyav", choices=["pyav", "torchcodec"],
                   help="LeRobot's decoder (its default is torchcodec when that imports)")
    p.add_argument("--lerobot-train", action="store_true",
                   help="also run lerobot-train (2 steps) on the written and converted datasets and resume "
                        "the run holding --robotrain-checkpoint with it (~1 min on CPU)")
    p.add_argument("--skip", nargs="*", default=[], choices=["policy", "dataset"])
    args = p.parse_args()

    import lerobot
    print(f"LeRobot {getattr(lerobot, '__version__', '?')}, torch {torch.__version__}")
    torch.manual_seed(0)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="lerobot_compat_"))
    work.mkdir(parents=True, exist_ok=True)

    if "policy" not in args.skip:
        guarded("policy/lerobot-ckpt", check_policy, args.lerobot_checkpoint)
        if args.robotrain_checkpoint.is_dir():
            guarded("policy/robotrain-ckpt", check_policy, args.robotrain_checkpoint)
            guarded("policy/robotrain-ckpt/train_config", check_train_config, args.robotrain_checkpoint)
            guarded("policy/train-stats", lambda _n, a, b: check_training_stats(a, b), args.lerobot_checkpoint, args.robotrain_checkpoint)
        else:
            fail("policy/robotrain-ckpt", f"{args.robotrain_checkpoint} not found (make one with robotrain train)")
    if "dataset" not in args.skip:
        guarded("dataset/lerobot-v30", check_dataset, args.lerobot_dataset, work / "cache", args.video_backend)
        written = work / "written"
        if not (written / "meta" / "info.json").is_file():
            write_tiny_dataset(written)
        guarded("dataset/writer", check_dataset, written, work / "cache", args.video_backend)
        converted = work / "conv30"
        if not (converted / "meta" / "info.json").is_file():
            convert_v21(converted)
        guarded("dataset/converted-v21", check_dataset, converted, work / "cache", args.video_backend)

    if args.lerobot_train:
        guarded("lerobot-train/writer", check_lerobot_trains_on, work / "written", work, args.video_backend)
        guarded("lerobot-train/converted-v21", check_lerobot_trains_on, work / "conv30", work, args.video_backend)
        run_dir = args.robotrain_checkpoint.resolve().parents[2]  # <run>/checkpoints/<step>/pretrained_model
        guarded("lerobot-train/resume-robotrain-run", check_lerobot_resumes, run_dir, work, args.video_backend)

    print(f"\n{len(failures)} failure(s)" + (": " + ", ".join(failures) if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
