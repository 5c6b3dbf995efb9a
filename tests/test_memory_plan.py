"""`robotrain plan`: the predicted peak by term, the largest batch that fits, the CLI and
the warning `robotrain train` gives before building the data. The prediction's accuracy
is measured by benchmarks/bench_memory.py (docs/benchmarks.md), not asserted here."""

from __future__ import annotations

import json
import logging

import pytest

from robotrain.cli import main as cli_main
from robotrain.errors import ConfigError
from robotrain.training import memory
from robotrain.training.config import parse_train_config
from robotrain.training.loop import train
from robotrain.training.memory import AUTOCAST_WEIGHT_COPY_BYTES, parse_memory_size, plan_memory, so101_features
from train_helpers import SyntheticSource

TINY_ACT = ["--policy", "act", "--policy.dim_model", "32", "--policy.n_heads", "2", "--policy.dim_feedforward", "64",
            "--policy.n_encoder_layers", "1", "--policy.n_vae_encoder_layers", "1", "--policy.chunk_size", "8",
            "--policy.n_action_steps", "8", "--device", "cpu"]


def plan(*flags: str, budget: int | None = 2**40):
    return plan_memory(parse_train_config(list(flags), check_paths=False), budget=budget)


@pytest.mark.parametrize("text, expected", [("24G", 24 * 2**30), ("24GB", 24 * 2**30), ("24GiB", 24 * 2**30),
                                            ("512m", 512 * 2**20), ("1.5T", int(1.5 * 2**40)), ("1000", 1000)])
def test_memory_sizes(text: str, expected: int) -> None:
    assert parse_memory_size(text) == expected


@pytest.mark.parametrize("text", ["lots", "-1G", "0", "G"])
def test_bad_memory_sizes_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError, match="--memory"):
        parse_memory_size(text)


def test_terms_come_from_the_policy_built_on_meta() -> None:
    p = plan(*TINY_ACT, "--image-size", "64x80", "--batch-size", "4")
    assert p.parameters == p.trainable_parameters > 11_000_000  # the ResNet18 alone has 11.2M
    assert p.gradients == 4 * p.trainable_parameters  # float32
    assert p.optimizer == 2 * p.gradients  # AdamW's two moments
    assert p.weights >= 4 * p.parameters  # plus the frozen batch-norm buffers
    assert p.peak_bytes == sum(p.breakdown().values())
    assert p.to_dict()["peak_bytes"] == p.peak_bytes and p.image_size == (64, 80) and p.n_cameras == 2


def test_activations_grow_with_batch_and_pixels() -> None:
    small = plan(*TINY_ACT, "--image-size", "96x128", "--batch-size", "2")
    double_batch = plan(*TINY_ACT, "--image-size", "96x128", "--batch-size", "4")
    quad_pixels = plan(*TINY_ACT, "--image-size", "192x256", "--batch-size", "2")
    assert double_batch.activations == 2 * small.activations
    assert double_batch.weights == small.weights and quad_pixels.weights == small.weights
    assert 2.5 * small.activations < quad_pixels.activations < 5 * small.activations  # backbone ~ pixels, + tokens


def test_max_batch_is_the_largest_that_fits() -> None:
    budget = plan(*TINY_ACT, "--batch-size", "10").peak_bytes
    p = plan(*TINY_ACT, "--batch-size", "64", budget=budget)
    assert p.max_batch == 10 and p.fits is False
    assert plan(*TINY_ACT, "--batch-size", "10", budget=budget).fits
    assert plan(*TINY_ACT, "--batch-size", "11", budget=budget).fits is False
    assert plan(*TINY_ACT, budget=p.fixed_bytes - 1).max_batch == 0


def test_bf16_autocast_needs_less_activation_memory() -> None:
    fp32 = plan(*TINY_ACT, "--amp", "off")
    bf16 = plan(*TINY_ACT, "--amp", "bf16")
    assert bf16.precision == "bf16 autocast" and fp32.precision == "float32"
    # bf16 keeps most activations in 2 bytes instead of 4 (the factor was fitted to H100 peaks),
    # and autocast caches a bf16 copy of every trainable weight for the step.
    assert bf16.activations < 0.7 * fp32.activations
    assert bf16.weights == fp32.weights + AUTOCAST_WEIGHT_COPY_BYTES * fp32.trainable_parameters


def test_smolvla_counts_only_trainable_parameters_for_gradients() -> None:
    tiny = ["--policy", "smolvla", "--policy.vlm", "tiny", "--image-size", "32x32", "--device", "cpu"]
    frozen = plan(*tiny)
    whole = plan(*tiny, "--policy.train_expert_only", "false", "--policy.freeze_vision_encoder", "false")
    assert frozen.trainable_parameters < frozen.parameters
    assert frozen.gradients == 4 * frozen.trainable_parameters < whole.gradients
    assert frozen.activations < whole.activations
    assert frozen.runtime > memory.RUNTIME_CPU_BYTES  # transformers is loaded too


