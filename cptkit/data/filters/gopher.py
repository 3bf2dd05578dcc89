"""Gopher quality and repetition rules (Rae et al. 2021, appendix A), thresholds as published.

Quality: word count, mean word length, symbol-to-word ratio, bullet and ellipsis lines, share
of words with a letter, and the presence of common English stop words. Repetition: share of
duplicated lines and paragraphs (by count and by characters), share of characters taken by the
most frequent 2-, 3- and 4-gram, and by duplicated 5- to 10-grams. Every rule has its own drop
reason, so the manifest says which one removed a document.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from cptkit.data.signatures import mix64
from cptkit.data.steps import Step, per_document
from cptkit.schema import option

STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
BULLETS = ("\u2022", "\u2023", "\u25e6", "\u2043", "\u2219", "-", "*", "\u25aa", "\u25cf")
_PUNCT = re.compile(r"^[^\w]+$")
_LETTER = re.compile(r"[^\W\d_]")  # a letter in any script


@dataclass
class GopherQualityParams:
    min_words: int = option(50, help="Minimum non-symbol words.")
    max_words: int = option(100_000, help="Maximum non-symbol words.")
    min_mean_word_length: float = option(3.0, help="Minimum mean word length in characters.")
    max_mean_word_length: float = option(10.0, help="Maximum mean word length in characters.")
    max_symbol_word_ratio: float = option(0.1, help="Maximum ('#' + ellipsis) per word.")
    max_bullet_lines: float = option(0.9, help="Maximum share of lines starting with a bullet.")
    max_ellipsis_lines: float = option(0.3, help="Maximum share of lines ending with an ellipsis.")
    min_alpha_words: float = option(0.8, help="Minimum share of words containing a letter.")
    min_stop_words: int = option(2, help="Minimum count of the, be, to, of, and, that, have, with.")


def _default_dup_ngrams() -> dict[str, float]:
    return {"5": 0.15, "6": 0.14, "7": 0.13, "8": 0.12, "9": 0.11, "10": 0.10}


@dataclass
class GopherRepetitionParams:
    max_dup_line_fraction: float = option(0.30, help="Maximum share of lines that repeat an earlier line.")
    max_dup_para_fraction: float = option(0.30, help="Maximum share of paragraphs that repeat an earlier one.")
    max_dup_line_chars: float = option(0.20, help="Maximum share of characters in repeated lines.")
    max_dup_para_chars: float = option(0.20, help="Maximum share of characters in repeated paragraphs.")
    top_ngrams: dict[str, float] = option(
        default_factory=lambda: {"2": 0.20, "3": 0.18, "4": 0.16},
        help="n: maximum share of word characters in the most frequent n-gram.",
    )
    dup_ngrams: dict[str, float] = option(
        default_factory=_default_dup_ngrams,
        help="n: maximum share of word characters inside n-grams that occur more than once.",
    )


def quality_verdict(text: str, p: GopherQualityParams) -> str | None:
    words = text.split()
    real = [w for w in words if not _PUNCT.match(w)]
    n = len(real)
    if n < p.min_words:
        return "gopher_too_few_words"
    if n > p.max_words:
        return "gopher_too_many_words"
    mean = sum(len(w) for w in real) / n
    if not p.min_mean_word_length <= mean <= p.max_mean_word_length:
        return "gopher_mean_word_length"
    symbols = text.count("#") + text.count("...") + text.count("\u2026")
    if symbols / n > p.max_symbol_word_ratio:
        return "gopher_symbol_ratio"
    lines = [line for line in text.split("\n") if line.strip()]
    if lines:
        if sum(line.lstrip().startswith(BULLETS) for line in lines) / len(lines) > p.max_bullet_lines:
            return "gopher_bullet_lines"
        ellipsis = sum(line.rstrip().endswith(("...", "\u2026")) for line in lines)
        if ellipsis / len(lines) > p.max_ellipsis_lines:
            return "gopher_ellipsis_lines"
    if sum(1 for w in words if _LETTER.search(w)) / max(len(words), 1) < p.min_alpha_words:
        return "gopher_alpha_words"
    if sum(w.lower() in STOP_WORDS for w in words) < p.min_stop_words:
        return "gopher_stop_words"
    return None


def duplicated(elements: list[str]) -> tuple[int, int]:
    """(count, characters) of elements that repeat an earlier element."""
    seen: set[str] = set()
    count = chars = 0
    for e in elements:
        if e in seen:
            count += 1
            chars += len(e)
        else:
            seen.add(e)
    return count, chars


class _Grams:
    """Word n-grams of one text as 64-bit keys, for counting repeats with numpy.

    Words become small integer ids; the key of an n-gram is the (n-1)-gram's key mixed with its
    last word (the splitmix64 finaliser), so every n costs one pass and counting is a sort, not a
    Python dictionary of tuples.
    """

    def __init__(self, words: list[str]):
        ids: dict[str, int] = {}
        self.ids = np.fromiter((ids.setdefault(w, len(ids)) for w in words), dtype=np.uint64, count=len(words))
        self.lengths = np.fromiter((len(w) for w in words), dtype=np.int64, count=len(words))
        self.total = int(self.lengths.sum())
        self._keys = {1: mix64(self.ids + np.uint64(1))}

    def keys(self, n: int) -> np.ndarray:
        for m in range(max(self._keys) + 1, n + 1):
            prev = self._keys[m - 1]
            self._keys[m] = mix64(prev[:-1] ^ (self.ids[m - 1 :] * np.uint64(0x9E3779B97F4A7C15)))
        return self._keys[n]

    def top_share(self, n: int) -> float:
        """Characters of the most frequent n-gram times its count, over all word characters."""
        if len(self.ids) < n or self.total == 0:
            return 0.0
        _, first, counts = np.unique(self.keys(n), return_index=True, return_counts=True)
        best = int(np.argmax(counts))
        if counts[best] < 2:
            return 0.0
        start = int(first[best])
        return int(self.lengths[start : start + n].sum()) * int(counts[best]) / self.total

    def dup_share(self, n: int) -> float:
        """Share of word characters covered by n-grams that occur more than once (each word once)."""
        if len(self.ids) < n or self.total == 0:
            return 0.0
        _, inverse, counts = np.unique(self.keys(n), return_inverse=True, return_counts=True)
        repeated = counts[inverse] > 1
        if not repeated.any():
            return 0.0
        # Word w is covered when an n-gram starting in [w - n + 1, w] repeats: a window sum.
        starts = np.concatenate([[0], np.cumsum(repeated)])
        w = np.arange(len(self.ids))
        lo = np.maximum(w - n + 1, 0)
        hi = np.minimum(w, len(repeated) - 1) + 1
        covered = starts[hi] - starts[lo] > 0
        return int(self.lengths[covered].sum()) / self.total


def top_ngram_share(words: list[str], n: int) -> float:
    return _Grams(words).top_share(n)


def dup_ngram_share(words: list[str], n: int) -> float:
    return _Grams(words).dup_share(n)


def repetition_verdict(text: str, p: GopherRepetitionParams) -> str | None:
    total = max(len(text), 1)
    paragraphs = [x for x in re.split(r"\n{2,}", text.strip()) if x.strip()]
    lines = [x for x in text.split("\n") if x.strip()]
    for name, elements, max_frac, max_chars in (
        ("para", paragraphs, p.max_dup_para_fraction, p.max_dup_para_chars),
        ("line", lines, p.max_dup_line_fraction, p.max_dup_line_chars),
    ):
        count, chars = duplicated(elements)
        if elements and count / len(elements) > max_frac:
            return f"gopher_dup_{name}_fraction"
        if chars / total > max_chars:
            return f"gopher_dup_{name}_chars"
    grams = _Grams(text.split())
    for n, limit in sorted(p.top_ngrams.items(), key=lambda kv: int(kv[0])):
        if grams.top_share(int(n)) > limit:
            return f"gopher_top_{n}gram"
    for n, limit in sorted(p.dup_ngrams.items(), key=lambda kv: int(kv[0])):
        if grams.dup_share(int(n)) > limit:
            return f"gopher_dup_{n}gram"
    return None


def check_repetition(params: GopherRepetitionParams, path: str) -> list[str]:
    bad = [k for k in [*params.top_ngrams, *params.dup_ngrams] if not str(k).isdigit() or int(k) < 1]
    return [f"{path}: n-gram sizes must be positive integers, got {k!r}" for k in bad]


def build_quality(params: GopherQualityParams, ctx: object) -> Step:
    return per_document("gopher_quality", lambda doc: quality_verdict(doc.text, params))


def build_repetition(params: GopherRepetitionParams, ctx: object) -> Step:
    return per_document("gopher_repetition", lambda doc: repetition_verdict(doc.text, params))

