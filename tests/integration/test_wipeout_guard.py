"""A curation step that drops most of a source is warned about and recorded; one that leaves a training
source empty stops `cptkit prepare` with exit status 2, naming the step and the likely cause."""

import json

from tests.corpora import english_documents, korean_documents, write_jsonl
from tests.helpers import cptkit, make_config, write_config


def config(tmp_path, tiny_model, corpus, docs, **source):
    write_jsonl(tmp_path / "domain.jsonl", docs)
    cfg = make_config(tmp_path, tiny_model, corpus, train={"max_steps": 1}, checkpoint={"every_steps": 1},
                      eval={"every_steps": 1, "max_tokens": 500, "probes": {}})
    cfg["data"]["domain"] = {"paths": [str(tmp_path / "domain.jsonl")], "id_field": "id", **source}
    return write_config(tmp_path / "run.yaml", cfg)


def test_a_korean_corpus_declared_english_stops_prepare_naming_the_step_and_the_cause(tmp_path, tiny_model, corpus):
    path = config(tmp_path, tiny_model, corpus, korean_documents(30, seed=2), pipeline="web")
    for _attempt in range(2):  # the second time the prepared (empty) source is reused: it stops all the same
        out = cptkit("prepare", str(path))
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
        assert "data.domain (domain): no training document left; step language dropped the most" in out.stderr
        assert "language_ko" in out.stderr and "Likely cause: a language mismatch" in out.stderr
        assert "set data.domain.language: ko" in out.stderr
    manifest = json.loads((tmp_path / "run" / "data" / "domain" / "manifest.json").read_text())
    assert manifest["documents"]["train"] == 0 and manifest["empty_error"]  # kept for audit, with dropped/
    assert any((tmp_path / "run" / "data" / "domain" / "dropped").glob("*.jsonl.gz"))
    fixed = cptkit("prepare", str(path), "--set", "data.domain.language=ko")
    assert fixed.returncode == 0, fixed.stderr[-2000:]


def test_a_step_that_drops_most_documents_is_warned_in_the_log_manifest_and_report(tmp_path, tiny_model, corpus):
    docs = korean_documents(30, seed=3) + english_documents(12, seed=3)
    path = config(tmp_path, tiny_model, corpus, docs, pipeline=["language"])
    trained = cptkit("train", str(path))
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "domain: step language dropped 30 of 42 documents (71%): language_ko 30; e.g. " in trained.stderr
    warning = json.loads((tmp_path / "run" / "data" / "domain" / "manifest.json").read_text())["warnings"][0]
    assert (warning["step"], warning["in"], warning["dropped"], warning["reasons"]) == (
        "language", 42, 30, {"language_ko": 30})
    assert len(warning["samples"]) == 3 and all(s.startswith(str(tmp_path / "domain.jsonl")) or s.startswith("ko-")
                                                for s in warning["samples"])
    assert cptkit("report", str(tmp_path / "run")).returncode == 0
    page = (tmp_path / "run" / "report.html").read_text()
    assert "step language dropped 30 of 42 documents (71%)" in page
