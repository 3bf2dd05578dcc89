"""Korean personal data: the `ko` entry of the PII scrubber's locales (see cptkit/data/pii.py).

Types and what each accepts:

| type | placeholder | form | checked |
| --- | --- | --- | --- |
| kr_rrn | `<KR_RRN>` | resident and alien registration numbers YYMMDD-GNNNNNN, with or without the hyphen, and masked ones (YYMMDD-G******) | a real birth date for the century its gender digit G gives (1-4 citizens, 5-8 foreigners); no checksum, since numbers issued from October 2020 have none. With 주민등록번호 / 외국인등록번호 just before it, any 13 digits |
| kr_brn | `<KR_BRN>` | business registration numbers XXX-XX-XXXXX | the check digit (weights 1,3,7,1,3,7,1,3,5), or 사업자 just before it |
| kr_passport | `<KR_PASSPORT>` | passports: M12345678 (a type letter M S R O D G and 8 digits) and the 2021 form M123A4567 | the form |
| kr_driver_licence | `<KR_DRIVER_LICENCE>` | driver's licences 11-12-345678-90 (region code 11-28), the older 서울 12-345678-90, and 12 digits without hyphens | the region; the hyphenless form only after 면허 |
| phone | `<PHONE>` | mobile 010-1234-5678 (010, 011, 016-019), Seoul 02-123(4)-5678, areas 031-064, 070, 080, +82 forms (+82 10-..., +82-2-..., +82 (0)10 ...), (02) 123-4567, separators - . or space | with no separator at all, only mobile numbers, unless 전화 / 연락처 / 휴대폰 / 팩스 / tel comes just before |

Korean writes particles straight after a number ("010-1234-5678로", "hong@example.kr으로"), so
every pattern here, and the locale's versions of email and credit_card, bounds a match by
ASCII letters and digits only, never by \\w (which includes Hangul). "Just before" is within
the 20 characters before the match. Representative numbers (1588-xxxx) are businesses', not
personal data, and stay.
"""

from __future__ import annotations

import calendar
import re

CONTEXT_WINDOW = 20
_B = r"(?<![0-9A-Za-z+-])"  # no ASCII letter, digit, plus or hyphen right before
_A = r"(?![0-9A-Za-z-])"  # nor a letter, digit or hyphen right after

RRN_CONTEXT = ("주민등록번호", "주민번호", "외국인등록번호", "등록번호", "RRN")
PHONE_CONTEXT = ("전화", "연락처", "휴대폰", "핸드폰", "팩스", "tel", "fax", "☎")
BRN_CONTEXT = ("사업자",)
LICENCE_CONTEXT = ("면허",)
REGIONS = "서울|부산|경기|강원|충북|충남|전북|전남|경북|경남|제주|대구|인천|광주|대전|울산"


def context_before(match: re.Match, words: tuple[str, ...]) -> bool:
    """A context word within CONTEXT_WINDOW characters before the match (case-blind)."""
    start = match.start()
    before = match.string[max(0, start - CONTEXT_WINDOW): start].lower()
    return any(w.lower() in before for w in words)


def valid_birth_date(yy: str, mm: str, dd: str, gender: str) -> bool:
    """YYMMDD is a real date in the century the gender digit gives (1, 2, 5, 6: 1900s; 3, 4, 7, 8: 2000s)."""
    if gender not in "12345678":
        return False
    year = (1900 if gender in "1256" else 2000) + int(yy)
    month, day = int(mm), int(dd)
    return 1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]


def _rrn(match: re.Match) -> bool:
    if valid_birth_date(*match.group("yy", "mm", "dd", "g")):
        return True
    return context_before(match, RRN_CONTEXT)


def brn_checksum_ok(digits: str) -> bool:
    weights = (1, 3, 7, 1, 3, 7, 1, 3, 5)
    total = sum(int(d) * w for d, w in zip(digits, weights)) + int(digits[8]) * 5 // 10
    return (10 - total % 10) % 10 == int(digits[9])


def _brn(match: re.Match) -> bool:
    return brn_checksum_ok(re.sub(r"\D", "", match.group(0))) or context_before(match, BRN_CONTEXT)


def _licence(match: re.Match) -> bool:
    return "-" in match.group(0) or context_before(match, LICENCE_CONTEXT)


def _phone(match: re.Match) -> bool:
    text = match.group(0)
    if text.startswith("+") or re.search(r"[ .()-]", text):
        return True
    # Ten or eleven bare digits starting with 0 may be any number; a mobile number is recognisable.
    return text.startswith("01") or context_before(match, PHONE_CONTEXT)


_AREA = r"(?:1[016789]|2|[3-6][1-5]|70|80)"
_SEP = r"[ .-]?"

# (type, placeholder, pattern, check): the ko locale's rules, by type.
RULES = [
    ("email", "<EMAIL>", r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,24}(?![A-Za-z0-9-])",
     None),
    ("kr_rrn", "<KR_RRN>",
     _B + r"(?P<yy>\d{2})(?P<mm>\d{2})(?P<dd>\d{2})(?: ?- ?)?(?P<g>\d)(?:\d{6}|\*{6})" + _A, _rrn),
    ("kr_driver_licence", "<KR_DRIVER_LICENCE>",
     r"(?:(?:" + REGIONS + r") ?|" + _B + r"(?:1[1-9]|2[0-8])-)\d{2}-\d{6}-\d{2}" + _A
     + r"|" + _B + r"(?:1[1-9]|2[0-8])\d{10}" + _A, _licence),
    ("kr_brn", "<KR_BRN>", _B + r"\d{3}-\d{2}-\d{5}" + _A, _brn),
    ("kr_passport", "<KR_PASSPORT>", r"(?<![0-9A-Za-z])[MSRODG](?:\d{8}|\d{3}[A-Z]\d{4})" + _A, None),
    ("credit_card", "<CREDIT_CARD>", r"(?<![0-9A-Za-z.+-])\d(?:[ -]?\d){12,18}" + _A, "luhn"),
    ("phone", "<PHONE>",
     _B + r"(?:\+82" + _SEP + r"(?:\(0\)" + _SEP + r")?" + _AREA + r"|0" + _AREA + r"|\(0" + _AREA + r"\) ?)"
     + _SEP + r"\d{3,4}" + _SEP + r"\d{4}" + _A, _phone),
]
DEFAULT_TYPES = ["email", "phone", "ipv4", "ipv6", "credit_card", "kr_rrn", "kr_brn", "kr_passport",
                 "kr_driver_licence"]
