"""The word-based filters per language: Korean, Chinese and Japanese prose is kept under its own
language and wiped out under English; a mixed source; Gopher's symbol and stop-word rules as published."""

from collections import Counter

import pytest

from cptkit.data.documents import Document
from cptkit.data.filters.gopher import (
    GopherQualityParams,
    GopherRepetitionParams,
    build_quality,
    build_repetition,
    quality_verdict,
)
from cptkit.data.filters.language import LanguageParams
from cptkit.data.filters.language import build as build_language
from cptkit.data.filters.length import LengthParams, length_verdict
from cptkit.data.filters.length import build as build_length
from cptkit.data.filters.web import (
    C4Params,
    FineWebParams,
    build_c4,
    build_fineweb,
    c4_rewrite,
    fineweb_verdict,
)
from cptkit.data.steps import StepStats, run_steps
from tests.corpora import chinese_documents, english_documents, japanese_documents, korean_documents


def web_steps(language: list[str]) -> list:
    """The word-based steps of the web and medical recipes, with the lid step first."""
    return [
        build_language(LanguageParams(languages=language), None),
        build_length(LengthParams(min_words=20, language=language), None),
        build_quality(GopherQualityParams(language=language), None),
        build_repetition(GopherRepetitionParams(language=language), None),
        build_c4(C4Params(require_terminal_punctuation=False, language=language), None),
        build_fineweb(FineWebParams(language=language), None),
    ]


def curate(docs: list[dict], language: list[str], steps=None) -> tuple[list[Document], dict[str, StepStats]]:
    steps = steps or web_steps(language)
    stats = {s.name: StepStats(s.name) for s in steps}
    batch = [Document(d["id"], d["text"]) for d in docs]
    return run_steps(steps, batch, stats, lambda *a: None), stats


def test_korean_prose_is_kept_under_korean():
    docs = korean_documents(40)
    kept, stats = curate(docs, ["ko"])
    assert len(kept) / len(docs) >= 0.95, {k: dict(s.dropped) for k, s in stats.items()}
    assert {d.meta["language"] for d in kept} == {"ko"}


def test_korean_prose_under_english_rules_is_wiped_out_by_stop_words():
    # The report: without the language step, Gopher's English stop words drop everything.
    docs = korean_documents(40)
    kept, stats = curate(docs, ["en"], steps=[build_quality(GopherQualityParams(), None)])
    dropped = stats["gopher_quality"].dropped
    assert kept == [] and dropped["gopher_stop_words"] >= 30, dropped
    assert set(dropped) == {"gopher_stop_words", "gopher_mean_word_length"}  # eojeol average about 3.1
    kept, stats = curate(docs, ["en"])
    assert kept == [] and stats["language"].dropped == Counter({"language_ko": 40})


@pytest.mark.parametrize("language,make", [("zh", chinese_documents), ("ja", japanese_documents)])
def test_chinese_and_japanese_prose_is_kept_under_its_language(language, make):
    docs = make(8)
    kept, stats = curate(docs, [language])
    assert len(kept) == len(docs), {k: dict(s.dropped) for k, s in stats.items()}
    # Under English rules a paragraph without spaces is one "word": too short for every word rule.
    text = docs[0]["text"]
    assert quality_verdict(text, GopherQualityParams()) == "gopher_too_few_words"
    assert length_verdict(text, LengthParams(min_words=20)) == "too_few_words"
    assert length_verdict(text, LengthParams(min_words=20), language) is None


def test_cjk_sentences_are_counted_without_spaces_after_them():
    text = "患者入院。给予治疗。症状好转。复查正常。随访稳定。出院。"
    assert c4_rewrite(text, C4Params(require_terminal_punctuation=False, min_words_per_line=1), Counter(), "zh")[1] is None
    assert c4_rewrite(text[:12], C4Params(require_terminal_punctuation=False, min_words_per_line=1),
                      Counter(), "zh")[1] == "c4_too_few_sentences"


def test_thai_has_no_sentence_punctuation_rules():
    text = "\n".join(["ผู้ป่วยมีไข้และไอมาสามวัน ตรวจเอกซเรย์ทรวงอกพบปอดอักเสบ"] * 1 + [
        "แพทย์ให้ยาปฏิชีวนะทางหลอดเลือดดำและสารน้ำ อาการดีขึ้นภายในห้าวัน"])
    step = build_c4(C4Params(language=["th"]), None)
    (doc, verdict), = step.run([Document("th", text)])
    assert verdict is None and doc.text == text
    assert c4_rewrite(text, C4Params(), Counter(), "en")[1] == "c4_too_few_sentences"
    assert fineweb_verdict(text, FineWebParams(), "en") == "fineweb_few_punctuated_lines"


def test_a_mixed_source_judges_each_document_by_its_own_language():
    docs = korean_documents(10) + english_documents(10)
    kept, stats = curate(docs, ["ko", "en"])
    assert len(kept) == 20 and {d.meta["language"] for d in kept} == {"ko", "en"}
    # Without the language step each document is still told apart (lid runs inside the rules).
    steps = web_steps(["ko", "en"])[1:]
    kept, _ = curate(docs, ["ko", "en"], steps=steps)
    assert len(kept) == 20
    # Declared English only, the Korean half falls to the stop-word rule.
    kept, stats = curate(docs, ["en"], steps=web_steps(["en"])[1:])
    assert [d.id for d in kept] == [d["id"] for d in docs[10:]]
    assert set(stats["gopher_quality"].dropped) <= {"gopher_stop_words", "gopher_mean_word_length"}


def test_english_under_language_en_equals_the_published_rules():
    for doc in english_documents(8):
        text = doc["text"]
        assert quality_verdict(text, GopherQualityParams(language=["en"]), "en") == quality_verdict(text, GopherQualityParams())
        for step in web_steps(["en"])[1:]:
            assert [v for _, v in step.run([Document("x", text)])] == [None]


# Issue 16: the paper's rules, as datatrove implements them. Each text below got the opposite
# verdict from the earlier implementation.
FILLER = " ".join(f"word{i} alpha beta" for i in range(20))  # 60 words, no stop word


def test_gopher_counts_distinct_stop_words():
    one_repeated = "the " * 5 + FILLER
    assert quality_verdict(one_repeated, GopherQualityParams()) == "gopher_stop_words"  # was kept: 5 >= 2
    assert quality_verdict("The and " + FILLER, GopherQualityParams()) is None  # two distinct, case-blind


def test_gopher_tests_hashes_and_ellipses_each_against_the_ratio():
    words = FILLER.split() + ["the", "and"] * 10  # 80 words
    # 6 hashes and 6 ellipses: 0.075 each (kept now), 0.15 summed (dropped before).
    text = " ".join(words[:37]) + " #a #b #c #d #e #f wait... wait... wait... so\u2026 so\u2026 so\u2026 " + " ".join(words[37:74])
    assert quality_verdict(text, GopherQualityParams()) is None
    hashes = text.replace("wait...", "#x").replace("so\u2026", "#y")  # 12 hashes: 0.15
    assert quality_verdict(hashes, GopherQualityParams()) == "gopher_symbol_ratio"
