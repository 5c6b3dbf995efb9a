"""DDP via torchrun (gloo on CPU): 2 processes x batch 2 == 1 process x batch 4."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from robotrain.checkpoints.store import check_complete

import train_helpers
from train_helpers import read_metrics, wait_for_metrics

HELPER = Path(__file__).with_name("train_helpers.py")
SRC = Path(__file__).resolve().parents[1] / "src"


def args(run_dir: Path, batch_size: int) -> list[str]:
    # chunk_size 1: no padded steps, so the mean of per-process losses is the global mean.
    # float32: a bf16 sum over another split of the batch rounds differently (1e-3), and
    # `--amp auto` is bf16 on a CPU with native bf16.
    return ["--output-dir", str(run_dir), "--steps", "4", "--batch-size", str(batch_size), "--num-workers", "0",
            "--log-freq", "1", "--save-freq", "0", "--eval-freq", "0", "--policy.chunk_size", "1",
            "--policy.n_action_steps", "1", "--seed", "7", "--amp", "off"]


def launch(run_dir: Path, nproc: int, batch_size: int) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
               OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(HELPER),
           *args(run_dir, batch_size)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(tmp_path, monkeypatch) -> None:
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert train_helpers.main(args(tmp_path / "one", batch_size=4)) == 0  # one process, in this one
    two = launch(tmp_path / "two", nproc=2, batch_size=2)
    assert two.returncode == 0, two.stderr[-3000:]
    a = [r for r in read_metrics(tmp_path / "one") if "train/loss" in r]
    b = [r for r in read_metrics(tmp_path / "two") if "train/loss" in r]
    assert [r["samples"] for r in a] == [r["samples"] for r in b] == [4, 8, 12, 16]
    for ra, rb in zip(a, b):
        assert rb["train/loss"] == pytest.approx(ra["train/loss"], rel=1e-5)
        assert rb["train/grad_norm"] == pytest.approx(ra["train/grad_norm"], rel=1e-5)
    wa = load_file(tmp_path / "one/checkpoints/last/pretrained_model/model.safetensors")
    wb = load_file(tmp_path / "two/checkpoints/last/pretrained_model/model.safetensors")
    for key in wa:
        torch.testing.assert_close(wb[key], wa[key], rtol=1e-5, atol=1e-6)
    # only rank 0 writes: one metrics line per step
    assert len(b) == 4


@pytest.mark.slow
def test_sigterm_to_torchrun_stops_both_ranks_after_the_same_step_with_one_checkpoint(tmp_path) -> None:
    # torchrun forwards SIGTERM to its ranks; they agree on the step to stop after (an
    # all-reduce), rank 0 saves it, and both leave through the barrier: nobody hangs.
    run_dir = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
               OMP_NUM_THREADS="1")
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(HELPER),
           *args(run_dir, batch_size=2)]
    cmd[cmd.index("--steps") + 1] = "10000000"
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        wait_for_metrics(proc, run_dir, lines=3, timeout=180)
        os.kill(proc.pid, signal.SIGTERM)  # to torchrun only, as a scheduler would
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    stops = re.findall(r"robotrain: stopped: SIGTERM at step (\d+)", err)
    assert len(stops) == 2 and stops[0] == stops[1], err[-3000:]
    last = (run_dir / "checkpoints" / "last").resolve()
    check_complete(last)
    assert int(last.name) == int(stops[0])
