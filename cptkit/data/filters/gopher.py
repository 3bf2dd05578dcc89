"""Gopher quality and repetition rules (Rae et al. 2021, appendix A), thresholds as published.

Quality: word count, mean word length, '#'-to-word and ellipsis-to-word ratios, bullet and
ellipsis lines, share of words with a letter, and the presence of stop words. Repetition: share
of duplicated lines and paragraphs (by count and by characters), share of characters taken by
the most frequent 2-, 3- and 4-gram, and by duplicated 5- to 10-grams. Every rule has its own
drop reason, so the manifest says which one removed a document.

Languages: words come from `cptkit.data.lang.words` (whitespace for English and Korean, a
segmenter for Chinese, Japanese, Thai); stop words and thresholds are the document's language's
(`cptkit.data.lang`: Gopher's eight English words, stopwords-iso elsewhere, FineWeb-2's numbers);
a language without a stop-word list skips that rule. English behaves as published.

Against the paper and datatrove's GopherQualityFilter:
- Symbols: the paper drops a document whose "symbol-to-word ratio [is] greater than 0.1 for
  either the hash symbol or the ellipsis", so '#' per word and ellipses per word are two tests
  against the same limit, as datatrove does (an earlier version here summed them). Both give the
  reason gopher_symbol_ratio. Ellipses are "..." and the single character "\u2026".
- Stop words: the paper asks for "at least two of" the eight words, so the rule counts distinct
  stop words, as datatrove does (an earlier version counted occurrences: "the ... the" passed).
  Matching is case-blind ("The" counts; datatrove's is case-sensitive). English words are
  matched as whitespace cuts them, punctuation attached ("the," is not "the"; datatrove's NLTK
  tokens split it off): that keeps English results as they were. Other languages match a word
  with its edge punctuation removed (Korean "있다." is "있다"), as FineWeb-2's tokenizers would.
- Words are whitespace-separated for English (datatrove: NLTK's tokenizer); a word made only of
  punctuation is not counted, the paper's "non-symbol words".
- Bullets: lines starting with any of the bullet characters below or '-' / '*' (datatrove: '•'
  and '-').
- The share of words with a letter counts letters of every script (datatrove: str.isalpha).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from cptkit.data.lang import PerLanguage, stop_words, words
from cptkit.data.lang.stopwords import GOPHER_ENGLISH
from cptkit.data.signatures import mix64
from cptkit.data.steps import Step, per_document
from cptkit.schema import option

STOP_WORDS = GOPHER_ENGLISH
LANGUAGE_HELP = "ISO 639-1 codes of the documents' languages; default: the source's data.<role>.language."
BULLETS = ("\u2022", "\u2023", "\u25e6", "\u2043", "\u2219", "-", "*", "\u25aa", "\u25cf")
_PUNCT = re.compile(r"^[^\w]+$")
_LETTER = re.compile(r"[^\W\d_]")  # a letter in any script
_EDGE_PUNCT = re.compile(r"^[\W_]+|[\W_]+$")


@dataclass
class GopherQualityParams:
    min_words: int = option(50, ge=0, help="Minimum non-symbol words.")
    max_words: int = option(100_000, ge=0, help="Maximum non-symbol words.")
    min_mean_word_length: float = option(3.0, ge=0, help="Minimum mean word length in characters (ko, zh, ja: 1).")
    max_mean_word_length: float = option(10.0, ge=0, help="Maximum mean word length in characters (ko, ja: 6; zh: 5).")
    max_symbol_word_ratio: float = option(0.1, ge=0, help="Maximum '#' per word, and ellipses per word, each.")
    max_bullet_lines: float = option(0.9, ge=0, le=1, help="Maximum share of lines starting with a bullet.")
    max_ellipsis_lines: float = option(0.3, ge=0, le=1, help="Maximum share of lines ending with an ellipsis.")
    min_alpha_words: float = option(0.8, ge=0, le=1, help="Minimum share of words containing a letter (ko: 0.791).")
    min_stop_words: int = option(
        2, ge=0, help="Minimum distinct stop words of the document's language (en: the, be, to, of, and, "
        "that, have, with; others: stopwords-iso); 0: off."
    )
    language: list[str] | None = option(None, help=LANGUAGE_HELP)


def _default_dup_ngrams() -> dict[str, float]:
    return {"5": 0.15, "6": 0.14, "7": 0.13, "8": 0.12, "9": 0.11, "10": 0.10}


@dataclass
class GopherRepetitionParams:
    max_dup_line_fraction: float = option(0.30, ge=0, le=1, help="Maximum share of lines that repeat an earlier line.")
    max_dup_para_fraction: float = option(0.30, ge=0, le=1, help="Maximum share of paragraphs that repeat an earlier one.")
    max_dup_line_chars: float = option(0.20, ge=0, le=1, help="Maximum share of characters in repeated lines.")
    max_dup_para_chars: float = option(0.20, ge=0, le=1, help="Maximum share of characters in repeated paragraphs.")
    top_ngrams: dict[str, float] = option(
        default_factory=lambda: {"2": 0.20, "3": 0.18, "4": 0.16}, ge=0, le=1,
        help="n: maximum share of word characters in the most frequent n-gram.",
    )
    dup_ngrams: dict[str, float] = option(
        default_factory=_default_dup_ngrams, ge=0, le=1,
        help="n: maximum share of word characters inside n-grams that occur more than once.",
    )
    language: list[str] | None = option(None, help=LANGUAGE_HELP)


def quality_verdict(text: str, p: GopherQualityParams, language: str = "en") -> str | None:
    """The first Gopher quality rule `text` fails, or None; `p` holds `language`'s thresholds."""
    split = words(text, language)
    real = [w for w in split if not _PUNCT.match(w)]
    n = len(real)
    if n < p.min_words:
        return "gopher_too_few_words"
    if n > p.max_words:
        return "gopher_too_many_words"
    mean = sum(len(w) for w in real) / n
    if not p.min_mean_word_length <= mean <= p.max_mean_word_length:
        return "gopher_mean_word_length"
    ellipses = text.count("...") + text.count("\u2026")
    if max(text.count("#"), ellipses) / n > p.max_symbol_word_ratio:
        return "gopher_symbol_ratio"
    lines = [line for line in text.split("\n") if line.strip()]
    if lines:
        if sum(line.lstrip().startswith(BULLETS) for line in lines) / len(lines) > p.max_bullet_lines:
            return "gopher_bullet_lines"
        ellipsis = sum(line.rstrip().endswith(("...", "\u2026")) for line in lines)
        if ellipsis / len(lines) > p.max_ellipsis_lines:
            return "gopher_ellipsis_lines"
    if sum(1 for w in split if _LETTER.search(w)) / max(len(split), 1) < p.min_alpha_words:
        return "gopher_alpha_words"
    if p.min_stop_words and _distinct_stop_words(split, language) < p.min_stop_words:
        return "gopher_stop_words"
    return None


def _distinct_stop_words(split: list[str], language: str) -> int:
    stops = stop_words(language)
    if stops is None:  # no list for this language: the rule is off (see cptkit.data.lang.rules_off)
        return 1 << 30
    if language == "en":
        return len(stops.intersection(w.lower() for w in split))
    return len(stops.intersection(_EDGE_PUNCT.sub("", w).lower() for w in split))


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


def repetition_verdict(text: str, p: GopherRepetitionParams, language: str = "en") -> str | None:
    """The first Gopher repetition rule `text` fails, or None; `p` holds `language`'s thresholds."""
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
    grams = _Grams(words(text, language))
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
    per = PerLanguage("gopher_quality", params)

    def check(doc) -> str | None:
        lang, p = per.pick(doc)
        return quality_verdict(doc.text, p, lang)

    return per_document("gopher_quality", check)


def build_repetition(params: GopherRepetitionParams, ctx: object) -> Step:
    per = PerLanguage("gopher_repetition", params)

    def check(doc) -> str | None:
        lang, p = per.pick(doc)
        return repetition_verdict(doc.text, p, lang)

    return per_document("gopher_repetition", check)

