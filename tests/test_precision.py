"""`--amp`: what "auto" means by device and CPU capability (training/precision.py)."""

from __future__ import annotations

import pytest
import torch

from robotrain.system import environment
from robotrain.training import precision
from robotrain.training.config import parse_train_config
from robotrain.training.loop import setup_runtime
from robotrain.training.memory import plan_memory

CPU, CUDA, MPS = torch.device("cpu"), torch.device("cuda"), torch.device("mps")


@pytest.fixture
def cpu(monkeypatch):
    """Set this machine's CPU flags and the measured switch: cpu(flags, measured_faster)."""
    def set_cpu(flags: set[str], measured_faster: bool) -> None:
        monkeypatch.setattr(environment, "cpu_flags", lambda: set(flags))
        monkeypatch.setattr(precision, "CPU_BF16_WHEN_NATIVE", measured_faster)

    return set_cpu


@pytest.mark.parametrize("flags", [{"avx2", "fma"}, {"avx2", "avx512f", "avx512_vnni"}])
def test_auto_never_picks_bf16_on_a_cpu_that_emulates_it(cpu, flags) -> None:
    cpu(flags, measured_faster=True)
    assert precision.autocast_dtype("auto", CPU) is None
    assert precision.autocast_dtype("bf16", CPU) == torch.bfloat16  # asked for explicitly


@pytest.mark.parametrize("flags", [{"avx2", "avx512_bf16"}, {"avx2", "amx_bf16", "amx_tile"}])
def test_auto_picks_bf16_on_a_native_cpu_only_once_measured(cpu, flags) -> None:
    cpu(flags, measured_faster=False)
    assert precision.autocast_dtype("auto", CPU) is None
    cpu(flags, measured_faster=True)
    assert precision.autocast_dtype("auto", CPU) == torch.bfloat16
    assert precision.autocast_dtype("off", CPU) is None


def test_other_devices(cpu) -> None:
    cpu({"avx2"}, measured_faster=False)
    assert precision.autocast_dtype("auto", CUDA) == torch.bfloat16
    assert precision.autocast_dtype("off", CUDA) is None
    assert precision.autocast_dtype("auto", MPS) is None


def test_the_shipped_default_follows_the_measurement() -> None:
    """bench_precision.py measured bf16 faster with a matching loss on a native-bf16 CPU
    (docs/bench/precision_cpu/): `--amp auto` is bf16 there, float32 on every other CPU."""
    assert precision.CPU_BF16_WHEN_NATIVE is True


def test_training_and_plan_follow_the_decision(cpu) -> None:
    config = parse_train_config(["--policy", "act", "--device", "cpu", "--amp", "auto"], check_paths=False)
    cpu({"avx512_bf16"}, measured_faster=True)
    assert setup_runtime(config).amp_dtype == torch.bfloat16
    assert plan_memory(config, budget=2**40).precision == "bf16 autocast"
    cpu({"avx2"}, measured_faster=True)
    assert setup_runtime(config).amp_dtype is None
    assert plan_memory(config, budget=2**40).precision == "float32"
