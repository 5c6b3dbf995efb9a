"""Check by hand, against LeRobot 0.4.4 itself, that a SmolVLA checkpoint written by
robotrain loads in LeRobot (strict keys) and gives the same actions for the same noise.

NOT part of the test suite and NOT run in CI: it needs LeRobot, which robotrain never
depends on. Run it in a SEPARATE virtual environment (see tools/check_lerobot_compat.py):

    python3 -m venv /work/lerobot-venv
    /work/lerobot-venv/bin/pip install "lerobot[smolvla]==0.4.4"
    cd <robotrain checkout>
    HF_HUB_OFFLINE=1 PYTHONPATH=src /work/lerobot-venv/bin/python tools/check_lerobot_smolvla.py

What it does:
1. `robotrain train --policy smolvla --policy.vlm tiny` for a few steps on the LeRobot-written
   fixture dataset (tests/fixtures/so101_fixture_v30), which writes checkpoints/last.
2. LeRobot's `SmolVLAPolicy.from_pretrained(..., strict=True)` and its processor pipelines
   (`policy_preprocessor.json` / `policy_postprocessor.json`, normaliser statistics
   included) load that checkpoint. Two things LeRobot would fetch from the Hugging Face hub
   are given locally instead, since nothing is downloaded here: the SmolVLM architecture
   (`AutoConfig.from_pretrained(vlm_model_name)` -> robotrain's tiny SmolVLM config, the one
   the checkpoint was trained with) and the tokenizer (`tokenizer_processor` -> a fast
   tokenizer equal to the byte tokenizer robotrain's random backbones use).
3. The same raw observations (joint units, [0, 1] images, the task string) and the same
   noise go through LeRobot's pipeline + policy and through ours: the action chunks must
   agree to 1e-4.

transformers: LeRobot 0.4.4 pins transformers 4.57, whose SmolVLM vision embeddings shift
float32 patch position ids one bucket low at exact bucket boundaries (4.55.1-4.57.x);
robotrain computes them itself with the 0..n-1 rule (what transformers 5.x gives). The
script reports the comparison twice: with transformers 4.57 as installed (expected to
differ) and with the 0..n-1 rule swapped into LeRobot's process (expected to agree).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
FIXTURE = REPO / "tests" / "fixtures" / "so101_fixture_v30"
ACTION_TOL = 1e-4
TASK = "Pick up the cube and place it in the bowl"

failures: list[str] = []


def report(name: str, diff: float, tol: float | None, note: str = "") -> None:
    ok = tol is None or diff <= tol
    tol_text = f"(tol {tol:g})" if tol is not None else "(reported, not checked)"
    label = "INFO" if tol is None else ("PASS" if ok else "FAIL")
    print(f"[{label}] {name}: max abs diff {diff:.3g} {tol_text}{' ' + note if note else ''}")
    if not ok:
        failures.append(name)


def train_robotrain_checkpoint(out: Path) -> Path:
    """A few steps of `robotrain train` (tiny random SmolVLM) -> checkpoints/last/pretrained_model."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), ROBOTRAIN_CACHE_DIR=str(out / "cache"))
    cmd = [sys.executable, "-m", "robotrain", "train", "--dataset", str(FIXTURE), "--policy", "smolvla",
           "--policy.vlm", "tiny", "--image-size", "32x32", "--policy.chunk_size", "10",
           "--policy.n_action_steps", "10", "--policy.train_expert_only", "false",
           "--policy.freeze_vision_encoder", "false", "--policy.optimizer_lr", "1e-3",
           "--steps", "3", "--batch-size", "2", "--num-workers", "0", "--eval-freq", "0", "--log-freq", "1",
           "--output-dir", str(out / "run")]
    subprocess.run(cmd, check=True, env=env)
    return out / "run" / "checkpoints" / "last" / "pretrained_model"


