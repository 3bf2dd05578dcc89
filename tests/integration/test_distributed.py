"""Several processes (torchrun, gloo on CPU) train the same run as one process, and states move
between process counts and strategies.

Real `torchrun ... -m cptkit train` subprocesses on a tiny Llama. The global batch is 8 sequences
in micro batches of 2: one process accumulates 4 micro batches per step, each of two processes 2.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import make_config, read_jsonl, write_config

STEPS, EVERY = 6, 3
LOSS_TOL, WEIGHT_TOL = 1e-3, 1e-4


def launch(processes: int, *args: str) -> subprocess.CompletedProcess:
    """`cptkit ARGS` in one plain process, or under `torchrun --nproc_per_node=N -m cptkit ARGS`."""
    # One thread per process, in every run, so that runs differ only in how the work is split.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] if processes > 1 else []
    cmd = [sys.executable, *launcher, "-m", "cptkit", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


class Runs:
    """Each run once per module, on demand: name -> run folder."""

    def __init__(self, tmp: Path, tiny_model: Path, corpus: dict[str, Path]):
        self.tmp, self.tiny_model, self.corpus = tmp, tiny_model, corpus
        self.done: dict[str, Path] = {}

    def config(self, name: str, distributed: dict, regularizer: dict | None = None, **train) -> Path:
        cfg = make_config(self.tmp, self.tiny_model, self.corpus,
                          train={"max_steps": STEPS, "micro_batch_size": 2, "distributed": distributed, **train},
                          checkpoint={"every_steps": EVERY, "keep_last": 2, "keep_best": 0},
                          eval={"every_steps": EVERY}, output_dir=str(self.tmp / name))
        cfg["data"]["prepared_dir"] = str(self.tmp / "shards")  # every run reads the same shards
        if regularizer:
            cfg["regularizer"] = regularizer
        return write_config(self.tmp / f"{name}.yaml", cfg)

    def get(self, name: str, processes: int, distributed: dict | None = None, resume: Path | None = None,
            dtype: str = "float32", regularizer: dict | None = None, **train) -> Path:
        if name not in self.done:
            args = ["train", str(self.config(name, distributed or {}, regularizer, **train)),
                    "--set", f"model.dtype={dtype}"]
            if resume is not None:
                args += ["--resume", str(resume)]
            done = launch(processes, *args)
            assert done.returncode == 0, done.stderr[-4000:]
            (self.tmp / f"{name}.log").write_text(done.stderr)
            self.done[name] = self.tmp / name
        return self.done[name]

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model, corpus) -> Runs:
    return Runs(tmp_path_factory.mktemp("distributed"), tiny_model, corpus)


def weights(run: Path, step: int = STEPS) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / f"step-{step}" / "model.safetensors")


def assert_follows(run: Path, reference: Path, start: Path, first_step: int = 1) -> None:
    """Losses within LOSS_TOL at every step, final weights within WEIGHT_TOL."""
    mine, ref = read_jsonl(run / "metrics.jsonl"), read_jsonl(reference / "metrics.jsonl")
    assert [m["step"] for m in mine] == list(range(first_step, STEPS + 1))
    ref = {m["step"]: m for m in ref}
    for m in mine:
        assert abs(m["loss"] - ref[m["step"]]["loss"]) < LOSS_TOL, (m["step"], m["loss"], ref[m["step"]]["loss"])
        assert m["tokens"] == ref[m["step"]]["tokens"]
    a, b = weights(run), weights(reference)
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < WEIGHT_TOL, f"final weights differ by up to {worst:.2e}"
    # The weights moved: a run that trained nothing would "follow" trivially.
    base = load_file(start / "model.safetensors")
    assert max(float((a[k] - base[k]).abs().max()) for k in base if k in a) > 100 * WEIGHT_TOL


@pytest.fixture(scope="module")
def reference(runs) -> Path:
    return runs.get("one", 1)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_follow_one_process(runs, reference, strategy):
    run = runs.get(strategy, 2, {"strategy": strategy})
    assert_follows(run, reference, runs.tiny_model)
    summary = read_jsonl(run / "eval.jsonl")
    ref_eval = read_jsonl(reference / "eval.jsonl")
    assert [e["step"] for e in summary] == [0, EVERY, STEPS]
    for mine, ref in zip(summary, ref_eval):  # eval windows split over processes, sums gathered
        assert mine["domain_tokens"] == ref["domain_tokens"]
        assert abs(mine["domain_loss"] - ref["domain_loss"]) < LOSS_TOL
    log = runs.log(strategy)
    assert ("fsdp: full sharding over 2 processes" in log) == (strategy == "fsdp")
    assert "using full logits" not in log  # the fused loss ran, on the gathered output layer under fsdp
    # final/ is a plain model folder holding the whole (gathered) weights.
    final = load_file(run / "final" / "model.safetensors")
    assert all(torch.equal(final[k], weights(run)[k]) for k in final)


def test_fsdp_mixed_precision_with_recomputation_follows_one_process(runs, reference):
    """bfloat16 weights gathered for compute, float32 master shards and gradient reduction,
    gradient checkpointing: 2 processes stay within bfloat16 rounding of 1 float32 process."""
    run = runs.get("fsdp-bf16", 2, {"strategy": "fsdp"}, dtype="bfloat16", gradient_checkpointing=True)
    assert "using full logits" not in runs.log("fsdp-bf16")
    mine, ref = read_jsonl(run / "metrics.jsonl"), read_jsonl(reference / "metrics.jsonl")
    assert len(mine) == len(ref) == STEPS
    assert all(abs(a["loss"] - b["loss"]) < 1e-2 for a, b in zip(mine, ref))
    assert mine[-1]["loss"] < mine[0]["loss"] - 0.1


def test_fsdp_state_resumes_in_one_process(runs, reference):
    sharded = runs.get("fsdp", 2, {"strategy": "fsdp"})
    run = runs.get("fsdp-to-one", 1, resume=sharded / "checkpoints" / f"step-{EVERY}")
    assert_follows(run, reference, runs.tiny_model, first_step=EVERY + 1)


def test_one_process_state_resumes_in_two_hybrid_sharded_processes(runs, reference):
    run = runs.get("one-to-hybrid", 2, {"strategy": "fsdp", "sharding": "hybrid", "shard_group_size": 1},
                   resume=reference / "checkpoints" / f"step-{EVERY}")
    assert_follows(run, reference, runs.tiny_model, first_step=EVERY + 1)
    assert "hybrid sharding, 2 replica(s) of 1-process shard groups" in runs.log("one-to-hybrid")
    assert "resuming a 1-process state with 2 process(es)" in runs.log("one-to-hybrid")


def test_l2sp_anchors_are_sharded_with_the_weights_under_fsdp(runs):
    """The penalty's anchors follow the FSDP shards: penalty and losses match one process."""
    l2sp = {"kind": "l2sp", "weight": 1.0}
    one = runs.get("l2sp-one", 1, regularizer=l2sp)
    two = runs.get("l2sp-fsdp", 2, {"strategy": "fsdp"}, regularizer=l2sp)
    assert_follows(two, one, runs.tiny_model)
    a, b = read_jsonl(one / "metrics.jsonl"), read_jsonl(two / "metrics.jsonl")
    assert a[0]["loss_reg"] == b[0]["loss_reg"] == 0.0
    assert all(abs(x["loss_reg"] - y["loss_reg"]) <= 1e-3 * x["loss_reg"] + 1e-9 for x, y in zip(a, b))
    assert a[-1]["loss_reg"] > 0


