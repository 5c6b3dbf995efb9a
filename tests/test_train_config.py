"""Config flags: dataclass fields as flags, dotted policy flags, config files, presets, errors."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from robotrain.config import flags as config_flags
from robotrain.training.config import TrainConfig, parse_train_config
from robotrain.errors import ConfigError

import train_helpers
from conftest import run_cli


@pytest.fixture(autouse=True)
def _tiny_policy() -> None:
    train_helpers.register()


def parse(*argv: str) -> TrainConfig:
    return parse_train_config(["--policy", "tiny_mlp", *argv], check_paths=False)


def test_flags_dashes_underscores_and_dotted_policy_fields() -> None:
    cfg = parse("--steps", "7", "--batch_size", "3", "--num-workers", "0", "--policy.hidden_dim", "5",
                "--policy.optimizer-betas", "0.8,0.9", "--amp", "off", "--compile", "true")
    assert (cfg.steps, cfg.batch_size, cfg.num_workers) == (7, 3, 0)
    assert isinstance(cfg.policy, train_helpers.TinyConfig)
    assert cfg.policy.hidden_dim == 5
    assert cfg.policy.optimizer_betas == (0.8, 0.9)
    assert cfg.compile is True and cfg.amp == "off"


def test_policy_type_aliases() -> None:
    cfg = parse_train_config(["--policy.type", "tiny_mlp"], check_paths=False)
    assert cfg.policy_type == "tiny_mlp"


def test_image_size_shortcut_sets_policy_and_dataset_size() -> None:
    cfg = parse("--image-size", "240x320")
    assert cfg.image_size == (240, 320)
    assert cfg.policy.image_size == (240, 320)
    assert cfg.image_input() == ((240, 320), "resize")
    cfg = parse("--policy.image_size", "96x128")
    assert cfg.image_size is None and cfg.image_input() == ((96, 128), "resize")


def test_resize_mode_follows_the_policy() -> None:
    cfg = parse("--resize-mode", "pad")
    assert cfg.policy.resize_mode == "pad" and cfg.image_input() == (None, "pad")
    cfg = parse("--policy.resize_mode", "pad")
    assert cfg.resize_mode is None and cfg.image_input() == (None, "pad")


def test_image_size_shortcut_sets_smolvla_padding() -> None:
    cfg = parse_train_config(["--policy", "smolvla", "--policy.vlm", "tiny", "--image-size", "128x128"],
                             check_paths=False)
    assert cfg.policy.resize_imgs_with_padding == (128, 128)
    assert cfg.image_input() == ((128, 128), "pad")
    with pytest.raises(ConfigError, match="pads"):
        parse_train_config(["--policy", "smolvla", "--image-size", "96x128", "--resize-mode", "resize"],
                           check_paths=False)


def test_optional_and_none() -> None:
    assert parse("--output-dir", "none").output_dir is None
    assert parse("--output-dir", "runs/x").output_dir == "runs/x"


def test_config_file_then_flags_override(tmp_path) -> None:
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"steps": 11, "batch_size": 5, "policy": {"type": "tiny_mlp", "hidden_dim": 9}}))
    cfg = parse("--config", str(path), "--steps", "12")
    assert (cfg.steps, cfg.batch_size, cfg.policy.hidden_dim) == (12, 5, 9)


def test_saved_config_round_trips(tmp_path) -> None:
    cfg = parse("--steps", "13", "--image-size", "24x32", "--policy.dropout", "0.25")
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config_flags.to_dict(cfg)))
    again = parse_train_config(["--config", str(path)], check_paths=False)
    assert again == cfg


def test_preset_is_a_function_and_flags_win() -> None:
    cfg = parse("--preset", "debug", "--steps", "3")
    assert cfg.steps == 3 and cfg.log_freq == 1 and cfg.num_workers == 0


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--steps", "abc"], "--steps"),
        (["--policy.hidden_dim", "1.5"], "--policy.hidden_dim"),
        (["--compile", "maybe"], "--compile"),
        (["--image-size", "240x"], "--image-size"),
        (["--steps", "0"], "--steps"),
        (["--val-fraction", "1.5"], "--val-fraction"),
        (["--amp", "fp8"], "--amp"),
        (["--device", "tpu"], "--device"),
        (["--no-such-flag", "1"], "--no-such-flag"),
        (["--policy.no_such_field", "1"], "--policy.no_such_field"),
        (["--policy.n_action_steps", "99"], "n_action_steps"),
        (["--resume"], "--resume"),
    ],
)
def test_bad_values_name_the_flag(argv: list[str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        parse(*argv)


def test_unknown_key_in_config_file(tmp_path) -> None:
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"stepz": 3}))
    with pytest.raises(ConfigError, match="stepz"):
        parse("--config", str(path))
    with pytest.raises(ConfigError, match="not found"):
        parse("--config", str(tmp_path / "missing.json"))


def test_dataset_must_exist_before_any_loading(tmp_path) -> None:
    with pytest.raises(ConfigError, match="dataset"):
        parse_train_config(["--policy", "tiny_mlp", "--dataset", str(tmp_path / "nope")])


def test_help_text_comes_from_field_docstrings(capsys) -> None:
    with pytest.raises(SystemExit):
        parse("--help")
    out = capsys.readouterr().out
    assert "--batch-size" in out and "Samples per optimizer update" in out
    assert "--policy.hidden_dim" in out and "Width of the hidden layer" in out


def test_generic_bridge_types() -> None:
    @dataclass
    class C:
        a: int = 1
        b: float | None = None
        c: tuple[int, ...] = (1,)
        d: dict[str, str] | None = None

    c = config_flags.from_dict(C, {"a": "2", "b": "none", "c": "3,4,5", "d": '{"x": "y"}'})
    assert c == C(a=2, b=None, c=(3, 4, 5), d={"x": "y"})


def test_cli_prints_one_line_error() -> None:
    out = run_cli("train", "--policy", "no_such_policy")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [out.stderr.strip()]
    assert "no_such_policy" in out.stderr and "Traceback" not in out.stderr
