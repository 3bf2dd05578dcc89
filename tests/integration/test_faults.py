"""Recovery from process faults with real processes: SIGKILL at five moments, a full disk, a killed prepare.

Crashes come from `CPTKIT_CRASH_AT` (cptkit/faults.py): the process SIGKILLs itself at a named
point, so each test hits exactly the moment it names. A full disk is a file-size limit
(RLIMIT_FSIZE) on the process: writes past it fail with EFBIG, as on a full disk.
"""

import json
import os
import resource
import signal
import subprocess
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from tests.helpers import cptkit, make_config, read_jsonl, write_config

STEPS = 12
PROBES = [{"id": "cap", "prompt": "The capital of France is", "answer": "Paris"},
          {"id": "def", "prompt": "def add(a, b):\n    return", "answer": "a + b", "distractors": ["a - b"]}]


def config(tmp, tiny_model, corpus, name):
    probes = tmp / "probes.jsonl"
    probes.write_text("".join(json.dumps(p) + "\n" for p in PROBES))
    cfg = make_config(tmp, tiny_model, corpus, train={"max_steps": STEPS, "lr": 5e-3},
                      checkpoint={"every_steps": 3, "keep_last": 2, "keep_best": 0},
                      eval={"every_steps": 6, "max_tokens": 1000, "probes": {"mini": str(probes)}},
                      output_dir=str(tmp / name))
    cfg["data"]["prepared_dir"] = str(tmp / "shards")  # both runs train on the same shards
    return write_config(tmp / f"{name}.yaml", cfg)


def run(*args, crash=None, max_file_bytes=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("CPTKIT_CRASH_AT", None)
    if crash:
        env["CPTKIT_CRASH_AT"] = crash

    def limit():  # in the child, before exec: every file it writes is capped, like a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    return subprocess.run([sys.executable, "-m", "cptkit", *args], env=env, capture_output=True, text=True,
                          timeout=600, preexec_fn=limit if max_file_bytes else None)


