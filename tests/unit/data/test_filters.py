"""Each filter on small hand-written documents: the reason it gives, or that it keeps them."""

from collections import Counter

import pytest

from cptkit.data.documents import Document
from cptkit.data.filters.code import CodeParams, code_verdict, comment_chars
from cptkit.data.filters.gopher import (
    GopherQualityParams,
    GopherRepetitionParams,
    dup_ngram_share,
    quality_verdict,
    repetition_verdict,
    top_ngram_share,
)
from cptkit.data.filters.language import LanguageParams
from cptkit.data.filters.language import build as build_language
from cptkit.data.filters.length import LengthParams, length_verdict
from cptkit.data.filters.web import C4Params, FineWebParams, c4_rewrite, fineweb_verdict

PROSE = (
    "The study followed patients with chronic kidney disease for five years. We measured the rate of "
    "decline in filtration and compared it with the baseline values that had been recorded at entry. "
    "Patients who received the new treatment showed a slower decline than those in the control group, "
    "and the effect was consistent across age groups. These findings suggest that early treatment may "
    "delay the need for dialysis in this population, although further trials with longer follow-up are needed. "
    "The authors declare no competing interests."
)


def test_length():
    p = LengthParams(min_chars=10, max_chars=40, min_words=3, max_words=5)
    assert length_verdict("short", p) == "too_few_chars"
    assert length_verdict("x" * 41, p) == "too_many_chars"
    assert length_verdict("twoverylongwords here", p) == "too_few_words"
    assert length_verdict("a b c d e f g h", p) == "too_many_words"
    assert length_verdict("just four words here", p) is None


def test_language_keeps_english_and_names_other_languages():
    step = build_language(LanguageParams(languages=["en"], min_score=0.65), None)
    docs = [Document("en", PROSE), Document("ko", "환자는 사흘 동안 열과 기침을 호소하였으며 흉부 방사선 검사에서 폐렴 소견이 관찰되었다."),
            Document("de", "Der Patient klagte seit drei Tagen über Fieber und Husten und wurde stationär aufgenommen."),
            Document("mixed", "ok 123 456 xyz")]
    verdicts = {d.id: v for d, v in step.run(docs)}
    assert verdicts["en"] is None and docs[0].meta["language"] == "en" and docs[0].meta["language_score"] > 0.9
    assert verdicts["ko"] == "language_ko" and verdicts["de"] == "language_de"
    assert verdicts["mixed"] in ("low_language_score",) or verdicts["mixed"].startswith("language_")


@pytest.mark.parametrize("text,reason", [
    ("the cat and the dog " * 5, "gopher_too_few_words"),
    (" ".join(["a"] * 60) + " the and", "gopher_mean_word_length"),
    (" ".join(["supercalifragilisticexpialidocious"] * 60), "gopher_mean_word_length"),
    ("#tag " * 30 + PROSE, "gopher_symbol_ratio"),
    ("\n".join(f"- item number {i} of the list and more" for i in range(60)), "gopher_bullet_lines"),
    ("\n".join(f"this line trails off with words and more {i}..." for i in range(60)), "gopher_symbol_ratio"),
    ("\n".join(f"line {i} of several words that trail off \u2026" for i in range(10)) + "\n" + PROSE, "gopher_ellipsis_lines"),
    (" ".join(["1234", "5678", "the", "and"] * 20), "gopher_alpha_words"),
    (" ".join(f"word{i} lorem ipsum dolor" for i in range(30)), "gopher_stop_words"),
])
def test_gopher_quality_reasons(text, reason):
    assert quality_verdict(text, GopherQualityParams()) == reason


def test_gopher_quality_keeps_prose():
    assert quality_verdict(PROSE, GopherQualityParams()) is None


def test_ngram_shares_exact_values():
    words = ["a", "b", "a", "b", "a", "b", "c"]  # 7 word characters
    assert top_ngram_share(words, 2) == pytest.approx(2 * 3 / 7)  # "a b" three times
    assert dup_ngram_share(words, 3) == pytest.approx(6 / 7)  # a b a / b a b repeat; c is not covered
    assert dup_ngram_share(["x", "y", "z", "w"], 2) == 0.0


