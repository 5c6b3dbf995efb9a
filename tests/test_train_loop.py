"""The training loop on a tiny MLP policy and synthetic data: metrics, checkpoints, resume, NaN."""

from __future__ import annotations

import json
import shutil
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from robotrain.checkpoints.store import check_complete
from robotrain.training.config import parse_train_config
from robotrain.errors import ConfigError, RobotrainError, TrainingError, TrainingStopped
from robotrain.training.loop import train

import train_helpers
from train_helpers import SyntheticSource, TinyPolicy, read_metrics, wait_for_metrics

TRAIN_KEYS = {"step", "samples", "epoch", "train/loss", "train/l1_loss", "train/grad_norm", "train/lr",
              "train/updt_s", "train/data_s", "train/samples_per_s", "train/peak_mem_mb", "time"}
EVAL_KEYS = {"step", "samples", "eval/action_error", "eval/first_action_error", "eval/action_error_per_joint"}


@pytest.fixture(autouse=True)
def _tiny_policy() -> None:
    train_helpers.register()


def run(tmp_path, *argv: str, name: str = "run", source: SyntheticSource | None = None):
    config = parse_train_config(["--policy", "tiny_mlp", "--output-dir", str(tmp_path / name), "--num-workers", "0",
                                 "--batch-size", "2", "--log-freq", "1", "--save-freq", "3", "--eval-freq", "0",
                                 "--seed", "3", *argv], check_paths=False)
    return train(config, data=source or SyntheticSource())


def test_metrics_jsonl_fields_and_eval_lines(tmp_path) -> None:
    run_dir = run(tmp_path, "--steps", "4", "--eval-freq", "2", "--eval-max-samples", "5")
    lines = read_metrics(run_dir)
    train_lines = [r for r in lines if "train/loss" in r]
    eval_lines = [r for r in lines if "eval/action_error" in r]
    assert [r["step"] for r in train_lines] == [1, 2, 3, 4]
    for r in train_lines:
        assert TRAIN_KEYS <= set(r), TRAIN_KEYS - set(r)
        assert r["samples"] == 2 * r["step"] and r["train/peak_mem_mb"] > 0
    assert [r["step"] for r in eval_lines] == [2, 4]
    assert EVAL_KEYS <= set(eval_lines[0]) and len(eval_lines[0]["eval/action_error_per_joint"]) == 6
    assert "eval/baseline_action_error" in eval_lines[0]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["steps"] == 4 and config["policy"]["type"] == "tiny_mlp"


def test_keep_last_k_and_last_pointer(tmp_path) -> None:
    run_dir = run(tmp_path, "--steps", "7", "--save-freq", "2", "--keep-last", "2")
    ckpts = run_dir / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir() if not p.name.startswith(".")) == ["000006", "000007", "last"]
    assert (ckpts / "last").is_symlink() and (ckpts / "last").resolve().name == "000007"
    train_config = json.loads((ckpts / "last" / "pretrained_model" / "train_config.json").read_text())
    assert train_config["steps"] == 7 and train_config["policy"]["type"] == "tiny_mlp"
    assert json.loads((ckpts / "last" / "training_state" / "training_step.json").read_text()) == {"step": 7}


def assert_same_run(straight, resumed, steps: int) -> None:
    """The resumed run logged the same losses and ended with bit-identical weights."""
    from safetensors.torch import load_file

    a = [(r["step"], r["train/loss"]) for r in read_metrics(straight) if "train/loss" in r]
    b = [(r["step"], r["train/loss"]) for r in read_metrics(resumed) if "train/loss" in r]
    assert a == b and len(a) == steps
    sa = load_file(straight / "checkpoints/last/pretrained_model/model.safetensors")
    sb = load_file(resumed / "checkpoints/last/pretrained_model/model.safetensors")
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resume_reproduces_an_uninterrupted_run(tmp_path) -> None:
    # Dropout on, so the RNG state must be restored too; 2 train episodes x 5 frames = 10 frames,
    # 5 batches per epoch: the 6 steps cross an epoch boundary after the resume point.
    source = lambda: SyntheticSource(n_episodes=3, length=5, n_val=1)  # noqa: E731
    common = ("--policy.dropout", "0.3", "--save-freq", "3")
    straight = run(tmp_path, "--steps", "6", *common, name="straight", source=source())
    run(tmp_path, "--steps", "3", *common, name="resumed", source=source())
    resumed = run(tmp_path, "--steps", "6", "--resume", *common, name="resumed", source=source())
    assert_same_run(straight, resumed, steps=6)


