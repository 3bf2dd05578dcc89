"""Probe files, the exact-match rule, and scoring against the model's own numbers."""

import contextlib
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cptkit.errors import UserError
from cptkit.evaluation.probe_sets import (
    ProbeSet,
    builtin_names,
    check_spec,
    load_probe_set,
    load_probe_sets,
)
from cptkit.evaluation.probes import aggregate, continuation, greedy_matches, score_probe_sets


def test_shipped_sets_load_and_are_well_formed():
    assert {"general", "template"} <= set(builtin_names())
    general = load_probe_set("general", "builtin:general")
    assert len(general.probes) >= 50
    france = next(p for p in general.probes if p.id == "capital-france")
    assert "capital of France" in france.prompt and france.answer == "Paris"
    assert sum(bool(p.distractors) for p in general.probes) == len(general.probes)
    assert load_probe_set("t", "builtin:template").probes


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "2: not a JSON object"),
        ('["a"]', "2: a probe must be a JSON object"),
        ('{"prompt": "x"}', "2: 'answer' must be a non-empty string"),
        ('{"prompt": "x", "answer": "  "}', "2: 'answer' must be a non-empty string"),
        ('{"prompt": "x", "answer": "y", "distractors": "z"}', "2: 'distractors' must be a list"),
        ('{"prompt": "x", "answer": "y", "distractors": ["y"]}', "also listed as a distractor"),
        ('{"prompt": "x", "answer": "y", "answers": ["y"]}', "2: unknown key(s) answers"),
        ('{"id": "a", "prompt": "x", "answer": "y"}', "2: probe id 'a' appears twice"),
    ],
)
def test_bad_probe_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "prompt": "p", "answer": "q"}\n' + line + "\n")
    with pytest.raises(UserError) as err:
        load_probe_set("x", str(path))
    assert f"{path}:" in str(err.value) and message in str(err.value)


def test_config_checks_probe_names_and_files(tmp_path):
    assert check_spec("eval.probes.ok", "ok", "builtin:general") == []
    assert "no shipped probe set" in check_spec("eval.probes.a", "a", "builtin:nope")[0]
    assert "is not a file" in check_spec("eval.probes.a", "a", str(tmp_path / "missing.jsonl"))[0]
    assert "must be letters" in check_spec("eval.probes.a b", "a b", "builtin:general")[0]
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(UserError, match="no probes in this file"):
        load_probe_sets({"e": str(tmp_path / "empty.jsonl")})


def test_exact_match_rule_and_joining():
    assert greedy_matches(" Paris. It is", "Paris")
    assert greedy_matches("Paris", "Paris")
    assert greedy_matches("  the  blue\nwhale swims", "the blue whale")
    assert not greedy_matches(" Parisian", "Paris")
    assert not greedy_matches(" paris", "Paris")
    assert not greedy_matches(" London", "Paris")
    assert continuation("Answer:", "Paris") == " Paris"
    assert continuation("Answer: ", "Paris") == "Paris"
    assert continuation("Answer:", " Paris") == " Paris"


def test_aggregate_exact_values():
    rows = [
        {"set": "a", "exact": True, "logprob": -2.0, "logprob_tok": -1.0, "choice": True},
        {"set": "a", "exact": False, "logprob": -6.0, "logprob_tok": -3.0, "choice": None},
        {"set": "b", "exact": False, "logprob": -1.0, "logprob_tok": -0.5, "choice": None},
    ]
    assert aggregate(rows, ["a", "b"]) == {
        "probe_a_exact": 0.5, "probe_a_logprob": -4.0, "probe_a_logprob_tok": -2.0, "probe_a_choice": 1.0,
        "probe_b_exact": 0.0, "probe_b_logprob": -1.0, "probe_b_logprob_tok": -0.5, "probe_b_choice": None,
    }


@pytest.fixture(scope="module")
def lm_and_tok(tiny_model):
    return AutoModelForCausalLM.from_pretrained(tiny_model).eval(), AutoTokenizer.from_pretrained(tiny_model)


def _score(lm, tok, sets, **kw):
    return score_probe_sets(lm, tok, sets, torch.device("cpu"), contextlib.nullcontext, **kw)


def test_log_likelihood_is_the_models_own(lm_and_tok):
    lm, tok = lm_and_tok
    general = load_probe_set("general", "builtin:general")
    probe = general.probes[0]
    _, rows = _score(lm, tok, [ProbeSet("g", "x", [probe])], chunk=None)
    prompt = tok(probe.prompt, add_special_tokens=False)["input_ids"]
    whole = tok(probe.prompt + " " + probe.answer, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([[tok.bos_token_id, *whole]])
    with torch.no_grad():
        logp = torch.log_softmax(lm(input_ids=ids, use_cache=False).logits.float(), -1)[0]
    answer = whole[len(prompt):]
    expected = sum(float(logp[len(prompt) + i, t]) for i, t in enumerate(answer))
    assert rows[0]["n_tokens"] == len(answer)
    assert rows[0]["logprob"] == pytest.approx(expected, abs=1e-4)
    assert rows[0]["logprob_tok"] == pytest.approx(expected / len(answer), abs=1e-5)


def test_batched_scoring_equals_one_at_a_time(lm_and_tok):
    lm, tok = lm_and_tok
    general = load_probe_set("general", "builtin:general")
    probes = general.probes[:9]  # prompts of different lengths: padding must not change anything
    agg, batched = _score(lm, tok, [ProbeSet("g", "x", probes)], chunk=7, batch_size=16, new_tokens=6)
    for probe, row in zip(probes, batched):
        _, (alone,) = _score(lm, tok, [ProbeSet("g", "x", [probe])], chunk=None, batch_size=1, new_tokens=6)
        assert row["greedy"] == alone["greedy"]
        assert row["logprob"] == pytest.approx(alone["logprob"], abs=1e-4)
        assert row["choice"] == alone["choice"]
    assert agg["probe_g_logprob"] == pytest.approx(sum(r["logprob"] for r in batched) / 9)


def test_exact_match_follows_the_greedy_continuation(lm_and_tok, tmp_path):
    lm, tok = lm_and_tok
    prompt = "The capital of France is"
    _, (row,) = _score(lm, tok, [ProbeSet("g", "x", [load_probe_set("g", "builtin:general").probes[0]])])
    said = _score(lm, tok, [_one(tmp_path, prompt, "x")], new_tokens=8)[1][0]["greedy"]
    assert said.strip()
    right = _score(lm, tok, [_one(tmp_path, prompt, said)], new_tokens=8)[1][0]
    wrong = _score(lm, tok, [_one(tmp_path, prompt, said.strip() + "zq")], new_tokens=8)[1][0]
    assert right["exact"] is True and wrong["exact"] is False
    assert row["exact"] is False  # a random model does not know Paris


def _one(tmp_path, prompt, answer):
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps({"prompt": prompt, "answer": answer}) + "\n")
    return load_probe_set("one", str(path))