def test_a_step_0_record_kept_by_two_processes_is_read_by_the_next_two(runs):
    """Two runs of two FSDP processes from the same weights on the same shards (the penalty
    does not change step 0): whichever ran second got the first one's record through the main
    process, and every process went on with it."""
    plain = runs.get("fsdp", 2, {"strategy": "fsdp"})
    l2sp = runs.get("l2sp-fsdp", 2, {"strategy": "fsdp"}, regularizer={"kind": "l2sp", "weight": 1.0})
    reused = ["base model's scores reused from" in runs.log(name) for name in ("fsdp", "l2sp-fsdp")]
    assert sorted(reused) == [False, True]
    assert read_jsonl(plain / "eval.jsonl")[0] == read_jsonl(l2sp / "eval.jsonl")[0]


LORA = {"method": "lora", "r": 4, "dropout": 0.0}
KL = {"kind": "kl", "weight": 0.5}


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_lora_with_kl_to_the_base_under_two_processes_follows_one_process(runs, strategy):
    """`torchrun -m cptkit train` with train.peft and KL to the adapters-off model (gathered under FSDP):
    losses, KL and the trainable-only checkpoints follow one process; final/ merged alike."""
    # The embeddings at the full lr, so that they move well beyond the tolerance in 6 steps.
    one = runs.get("lora-one", 1, regularizer=KL, peft=LORA, embedding_lr_scale=1.0)
    two = runs.get(f"lora-{strategy}", 2, {"strategy": strategy}, regularizer=KL, peft=LORA, embedding_lr_scale=1.0)
    assert_follows(two, one, runs.tiny_model)
    a, b = read_jsonl(one / "metrics.jsonl"), read_jsonl(two / "metrics.jsonl")
    assert a[0]["kl"] == b[0]["kl"] == 0.0 and a[-1]["kl"] > 1e-4
    assert all(abs(x["kl"] - y["kl"]) <= 1e-3 * x["kl"] + 1e-7 for x, y in zip(a, b))
    assert not any(".base_layer." in k for k in weights(two))  # trainable weights only
    assert "using full logits" not in runs.log(f"lora-{strategy}")
    merged_one, merged_two = load_file(one / "final" / "model.safetensors"), load_file(two / "final" / "model.safetensors")
    assert merged_one.keys() == merged_two.keys()
    assert max(float((merged_one[k] - merged_two[k]).abs().max()) for k in merged_one) < WEIGHT_TOL
    assert (two / "final-adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_lora_under_fsdp_in_bfloat16_with_recomputation_follows_one_float32_process(runs):
    """FSDP2 units holding bfloat16 frozen weights beside float32 adapters and embeddings (LoRA under
    bfloat16 autocast), gradient checkpointing, KL: within bfloat16 rounding of 1 float32 process."""
    one = runs.get("lora-one", 1, regularizer=KL, peft=LORA, embedding_lr_scale=1.0)
    run = runs.get("lora-fsdp-bf16", 2, {"strategy": "fsdp"}, dtype="bfloat16", regularizer=KL, peft=LORA,
                   embedding_lr_scale=1.0, gradient_checkpointing=True)
    assert "frozen linear weights stored in bfloat16" in runs.log("lora-fsdp-bf16")
    mine, ref = read_jsonl(run / "metrics.jsonl"), read_jsonl(one / "metrics.jsonl")
    assert len(mine) == len(ref) == STEPS and mine[0]["kl"] == 0.0
    assert all(abs(a["loss"] - b["loss"]) < 1e-2 for a, b in zip(mine, ref))
    assert mine[-1]["loss"] < mine[0]["loss"] - 0.05
