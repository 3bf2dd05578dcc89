"""The wipe-out guard: warnings for steps that drop most of what reaches them, the error for a
training source left with nothing, sample ids from the dropped records."""

import gzip
import json
from collections import Counter

from cptkit.data.steps import StepStats
from cptkit.data.wipeout import (
    DropWarning,
    GuardOptions,
    drop_warnings,
    empty_source_error,
    likely_cause,
    sample_ids,
    samples_from_records,
)
from cptkit.schema import parse


def stats(name, seen, **dropped):
    return StepStats(name, seen=seen, kept=seen - sum(dropped.values()), dropped=Counter(dropped))


# The report: 50 Korean documents, all dropped by Gopher's English stop words.
KOREAN_AS_ENGLISH = [stats("clean", 50), stats("length", 50),
                     stats("gopher_quality", 50, gopher_stop_words=42, gopher_too_few_words=6, gopher_alpha_words=2),
                     stats("gopher_repetition", 0), stats("tokenize", 0)]
SAMPLES = {"gopher_quality": ["statute-001", "statute-002", "bill-003", "bill-004"]}


def test_a_step_over_the_fraction_warns_with_reasons_and_samples():
    warnings = drop_warnings("domain", KOREAN_AS_ENGLISH, SAMPLES, 0.5)
    assert len(warnings) == 1
    w = warnings[0]
    assert (w.step, w.seen, w.dropped, w.fraction) == ("gopher_quality", 50, 50, 1.0)
    assert w.reasons == [("gopher_stop_words", 42), ("gopher_too_few_words", 6), ("gopher_alpha_words", 2)]
    assert w.samples == ["statute-001", "statute-002", "bill-003"]
    assert w.message() == ("domain: step gopher_quality dropped 50 of 50 documents (100%): gopher_stop_words 42, "
                           "gopher_too_few_words 6, gopher_alpha_words 2; e.g. statute-001, statute-002, bill-003")
    assert w.to_json()["reasons"] == {"gopher_stop_words": 42, "gopher_too_few_words": 6, "gopher_alpha_words": 2}


def test_the_fraction_is_of_what_reached_the_step():
    steps = [stats("language", 100, language_de=90), stats("gopher_quality", 10, gopher_stop_words=6),
             stats("dedup", 4, exact_duplicate=2)]
    assert [w.step for w in drop_warnings("s", steps, {}, 0.5)] == ["language", "gopher_quality"]  # 2 of 4 is not > 0.5
    assert [w.step for w in drop_warnings("s", steps, {}, 0.95)] == []
    assert [w.step for w in drop_warnings("s", steps, {}, 0.0)] == ["language", "gopher_quality", "dedup"]


def test_an_empty_training_source_names_the_worst_step_and_the_likely_cause():
    msg = empty_source_error("domain", "data.domain", KOREAN_AS_ENGLISH, SAMPLES, ["en"], 0, 50)
    assert msg.startswith("data.domain (domain): no training document left; step gopher_quality dropped the most, "
                          "50 of 50 (gopher_stop_words 42, gopher_too_few_words 6, gopher_alpha_words 2), e.g. statute-001")
    assert "Likely cause: too few stop words of [en]" in msg and "check data.domain.language" in msg
    assert empty_source_error("domain", "data.domain", KOREAN_AS_ENGLISH, SAMPLES, ["en"], 3, 50) is None


def test_a_language_mismatch_is_named_with_the_fix():
    steps = [stats("clean", 50), stats("language", 50, language_ko=48, low_language_score=2)]
    msg = empty_source_error("legal", "data.domain[1]", steps, {}, ["en"], 0, 50)
    assert "step language dropped the most, 50 of 50" in msg
    assert msg.endswith("a language mismatch: the documents are detected as 'ko' but the source's language is [en]; "
                        "set data.domain[1].language: ko (or add it to the language step's languages)")


def test_nothing_read_and_nothing_dropped_have_their_own_messages():
    assert "no document was read" in empty_source_error("d", "data.domain", [], {}, ["en"], 0, 0)
    assert "all held out?" in empty_source_error("d", "data.domain", [stats("clean", 5)], {}, ["en"], 0, 5)


def test_likely_causes_by_reason():
    assert "segmented" in likely_cause("gopher_quality", ["gopher_too_few_words"], ["en"], "data.general")
    assert "repeats itself" in likely_cause("dedup", ["exact_duplicate"], ["ko"])
    assert "eval set" in likely_cause("decontaminate", ["eval_near"], ["ko"])
    assert "fineweb step's thresholds" in likely_cause("fineweb", ["fineweb_many_short_lines"], ["ko"])


def test_samples_from_dropped_records(tmp_path):
    records = [{"id": f"d{i}", "step": "length" if i % 3 else "gopher_quality", "reason": "x"} for i in range(30)]
    (tmp_path / "dropped").mkdir()
    with gzip.open(tmp_path / "dropped" / "part-00000.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in records)
    assert sample_ids(tmp_path / "dropped") == {"gopher_quality": ["d0", "d3", "d6"], "length": ["d1", "d2", "d4"]}
    seen = []

    def counted():
        for r in records:
            seen.append(r["id"])
            yield r

    assert samples_from_records(counted(), 2, steps=["length"]) == {"length": ["d1", "d2"]}
    assert seen == ["d0", "d1", "d2"]  # stopped as soon as the wanted step had its samples


def test_the_config_field_and_its_range():
    problems = []
    assert parse(GuardOptions, {"warn_drop_fraction": 0.3}, "data", problems).warn_drop_fraction == 0.3
    parse(GuardOptions, {"warn_drop_fraction": 1.5}, "data", problems)
    assert problems == ["data.warn_drop_fraction: must lie in [0, 1], got 1.5"]
    assert DropWarning("s", "x", 0, 0, []).fraction == 0.0
