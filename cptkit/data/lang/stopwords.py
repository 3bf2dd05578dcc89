"""Stop words per language, for Gopher's rule that real prose contains common function words.

English keeps the eight words of the Gopher paper (Rae et al. 2021, appendix A): the, be, to,
of, and, that, have, with. Every other language takes its list from the stopwords-iso collection
(the `stopwordsiso` package, 58 languages, ISO 639-1 codes), reduced to the entries the rule can
match: single words (no space inside: the Korean list holds phrases such as "결론을 낼 수 있다")
that contain a letter (the Korean and Chinese lists hold punctuation and digits, which would
satisfy the rule on any text). A language stopwords-iso does not cover has no list: the stop-word
rule is off for it, and `cptkit.data.lang.rules_off` says so for the manifest.

The lists are much longer than Gopher's eight (Korean 499 single words, Chinese 754, Japanese 134), so "at
least two distinct stop words" is a looser test outside English; it still separates prose from
lists of names, numbers and keywords, which is what the rule is for.
"""

from __future__ import annotations

from functools import cache

GOPHER_ENGLISH = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
SOURCE = {"en": "Gopher (Rae et al. 2021, appendix A)"}
DEFAULT_SOURCE = "stopwords-iso (stopwordsiso package)"


@cache
def stop_words(language: str) -> frozenset[str] | None:
    """The lower-cased stop words of `language`, or None when no list exists for it."""
    if language == "en":
        return GOPHER_ENGLISH
    import stopwordsiso

    if not stopwordsiso.has_lang(language):
        return None
    return frozenset(w.lower() for w in stopwordsiso.stopwords(language)
                     if w and not any(c.isspace() for c in w) and any(c.isalpha() for c in w))


def stop_words_source(language: str) -> str | None:
    """Where the list of `language` comes from, or None when it has none."""
    if stop_words(language) is None:
        return None
    return SOURCE.get(language, DEFAULT_SOURCE)
