"""A Korean source end to end: its clean documents are kept, and its personal data reaches no output
(curated, dropped, decoded shards, console, report) while its ordinary numbers stay.

The source says `language: ko` once; every language-dependent step takes it (none names a language).
"""

import json

import pytest
from transformers import AutoTokenizer

from tests.corpora import (
    KOREAN_PII,
    ORDINARY_NUMBERS,
    korean_documents,
    korean_pii_document,
    write_jsonl,
)
from tests.helpers import cptkit, every_output, make_config, write_config

PIPELINE = ["clean", {"length": {"min_words": 20}}, "language", {"gopher_quality": {"min_words": 20}},
            "gopher_repetition", "pii", "dedup"]


@pytest.mark.slow
def test_korean_source_keeps_its_prose_and_leaks_no_personal_data(tmp_path, tiny_model, corpus):
    docs = korean_documents(40, seed=1)
    pii = korean_pii_document()
    short = {"id": "ko-pii-short", "text": f"연락처 {KOREAN_PII['phone'][0]}, 주민등록번호 {KOREAN_PII['kr_rrn'][0]}"}
    write_jsonl(tmp_path / "ko.jsonl", [*docs, pii, short])
    cfg = make_config(tmp_path, tiny_model, corpus, train={"max_steps": 2}, checkpoint={"every_steps": 2})
    cfg["data"]["domain"] = {"paths": [str(tmp_path / "ko.jsonl")], "id_field": "id", "pipeline": PIPELINE,
                             "language": "ko"}
    cfg["data"]["prepared_dir"] = str(tmp_path / "prepared")
    path = write_config(tmp_path / "run.yaml", cfg)
    outputs = [cptkit("train", str(path)), cptkit("report", str(tmp_path / "run"))]
    assert all(o.returncode == 0 for o in outputs), outputs[0].stderr[-3000:] + outputs[-1].stderr[-2000:]

    manifest = json.loads((tmp_path / "prepared" / "domain" / "manifest.json").read_text())
    steps = {s["name"]: s for s in manifest["steps"]}
    assert steps["length"]["dropped"] == {"too_few_words": 1}  # the short record, and nothing else
    kept = manifest["documents"]["kept"]
    assert kept / len(docs) >= 0.95 and kept <= len(docs) + 1
    assert manifest["pii"] == {k: len(v) for k, v in KOREAN_PII.items()}  # counted in the kept document

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "prepared" / "tokenizer")
    dtype = "uint16" if manifest["dtype"] == "uint16" else "uint32"
    searched = every_output(outputs, [tmp_path / "prepared", tmp_path / "run"], tokenizer, dtype)
    assert any(name.endswith(".bin") for name in searched) and any("dropped" in n for n in searched)
    assert any(name.endswith("report.html") for name in searched)
    leaks = [(name, p) for name, text in searched.items() for values in KOREAN_PII.values() for p in values
             if p in text]
    assert not leaks, f"personal data found in outputs: {leaks[:5]}"
    curated = "".join(t for n, t in searched.items() if "curated" in n)
    assert all(n in curated for n in ORDINARY_NUMBERS) and "<KR_RRN>" in curated and "<PHONE>" in curated
    dropped = "".join(t for n, t in searched.items() if "dropped" in n)
    assert "연락처 <PHONE>, 주민등록번호 <KR_RRN>" in dropped
