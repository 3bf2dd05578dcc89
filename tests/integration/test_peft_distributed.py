"""LoRA under 2 gloo processes (DDP and FSDP2) follows 1 process, and its full-state checkpoints move
between process counts. Real `torchrun` processes run `peft_worker.py`: cptkit's optimizer step
on `Dist`, 4 steps of 8 sequences in micro batches of 2, a state saved after step 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("peft_worker.py")
WEIGHT_TOL = 1e-5


def launch(processes: int, base: Path, out: Path, *args: str) -> Path:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] if processes > 1 else []
    done = subprocess.run([sys.executable, *launcher, str(WORKER), str(base), str(out), *args], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("peft-distributed")
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=101, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, num_key_value_heads=2)).save_pretrained(root / "base")
    base = root / "base"
    out = {"base": base, "one": launch(1, base, root / "one")}
    out["ddp"] = launch(2, base, root / "ddp", "--strategy", "ddp")
    out["fsdp"] = launch(2, base, root / "fsdp", "--strategy", "fsdp")
    out["fsdp-to-one"] = launch(1, base, root / "fsdp-to-one", "--resume", str(out["fsdp"] / "checkpoints" / "step-2"))
    out["fsdp-bf16"] = launch(2, base, root / "fsdp-bf16", "--strategy", "fsdp", "--bfloat16")
    out["one-to-fsdp"] = launch(2, base, root / "one-to-fsdp", "--strategy", "fsdp",
                                "--resume", str(out["one"] / "checkpoints" / "step-2"))
    return out


def worst(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.parametrize("name", ["ddp", "fsdp", "fsdp-to-one", "one-to-fsdp"])
def test_two_processes_and_moved_states_follow_one_process(runs, name):
    one = load_file(runs["one"] / "final.safetensors")
    mine = load_file(runs[name] / "final.safetensors")
    assert worst(mine, one) < WEIGHT_TOL
    losses = json.loads((runs[name] / "losses.json").read_text())
    reference = json.loads((runs["one"] / "losses.json").read_text())
    assert all(abs(v - reference[k]) < 1e-5 for k, v in losses.items())
    # It trained: the adapters and the embeddings moved far more than the tolerance.
    start = load_file(runs["one"] / "checkpoints" / "step-2" / "model.safetensors")
    trained = [k for k in one if ".lora_B." in k or k.endswith(("embed_tokens.weight", "lm_head.weight"))]
    assert min(float((one[k] - start[k]).abs().max()) for k in trained) > 100 * WEIGHT_TOL


@pytest.mark.parametrize("name", ["one", "ddp", "fsdp"])
def test_kl_reference_is_the_base_model_under_every_strategy(runs, name):
    """FrozenBase after training, run on whole weights (gathered under FSDP): the base's own logits."""
    sys.path.insert(0, str(WORKER.parent))
    from peft_worker import step_rows
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(runs["base"]).eval()
    ids, positions, _ = step_rows(0, 101)
    with torch.no_grad():
        expected = base(input_ids=ids[:2], position_ids=positions[:2], use_cache=False).logits
    got = load_file(runs[name] / "reference.safetensors")
    assert torch.equal(got["logits"], expected)
    assert torch.allclose(got["hidden_logits"], expected, atol=1e-6, rtol=0)


def test_frozen_weights_in_bfloat16_under_fsdp_follow_one_float32_process(runs):
    """Frozen linear weights stored in bfloat16 beside float32 adapters (mixed dtypes in one FSDP unit),
    bfloat16 gathered for compute: within bfloat16 rounding of 1 float32 process."""
    losses = json.loads((runs["fsdp-bf16"] / "losses.json").read_text())
    reference = json.loads((runs["one"] / "losses.json").read_text())
    assert all(abs(v - reference[k]) < 1e-2 for k, v in losses.items())
    weights = load_file(runs["fsdp-bf16"] / "final.safetensors")
    assert {weights[k].dtype for k in weights if ".base_layer." in k} == {torch.bfloat16}
    assert {weights[k].dtype for k in weights if ".lora_" in k} == {torch.float32}
    # (Weights are not compared: Adam turns bfloat16 noise in near-zero gradients into whole-lr steps.)


def test_sharded_run_exports_a_merged_folder_and_an_adapter_that_agree(runs):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.randint(0, 101, (2, 10), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(runs["fsdp"] / "final").eval()(ids).logits
        adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(runs["base"]),
                                            runs["fsdp"] / "final-adapter").eval()(ids).logits
        one = AutoModelForCausalLM.from_pretrained(runs["one"] / "final").eval()(ids).logits
    assert torch.allclose(merged, adapted, atol=1e-5, rtol=0)
    assert torch.allclose(merged, one, atol=1e-4, rtol=0)
