from collections import Counter

import pytest

from cptkit.data.pii import TYPES, PIIParams, Scrubber, check_params, luhn_ok


def scrub(text, types=TYPES, extra=None):
    counts = Counter()
    return Scrubber(PIIParams(types=list(types), extra=extra or {})).scrub(text, counts), dict(counts)


@pytest.mark.parametrize("text,expected,kind", [
    ("mail john.doe+x@mail.example.co.uk now", "mail <EMAIL> now", "email"),
    ("call +82 10-1234-5678.", "call <PHONE>.", "phone"),
    ("call (415) 555-0132 today", "call <PHONE> today", "phone"),
    ("call +44 20 7946 0958", "call <PHONE>", "phone"),
    ("card 4111-1111-1111-1111 ok", "card <CREDIT_CARD> ok", "credit_card"),
    ("ssn 123-45-6789.", "ssn <US_SSN>.", "us_ssn"),
    ("rrn 900101-1234567 here", "rrn <KR_RRN> here", "kr_rrn"),
    ("server 8.8.8.8 up", "server <IP_ADDRESS> up", "ipv4"),
    ("v6 2a00:1450:4001:82b::200e up", "v6 <IP_ADDRESS> up", "ipv6"),
    ("MRN: 12345678 admitted", "MRN: <PATIENT_ID> admitted", "patient_id"),
    ("key AKIAABCDEFGHIJKLMNOP", "key <SECRET>", "secret"),
    ('password = "hunter22secret"', 'password = "<SECRET>"', "secret_assignment"),
])
def test_each_type_is_replaced_and_counted(text, expected, kind):
    assert scrub(text) == (expected, {kind: 1})


@pytest.mark.parametrize("text", [
    "card 4111 1111 1111 1112",  # fails the Luhn check
    "private 192.168.1.1 and 10.0.0.7 and 127.0.0.1",  # not public
    "doc range 2001:db8::1 and loopback ::1",
    "std::vector<int> a; x::y",  # C++ scopes are not IPv6
    "date 2020-01-01, p = 0.05, version 1.2.3, 12.5 mg, 10:30:45",
    "rrn-like 901399-1234567",  # month 13 is no birth date
])
def test_lookalikes_are_left_alone(text):
    assert scrub(text) == (text, {})


def test_luhn():
    assert luhn_ok("4111111111111111") and luhn_ok("79927398713") and not luhn_ok("79927398710")


def test_only_configured_types_and_extra_patterns():
    text = "a@b.org, 8.8.8.8, ticket TK-12345"
    assert scrub(text, types=["ipv4"], extra={"ticket": r"TK-\d+"}) == (
        "a@b.org, <IP_ADDRESS>, ticket <TICKET>", {"ipv4": 1, "ticket": 1})
    problems = check_params(PIIParams(types=["email", "fax"], extra={"bad": "("}), "p")
    assert len(problems) == 2 and "unknown type 'fax'" in problems[0] and "p.extra.bad" in problems[1]