def test_resume_drops_metrics_after_the_checkpoint_and_torn_lines(tmp_path) -> None:
    run_dir = run(tmp_path, "--steps", "4", "--save-freq", "2", "--keep-last", "0")
    (run_dir / "checkpoints" / "000004").rename(run_dir / "checkpoints" / "gone")  # as if killed after step 4
    (run_dir / "checkpoints" / "last").unlink()
    (run_dir / "checkpoints" / "last").symlink_to("000002")
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "train/lo')  # torn line
    (run_dir / "checkpoints" / ".000006.tmp-x").mkdir()  # a save that was killed
    run(tmp_path, "--steps", "5", "--resume", "--save-freq", "2")
    steps = [r["step"] for r in read_metrics(run_dir)]
    assert steps == [1, 2, 3, 4, 5]
    assert not (run_dir / "checkpoints" / ".000006.tmp-x").exists()


def test_resume_cli_reuses_saved_config(tmp_path) -> None:
    run_dir = run(tmp_path, "--steps", "3", "--policy.hidden_dim", "7")
    config = parse_train_config(["--resume", "--output-dir", str(run_dir), "--steps", "4"], check_paths=False)
    assert config.policy_type == "tiny_mlp" and config.policy.hidden_dim == 7 and config.steps == 4
    with pytest.raises(ConfigError, match="already holds a run"):
        run(tmp_path, "--steps", "3")
    (run_dir / "config.json").unlink()
    with pytest.raises(ConfigError, match="config.json: --resume: the run's config.json is missing"):
        parse_train_config(["--resume", "--output-dir", str(run_dir), "--steps", "4"], check_paths=False)


def test_nan_loss_stops_with_message_and_keeps_last_checkpoint(tmp_path, monkeypatch) -> None:
    forward = TinyPolicy.forward
    calls = {"n": 0}

    def poisoned(self, batch):
        calls["n"] += 1
        loss, metrics = forward(self, batch)
        return (loss * math.nan if calls["n"] == 5 else loss), metrics

    monkeypatch.setattr(TinyPolicy, "forward", poisoned)
    with pytest.raises(TrainingError, match=r"step 5: loss became nan.*last good checkpoint: .*000003"):
        run(tmp_path, "--steps", "8")
    ckpts = tmp_path / "run" / "checkpoints"
    assert (ckpts / "last").resolve().name == "000003"
    assert sorted(p.name for p in ckpts.iterdir()) == ["000003", "last"]


def test_a_killed_data_worker_stops_with_the_resume_command(tmp_path, monkeypatch) -> None:
    """The OOM killer takes a DataLoader worker: one clear error, the last checkpoint kept."""
    get = train_helpers.SyntheticDataset.__getitem__
    fetched = {"n": 0}  # counted in the (forked) worker

    def dies_at_the_sixth_batch(self, i):
        fetched["n"] += 1
        if fetched["n"] == 11:  # 2 per batch; prefetching stays 2 batches ahead, so step 3 is saved
            os.kill(os.getpid(), signal.SIGKILL)
        return get(self, i)

    monkeypatch.setattr(train_helpers.SyntheticDataset, "__getitem__", dies_at_the_sixth_batch)
    with pytest.raises(TrainingError, match=r"DataLoader worker .*last good checkpoint: .*000003; "
                                            r"continue with: robotrain train --resume --output-dir"):
        run(tmp_path, "--steps", "12", "--num-workers", "1")
    monkeypatch.undo()
    train_helpers.register()
    run(tmp_path, "--steps", "12", "--num-workers", "1", "--resume")
    assert (tmp_path / "run" / "checkpoints" / "last").resolve().name == "000012"


def test_a_second_training_in_the_same_run_dir_is_refused(tmp_path) -> None:
    """Two writers would interleave metrics.jsonl and point `last` at either's checkpoint."""
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from robotrain.system.files import lock_folder; from robotrain.training.loop import RUN_LOCK;"
        "h = lock_folder(sys.argv[1], RUN_LOCK, 'x'); print('locked', flush=True); time.sleep(60)"),
        str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(RobotrainError, match=rf"in use by another process \(pid {holder.pid}\)"):
            run(tmp_path, "--steps", "2")
        assert not (tmp_path / "run" / "checkpoints").exists()
    finally:
        holder.kill()
        holder.wait()
    run(tmp_path, "--steps", "2")  # the holder is gone: its lock went with it


def test_overfits_a_tiny_dataset(tmp_path) -> None:
    source = SyntheticSource(n_episodes=2, length=6, n_val=1)
    run_dir = run(tmp_path, "--steps", "120", "--log-freq", "10", "--save-freq", "0", "--policy.hidden_dim", "64",
                  "--policy.optimizer_lr", "1e-2", "--batch-size", "3", source=source)
    losses = [r["train/loss"] for r in read_metrics(run_dir) if "train/loss" in r]
    assert losses[-1] < losses[0] / 10, losses


def test_batch_larger_than_data_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="--batch-size"):
        run(tmp_path, "--steps", "2", "--batch-size", "500")


