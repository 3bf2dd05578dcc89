"""Per-language thresholds of the word-based rules, each number with where it comes from.

The English values are the dataclass defaults of each step (Gopher, C4, FineWeb as published).
Other languages override only the numbers that FineWeb-2 (Penedo et al. 2025) derived for them
from their own data, taken from its per-language filter configs (`configs/kor_Hang.yml`,
`cmn_Hani.yml`, `jpn_Jpan.yml`, `tha_Thai.yml` in the fineweb-2 repository), under these rules:

- A number is taken when it does not depend on how words are cut (lines, punctuation), or when
  our segmenter cuts words as FineWeb-2's did: Chinese (jieba both), Japanese (UniDic short
  units here, Sudachi's shortest units there: nearly the same cuts), Thai (newmm-safe both).
- Korean is the exception: FineWeb-2 counted Kiwi morphemes (환자 + 는), cptkit counts eojeol
  (환자는), as the issue asks. Mean word length (1-6) and the share of words with a letter (0.791)
  are taken: eojeol are longer and more often contain a letter than morphemes, so both stay
  inside the limits that real Korean met there. The n-gram shares are taken as well: a repeated
  eojeol n-gram is rarer than a repeated morpheme n-gram, so the Korean limits are at least as
  loose over eojeol as FineWeb-2 meant them. Newlines per word (0.196 per morpheme) is not
  comparable over eojeol, of which there are about half as many; the English 0.3 stays.
- FineWeb-2's language-id score cut-offs are GlotLID scores; they do not carry over to lid.176,
  so `language.min_score` stays 0.65 for every language.
- Thai is written without sentence-final punctuation: C4's terminal-punctuation line rule and its
  sentence count are off for it (FineWeb-2 likewise set its punctuated-line share to 0.0).

A value of `OFF` turns a rule off for that language; `rules_off` lists those for the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Value:
    value: Any
    source: str
    off: bool = False  # this value turns the rule off for the language


def _fw2(config: str, key: str) -> str:
    return f"FineWeb-2 (Penedo et al. 2025) configs/{config}.yml: {key}"


def _ngrams(config: str, top: tuple[float, float, float], dup: tuple[float, ...]) -> dict[str, Value]:
    return {
        "top_ngrams": Value({str(n): v for n, v in zip((2, 3, 4), top)}, _fw2(config, "top_n_grams")),
        "dup_ngrams": Value({str(n): v for n, v in zip(range(5, 11), dup)}, _fw2(config, "dup_n_grams")),
    }


def _language(config: str, *, word_length: tuple[float, float], alpha: float, dup_lines: float,
              top: tuple[float, float, float], dup: tuple[float, ...], punctuated: float,
              newlines: float | None) -> dict[str, dict[str, Value]]:
    fineweb = {"min_punctuated_lines": Value(punctuated, _fw2(config, "line_punct_thr"))}
    if newlines is not None:
        fineweb["max_newlines_per_word"] = Value(newlines, _fw2(config, "new_line_ratio"))
    return {
        "gopher_quality": {
            "min_mean_word_length": Value(word_length[0], _fw2(config, "min_avg_word_length")),
            "max_mean_word_length": Value(word_length[1], _fw2(config, "max_avg_word_length")),
            "min_alpha_words": Value(alpha, _fw2(config, "max_non_alpha_words_ratio")),
        },
        "gopher_repetition": {
            "max_dup_line_fraction": Value(dup_lines, _fw2(config, "dup_line_frac")),
            **_ngrams(config, top, dup),
        },
        "fineweb": fineweb,
    }


_THAI_C4 = "Thai script has no sentence-final punctuation"

TABLE: dict[str, dict[str, dict[str, Value]]] = {
    "ko": _language("kor_Hang", word_length=(1.0, 6.0), alpha=0.791, dup_lines=0.374,
                    top=(0.282, 0.228, 0.185), dup=(0.201, 0.184, 0.168, 0.154, 0.14, 0.127),
                    punctuated=0.062, newlines=None),
    "zh": _language("cmn_Hani", word_length=(1.0, 5.0), alpha=0.735, dup_lines=0.287,
                    top=(0.256, 0.201, 0.171), dup=(0.198, 0.182, 0.167, 0.154, 0.14, 0.127),
                    punctuated=0.106, newlines=0.178),
    "ja": _language("jpn_Jpan", word_length=(1.0, 6.0), alpha=0.759, dup_lines=0.328,
                    top=(0.239, 0.196, 0.172), dup=(0.243, 0.225, 0.207, 0.19, 0.175, 0.159),
                    punctuated=0.096, newlines=0.13),
    "th": _language("tha_Thai", word_length=(2.0, 10.0), alpha=0.9, dup_lines=0.349,
                    top=(0.221, 0.197, 0.162), dup=(0.185, 0.168, 0.152, 0.137, 0.124, 0.111),
                    punctuated=0.0, newlines=0.153),
}
TABLE["th"]["c4"] = {
    "require_terminal_punctuation": Value(False, _THAI_C4, off=True),
    "min_sentences": Value(0, _THAI_C4, off=True),
}


def overrides(step: str, language: str) -> dict[str, Value]:
    """The thresholds of `step` that differ from its English defaults for `language`."""
    return TABLE.get(language, {}).get(step, {})
