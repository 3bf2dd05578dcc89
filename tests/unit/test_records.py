"""The typed artifacts that cross stages: step and eval records, manifests, and the durable writer."""

from __future__ import annotations

import json
import math

import pytest

from cptkit.data.manifest import FORMAT_VERSION, Manifest, read_manifest
from cptkit.durable import replaced, write_json
from cptkit.records import EvalRecord, StepRecord


def step_record(**extra) -> StepRecord:
    return StepRecord(step=3, tokens=96, lr=1e-4, loss=2.5, loss_domain=2.4, loss_replay=None, loss_reg=0.0,
                      grad_norm=0.7, tokens_per_s=1000.0, target_tokens=90, source_tokens={"domain": 96}, **extra)


def test_a_step_record_writes_the_contract_keys_and_only_the_optional_ones_that_apply():
    plain = step_record().to_json()
    assert list(plain) == ["step", "tokens", "lr", "loss", "loss_domain", "loss_replay", "loss_reg", "grad_norm",
                           "tokens_per_s", "target_tokens", "source_tokens"]
    full = step_record(kl=math.nan, loss_aux=0.01, skipped="non-finite loss", spike=True).to_json()
    assert math.isnan(full["kl"]) and full["loss_aux"] == 0.01 and full["skipped"] == "non-finite loss"
    assert full["spike"] is True
    # Written as JSON, NaN becomes null; read back, a null kl is "in use, not computed".
    back = StepRecord.from_json(json.loads(json.dumps({**full, "kl": None})))
    assert math.isnan(back.kl) and back.spike and back.loss_aux == 0.01
    assert StepRecord.from_json(plain) == step_record()


def test_an_eval_record_is_flat_in_json_and_keeps_budget_fields_only_with_a_budget():
    rec = EvalRecord(4, 128, {"domain_ppl": 12.5, "domain_bpb": 1.1})
    assert rec.to_json() == {"step": 4, "tokens": 128, "domain_ppl": 12.5, "domain_bpb": 1.1}
    judged = EvalRecord(4, 128, {"general_ppl": 30.0}, general_rise=0.02, within_budget=True)
    assert judged.to_json()["within_budget"] is True and EvalRecord.from_json(judged.to_json()) == judged
    assert rec["domain_ppl"] == 12.5 and rec.get("general_ppl") is None and "domain_bpb" in rec


def manifest() -> Manifest:
    return Manifest(name="domain", role="domain", fingerprint="f" * 64, content_hash="c" * 64, inputs=["a.jsonl"],
                    pipeline=[], documents={"read": 3, "kept": 3, "dropped": 0, "train": 3, "eval": 0}, steps=[],
                    pii={}, bad_input={"total": 0, "reasons": {}, "samples": {}},
                    tokens={"train": 300, "eval": 0, "total": 300}, text_bytes={"train": 900, "eval": 0},
                    dtype="uint16", vocab_size=512, start_id=1, eos_id=2,
                    shards={"train": [{"tokens": "tokens-00000.bin", "docs": "docs-00000.npy", "n_tokens": 300,
                                       "n_docs": 3}], "eval": []})


def test_a_manifest_round_trips_and_an_outdated_one_reads_as_missing(tmp_path):
    m = manifest()
    m.write(tmp_path)
    assert read_manifest(tmp_path) == m
    assert m.windows("train", 64) == 5  # 300 tokens: 4 whole windows of 64 and a padded fifth
    data = json.loads((tmp_path / "manifest.json").read_text())
    assert data["format_version"] == FORMAT_VERSION and list(data)[:3] == ["name", "role", "format_version"]
    (tmp_path / "manifest.json").write_text(json.dumps({**data, "format_version": FORMAT_VERSION - 1}))
    assert read_manifest(tmp_path) is None  # prepared by an older cptkit: prepared again
    (tmp_path / "manifest.json").write_text('{"name": ')
    assert read_manifest(tmp_path) is None


def test_a_failed_json_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "summary.json"
    write_json(path, {"a": 1, "b": math.inf})
    assert json.loads(path.read_text()) == {"a": 1, "b": None}  # JSON has no infinity: null
    with pytest.raises(OSError), replaced(path) as tmp:
        tmp.write_text("half of a new summ")
        raise OSError("disk full")  # the write fails midway
    assert json.loads(path.read_text()) == {"a": 1, "b": None}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
