"""Real training runs with each mitigation: KL, EWC / L2-SP, curriculum, freezing, re-warming, resume."""

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from cptkit.config import load_config
from cptkit.train.loop import train
from tests.helpers import cptkit, make_config, read_jsonl, write_config


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return tmp_path_factory.mktemp("shards")  # prepared once, shared by every run of this module


def config(tmp, tiny_model, corpus, shards, name, **sections):
    # Evaluation only at the start and the end, on a few windows: these tests are about training.
    light = {"eval": {"every_steps": 1000, "max_tokens": 300},
             "checkpoint": {"every_steps": 1000, "keep_last": 1, "keep_best": 0}}
    cfg = make_config(tmp, tiny_model, corpus, output_dir=str(tmp / name), **{**light, **sections})
    cfg["data"]["prepared_dir"] = str(shards)
    return cfg


def test_kl_is_exactly_zero_at_step_zero_and_tokens_per_source_are_logged(tmp_path, tiny_model, corpus, shards):
    cfg = config(tmp_path, tiny_model, corpus, shards, "kl", regularizer={"kind": "kl", "weight": 1.0},
                 train={"max_steps": 4, "lr": 1e-2})
    train(load_config(None, raw=cfg))
    m = read_jsonl(tmp_path / "kl" / "metrics.jsonl")
    assert m[0]["kl"] == 0.0 and m[0]["loss_reg"] == 0.0  # the student is the reference at step 0
    assert all(x["kl"] > 0 and x["loss_reg"] == pytest.approx(x["kl"]) for x in m[1:])
    # replay 0.25 of 8 sequences of 64 tokens: exactly 2 general and 6 domain sequences every step
    assert [x["source_tokens"] for x in m] == [{"domain": 384 * k, "general": 128 * k} for k in range(1, 5)]


def test_kl_only_on_replay_rows_every_other_step(tmp_path, tiny_model, corpus, shards):
    cfg = config(tmp_path, tiny_model, corpus, shards, "klr", train={"max_steps": 4, "lr": 1e-2},
                 regularizer={"kind": "kl", "weight": 0.5, "kl_on": "replay", "kl_every": 2,
                              "kl_direction": "reverse"})
    train(load_config(None, raw=cfg))
    m = read_jsonl(tmp_path / "klr" / "metrics.jsonl")
    assert [x["kl"] is None for x in m] == [False, True, False, True]  # steps 0 and 2 (0-based) only
    assert m[0]["kl"] == 0.0 and m[2]["kl"] > 0 and m[2]["loss_reg"] == pytest.approx(0.5 * m[2]["kl"])


def test_ewc_penalty_starts_at_zero_and_its_fisher_is_saved_and_reused(tmp_path, tiny_model, corpus, shards):
    cfg = config(tmp_path, tiny_model, corpus, shards, "ewc", train={"max_steps": 3, "lr": 1e-2},
                 regularizer={"kind": "ewc", "weight": 100.0, "fisher_tokens": 1500})
    train(load_config(None, raw=cfg))
    m = read_jsonl(tmp_path / "ewc" / "metrics.jsonl")
    assert m[0]["loss_reg"] == 0.0 and m[1]["loss_reg"] > 0 and m[2]["loss_reg"] > 0  # 0 at theta0 only
    fisher = tmp_path / "ewc" / "fisher.safetensors"
    with safe_open(str(fisher), framework="pt") as fh:
        meta = json.loads(fh.metadata()["cptkit"])
    assert meta["kind"] == "true" and 1500 <= meta["tokens"] < 1500 + 64 and meta["sequences"] == 24
    # A later run reuses the saved Fisher instead of estimating it again.
    again = config(tmp_path, tiny_model, corpus, shards, "ewc2", train={"max_steps": 1},
                   regularizer={"kind": "ewc", "weight": 100.0, "fisher_path": str(fisher)})
    out = cptkit("train", str(write_config(tmp_path / "ewc2.yaml", again)))
    assert out.returncode == 0, out.stderr
    assert f"Fisher from {fisher}" in out.stderr and not (tmp_path / "ewc2" / "fisher.safetensors").exists()


def test_l2sp_and_frozen_layers_keep_frozen_weights_exactly(tmp_path, tiny_model, corpus, shards):
    cfg = config(tmp_path, tiny_model, corpus, shards, "l2sp", regularizer={"kind": "l2sp", "weight": 1.0},
                 train={"max_steps": 3, "lr": 1e-2, "freeze_layers": 1, "freeze_embeddings": True})
    train(load_config(None, raw=cfg))
    base = load_file(tiny_model / "model.safetensors")
    final = load_file(tmp_path / "l2sp" / "final" / "model.safetensors")
    # The tiny model ties its output layer to the embeddings (saved once, under either name).
    assert torch.equal(final.get("model.embed_tokens.weight", final.get("lm_head.weight")),
                       base["model.embed_tokens.weight"])
    assert torch.equal(final["model.layers.0.self_attn.q_proj.weight"], base["model.layers.0.self_attn.q_proj.weight"])
    assert not torch.equal(final["model.layers.1.self_attn.q_proj.weight"], base["model.layers.1.self_attn.q_proj.weight"])
    assert read_jsonl(tmp_path / "l2sp" / "metrics.jsonl")[-1]["loss_reg"] > 0


