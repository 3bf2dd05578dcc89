"""Exact resume: N steps == N/2 steps, SIGKILL, --resume, the rest; identical weights and logs."""

import json
import os
import signal
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file

from tests.helpers import cptkit, make_config, read_jsonl, write_config

STEPS, EVERY = 24, 12


PROBES = [{"id": "cap", "prompt": "The capital of France is", "answer": "Paris"},
          {"id": "def", "prompt": "def add(a, b):\n    return", "answer": "a + b", "distractors": ["a - b"]}]


def config(tmp, tiny_model, corpus, name):
    probes = tmp / "probes.jsonl"
    probes.write_text("".join(json.dumps(p) + "\n" for p in PROBES))
    cfg = make_config(tmp, tiny_model, corpus, train={"max_steps": STEPS, "lr": 5e-3},
                      checkpoint={"every_steps": EVERY, "keep_last": 2, "keep_best": 0},
                      eval={"every_steps": EVERY, "probes": {"mini": str(probes)}}, output_dir=str(tmp / name))
    # Both runs read the same prepared shards, so the comparison is about training alone.
    cfg["data"]["prepared_dir"] = str(tmp / "shards")
    return write_config(tmp / f"{name}.yaml", cfg)


def test_killed_and_resumed_run_ends_with_identical_weights(tmp_path, tiny_model, corpus):
    straight = config(tmp_path, tiny_model, corpus, "straight")
    done = cptkit("train", str(straight))
    assert done.returncode == 0, done.stderr

    broken = config(tmp_path, tiny_model, corpus, "broken")
    run = tmp_path / "broken"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cptkit", "train", str(broken)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    marker = run / "checkpoints" / f"step-{EVERY}" / "COMMITTED"
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert marker.exists(), proc.stderr.read().decode()[-2000:]
    assert not (run / "summary.json").exists(), "the run finished before it could be killed"

    again = cptkit("train", str(broken))  # without --resume: refused, nothing overwritten
    assert again.returncode == 2 and "--resume" in again.stderr and "Traceback" not in again.stderr

    resumed = cptkit("train", str(broken), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {run / 'checkpoints' / f'step-{EVERY}'}" in resumed.stderr

    a = load_file(tmp_path / "straight" / "checkpoints" / f"step-{STEPS}" / "model.safetensors")
    b = load_file(run / "checkpoints" / f"step-{STEPS}" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    # The logs read as one uninterrupted run: each step once, the same losses.
    ma, mb = read_jsonl(tmp_path / "straight" / "metrics.jsonl"), read_jsonl(run / "metrics.jsonl")
    assert [m["step"] for m in mb] == list(range(1, STEPS + 1))
    assert [m["loss"] for m in ma] == [m["loss"] for m in mb]
    ea, eb = read_jsonl(tmp_path / "straight" / "eval.jsonl"), read_jsonl(run / "eval.jsonl")
    assert [e["step"] for e in eb] == [0, EVERY, STEPS]
    assert ea[-1]["domain_loss"] == eb[-1]["domain_loss"]
    # Probe lines past the resumed step are rewritten, not duplicated; the answers are the same.
    pa, pb = read_jsonl(tmp_path / "straight" / "probes.jsonl"), read_jsonl(run / "probes.jsonl")
    assert [(r["step"], r["id"]) for r in pa] == [(r["step"], r["id"]) for r in pb]
    assert [r["greedy"] for r in pa] == [r["greedy"] for r in pb]


def test_resume_refuses_a_changed_config(tmp_path, tiny_model, corpus):
    path = config(tmp_path, tiny_model, corpus, "run")
    assert cptkit("train", str(path), "--set", "train.max_steps=12").returncode == 0
    out = cptkit("train", str(path), "--resume")
    assert out.returncode == 2
    assert "the config changed since this checkpoint was written (train)" in out.stderr
    out = cptkit("train", str(path), "--resume", "--set", "train.max_steps=12")
    assert out.returncode == 0, out.stderr