def test_the_dataset_gives_the_cameras(lerobot_fixtures) -> None:
    features, frames = memory.dataset_layout(str(lerobot_fixtures / "so101_fixture_v30"))
    assert features.image_shape == (3, 96, 128) and frames == 123
    config = parse_train_config(TINY_ACT, check_paths=False)
    p = plan_memory(config, features, frames, budget=2**40)
    assert p.image_size == (96, 128) and p.n_cameras == len(features.camera_keys)
    assert so101_features().image_shape == (3, 480, 640)


def test_cli_json(capsys) -> None:
    assert cli_main(["plan", *TINY_ACT, "--batch-size", "3", "--memory", "64G", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["batch_size"] == 3 and out["budget_bytes"] == 64 * 2**30
    assert out["peak_bytes"] == sum(out["breakdown"].values()) and out["max_batch"] > 3


def test_cli_text_and_user_errors(capsys) -> None:
    assert cli_main(["plan", *TINY_ACT, "--memory", "1M"]) == 0
    assert "does NOT fit" in capsys.readouterr().out
    assert cli_main(["plan", *TINY_ACT, "--memory", "lots"]) != 0
    assert "--memory" in capsys.readouterr().err
    assert cli_main(["plan", *TINY_ACT, "--dataset", "/nonexistent/dataset"]) != 0
    assert "dataset directory not found" in capsys.readouterr().err


def test_train_refuses_a_run_that_will_not_fit_before_building_the_data(tmp_path, monkeypatch, caplog) -> None:
    """Issue 22, family 6: the estimate and what would fit, before the data exists;
    --memory-check warn logs the same line and goes on; a run that fits says nothing."""
    source = SyntheticSource(image_hw=(32, 32))

    def stop_here(*args, **kwargs):
        raise ConfigError("stopped before the data")

    monkeypatch.setattr(source, "datasets", stop_here)
    monkeypatch.setattr(memory, "device_total_memory", lambda device: 2**20)
    argv = [*TINY_ACT, "--output-dir", str(tmp_path / "run"), "--steps", "1"]
    config = parse_train_config(argv, check_paths=False)
    with pytest.raises(ConfigError, match="predicted peak memory") as refused:
        train(config, data=source)
    message = str(refused.value)
    assert "\n" not in message and "largest batch that fits" in message and "--memory-check warn" in message
    assert not (tmp_path / "run" / "metrics.jsonl").exists()

    warn = parse_train_config([*argv, "--memory-check", "warn"], check_paths=False)
    with caplog.at_level(logging.WARNING), pytest.raises(ConfigError, match="stopped before the data"):
        train(warn, data=source)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "predicted peak memory" in warnings[0] and "largest batch" in warnings[0]

    caplog.clear()
    monkeypatch.setattr(memory, "device_total_memory", lambda device: 2**40)
    with caplog.at_level(logging.WARNING), pytest.raises(ConfigError, match="stopped before the data"):
        train(config, data=source)
    assert not [r for r in caplog.records if "predicted peak memory" in r.getMessage()]


def test_memory_check_choices_are_checked() -> None:
    with pytest.raises(ConfigError, match="memory-check"):
        parse_train_config([*TINY_ACT, "--output-dir", "x", "--memory-check", "maybe"], check_paths=False)


def test_checkpointing_plans_a_fraction_of_each_part() -> None:
    """With gradient checkpointing ACT's plan scales its ResNet and transformer terms by
    the measured fractions, and SmolVLA's keeps the layers' inputs plus one recomputed
    layer (calibration in policies/*/memory.py): less than without, for both."""
    from robotrain.policies.act import memory as act_memory
    from robotrain.policies.act.config import ACTConfig

    plain = act_memory.activation_bytes_per_sample(ACTConfig(), 2, (240, 320), 162, True, "cpu", False)
    checkpointed = act_memory.activation_bytes_per_sample(ACTConfig(gradient_checkpointing=True), 2, (240, 320),
                                                          162, True, "cpu", False)
    backbone, transformers = act_memory.saved_bytes_per_sample(ACTConfig(), 2, (240, 320), 162, True, False)
    assert backbone == 2 * 240 * 320 * 244.5
    assert plain == int((backbone + transformers) * act_memory.CPU_PEAK_FACTOR)
    assert checkpointed == int((backbone * act_memory.CHECKPOINT_BACKBONE
                                + transformers * act_memory.CHECKPOINT_TRANSFORMER) * act_memory.CPU_PEAK_FACTOR)
    for flags in (TINY_ACT, ("--preset", "smolvla_sim", "--batch-size", "8")):
        off = plan(*flags)
        on = plan(*flags, "--policy.gradient_checkpointing", "true")
        assert 0.2 * off.per_sample < on.per_sample < off.per_sample, flags