def test_resume_is_exact_with_curriculum_ewc_wsd_and_an_embedding_lr(tmp_path, tiny_model, corpus, shards):
    sections = dict(mix={"replay_ratio": None, "curriculum": {"start": 0.5, "end": 0.9, "shape": "cosine"}},
                    regularizer={"kind": "ewc", "weight": 50.0, "fisher_tokens": 600},
                    train={"max_steps": 8, "lr": 5e-3, "schedule": "wsd", "decay_ratio": 0.5,
                           "embedding_lr_scale": 0.5},
                    checkpoint={"every_steps": 4, "keep_last": 2, "keep_best": 0})
    straight = config(tmp_path, tiny_model, corpus, shards, "straight", **sections)
    train(load_config(None, raw=straight))
    # The interrupted run: the same run's state at step 4, everything after it gone.
    shutil.copytree(tmp_path / "straight", tmp_path / "broken")
    shutil.rmtree(tmp_path / "broken" / "checkpoints" / "step-8")
    (tmp_path / "broken" / "summary.json").unlink()
    fisher = tmp_path / "broken" / "fisher.safetensors"
    written = fisher.stat().st_mtime_ns
    broken = config(tmp_path, tiny_model, corpus, shards, "broken", **sections)
    train(load_config(None, raw=broken), resume=True)
    assert fisher.stat().st_mtime_ns == written  # the resumed run reused its Fisher, estimated nothing
    a = load_file(tmp_path / "straight" / "checkpoints" / "step-8" / "model.safetensors")
    b = load_file(tmp_path / "broken" / "checkpoints" / "step-8" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    ma, mb = read_jsonl(tmp_path / "straight" / "metrics.jsonl"), read_jsonl(tmp_path / "broken" / "metrics.jsonl")
    for key in ("loss", "loss_reg", "lr", "source_tokens"):
        assert [x[key] for x in ma] == [x[key] for x in mb], key
    general = [x["source_tokens"]["general"] // 64 for x in ma]
    per_step = [g - f for f, g in zip([0] + general, general)]
    assert per_step[0] >= 3 and per_step[-1] <= 1  # the domain share rises from 0.5 to 0.9


def test_a_new_run_from_saved_weights_rewarms_with_a_fresh_optimizer(tmp_path, tiny_model, corpus, shards):
    first = config(tmp_path, tiny_model, corpus, shards, "first", train={"max_steps": 4, "lr": 5e-3})
    summary = train(load_config(None, raw=first))
    second = config(tmp_path, tiny_model, corpus, shards, "second",
                    train={"max_steps": 2, "lr": 1e-3, "warmup_steps": 2},
                    checkpoint={"every_steps": 1, "keep_last": 2, "keep_best": 0})
    second["model"]["name_or_path"] = str(tmp_path / "first" / "final")
    train(load_config(None, raw=second))
    m = read_jsonl(tmp_path / "second" / "metrics.jsonl")
    assert [x["lr"] for x in m] == [5e-4, 1e-3]  # this run's own warmup, nothing from the first run
    evals = read_jsonl(tmp_path / "second" / "eval.jsonl")
    assert evals[0]["domain_loss"] == pytest.approx(summary["final"]["domain_loss"], rel=1e-5)
    state = torch.load(tmp_path / "second" / "checkpoints" / "step-1" / "optimizer.pt", weights_only=True)
    assert {float(s["step"]) for s in state["state"].values()} == {1.0}  # Adam moments started fresh


def test_plan_prints_the_lr_curve_and_the_mix_schedule(tmp_path, tiny_model, corpus, shards):
    cfg = config(tmp_path, tiny_model, corpus, shards, "plan", mix={"replay_ratio": None, "curriculum": {"start": 0.5, "end": 0.9}},
                 train={"max_steps": 100, "schedule": "wsd", "decay_ratio": 0.2, "warmup_steps": 5})
    path = write_config(tmp_path / "plan.yaml", cfg)
    out = cptkit("plan", str(path), "--plot", str(tmp_path / "plan.png"))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "schedule         wsd, peak lr 0.003, 19-step linear decay to floor 0.0003 at the end" in lines
    assert "mix              curriculum: domain share 0.5 -> 0.9 (linear), the rest from data.general" in lines
    rows = {int(line.split()[0].replace(",", "")): line.split() for line in lines
            if line.strip() and line.split()[0].replace(",", "").isdigit()}
    assert rows[1][1:] == ["0.0%", "0.0006", "50.00%", "50.00%"]
    assert rows[81][2] == "0.003" and rows[100][1:] == ["100.0%", "0.0003", "90.00%", "10.00%"]
    assert (tmp_path / "plan.png").stat().st_size > 5000
