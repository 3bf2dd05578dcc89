"""Words by script, stop words per language, per-language thresholds, a document's language."""

import sys

import pytest

from cptkit.data.documents import Document
from cptkit.data.filters.gopher import GopherQualityParams, GopherRepetitionParams
from cptkit.data.filters.language import LanguageParams
from cptkit.data.filters.web import C4Params, FineWebParams
from cptkit.data.lang import (
    check_languages,
    document_language,
    fill_source_language,
    for_language,
    missing_segmenters,
    rules_off,
    segment,
    segmenter_name,
    stop_words,
    words,
)
from cptkit.data.pipelines import StepSpec
from cptkit.errors import UserError


def test_space_delimited_languages_split_on_whitespace_korean_into_eojeol():
    text = "The patient  was\nadmitted, then discharged."
    assert words(text, "en") == text.split() == ["The", "patient", "was", "admitted,", "then", "discharged."]
    assert words("환자는 사흘 동안 열이 났다.", "ko") == ["환자는", "사흘", "동안", "열이", "났다."]
    assert words("Der Patient wurde aufgenommen.", "de") == ["Der", "Patient", "wurde", "aufgenommen."]
    assert segmenter_name("ko") == "whitespace"


def test_chinese_japanese_thai_are_segmented_into_words():
    assert words("患者三天前出现发热和咳嗽，胸部检查显示肺炎。 2020年", "zh") == [
        "患者", "三天", "前", "出现", "发热", "和", "咳嗽", "，", "胸部", "检查", "显示", "肺炎", "。", "2020", "年"]
    assert words("患者は三日前から発熱と咳を訴えた。", "ja") == [
        "患者", "は", "三", "日", "前", "から", "発熱", "と", "咳", "を", "訴え", "た", "。"]
    assert words("ผู้ป่วยมีไข้และไอมาสามวัน", "th") == ["ผู้ป่วย", "มีไข้", "และ", "ไอ", "มา", "สาม", "วัน"]
    # A whitespace count would see each of these sentences as one word.
    sentence = "患者三天前出现发热和咳嗽"
    assert len(words(sentence, "en")) == 1 and len(words(sentence, "zh")) == 7
    assert "jieba" in segmenter_name("zh") and "MeCab" in segmenter_name("ja")


def test_a_missing_segmenter_names_the_extra_to_install(monkeypatch):
    segment._segmenter.cache_clear()
    segment._segmented.cache_clear()
    monkeypatch.setitem(sys.modules, "pythainlp", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "pythainlp.tokenize", None)
    with pytest.raises(UserError, match=r"pip install 'cptkit\[th\]'"):
        words("ผู้ป่วยมีไข้", "th")
    problems = missing_segmenters(["ko", "th"], "data.domain.language")
    assert len(problems) == 1 and problems[0].startswith("data.domain.language: word segmentation for language 'th'")
    segment._segmenter.cache_clear()


def test_stop_words_english_is_gophers_eight_others_from_stopwords_iso():
    assert stop_words("en") == {"the", "be", "to", "of", "and", "that", "have", "with"}
    ko = stop_words("ko")
    assert {"및", "등", "그리고", "있다", "또한"} <= ko
    # Punctuation, digits and multi-word phrases of the Korean list cannot be one eojeol: left out.
    assert not {".", "1", "결론을 낼 수 있다"} & ko and all(any(c.isalpha() for c in w) for w in ko)
    assert {"的", "是", "在"} <= stop_words("zh") and "。" not in stop_words("zh")
    assert {"の", "に", "は"} <= stop_words("ja")
    assert stop_words("ka") is None  # Georgian: stopwords-iso has no list


def test_for_language_takes_published_thresholds_unless_set_explicitly():
    ko = for_language("gopher_quality", GopherQualityParams(), "ko")
    assert (ko.min_mean_word_length, ko.max_mean_word_length, ko.min_alpha_words) == (1.0, 6.0, 0.791)
    assert ko.min_words == 50 and ko.min_stop_words == 2  # not language-specific: as published
    explicit = for_language("gopher_quality", GopherQualityParams(min_mean_word_length=2.5), "ko")
    assert explicit.min_mean_word_length == 2.5 and explicit.max_mean_word_length == 6.0
    rep = for_language("gopher_repetition", GopherRepetitionParams(), "zh")
    assert rep.max_dup_line_fraction == 0.287 and rep.top_ngrams == {"2": 0.256, "3": 0.201, "4": 0.171}
    assert for_language("fineweb", FineWebParams(), "ja").max_newlines_per_word == 0.13
    # Korean keeps FineWeb's English newline ratio: FineWeb-2's was counted over morphemes.
    assert for_language("fineweb", FineWebParams(), "ko").max_newlines_per_word == 0.3
    en = GopherQualityParams()
    assert for_language("gopher_quality", en, "en") is en  # English: the published defaults, untouched


def test_rules_off_lists_missing_stop_words_and_thai_punctuation_rules():
    specs = [StepSpec("gopher_quality", GopherQualityParams(language=["ko", "ka"])),
             StepSpec("c4", C4Params()), StepSpec("fineweb", FineWebParams())]
    off = {(r.step, r.language, r.rule) for r in rules_off(specs, ["th"])}
    assert off == {("gopher_quality", "ka", "min_stop_words"), ("c4", "th", "require_terminal_punctuation"),
                   ("c4", "th", "min_sentences")}
    # A sentence count set explicitly is on again. (require_terminal_punctuation: true cannot be told
    # from the default it equals, so it stays off for Thai: the documented limit of for_language.)
    assert [r.rule for r in rules_off([StepSpec("c4", C4Params(min_sentences=3))], ["th"])] == [
        "require_terminal_punctuation"]
    assert rules_off(specs, None) == [r for r in rules_off(specs, None) if r.language == "ka"]
    assert rules_off(specs, None)[0].to_json()["reason"].startswith("no stop-word list")


def test_document_language_in_a_mixed_source():
    ko, en = "환자는 사흘 동안 열과 기침을 호소하였으며 폐렴 소견이 관찰되었다.", "The patient had a fever and a cough for three days."
    assert document_language(Document("a", ko), ["ko", "en"]) == "ko"
    assert document_language(Document("b", en), ["ko", "en"]) == "en"
    # Detected as a language outside the list: the first of the list.
    de = Document("c", "Der Patient klagte seit drei Tagen über Fieber und Husten.")
    assert document_language(de, ["ko", "en"]) == "ko"
    # The language step's verdict, when it ran first, is used as it is.
    assert document_language(Document("d", ko, meta={"language": "en"}), ["ko", "en"]) == "en"
    assert document_language(Document("e", en), ["ja"]) == "ja"  # one language: no detection


def test_fill_source_language_and_code_checks():
    assert fill_source_language(GopherQualityParams(), ["ko"]).language == ["ko"]
    assert fill_source_language(GopherQualityParams(language=["en"]), ["ko"]).language == ["en"]
    assert fill_source_language(LanguageParams(), ["ko", "en"]).languages == ["ko", "en"]
    assert check_languages("ko", "data.domain.language") == []
    assert check_languages(["ko", "KR"], "data.domain.language") == [
        "data.domain.language: 'KR' is not an ISO 639-1 code (two lower-case letters such as en, ko, zh)"]
    assert check_languages([], "p") == ["p: name at least one ISO 639-1 language code"]