def test_killed_at_five_moments_and_a_full_disk_then_resumed_ends_identical(tmp_path, tiny_model, corpus):
    straight = config(tmp_path, tiny_model, corpus, "straight")
    assert cptkit("train", str(straight)).returncode == 0

    path = str(config(tmp_path, tiny_model, corpus, "broken"))
    folder = tmp_path / "broken"
    step3 = folder / "checkpoints" / "step-3"
    killed = run("train", path, crash="step:4")  # after step 4's update, before its log line
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert step3.is_dir() and not (folder / "summary.json").exists()
    again = run("train", path)  # without --resume: refused, nothing overwritten
    assert again.returncode == 2 and "--resume" in again.stderr and "Traceback" not in again.stderr

    half_written = {"save:6:written": folder / "checkpoints", "save:6:committed": folder / "checkpoints",
                    "export:best": folder}
    for moment in ("eval:6", "save:6:written", "save:6:committed", "export:best"):
        killed = run("train", path, "--resume", crash=moment)
        assert killed.returncode == -signal.SIGKILL, f"{moment}: {killed.stderr[-2000:]}"
        assert f"resumed from {step3}" in killed.stderr
        # Whatever the moment, the newest checkpoint a resume can pick is still step 3...
        assert sorted(p.name for p in (folder / "checkpoints").glob("step-*")) == ["step-3"], moment
        # ...though the killed write left its temporary folder (the next start removes it).
        if moment in half_written:
            assert [p for p in half_written[moment].iterdir() if p.name.startswith(".tmp-")], moment

    # A full disk at the next write (exporting best/ at step 6): a clear error, nothing lost.
    size = (step3 / "model.safetensors").stat().st_size
    full = run("train", path, "--resume", max_file_bytes=size // 2)
    assert full.returncode == 1, full.stderr[-2000:]
    assert "Traceback" not in full.stderr
    assert "could not write" in full.stderr and f"{step3}, is intact" in full.stderr
    assert "--resume" in full.stderr
    AutoModelForCausalLM.from_pretrained(folder / "best")  # the earlier best/ still loads
    assert not [p for p in folder.iterdir() if p.name.startswith(".tmp-")], "partial export left behind"

    done = run("train", path, "--resume")
    assert done.returncode == 0, done.stderr[-2000:]
    a = load_file(tmp_path / "straight" / "final" / "model.safetensors")
    b = load_file(folder / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    ma, mb = read_jsonl(tmp_path / "straight" / "metrics.jsonl"), read_jsonl(folder / "metrics.jsonl")
    assert [m["step"] for m in mb] == list(range(1, STEPS + 1))
    assert [m["loss"] for m in ma] == [m["loss"] for m in mb]
    ea, eb = read_jsonl(tmp_path / "straight" / "eval.jsonl"), read_jsonl(folder / "eval.jsonl")
    assert [e["step"] for e in eb] == [0, 6, STEPS] and ea == eb
    # Probe lines past the resumed step are rewritten, not duplicated; the answers are the same.
    pa, pb = read_jsonl(tmp_path / "straight" / "probes.jsonl"), read_jsonl(folder / "probes.jsonl")
    assert [(r["step"], r["id"], r["greedy"]) for r in pa] == [(r["step"], r["id"], r["greedy"]) for r in pb]
    assert not [p for p in (folder / "checkpoints").iterdir() if p.name.startswith(".tmp-")]


def shard_bytes(root):
    out = {}
    for manifest in sorted(root.glob("*/manifest.json")):
        folder = manifest.parent
        data = json.loads(manifest.read_text())
        out[folder.name] = (data["content_hash"], {p.name: p.read_bytes() for p in sorted(folder.rglob("*.bin"))})
    return out


def test_prepare_killed_then_rerun_gives_the_same_shards(tmp_path, tiny_model, corpus):
    def prepare_config(name):
        cfg = make_config(tmp_path, tiny_model, corpus, output_dir=str(tmp_path / name))
        cfg["data"]["prepared_dir"] = str(tmp_path / f"{name}-shards")
        cfg["data"]["part_bytes"] = 20_000  # several parts per source, so a crash falls between them
        return str(write_config(tmp_path / f"{name}.yaml", cfg))

    assert cptkit("prepare", prepare_config("straight")).returncode == 0
    expected = shard_bytes(tmp_path / "straight-shards")
    assert expected and all(files for _, files in expected.values())

    path = prepare_config("broken")
    for moment in ("prepare:parts:1", "prepare:write:domain"):
        killed = run("prepare", path, crash=moment)
        assert killed.returncode == -signal.SIGKILL, f"{moment}: {killed.stderr[-2000:]}"
        assert not (tmp_path / "broken-shards" / "domain" / "manifest.json").exists(), moment
    again = run("prepare", path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert shard_bytes(tmp_path / "broken-shards") == expected
    assert not list((tmp_path / "broken-shards").glob(".tmp-*"))


def test_lora_run_killed_then_resumed_ends_with_bit_identical_adapters_and_embeddings(tmp_path, tiny_model, corpus):
    """A LoRA run (adapter dropout, KL to the base) SIGKILLed after a step and while writing best-adapter/,
    resumed from its trainable-only checkpoints: the adapters, the embeddings and the merged final/ are
    bit-identical to an uninterrupted run's, and so are its losses and evaluations."""
    import yaml

    def lora_config(name):
        path = config(tmp_path, tiny_model, corpus, name)
        cfg = yaml.safe_load(path.read_text())
        cfg["train"]["peft"] = {"method": "lora", "r": 4, "dropout": 0.1}
        cfg["regularizer"] = {"kind": "kl", "weight": 0.5}
        return str(write_config(path, cfg))

    assert cptkit("train", lora_config("straight")).returncode == 0
    path, folder = lora_config("broken"), tmp_path / "broken"
    step3 = folder / "checkpoints" / "step-3"
    killed = run("train", path, crash="step:4")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    killed = run("train", path, "--resume", crash="export:best-adapter")  # best/ written, best-adapter/ not
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert f"resumed from {step3}" in killed.stderr
    assert [p for p in folder.iterdir() if p.name.startswith(".tmp-best-adapter")]
    done = run("train", path, "--resume")
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("final-adapter/adapter_model.safetensors", "best-adapter/adapter_model.safetensors",
                 "final/model.safetensors", "checkpoints/step-12/model.safetensors"):
        a, b = load_file(tmp_path / "straight" / name), load_file(folder / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    trained = load_file(folder / "checkpoints" / "step-12" / "model.safetensors")
    assert any(".lora_B." in k for k in trained) and "model.embed_tokens.weight" in trained
    ma, mb = read_jsonl(tmp_path / "straight" / "metrics.jsonl"), read_jsonl(folder / "metrics.jsonl")
    assert [(m["loss"], m["kl"]) for m in ma] == [(m["loss"], m["kl"]) for m in mb]
    assert read_jsonl(tmp_path / "straight" / "eval.jsonl") == read_jsonl(folder / "eval.jsonl")
    assert not [p for p in folder.iterdir() if p.name.startswith((".tmp-", ".old-"))]
