"""Words of a text, by the script its language is written in.

Every word-based curation rule (length, Gopher quality and repetition, C4, FineWeb) counts words
through `words(text, language)`, so a rule means the same thing in every language:

| languages | words are | segmenter |
| --- | --- | --- |
| en and every other space-delimited language, Korean included | runs of non-space characters (`str.split()`); for Korean these are eojeol, a word with its particles (환자는, 치료를) | none |
| zh | jieba's dictionary-and-HMM segmentation (simplified and traditional) | rjieba, the Rust port of jieba (a core dependency) |
| ja | MeCab with UniDic short units (the units FineWeb-2's Sudachi split approximates) | fugashi + unidic-lite (`pip install 'cptkit[ja]'`) |
| th | PyThaiNLP's dictionary maximal matching, `newmm-safe` (as FineWeb-2) | pythainlp (`pip install 'cptkit[th]'`) |

English is exactly `str.split()`, as every word rule used before languages existed, so English
results do not move. Segmenters return punctuation as words of their own (，。、); whitespace is
never a word. Each rule keeps its own treatment of punctuation-only words (Gopher quality leaves
them out of its word count, as with English text).

Segmenters load once per process, on first use; a missing optional one is a `UserError` saying
which extra to install.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache, lru_cache

from cptkit.errors import UserError

# language -> (segmenter name shown in docs and manifests, the pip extra that brings it)
SEGMENTED: dict[str, tuple[str, str | None]] = {
    "zh": ("jieba (rjieba)", None),
    "ja": ("MeCab UniDic short units (fugashi, unidic-lite)", "ja"),
    "th": ("PyThaiNLP newmm-safe", "th"),
}


def segmenter_name(language: str) -> str:
    """How `words` splits text of this language ('whitespace' for space-delimited scripts)."""
    return SEGMENTED[language][0] if language in SEGMENTED else "whitespace"


def words(text: str, language: str) -> list[str]:
    """The words of `text` as the rules of `language` count them (see the module docstring)."""
    if language not in SEGMENTED:
        return text.split()
    return list(_segmented(text, language))


@lru_cache(maxsize=256)
def _segmented(text: str, language: str) -> tuple[str, ...]:
    # Several steps (length, both Gopher rule sets, FineWeb) segment the same document one after
    # another; a segmenter costs far more than the lookup (a str caches its own hash).
    return tuple(_segmenter(language)(text))


def missing_segmenters(languages: list[str], path: str) -> list[str]:
    """Config problems for languages whose segmenter is not installed (checked before any work)."""
    problems = []
    for lang in languages:
        if lang in SEGMENTED:
            try:
                _segmenter(lang)
            except UserError as exc:
                problems.append(f"{path}: {exc}")
    return problems


@cache
def _segmenter(language: str) -> Callable[[str], list[str]]:
    try:
        return _LOADERS[language]()
    except ImportError as exc:
        name, extra = SEGMENTED[language]
        raise UserError(
            f"word segmentation for language {language!r} needs {name}, which is not installed "
            f"({exc.name or exc}): pip install 'cptkit[{extra}]'"
        ) from None


def _jieba() -> Callable[[str], list[str]]:
    import rjieba

    def cut(text: str) -> list[str]:
        # jieba returns the spaces and newlines between words as tokens of their own.
        return [w for w in rjieba.cut(text) if not w.isspace()]

    return cut


def _mecab() -> Callable[[str], list[str]]:
    import fugashi
    import unidic_lite  # noqa: F401  (fugashi finds the dictionary through this package)

    # -Owakati: one string of space-separated surfaces, far cheaper than a node object per word.
    # MeCab never puts a space inside a surface, so splitting that string is exact.
    tagger = fugashi.Tagger("-Owakati")
    return lambda text: tagger.parse(text).split()


def _newmm() -> Callable[[str], list[str]]:
    from pythainlp.tokenize import word_tokenize

    # newmm-safe bounds the dictionary search on long runs without a break, where plain newmm
    # can take quadratic time; FineWeb-2 uses the same engine.
    return lambda text: [w for w in word_tokenize(text, engine="newmm-safe", keep_whitespace=False)
                         if not w.isspace()]


_LOADERS: dict[str, Callable[[], Callable[[str], list[str]]]] = {"zh": _jieba, "ja": _mecab, "th": _newmm}
