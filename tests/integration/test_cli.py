"""The command line as a user meets it: exit codes, messages, plan, prepare, eval, report."""

import json
import os

import pytest

from tests.helpers import cptkit, make_config, write_config


def test_bad_config_exits_2_with_every_problem_and_no_traceback(tmp_path, tiny_model, corpus):
    cfg = make_config(tmp_path, tiny_model, corpus, train={"lr": "high", "schedule": "linear"},
                      eval={"every_steps": 0}, colour="blue")
    out = cptkit("plan", str(write_config(tmp_path / "c.yaml", cfg)))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    for text in ("colour: unknown key", "train.lr: must be a number, got string 'high'",
                 "train.schedule: must be one of 'cosine', 'constant', 'wsd', 'infinite', got string 'linear'"):
        assert text in out.stderr
    assert cptkit("train", str(tmp_path / "missing.yaml")).returncode == 2
    out = cptkit("plan", str(tmp_path / "c.yaml"), "--set", "train.lr=1e-4", "--set", "train.schedule=cosine",
                 "--set", "eval.every_steps=-1", "--set", "colour=")
    assert out.returncode == 2 and "eval.every_steps: must be > 0, got -1" in out.stderr


def test_batch_that_does_not_split_names_the_key_and_the_fix(tmp_path, tiny_model, corpus):
    cfg = make_config(tmp_path, tiny_model, corpus, train={"global_batch_tokens": 64 * 6, "micro_batch_size": 4})
    out = cptkit("plan", str(write_config(tmp_path / "c.yaml", cfg)))
    assert out.returncode == 2
    assert "train.global_batch_tokens: 384 tokens = 6 sequences" in out.stderr
    assert "Nearest global_batch_tokens that fit: 256, 512" in out.stderr


def test_prepare_then_plan_then_reuse_and_staleness(tmp_path, tiny_model, corpus):
    code = tmp_path / "code.jsonl"
    code.write_text(corpus["code"].read_text())
    cfg = make_config(tmp_path, tiny_model, {**corpus, "code": code}, train={"max_tokens": 20000, "max_steps": None})
    path = write_config(tmp_path / "c.yaml", cfg)
    plan = cptkit("plan", str(path))
    assert plan.returncode == 0 and "run `cptkit prepare` first" in plan.stdout
    first = cptkit("prepare", str(path))
    assert first.returncode == 0, first.stderr
    assert "domain" in first.stdout and "tokenize" in first.stdout
    manifest = json.loads((tmp_path / "run" / "data" / "domain" / "manifest.json").read_text())
    assert manifest["documents"]["kept"] == manifest["documents"]["train"] + manifest["documents"]["eval"]
    assert manifest["tokens"]["total"] > 0 and len(manifest["content_hash"]) == 64

    plan = cptkit("plan", str(path))
    assert plan.returncode == 0
    assert "40 steps = 20,480 tokens (train.max_tokens)" in plan.stdout
    assert "75.00% of tokens" in plan.stdout and "25.00% of tokens" in plan.stdout

    again = cptkit("prepare", str(path))
    assert "shards up to date" in again.stderr
    with code.open("a") as fh:
        fh.write(json.dumps({"id": "new", "text": "def added():\n    return 42\n"}) + "\n")
    stale = cptkit("prepare", str(path))
    assert "domain: inputs, tokenizer or settings changed; preparing again" in stale.stderr
    updated = json.loads((tmp_path / "run" / "data" / "domain" / "manifest.json").read_text())
    assert updated["documents"]["read"] == manifest["documents"]["read"] + 1
    assert updated["content_hash"] != manifest["content_hash"]


def test_interrupted_prepare_leaves_nothing_that_looks_complete(tmp_path, tiny_model, corpus):
    cfg = make_config(tmp_path, tiny_model, corpus)
    path = write_config(tmp_path / "c.yaml", cfg)
    data = tmp_path / "run" / "data"
    # What a prepare killed mid-way leaves: a temporary folder without a manifest.
    (data / ".tmp-domain-999" / "train").mkdir(parents=True)
    (data / ".tmp-domain-999" / "train" / "tokens-00000.bin").write_bytes(b"\0" * 100)
    out = cptkit("prepare", str(path))
    assert out.returncode == 0, out.stderr
    assert not (data / ".tmp-domain-999").exists()
    # .work holds the finished parts that a later prepare reuses (see data/prepare.py).
    assert sorted(p.name for p in data.iterdir()) == [".work", "domain", "general", "tokenizer"]
    assert not list((data / ".work").rglob(".tmp-*"))
    hash_one = json.loads((data / "domain" / "manifest.json").read_text())["content_hash"]
    assert cptkit("prepare", str(path), "--force").returncode == 0
    assert json.loads((data / "domain" / "manifest.json").read_text())["content_hash"] == hash_one


def test_eval_and_report_commands(tmp_path, tiny_model, corpus):
    cfg = make_config(tmp_path, tiny_model, corpus, train={"max_steps": 4},
                      checkpoint={"every_steps": 2, "keep_last": 1, "keep_best": 1}, eval={"every_steps": 2})
    path = write_config(tmp_path / "c.yaml", cfg)
    trained = cptkit("train", str(path))
    assert trained.returncode == 0, trained.stderr
    assert "ppl before" in trained.stdout
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    out = cptkit("eval", str(path), "--checkpoint", str(tmp_path / "run" / "final"))
    assert out.returncode == 0, out.stderr
    scored = json.loads(out.stdout)
    assert scored["domain_ppl"] == pytest.approx(summary["final"]["domain_ppl"], rel=1e-5)
    state = cptkit("eval", str(path), "--checkpoint", str(tmp_path / "run" / "checkpoints" / "step-4"))
    assert json.loads(state.stdout)["domain_ppl"] == pytest.approx(summary["final"]["domain_ppl"], rel=1e-5)
    assert (tmp_path / "run" / "evals" / "final.json").is_file()
    bad = cptkit("eval", str(path), "--checkpoint", str(tmp_path))
    assert bad.returncode == 2 and "neither a model folder" in bad.stderr

    rep = cptkit("report", str(tmp_path / "run"))
    assert rep.returncode == 0, rep.stderr
    html = (tmp_path / "run" / "report.html").read_text()
    assert f"{summary['base']['domain_ppl']:.4g}" in html
    assert os.path.getsize(tmp_path / "run" / "eval_perplexity.png") > 1000
    assert cptkit("report", str(tmp_path / "nope")).returncode == 2
