"""The forgetting budget on a real run: a model that knows the general text, continued on code."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import cptkit, make_config, read_jsonl, write_config


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, tiny_model, corpus):
    """The tiny model after 40 steps on the general text only, so code training makes it forget."""
    tmp = tmp_path_factory.mktemp("pretrained")
    cfg = make_config(tmp, tiny_model, corpus, train={"max_steps": 40, "lr": 1e-2},
                      checkpoint={"every_steps": 40, "keep_best": 0}, eval={"every_steps": 40, "probes": {}})
    cfg["data"]["domain"] = cfg["data"].pop("general")
    cfg["mix"] = {}
    assert cptkit("train", str(write_config(tmp / "pre.yaml", cfg))).returncode == 0
    return tmp / "run" / "final"


def budget_config(tmp_path, pretrained, corpus, action, name="run"):
    cfg = make_config(tmp_path, pretrained, corpus, mix={"replay_ratio": 0.05},
                      train={"max_steps": 12, "lr": 1e-2, "forgetting_budget": 0.05, "forgetting_action": action},
                      checkpoint={"every_steps": 4, "keep_last": 1, "keep_best": 1}, eval={"every_steps": 4, "probes": {}},
                      output_dir=str(tmp_path / name))
    cfg["data"]["prepared_dir"] = str(tmp_path / "shards")
    return write_config(tmp_path / f"{name}.yaml", cfg)


def continued(tmp_path, pretrained, corpus, action):
    out = cptkit("train", str(budget_config(tmp_path, pretrained, corpus, action)))
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    return out, summary, read_jsonl(tmp_path / "run" / "eval.jsonl")


def test_rollback_keeps_every_evaluation_within_budget(tmp_path, pretrained, corpus):
    out, summary, evals = continued(tmp_path, pretrained, corpus, "rollback")
    budget = summary["forgetting_budget"]
    assert budget["rollbacks"], "the first steps at lr 1e-2 on code should exceed a 5% budget"
    first = budget["rollbacks"][0]
    assert first["general_rise"] > 0.05 and first["lr_scale"] == 0.5 and first["replay_boost"] == 0.05
    assert f"rolled back to step {first['to_step']}" in out.stderr
    # The logs read as the path the run took: every step once, every evaluation within budget.
    assert [e["step"] for e in evals] == [0, 4, 8, 12]
    assert all(e["within_budget"] and e["general_rise"] <= 0.05 for e in evals)
    assert [m["step"] for m in read_jsonl(tmp_path / "run" / "metrics.jsonl")] == list(range(1, 13))
    assert summary["best"]["general_ppl"] <= 1.05 * summary["base"]["general_ppl"]
    # The base model's state stays as the last-resort rollback target.
    assert (tmp_path / "run" / "checkpoints" / "step-0").is_dir()


def test_stop_ends_the_run_at_the_first_evaluation_over_budget(tmp_path, pretrained, corpus):
    out, summary, evals = continued(tmp_path, pretrained, corpus, "stop")
    plan = cptkit("plan", str(tmp_path / "run.yaml"))
    assert "general ppl may rise +5.0% over the base model; beyond it: stop" in plan.stdout
    stopped = summary["forgetting_budget"]["stopped"]
    assert stopped.startswith("step 4: general perplexity") and "beyond the forgetting budget of +5.0%" in stopped
    assert summary["steps"] == 4 and not evals[-1]["within_budget"]
    # best/ is the base model: nothing later was within budget.
    assert summary["best"]["step"] == 0
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()


def test_a_run_killed_after_a_rollback_resumes_to_the_same_weights(tmp_path, pretrained, corpus):
    straight = budget_config(tmp_path, pretrained, corpus, "rollback", "straight")
    assert cptkit("train", str(straight)).returncode == 0
    broken = budget_config(tmp_path, pretrained, corpus, "rollback", "broken")
    # Step 6 is first reached after the rollback at step 4 (back to step 0, lr halved).
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CPTKIT_CRASH_AT": "step:6"}
    killed = subprocess.run([sys.executable, "-m", "cptkit", "train", str(broken)], env=env, capture_output=True,
                            text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL and "rolled back to step 0" in killed.stderr, killed.stderr[-2000:]
    resumed = cptkit("train", str(broken), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = load_file(tmp_path / "straight" / "final" / "model.safetensors")
    b = load_file(tmp_path / "broken" / "final" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a), "the resumed run left the path of the uninterrupted one"
    sa, sb = (json.loads((tmp_path / n / "summary.json").read_text()) for n in ("straight", "broken"))
    assert sa["forgetting_budget"]["rollbacks"] == sb["forgetting_budget"]["rollbacks"]
    assert read_jsonl(tmp_path / "straight" / "eval.jsonl") == read_jsonl(tmp_path / "broken" / "eval.jsonl")


def test_lora_rollback_restores_the_adapters_and_the_embeddings(tmp_path, pretrained, corpus):
    """Under train.peft the rollback target is a trainable-only checkpoint (step 0: B = 0 and the
    original embeddings); after rolling back every evaluation is within budget, as in full training."""
    import yaml

    path = budget_config(tmp_path, pretrained, corpus, "rollback")
    cfg = yaml.safe_load(path.read_text())
    cfg["train"]["peft"] = {"method": "lora", "r": 8}
    cfg["train"]["embedding_lr_scale"] = 1.0  # the embeddings as fast as the adapters: forgetting within 4 steps
    out = cptkit("train", str(write_config(path, cfg)))
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    evals = read_jsonl(tmp_path / "run" / "eval.jsonl")
    rollbacks = summary["forgetting_budget"]["rollbacks"]
    assert summary["method"] == "lora" and rollbacks, "lr 1e-2 on code should exceed a 5% budget under LoRA too"
    assert f"rolled back to step {rollbacks[0]['to_step']}" in out.stderr
    assert [e["step"] for e in evals] == [0, 4, 8, 12] and all(e["within_budget"] for e in evals)
    step0 = load_file(tmp_path / "run" / "checkpoints" / "step-0" / "model.safetensors")
    assert all(torch.count_nonzero(v) == 0 for k, v in step0.items() if ".lora_B." in k)  # the base model's state
    assert not any(".base_layer." in k for k in step0)