def byte_tokenizer_as_hf() -> Any:
    """A transformers fast tokenizer equal to robotrain's ByteTokenizer on ASCII text:
    one token per character, id = byte + 4, pad id 0."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<unk>": 1, **{chr(b): b + 4 for b in range(32, 127)}, "\n": ord("\n") + 4}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>")


def use_robotrain_vlm_config() -> None:
    """LeRobot builds the VLM from AutoConfig/AutoProcessor of `vlm_model_name` (the hub):
    give it robotrain's tiny SmolVLM config, and a processor it does not need here."""
    import lerobot.policies.smolvla.smolvlm_with_expert as swe
    from transformers import SmolVLMConfig

    from robotrain.policies.smolvla.backbone import TINY_SMOLVLM

    swe.AutoConfig = SimpleNamespace(from_pretrained=lambda *a, **k: SmolVLMConfig.from_dict(json.loads(json.dumps(TINY_SMOLVLM))))
    tokenizer = SimpleNamespace(fake_image_token_id=1, global_image_token_id=2)  # unused: add_image_special_tokens is off
    swe.AutoProcessor = SimpleNamespace(from_pretrained=lambda *a, **k: SimpleNamespace(tokenizer=tokenizer))


def use_0_to_n_position_ids() -> None:
    """transformers 5.x's patch position rule in LeRobot's process (see the module docstring)."""
    from transformers.models.smolvlm import modeling_smolvlm

    from robotrain.policies.smolvla.backbone import patch_position_ids

    def forward(self: Any, pixel_values: torch.Tensor, patch_attention_mask: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embedding(pixel_values).flatten(2).transpose(1, 2)
        ids = patch_position_ids(patch_attention_mask.bool(), self.num_patches_per_side)
        return patches + self.position_embedding(ids)

    modeling_smolvlm.SmolVLMVisionEmbeddings.forward = forward


def lerobot_chunk(pretrained: Path, batch: dict[str, Any], noise: torch.Tensor) -> torch.Tensor:
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy
    from lerobot.processor.pipeline import PolicyProcessorPipeline
    from lerobot.processor.converters import policy_action_to_transition, transition_to_policy_action

    policy = SmolVLAPolicy.from_pretrained(str(pretrained), strict=True).eval()
    pre = PolicyProcessorPipeline.from_pretrained(
        str(pretrained), config_filename="policy_preprocessor.json",
        overrides={"tokenizer_processor": {"tokenizer": byte_tokenizer_as_hf()}, "device_processor": {"device": "cpu"}})
    post = PolicyProcessorPipeline.from_pretrained(
        str(pretrained), config_filename="policy_postprocessor.json",
        overrides={"device_processor": {"device": "cpu"}},
        to_transition=policy_action_to_transition, to_output=transition_to_policy_action)
    with torch.no_grad():
        return post(policy.predict_action_chunk(pre({k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items()}), noise=noise))


def main() -> int:
    from robotrain.checkpoints.store import load_policy

    tmp = Path(tempfile.mkdtemp(prefix="rt_smolvla_compat_"))
    try:
        pretrained = train_robotrain_checkpoint(tmp)
        ours = load_policy(pretrained).eval()
        cfg = ours.config
        g = torch.Generator().manual_seed(0)
        n = 2
        batch: dict[str, Any] = {"observation.state": torch.randn(n, 6, generator=g) * 20.0, "task": [TASK] * n}
        for key in ours.features.camera_keys:
            batch[key] = torch.rand(n, *ours.features.image_shape, generator=g)
        noise = torch.randn(n, cfg.chunk_size, cfg.max_action_dim, generator=g)
        with torch.no_grad():
            ours_chunk = ours.predict_action_chunk({k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items()},
                                                   noise=noise)
        use_robotrain_vlm_config()
        theirs = lerobot_chunk(pretrained, batch, noise)
        print(f"LeRobot loaded {pretrained} with strict keys; chunk shape {tuple(theirs.shape)}")
        report("smolvla/actions, transformers as installed (4.57 shifts patch ids)",
               float((ours_chunk - theirs).abs().max()), None)
        use_0_to_n_position_ids()
        theirs = lerobot_chunk(pretrained, batch, noise)
        scale = float(theirs.abs().max())
        report("smolvla/actions, 0..n-1 patch ids", float((ours_chunk - theirs).abs().max()), ACTION_TOL,
               f"(actions up to {scale:.3g} in joint units)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("ALL PASS" if not failures else f"FAILED: {failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
