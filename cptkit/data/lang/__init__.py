"""Languages in curation: word segmentation, stop words, per-language thresholds, resolution.

segment.py     `words(text, language)`: the one function every word-based rule counts with
stopwords.py   `stop_words(language)`: Gopher's English words, stopwords-iso for the others
thresholds.py  the per-language thresholds, each with its published source
resolve.py     a document's language in a mixed source, a step's parameters for a language,
               the rules that are off for lack of data
"""

from cptkit.data.lang.resolve import (
    PerLanguage,
    RuleOff,
    SourceLanguage,
    check_languages,
    document_language,
    fill_source_language,
    for_language,
    languages_of,
    rules_off,
    source_languages,
)
from cptkit.data.lang.segment import missing_segmenters, segmenter_name, words
from cptkit.data.lang.stopwords import stop_words

__all__ = [
    "PerLanguage", "RuleOff", "SourceLanguage", "check_languages", "document_language",
    "fill_source_language", "for_language", "languages_of", "missing_segmenters", "rules_off", "segmenter_name",
    "source_languages", "stop_words", "words",
]
