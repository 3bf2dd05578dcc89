"""Length limits in characters and in whitespace-separated words."""

from __future__ import annotations

from dataclasses import dataclass

from cptkit.data.steps import Step, per_document
from cptkit.schema import option


@dataclass
class LengthParams:
    min_chars: int = option(0, help="Drop documents with fewer characters (reason too_few_chars).")
    max_chars: int | None = option(None, help="Drop documents with more characters (too_many_chars); null: no limit.")
    min_words: int = option(0, help="Drop documents with fewer words (too_few_words).")
    max_words: int | None = option(None, help="Drop documents with more words (too_many_words); null: no limit.")


def check_params(params: LengthParams, path: str) -> list[str]:
    p = []
    if params.max_chars is not None and params.max_chars < params.min_chars:
        p.append(f"{path}.max_chars: {params.max_chars} is below min_chars {params.min_chars}")
    if params.max_words is not None and params.max_words < params.min_words:
        p.append(f"{path}.max_words: {params.max_words} is below min_words {params.min_words}")
    return p


def length_verdict(text: str, params: LengthParams) -> str | None:
    n = len(text)
    if n < params.min_chars:
        return "too_few_chars"
    if params.max_chars is not None and n > params.max_chars:
        return "too_many_chars"
    if params.min_words or params.max_words is not None:
        words = len(text.split())
        if words < params.min_words:
            return "too_few_words"
        if params.max_words is not None and words > params.max_words:
            return "too_many_words"
    return None


def build(params: LengthParams, ctx: object) -> Step:
    return per_document("length", lambda doc: length_verdict(doc.text, params))