@pytest.mark.parametrize("text,reason", [
    ("\n\n".join(["Same paragraph here with some words."] * 3 + [PROSE]), "gopher_dup_para_fraction"),
    ("\n".join(["a repeated line"] * 5 + ["x", "y", "z", "w", "v"] + [PROSE]), "gopher_dup_line_fraction"),
    (PROSE + "\n\n" + PROSE, "gopher_dup_para_fraction"),
    ("\n\n".join([PROSE, "a.", "b.", "c.", "d.", "e.", PROSE]), "gopher_dup_para_chars"),
    (" ".join(["buy cheap pills"] * 40) + " " + PROSE, "gopher_top_2gram"),
])
def test_gopher_repetition_reasons(text, reason):
    assert repetition_verdict(text, GopherRepetitionParams()) == reason


def test_gopher_repetition_keeps_prose():
    assert repetition_verdict(PROSE, GopherRepetitionParams()) is None


def test_c4_rewrites_lines_and_counts_them():
    counts = Counter()
    text = ("Home\nPlease enable JavaScript to view this page properly.\nThis site uses cookies for analytics.\n"
            + PROSE.replace(". ", ".\n"))
    out, verdict = c4_rewrite(text, C4Params(), counts)
    assert verdict is None
    assert out.startswith("The study followed") and "JavaScript" not in out and "Home" not in out
    assert counts == {"c4_lines_removed_no_terminal_punctuation": 1, "c4_lines_removed_javascript": 1,
                      "c4_lines_removed_policy": 1}


@pytest.mark.parametrize("text,reason", [
    ("Lorem ipsum dolor sit amet. " + PROSE, "c4_lorem_ipsum"),
    ("function f() { return 1; } " + PROSE, "c4_curly_bracket"),
    ("One sentence only here. And a second one.", "c4_too_few_sentences"),
])
def test_c4_document_reasons(text, reason):
    assert c4_rewrite(text, C4Params(), Counter())[1] == reason


@pytest.mark.parametrize("text,reason", [
    ("\n".join(f"menu item {i}" for i in range(20)), "fineweb_few_punctuated_lines"),
    ("\n".join(["Short line."] * 3 + [f"Item {i}." for i in range(10)] + [PROSE]), "fineweb_many_short_lines"),
    ("\n".join(["A normal sentence ends here."] + ["Another sentence that is quite a bit longer than thirty chars."] * 3
               + [PROSE]), "fineweb_dup_line_chars"),
])
def test_fineweb_reasons(text, reason):
    assert fineweb_verdict(text, FineWebParams()) == reason


def test_fineweb_newline_ratio_and_prose():
    p = FineWebParams(max_short_lines=1.0, min_punctuated_lines=0.0)
    assert fineweb_verdict("\n".join(f"word{i}." for i in range(20)), p) == "fineweb_many_newlines"
    assert fineweb_verdict(PROSE, FineWebParams()) is None


GOOD_PY = '''"""A small module."""

import os


def join(a, b):
    # Join two path parts.
    return os.path.join(a, b)
'''


@pytest.mark.parametrize("text,reason", [
    (GOOD_PY + "x = '" + "a" * 1001 + "'\n", "code_long_line"),
    ("# c\n" + "\n".join("v = " + "1" * 150 for _ in range(5)), "code_mean_line_length"),
    ("# c\n" + "= + - * / ( ) [ ] { }\n" * 20, "code_alphanumeric"),
    ("# This file is auto-generated. Do not edit.\n" + GOOD_PY, "code_autogenerated"),
    ("# comment\ndef broken(:\n    pass\n", "python_syntax_error"),
    ("def f(x):\n    return x * 2\n" * 10, "code_few_comments"),
    ('"""\n' + "documentation line\n" * 50 + '"""\nx = 1\n', "code_mostly_comments"),
])
def test_code_reasons(text, reason):
    assert code_verdict(text, CodeParams()) == reason


def test_code_keeps_good_python_and_checks_chars_per_token():
    assert code_verdict(GOOD_PY, CodeParams()) is None
    one_token_per_char = code_verdict(GOOD_PY, CodeParams(), count_tokens=len)
    assert one_token_per_char == "code_chars_per_token"
    assert code_verdict(GOOD_PY, CodeParams(), count_tokens=lambda t: len(t) // 4) is None
    assert comment_chars(GOOD_PY, python=True) == len('"""A small module."""') + len("# Join two path parts.")
