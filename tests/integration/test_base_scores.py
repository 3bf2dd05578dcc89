"""Step-0 scores kept in the prepared folder and reused by the next fresh run that would compute
the same ones (`eval.reuse_base`): equal to a fresh computation, and never reused when the
weights or a setting that decides them differs."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from cptkit.config import load_config
from cptkit.evaluation.base_scores import FOLDER
from cptkit.train.loop import train
from tests.helpers import make_config, read_jsonl

REUSED = "the base model's scores reused from"


def run(tmp, model, corpus, name, **eval_options):
    cfg = make_config(tmp, model, corpus, train={"max_steps": 2}, output_dir=str(tmp / name),
                      eval={"every_steps": 2, "max_tokens": 2000, "probes": {"general": "builtin:general"},
                            "probe_new_tokens": 4, **eval_options})
    cfg["data"]["prepared_dir"] = str(tmp / "data")
    train(load_config(None, raw=cfg))
    return read_jsonl(tmp / name / "eval.jsonl"), read_jsonl(tmp / name / "probes.jsonl")


def kept(tmp):
    return sorted((tmp / "data" / FOLDER).glob("*.json"))


@pytest.fixture(scope="module")
def first(tmp_path_factory, tiny_model, corpus):
    tmp = tmp_path_factory.mktemp("base-scores")
    results = run(tmp, tiny_model, corpus, "a")
    (record,) = kept(tmp)
    return tmp, results, record


def test_a_second_run_reuses_the_record_and_it_equals_a_fresh_score(first, tiny_model, corpus, caplog):
    tmp, (evals, probes), _ = first
    assert len(kept(tmp)) == 1
    with caplog.at_level(logging.INFO, logger="cptkit"):
        again = run(tmp, tiny_model, corpus, "b")
    assert REUSED in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="cptkit"):
        fresh = run(tmp, tiny_model, corpus, "c", reuse_base=False)
    assert REUSED not in caplog.text
    # Every evaluation, step 0 and after, and every probe row match to the last bit.
    assert again == (evals, probes) == fresh
    assert [p["step"] for p in probes].count(0) == len(probes) // 2
    assert len(kept(tmp)) == 1


def test_a_setting_that_does_not_decide_step_0_still_reuses(first, tiny_model, corpus, caplog):
    tmp, _, _ = first
    with caplog.at_level(logging.INFO, logger="cptkit"):
        run(tmp, tiny_model, corpus, "d", every_steps=1)
    assert REUSED in caplog.text
    assert len(kept(tmp)) == 1


@pytest.mark.parametrize("change", ["weight", "max_tokens", "probes"])
def test_other_weights_or_settings_score_again(first, tmp_path, tiny_model, corpus, change, caplog):
    tmp, _, _ = first
    model, options = tiny_model, {}
    if change == "weight":  # one value of one matrix, one unit in the last place
        model = tmp_path / "nudged"
        shutil.copytree(tiny_model, model)
        weights = load_file(model / "model.safetensors")
        name = next(k for k in weights if k.endswith("q_proj.weight"))
        weights[name][0, 0] = torch.nextafter(weights[name][0, 0], torch.tensor(1.0))
        save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    elif change == "max_tokens":
        options = {"max_tokens": 1000}
    else:
        options = {"probes": {"template": "builtin:template"}}
    before = kept(tmp)
    with caplog.at_level(logging.INFO, logger="cptkit"):
        run(tmp, model, corpus, f"e-{change}", **options)
    assert REUSED not in caplog.text
    assert len(kept(tmp)) == len(before) + 1


def test_an_unreadable_record_is_scored_again_and_rewritten(first, tiny_model, corpus, caplog):
    tmp, (evals, _), path = first
    path.write_text('{"metrics": {', encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="cptkit"):
        again, _ = run(tmp, tiny_model, corpus, "f")
    assert "cannot be read" in caplog.text and REUSED not in caplog.text
    assert again == evals
    metrics = json.loads(path.read_text(encoding="utf-8"))["metrics"]
    assert "general_ppl" in metrics and metrics == {k: evals[0][k] for k in metrics}
