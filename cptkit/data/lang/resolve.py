"""Which language a document is treated as, and a step's parameters for that language.

A source declares its language (`data.<role>.language`, ISO 639-1, default `en`, or a list for
a mixed source). Each language-dependent step has a `language` parameter that the config fills
with the source's list when the user leaves it out; until it is filled (None), steps treat the
source as English, which is what they did before languages existed.

For a source with one language every document is that language. For a mixed source
(`language: [ko, en]`) a document's language is its lid.176 top language when that is in the
list, else the first language of the list: the `language` step's verdict when it ran earlier in
the pipeline (its `doc.meta["language"]`), otherwise the same classifier run here on the
document's first 1,000 characters.

Parameters: `for_language` starts from the step's parameters and takes the language's
published thresholds (`thresholds.TABLE`) for every parameter still at its default. A parameter
the user set explicitly wins; one set to exactly its English default cannot be told apart from
an unset one and takes the language's value.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cptkit.data.documents import Document
from cptkit.data.lang.segment import SEGMENTED, _segmenter
from cptkit.data.lang.stopwords import stop_words
from cptkit.data.lang.thresholds import overrides
from cptkit.schema import option

LID_SAMPLE_CHARS = 1000
_CODE = re.compile(r"^[a-z]{2}$")


def languages_of(params: Any) -> list[str]:
    """The step's languages: its `language` list, or English while the config has not filled it."""
    return list(getattr(params, "language", None) or ["en"])


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def for_language(step: str, params: Any, language: str) -> Any:
    """`params` with `language`'s thresholds for `step` wherever the user kept the default."""
    table = overrides(step, language)
    if not table:
        return params
    defaults = {f.name: _default(f) for f in dataclasses.fields(params)}
    changes = {k: v.value for k, v in table.items() if getattr(params, k) == defaults[k]}
    return dataclasses.replace(params, **changes) if changes else params


class PerLanguage:
    """A step's parameters resolved once per language of its source, picked per document."""

    def __init__(self, step: str, params: Any):
        self.languages = languages_of(params)
        self.params = {lang: for_language(step, params, lang) for lang in self.languages}
        for lang in self.languages:  # a missing segmenter fails when the step is built, not mid-part
            if lang in SEGMENTED:
                _segmenter(lang)

    def pick(self, doc: Document) -> tuple[str, Any]:
        lang = document_language(doc, self.languages)
        return lang, self.params[lang]


_lid: Any = None


def document_language(doc: Document, languages: list[str]) -> str:
    """The language `doc` is treated as (see the module docstring)."""
    if len(languages) == 1:
        return languages[0]
    detected = doc.meta.get("language")
    if detected is None:
        global _lid
        if _lid is None:
            from cptkit.data.filters.language import LanguageId

            _lid = LanguageId(LID_SAMPLE_CHARS)
        detected, _ = _lid.top(doc.text)
    return detected if detected in languages else languages[0]


@dataclass(frozen=True)
class RuleOff:
    step: str
    language: str
    rule: str  # the parameter whose rule is off
    reason: str

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def rules_off(steps: Iterable[Any], languages: list[str] | None = None) -> list[RuleOff]:
    """Per step and language, the rules that are off for lack of data (for the manifest).

    `steps` are objects with `name` and `params` (the pipeline's StepSpecs); a step's languages
    are its own `language` list, else `languages` (the source's), else English.
    """
    out = []
    for spec in steps:
        own = getattr(spec.params, "language", None)
        for lang in own or languages or ["en"]:
            out += _off(spec.name, spec.params, lang)
    return out


def _off(step: str, params: Any, language: str) -> list[RuleOff]:
    out = []
    if step == "gopher_quality" and params.min_stop_words > 0 and stop_words(language) is None:
        out.append(RuleOff(step, language, "min_stop_words", f"no stop-word list for {language!r} in stopwords-iso"))
    resolved = for_language(step, params, language)
    for name, value in overrides(step, language).items():
        if value.off and getattr(resolved, name) == value.value:
            out.append(RuleOff(step, language, name, value.source))
    return out


@dataclass
class SourceLanguage:
    """The field a source needs (`data.<role>.language`); the config moves it into SourceConfig."""

    language: list[str] | str = option(
        "en", help="ISO 639-1 code of the source's language (en, ko, zh, ja, ...), or a list for a mixed "
        "source; every language-dependent curation step (language id, word rules, stop words, PII) reads it."
    )


def source_languages(value: list[str] | str) -> list[str]:
    """The normalised list of a source's `language` value."""
    return [value] if isinstance(value, str) else list(value)


def check_languages(value: list[str] | str, path: str) -> list[str]:
    """Problems with a `language` value: codes must be two lower-case letters, at least one."""
    codes = source_languages(value)
    if not codes:
        return [f"{path}: name at least one ISO 639-1 language code"]
    bad = [c for c in codes if not _CODE.match(c)]
    return [f"{path}: {c!r} is not an ISO 639-1 code (two lower-case letters such as en, ko, zh)" for c in bad]


def fill_source_language(params: Any, languages: list[str]) -> Any:
    """What the config normalisation does for every step: None language fields take the source's.

    A step with a `language` field gets `languages` when it is None; the `language` (lid) step's
    `languages` field likewise. Other steps are returned unchanged.
    """
    changes = {}
    for name in ("language", "languages"):
        if hasattr(params, name) and getattr(params, name) is None:
            changes[name] = list(languages)
    return dataclasses.replace(params, **changes) if changes else params
