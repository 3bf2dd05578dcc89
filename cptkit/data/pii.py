"""PII scrubbing: personal data replaced by typed placeholders, counted per type.

Each type is a pattern plus, where the pattern alone would catch too much, a check of the
match: credit cards must pass the Luhn checksum, IP addresses must be public (private, loopback,
link-local and documentation ranges are not anyone's data), US SSNs must not use the numbers
the SSA never issues, Korean resident registration numbers need a valid birth date. Types run
in a fixed order, most specific first, so a Korean RRN is never half-matched as a phone number.
The scrubber never drops a document; the manifest counts replacements per type.

Locales: the patterns above are the default ones (written for English text). A language with an
entry in `LOCALES` brings its own default types and its own patterns for some types: Korean
(cptkit/data/pii_ko.py) adds registration, business, passport and licence numbers and Korean
phone forms, and bounds emails and card numbers so that a particle written straight after them
("...@example.kr로") does not hide them. A step's `language` list (default: the source's) picks
the locales: with `types` left at its default, the types are every listed language's defaults
(a language without an entry: the English ones); each type then runs the patterns of every
listed language (one without its own pattern for the type: the default pattern), since a Korean
phone number in an English document of a mixed source is personal data all the same. Another
locale is one more module with RULES and DEFAULT_TYPES and one more entry in `LOCALES`.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from cptkit.data import pii_ko
from cptkit.data.documents import Document
from cptkit.data.lang import languages_of
from cptkit.data.steps import Step, per_document
from cptkit.schema import option


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(match: re.Match) -> bool:
    digits = re.sub(r"[ -]", "", match.group(0))
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


def _public_ip(match: re.Match) -> bool:
    try:
        return ipaddress.ip_address(match.group(0)).is_global
    except ValueError:
        return False


def _ssn(match: re.Match) -> bool:
    area, group, serial = match.group(1), match.group(2), match.group(3)
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _kr_rrn(match: re.Match) -> bool:
    month, day, gender = int(match.group(2)), int(match.group(3)), match.group(4)
    return 1 <= month <= 12 and 1 <= day <= 31 and gender in "12345678"


def _phone(match: re.Match) -> bool:
    digits = re.sub(r"\D", "", match.group(0))
    return 9 <= len(digits) <= 15


_NOT_DIGIT_BEFORE = r"(?<![\w.+-])"
_NOT_DIGIT_AFTER = r"(?![\w-])"

# (type, placeholder, pattern, check). Order matters: earlier types claim their text first.
PATTERNS: list[tuple[str, str, str, Callable[[re.Match], bool] | None]] = [
    ("private_key", "<SECRET>",
     r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----", None),
    ("secret", "<SECRET>",
     r"\b(?:AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36,}|xox[baprs]-[A-Za-z0-9-]{10,}|"
     r"sk-[A-Za-z0-9_-]{20,}|AIza[0-9A-Za-z_-]{35}|glpat-[A-Za-z0-9_-]{20,})\b", None),
    ("secret_assignment", "<SECRET>",
     r"(?i:\b(?:password|passwd|pwd|secret|secret_key|client_secret|api_?key|access_?key|auth_token|"
     r"access_token|token)\b[\"']?\s*[:=]\s*)([\"'])(?P<value>[^\"'\s]{8,})\1", None),
    ("email", "<EMAIL>", r"\b[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,24}\b", None),
    ("kr_rrn", "<KR_RRN>", _NOT_DIGIT_BEFORE + r"(\d{2})(\d{2})(\d{2})-([1-8])\d{6}" + _NOT_DIGIT_AFTER, _kr_rrn),
    ("us_ssn", "<US_SSN>", _NOT_DIGIT_BEFORE + r"(\d{3})-(\d{2})-(\d{4})" + _NOT_DIGIT_AFTER, _ssn),
    ("credit_card", "<CREDIT_CARD>", _NOT_DIGIT_BEFORE + r"\d(?:[ -]?\d){12,18}" + _NOT_DIGIT_AFTER, _card),
    ("patient_id", "<PATIENT_ID>",
     r"(?i:\b(?:MRN|medical record(?: number| no\.?)?|patient(?: id| no\.?| number)|chart(?: no\.?| number)|"
     r"hospital (?:no\.?|number))\s*[:#]?\s*)(?P<value>[A-Z]{0,3}-?\d{5,12})\b", None),
    ("ipv4", "<IP_ADDRESS>",
     r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?![\w.]*\d)", _public_ip),
    ("ipv6", "<IP_ADDRESS>",
     r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){2,7}(?::|(?::[0-9A-Fa-f]{1,4}){1,6}|[0-9A-Fa-f]{1,4})(?![\w:])", _public_ip),
    ("phone", "<PHONE>",
     r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){1,4}" + _NOT_DIGIT_AFTER, _phone),
]
# A pattern with a group named `value` keeps the rest of its match: "MRN: <PATIENT_ID>",
# 'password = "<SECRET>"', so the text still reads as what it was.
DEFAULT_TYPES = ["email", "phone", "ipv4", "ipv6", "credit_card", "us_ssn", "kr_rrn"]

Rule = tuple[str, str, str, Callable[[re.Match], bool] | None]


@dataclass(frozen=True)
class Locale:
    default_types: list[str]
    rules: dict[str, Rule]  # type -> this language's pattern for it


def _locale(module) -> Locale:
    checks = {"luhn": _card}
    rules = {t: (t, ph, pat, checks.get(check, check)) for t, ph, pat, check in module.RULES}
    return Locale(list(module.DEFAULT_TYPES), rules)


LOCALES: dict[str, Locale] = {"ko": _locale(pii_ko)}
_DEFAULT = {name: (name, ph, pat, check) for name, ph, pat, check in PATTERNS}
# Every type, in the order they run: the default patterns' order, with the types only a locale
# has placed before the first generic number rule (us_ssn), so they claim their digits first.
_LOCAL_ONLY = [t for loc in LOCALES.values() for t in loc.rules if t not in _DEFAULT]
# A type only a locale defines still runs, with that locale's pattern, when a source of another
# language names it in `types`.
_DEFAULT.update({t: rule for loc in LOCALES.values() for t, rule in loc.rules.items() if t in _LOCAL_ONLY})
_AT = [name for name, *_ in PATTERNS].index("us_ssn")
_NAMES = [name for name, *_ in PATTERNS]
TYPES = _NAMES[:_AT] + _LOCAL_ONLY + _NAMES[_AT:]


@dataclass
class PIIParams:
    types: list[str] = option(
        default_factory=lambda: list(DEFAULT_TYPES),
        help="What to replace: email, phone, ipv4, ipv6, credit_card, us_ssn, kr_rrn, kr_brn, kr_passport, "
        "kr_driver_licence, patient_id, secret (API keys and tokens), secret_assignment (password = '...'), "
        "private_key. Default: the languages' own (en: email, phone, ipv4, ipv6, credit_card, us_ssn, kr_rrn; "
        "ko: no us_ssn, with kr_brn, kr_passport, kr_driver_licence).",
    )
    add_types: list[str] = option(
        default_factory=list, help="Types to run besides `types`, e.g. [patient_id] on top of the languages' defaults."
    )
    extra: dict[str, str] = option(
        default_factory=dict,
        help="More types as NAME: regular expression; each match becomes <NAME> (upper case).",
    )
    language: list[str] | None = option(
        None, help="ISO 639-1 codes whose patterns apply (see the locales); default: the source's data.<role>.language."
    )


def check_params(params: PIIParams, path: str) -> list[str]:
    problems = [f"{path}.{key}: unknown type {t!r} (known: {', '.join(TYPES)})"
                for key in ("types", "add_types") for t in getattr(params, key) if t not in TYPES]
    for name, pattern in params.extra.items():
        try:
            re.compile(pattern)
        except re.error as exc:
            problems.append(f"{path}.extra.{name}: not a valid regular expression ({exc})")
    return problems


def resolved_types(params: PIIParams) -> list[str]:
    """The types that run, in running order: `types` as given, or every language's defaults when
    left at the default (a list equal to the default counts as left), plus `add_types`."""
    if params.types != DEFAULT_TYPES:
        wanted = set(params.types)
    else:
        wanted = {t for lang in languages_of(params) for t in _locale_of(lang).default_types}
    wanted |= set(params.add_types)
    return [t for t in TYPES if t in wanted]


def _locale_of(language: str) -> Locale:
    return LOCALES.get(language, Locale(DEFAULT_TYPES, {}))


def rules_for(params: PIIParams) -> list[Rule]:
    """(type, placeholder, pattern, check) in running order, each type's patterns for every language."""
    types = set(resolved_types(params))
    rules: list[Rule] = []
    for name in TYPES:
        if name not in types:
            continue
        for lang in languages_of(params):
            rule = _locale_of(lang).rules.get(name) or _DEFAULT.get(name)
            if rule is not None and rule not in rules:
                rules.append(rule)
    return rules


class Scrubber:
    """Replace every enabled PII type in a text; count replacements per type."""

    def __init__(self, params: PIIParams):
        self.rules = [(name, ph, re.compile(p), check) for name, ph, p, check in rules_for(params)]
        self.rules += [(name, f"<{name.upper()}>", re.compile(p), None) for name, p in params.extra.items()]

    def scrub(self, text: str, counts: Counter) -> str:
        for name, placeholder, pattern, check in self.rules:
            text = pattern.sub(self._replacer(name, placeholder, check, counts), text)
        return text

    @staticmethod
    def _replacer(name: str, placeholder: str, check, counts: Counter):
        def replace(match: re.Match) -> str:
            if check is not None and not check(match):
                return match.group(0)
            counts[name] += 1
            if "value" in match.re.groupindex:
                whole, at = match.group(0), match.start(0)
                return whole[: match.start("value") - at] + placeholder + whole[match.end("value") - at :]
            return placeholder

        return replace


def build(params: PIIParams, ctx: object) -> Step:
    scrubber = Scrubber(params)
    step = Step("pii", lambda batch: ())

    def check(doc: Document) -> str | None:
        doc.text = scrubber.scrub(doc.text, step.counts)
        return None

    step.run = per_document("pii", check).run
    return step