def _weights(run_dir, step: str = "last") -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    return load_file(str(run_dir / "checkpoints" / step / "pretrained_model" / "model.safetensors"))


def test_init_from_starts_a_new_run_from_a_checkpoints_weights(tmp_path) -> None:
    first = run(tmp_path, "--steps", "3", name="first")
    # lr 0: the one step of the second run cannot move the weights, so they must be the first run's
    second = run(tmp_path, "--steps", "1", "--policy.optimizer_lr", "0", "--init-from",
                 str(first / "checkpoints" / "last"), name="second")
    fresh = run(tmp_path, "--steps", "1", "--policy.optimizer_lr", "0", name="fresh")
    got, want, random_init = _weights(second), _weights(first), _weights(fresh)
    assert set(got) == set(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert not all(torch.equal(random_init[k], want[k]) for k in want)
    saved = json.loads((second / "config.json").read_text())
    assert saved["init_from"].endswith("last") and read_metrics(second)[0]["step"] == 1  # a new run, step 1


def test_init_from_a_different_architecture_names_the_mismatch(tmp_path) -> None:
    from robotrain.errors import CheckpointError
    first = run(tmp_path, "--steps", "1", name="first")
    with pytest.raises(CheckpointError, match="shape mismatch"):
        run(tmp_path, "--steps", "1", "--policy.hidden_dim", "7", "--init-from", str(first / "checkpoints" / "last"),
            name="second")
    assert not (tmp_path / "second").exists()  # refused before anything was written
    with pytest.raises(ConfigError, match="--init-from"):
        run(tmp_path, "--steps", "1", "--init-from", str(tmp_path / "nowhere"), name="third")


def test_resuming_a_fine_tuned_run_does_not_need_its_parent(tmp_path) -> None:
    import shutil
    first = run(tmp_path, "--steps", "2", name="first")
    parent = tmp_path / "parent"
    shutil.copytree(first / "checkpoints" / "last", parent)
    second = run(tmp_path, "--steps", "2", "--init-from", str(parent), name="second")
    shutil.rmtree(parent)
    config = parse_train_config(["--resume", "--output-dir", str(second), "--steps", "3"], check_paths=False)
    train(config, data=SyntheticSource())
    assert read_metrics(second)[-1]["step"] == 3


def test_add_state_noise_touches_only_the_state() -> None:
    from robotrain.constants import OBS_STATE
    from robotrain.training.loop import add_state_noise

    state, image = torch.zeros(4000, 6), torch.ones(2, 3, 4, 4)
    batch = {OBS_STATE: state, "observation.images.front": image, "task": ["t"]}
    assert add_state_noise(batch, 0.0) is batch
    torch.manual_seed(0)
    noisy = add_state_noise(batch, 2.0)
    assert torch.equal(batch[OBS_STATE], state) and noisy is not batch  # the input is left alone
    assert noisy["observation.images.front"] is image and noisy["task"] == ["t"]
    assert noisy[OBS_STATE].std().item() == pytest.approx(2.0, rel=0.03) and abs(noisy[OBS_STATE].mean().item()) < 0.05


def test_state_noise_changes_training_and_resumes_exactly(tmp_path) -> None:
    source = lambda: SyntheticSource(n_episodes=3, length=5, n_val=1)  # noqa: E731
    clean = run(tmp_path, "--steps", "4", name="clean", source=source())
    common = ("--state-noise-std", "0.5", "--save-freq", "2")
    noisy = run(tmp_path, "--steps", "4", *common, name="noisy", source=source())
    run(tmp_path, "--steps", "2", *common, name="resumed", source=source())
    resumed = run(tmp_path, "--steps", "4", "--resume", *common, name="resumed", source=source())
    losses = lambda path: [r["train/loss"] for r in read_metrics(path) if "train/loss" in r]  # noqa: E731
    assert losses(clean)[1:] != losses(noisy)[1:]
    assert losses(noisy) == losses(resumed)
    with pytest.raises(ConfigError, match="--state-noise-std"):
        parse_train_config(["--policy", "tiny_mlp", "--state-noise-std", "-1"], check_paths=False)


def test_sigterm_saves_the_current_step_and_resume_is_exact(tmp_path, monkeypatch) -> None:
    # SIGTERM arrives during step 5 (save-freq 3): the step finishes, 000005 is saved, the run
    # stops with TrainingStopped, and resuming it gives exactly the uninterrupted run.
    source = lambda: SyntheticSource(n_episodes=3, length=5, n_val=1)  # noqa: E731
    common = ("--policy.dropout", "0.3", "--save-freq", "3", "--keep-last", "0")
    straight = run(tmp_path, "--steps", "8", *common, name="straight", source=source())
    forward = TinyPolicy.forward
    calls = {"n": 0}

    def terminated(self, batch):
        calls["n"] += 1
        if calls["n"] == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return forward(self, batch)

    handler_before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(TinyPolicy, "forward", terminated)
    with pytest.raises(TrainingStopped, match=r"SIGTERM at step 5 of 8; checkpoint .*000005; continue with: "
                                              r"robotrain train --resume --output-dir "):
        run(tmp_path, "--steps", "8", *common, name="stopped", source=source())
    assert signal.getsignal(signal.SIGTERM) == handler_before  # the default is back after train()
    ckpts = tmp_path / "stopped" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["000003", "000005", "last"]
    assert (ckpts / "last").resolve().name == "000005"
    monkeypatch.setattr(TinyPolicy, "forward", forward)
    resumed = run(tmp_path, "--steps", "8", "--resume", *common, name="stopped", source=source())
    assert_same_run(straight, resumed, steps=8)


def test_sigterm_to_the_process_group_with_loader_workers_exits_143_with_a_checkpoint(tmp_path) -> None:
    # What `timeout`, `kill -- -PGID` or a job scheduler does: SIGTERM to the trainer and its
    # DataLoader workers at once. The run must still save the step it reached and exit 143.
    run_dir = tmp_path / "run"
    helper = Path(__file__).with_name("train_helpers.py")
    proc = subprocess.Popen(
        [sys.executable, str(helper), "--output-dir", str(run_dir), "--steps", "10000000", "--num-workers", "2",
         "--batch-size", "2", "--log-freq", "1", "--save-freq", "0", "--eval-freq", "0", "--tensorboard", "false"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for_metrics(proc, run_dir, lines=3)
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == TrainingStopped.exit_code == 143, err[-2000:]
    assert "robotrain: stopped: SIGTERM at step" in err
    last = (run_dir / "checkpoints" / "last").resolve()
    check_complete(last)
    steps = [r["step"] for r in read_metrics(run_dir) if "train/loss" in r]
    assert int(last.name) >= steps[-1] >= 3  # the step it reached, not an earlier one


def test_cli_reports_a_stopped_run_on_one_line_with_exit_143(monkeypatch, capsys) -> None:
    import robotrain.training.loop as train_module
    from robotrain.cli import main

    def stopped(config):
        raise TrainingStopped("SIGTERM at step 7 of 10; checkpoint RUN/checkpoints/000007; continue with: ...")

    monkeypatch.setattr(train_module, "train", stopped)
    code = main(["train", "--policy", "tiny_mlp", "--dataset", ".", "--steps", "10"])
    assert code == 143
    err = capsys.readouterr().err
    assert err.startswith("robotrain: stopped: SIGTERM at step 7 of 10") and "Traceback" not in err


def test_a_directory_holding_a_run_is_refused_without_resume_or_overwrite(tmp_path) -> None:
    """A killed run (metrics written, no checkpoint yet) must not get a second run's lines
    appended to its metrics.jsonl; --overwrite starts afresh and deletes only run files."""
    run_dir = run(tmp_path, "--steps", "2", "--save-freq", "0")
    shutil.rmtree(run_dir / "checkpoints")  # as if killed before its first checkpoint
    (run_dir / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"already holds a run \(config.json, metrics.jsonl\).*--resume.*--overwrite"):
        run(tmp_path, "--steps", "2")
    run(tmp_path, "--steps", "3", "--overwrite")
    assert [r["step"] for r in read_metrics(run_dir)] == [1, 2, 3]
    assert (run_dir / "notes.txt").read_text() == "mine"
    with pytest.raises(ConfigError, match="--overwrite: cannot be combined with --resume"):
        run(tmp_path, "--steps", "4", "--overwrite", "--resume")


def test_resume_refuses_other_data_or_model_settings_unless_allowed(tmp_path) -> None:
    run(tmp_path, "--steps", "2", "--save-freq", "2")
    with pytest.raises(ConfigError, match=r"batch_size: 2 -> 3.*policy.hidden_dim: 32 -> 16.*--allow-resume-changes"):
        run(tmp_path, "--steps", "4", "--resume", "--batch-size", "3", "--policy.hidden_dim", "16")
    run(tmp_path, "--steps", "3", "--resume", "--log-freq", "1")  # steps and logging may change
    run_dir = run(tmp_path, "--steps", "4", "--resume", "--batch-size", "3", "--allow-resume-changes")
    recorded = [json.loads(line) for line in (run_dir / "resume_changes.jsonl").read_text().splitlines()]
    assert recorded[-1]["changes"] == ["batch_size: 2 -> 3"]


def test_output_dir_inside_the_dataset_is_refused(tmp_path) -> None:
    dataset = tmp_path / "ds"
    (dataset / "meta").mkdir(parents=True)
    with pytest.raises(ConfigError, match="inside the dataset"):
        parse_train_config(["--policy", "tiny_mlp", "--dataset", str(dataset), "--output-dir", str(dataset / "run")])
