"""Length limits in characters and in words.

Words are counted by `cptkit.data.lang.words` for the document's language: whitespace-separated
for English, Korean (eojeol) and other space-delimited scripts, segmenter words for Chinese,
Japanese and Thai, where a whitespace count would see a whole paragraph as one word.
"""

from __future__ import annotations

from dataclasses import dataclass

from cptkit.data.lang import PerLanguage, words
from cptkit.data.steps import Step, per_document
from cptkit.schema import option

LANGUAGE_HELP = "ISO 639-1 codes of the documents' languages; default: the source's data.<role>.language."


@dataclass
class LengthParams:
    min_chars: int = option(0, ge=0, help="Drop documents with fewer characters (reason too_few_chars).")
    max_chars: int | None = option(None, ge=0, help="Drop documents with more characters (too_many_chars); null: no limit.")
    min_words: int = option(0, ge=0, help="Drop documents with fewer words (too_few_words).")
    max_words: int | None = option(None, ge=0, help="Drop documents with more words (too_many_words); null: no limit.")
    language: list[str] | None = option(None, help=LANGUAGE_HELP)


def check_params(params: LengthParams, path: str) -> list[str]:
    p = []
    if params.max_chars is not None and params.max_chars < params.min_chars:
        p.append(f"{path}.max_chars: {params.max_chars} is below min_chars {params.min_chars}")
    if params.max_words is not None and params.max_words < params.min_words:
        p.append(f"{path}.max_words: {params.max_words} is below min_words {params.min_words}")
    return p


def length_verdict(text: str, params: LengthParams, language: str = "en") -> str | None:
    n = len(text)
    if n < params.min_chars:
        return "too_few_chars"
    if params.max_chars is not None and n > params.max_chars:
        return "too_many_chars"
    if params.min_words or params.max_words is not None:
        count = len(words(text, language))
        if count < params.min_words:
            return "too_few_words"
        if params.max_words is not None and count > params.max_words:
            return "too_many_words"
    return None


def build(params: LengthParams, ctx: object) -> Step:
    per = PerLanguage("length", params)

    def check(doc) -> str | None:
        lang, p = per.pick(doc)
        return length_verdict(doc.text, p, lang)

    return per_document("length", check)
