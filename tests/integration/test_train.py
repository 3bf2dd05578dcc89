"""Real training runs of a tiny Llama on real text: loss falls, outputs match the contract."""

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from cptkit.config import load_config
from cptkit.train.loop import train
from tests.helpers import make_config, read_jsonl


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, tiny_model, corpus):
    tmp = tmp_path_factory.mktemp("smoke")
    cfg = make_config(tmp, tiny_model, corpus, train={"max_steps": 30, "lr": 1e-2, "warmup_steps": 3},
                      eval={"every_steps": 10}, checkpoint={"every_steps": 10, "keep_last": 1, "keep_best": 1})
    summary = train(load_config(None, raw=cfg))
    return tmp / "run", summary


def test_loss_falls_and_domain_perplexity_improves(smoke_run):
    run, summary = smoke_run
    metrics = read_jsonl(run / "metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(1, 31))
    first, last = sum(m["loss"] for m in metrics[:3]) / 3, sum(m["loss"] for m in metrics[-3:]) / 3
    assert last < first - 0.5
    assert summary["final"]["domain_ppl"] < 0.8 * summary["base"]["domain_ppl"]


def test_metrics_lines_follow_the_contract(smoke_run):
    run, _ = smoke_run
    m = read_jsonl(run / "metrics.jsonl")[-1]
    assert set(m) >= {"step", "tokens", "lr", "loss", "loss_domain", "loss_replay", "loss_reg", "grad_norm",
                      "tokens_per_s"}
    assert m["tokens"] == 30 * 512
    # replay 25% of 8 sequences per step: 2 general sequences every step, so both losses are present
    assert m["loss_domain"] is not None and m["loss_replay"] is not None
    assert min(x["lr"] for x in read_jsonl(run / "metrics.jsonl")) == pytest.approx(1e-3)  # floor 0.1 x peak


def test_eval_starts_at_step_zero_and_defines_ppl_and_bpb(smoke_run):
    run, summary = smoke_run
    evals = read_jsonl(run / "eval.jsonl")
    assert [e["step"] for e in evals] == [0, 10, 20, 30]
    for e in evals:
        for name in ("domain", "general"):
            assert e[f"{name}_ppl"] == pytest.approx(math.exp(e[f"{name}_loss"]))
            assert e[f"{name}_bpb"] > 0
    assert summary["base"] == {k: v for k, v in evals[0].items() if k not in ("step", "tokens")}
    assert summary["final"]["domain_ppl"] == evals[-1]["domain_ppl"]
    best = min(evals, key=lambda e: e["domain_ppl"])
    assert summary["best"]["step"] == best["step"] and summary["best"]["domain_ppl"] == best["domain_ppl"]


def test_best_and_final_are_plain_model_folders(smoke_run, tiny_model):
    run, summary = smoke_run
    for name in ("best", "final"):
        model = AutoModelForCausalLM.from_pretrained(run / name)
        assert (run / name / "tokenizer.json").is_file()
        assert model.num_parameters() == AutoModelForCausalLM.from_pretrained(tiny_model).num_parameters()
    final = AutoModelForCausalLM.from_pretrained(run / "final")
    state = torch.load  # noqa: F841 (the checkpoint itself is safetensors, see below)
    from safetensors.torch import load_file

    ckpt = load_file(run / "checkpoints" / "step-30" / "model.safetensors")
    assert torch.equal(final.model.norm.weight, ckpt["model.norm.weight"])


def test_checkpoints_pruned_to_keep_last_and_best(smoke_run):
    run, summary = smoke_run
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    evals = {e["step"]: e["domain_ppl"] for e in read_jsonl(run / "eval.jsonl") if e["step"] in (10, 20, 30)}
    best = min(evals, key=evals.get)
    assert kept == sorted({"step-30", f"step-{best}"})
    assert json.loads((run / "checkpoints" / "step-30" / "COMMITTED").read_text())["files"]
