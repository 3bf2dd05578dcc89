"""Korean personal data: each type replaced and counted, with or without context words, particles
written straight after it, ordinary numbers untouched, locales chosen by the source's languages."""

from collections import Counter

import pytest

from cptkit.data.pii import DEFAULT_TYPES, PIIParams, Scrubber, resolved_types
from cptkit.data.pii_ko import brn_checksum_ok, valid_birth_date
from tests.corpora import KOREAN_PII, ORDINARY_NUMBERS, korean_pii_document


def scrub(text, language=("ko",), **params):
    counts = Counter()
    return Scrubber(PIIParams(language=list(language), **params)).scrub(text, counts), dict(counts)


@pytest.mark.parametrize("text,expected,kind", [
    ("주민등록번호 900101-1234567입니다.", "주민등록번호 <KR_RRN>입니다.", "kr_rrn"),
    ("번호는 9001011234567이다", "번호는 <KR_RRN>이다", "kr_rrn"),  # no hyphen: the date decides
    ("외국인 950615-5123456 씨", "외국인 <KR_RRN> 씨", "kr_rrn"),  # alien registration (G = 5)
    ("마스킹 900101-1****** 표기", "마스킹 <KR_RRN> 표기", "kr_rrn"),
    ("휴대폰 010-1234-5678로 연락", "휴대폰 <PHONE>로 연락", "phone"),
    ("번호 01012345678", "번호 <PHONE>", "phone"),
    ("서울 02-123-4567, 경기 031.987.6543", "서울 <PHONE>, 경기 <PHONE>", "phone"),
    ("해외 +82 10 9876 5432 또는 +82-2-3456-7890", "해외 <PHONE> 또는 <PHONE>", "phone"),
    ("대표 (02) 555-1234 안내", "대표 <PHONE> 안내", "phone"),
    ("업체 220-81-62517에서", "업체 <KR_BRN>에서", "kr_brn"),
    ("여권 M12345678, 신여권 M123A4567", "여권 <KR_PASSPORT>, 신여권 <KR_PASSPORT>", "kr_passport"),
    ("면허 11-17-123456-01, 구 서울 17-654321-02", "면허 <KR_DRIVER_LICENCE>, 구 <KR_DRIVER_LICENCE>",
     "kr_driver_licence"),
    ("메일 hong@hospital.co.kr로 회신", "메일 <EMAIL>로 회신", "email"),
    ("카드 4111-1111-1111-1111로 결제", "카드 <CREDIT_CARD>로 결제", "credit_card"),
])
def test_each_korean_type_is_replaced_and_counted(text, expected, kind):
    out, counts = scrub(text)
    assert out == expected and set(counts) == {kind}


@pytest.mark.parametrize("weak,strong", [
    ("코드 900230-1234567 참조", "주민등록번호: 900230-1234567"),  # 30 February: no birth date
    ("번호 220-81-62518 참조", "사업자등록번호 220-81-62518"),  # wrong check digit
    ("번호 0212345678 참조", "전화 0212345678"),  # ten bare digits could be anything
    ("번호 111712345601 참조", "운전면허 111712345601"),  # a licence without hyphens
])
def test_context_words_strengthen_a_weak_match(weak, strong):
    assert scrub(weak) == (weak, {})
    out, counts = scrub(strong)
    assert "<" in out and sum(counts.values()) == 1


def test_ordinary_numbers_stay():
    text = " ".join(ORDINARY_NUMBERS) + " 제12345호 3.5 mg 2020.03.15 14:30 연 1,200만원 10-20%"
    assert scrub(text) == (text, {})


def test_the_pii_document_loses_every_identifier_and_keeps_its_numbers():
    doc = korean_pii_document()
    out, counts = scrub(doc["text"])
    assert not [p for values in KOREAN_PII.values() for p in values if p in out]
    assert all(n in out for n in ORDINARY_NUMBERS)
    assert counts == {k: len(v) for k, v in KOREAN_PII.items()}


def test_checks():
    assert valid_birth_date("00", "02", "29", "3") and not valid_birth_date("01", "02", "29", "3")  # leap years
    assert not valid_birth_date("90", "13", "01", "1") and not valid_birth_date("90", "01", "01", "9")
    assert brn_checksum_ok("2208162517") and not brn_checksum_ok("2208162518")


def test_locales_follow_the_languages():
    # English (and an unfilled language) keeps the defaults as they were, in running order.
    assert resolved_types(PIIParams()) == resolved_types(PIIParams(language=["en"])) == [
        "email", "kr_rrn", "us_ssn", "credit_card", "ipv4", "ipv6", "phone"]
    assert set(resolved_types(PIIParams(language=["de"]))) == set(DEFAULT_TYPES)  # no locale: English's
    assert "us_ssn" not in resolved_types(PIIParams(language=["ko"]))
    assert {"kr_brn", "kr_passport", "us_ssn"} <= set(resolved_types(PIIParams(language=["ko", "en"])))
    text = "call 010-1234-5678로, ssn 123-45-6789."
    # English alone: the default patterns (a phone followed by Hangul is not bounded there).
    assert scrub(text, language=["en"]) == ("call 010-1234-5678로, ssn <US_SSN>.", {"us_ssn": 1})
    assert scrub(text, language=["ko", "en"]) == ("call <PHONE>로, ssn <US_SSN>.", {"phone": 1, "us_ssn": 1})
    # add_types extends the languages' defaults (the medical recipe's patient_id).
    assert resolved_types(PIIParams(language=["ko"], add_types=["patient_id"])) == [
        "email", "kr_rrn", "kr_driver_licence", "kr_brn", "kr_passport", "credit_card", "patient_id", "ipv4",
        "ipv6", "phone"]
    # A type only Korean defines runs for any language that names it.
    assert scrub("biz 220-81-62517", language=["en"], types=["kr_brn"]) == ("biz <KR_BRN>", {"kr_brn": 1})
