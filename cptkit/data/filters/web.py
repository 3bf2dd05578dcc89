"""Line rules for web text: C4 (Raffel et al. 2020) and FineWeb (Penedo et al. 2024).

C4 rewrites a document line by line: it keeps lines that end in terminal punctuation and have
at least three words, and removes lines that mention javascript, cookie or policy boilerplate,
or hold a word over 1,000 characters; then it drops the whole document if it has "lorem ipsum",
a curly brace (code, templates), or fewer than five sentences left. Removed lines are counted
per rule in the step's counts.

FineWeb looks at line statistics without rewriting: too few lines ending in punctuation, too
many short lines, too many newlines per word, or too many characters in repeated lines.

Languages: words (per line for C4, per document for FineWeb's newline ratio) are counted by
`cptkit.data.lang.words`; terminal punctuation includes the CJK full stops and marks (。！？);
the document's language's thresholds come from `cptkit.data.lang` (FineWeb-2's punctuated-line
shares and newline ratios; for Thai, which has no sentence-final punctuation, C4's punctuation
rule and sentence count are off). The javascript and cookie-policy phrases are English.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cptkit.data.documents import Document
from cptkit.data.lang import PerLanguage, words
from cptkit.data.steps import Step, per_document
from cptkit.schema import option

LANGUAGE_HELP = "ISO 639-1 codes of the documents' languages; default: the source's data.<role>.language."

TERMINAL = (".", "!", "?", '"', "'", "\u201d", "\u2019", "\u3002", "\uff01", "\uff1f")
POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
# A Latin full stop ends a sentence before a space or the end (not "3.5", not "e.g.x"); the CJK
# marks end one wherever they stand, since those scripts put no space after them.
_SENTENCE_END = re.compile(r"[.!?\u3002\uff01\uff1f]+(?=\s|$)|[\u3002\uff01\uff1f]+")


@dataclass
class C4Params:
    min_words_per_line: int = option(3, ge=0, help="Lines with fewer words are removed.")
    require_terminal_punctuation: bool = option(
        True, help="Remove lines that do not end in . ! ? \u3002 \uff01 \uff1f or a quote (th: off).")
    remove_javascript_lines: bool = option(True, help="Remove lines that mention javascript.")
    remove_policy_lines: bool = option(True, help="Remove cookie / privacy-policy boilerplate lines.")
    max_word_length: int = option(1000, ge=1, help="Remove lines holding a longer word.")
    drop_lorem_ipsum: bool = option(True, help="Drop documents containing 'lorem ipsum'.")
    drop_curly_bracket: bool = option(True, help="Drop documents containing '{' (code and templates).")
    min_sentences: int = option(5, ge=0, help="Drop documents with fewer sentences after line removal (th: off).")
    language: list[str] | None = option(None, help=LANGUAGE_HELP)


@dataclass
class FineWebParams:
    min_punctuated_lines: float = option(
        0.12, ge=0, le=1, help="Minimum share of lines ending in terminal punctuation (ko 0.062, zh 0.106, ja 0.096, th 0).")
    max_short_lines: float = option(0.67, ge=0, le=1, help="Maximum share of lines of at most short_line_chars characters.")
    short_line_chars: int = option(30, ge=0, help="A line this short or shorter counts as short.")
    max_newlines_per_word: float = option(0.3, ge=0, help="Maximum newlines per word (zh 0.178, ja 0.13, th 0.153).")
    max_dup_line_chars: float = option(0.1, ge=0, le=1, help="Maximum share of characters in lines that repeat an earlier line.")
    language: list[str] | None = option(None, help=LANGUAGE_HELP)


def c4_rewrite(text: str, p: C4Params, counts, language: str = "en") -> tuple[str, str | None]:
    """The kept lines of the document and a drop reason (or None)."""
    lower = text.lower()
    if p.drop_lorem_ipsum and "lorem ipsum" in lower:
        return text, "c4_lorem_ipsum"
    if p.drop_curly_bracket and "{" in text:
        return text, "c4_curly_bracket"
    kept = []
    for line in text.split("\n"):
        stripped = line.strip()
        if not stripped:
            if kept and kept[-1] != "":
                kept.append("")  # keep paragraph breaks between kept lines
            continue
        low = stripped.lower()
        split = words(stripped, language)
        rule = None
        if p.require_terminal_punctuation and not stripped.endswith(TERMINAL):
            rule = "no_terminal_punctuation"
        elif len(split) < p.min_words_per_line:
            rule = "too_few_words"
        elif p.remove_javascript_lines and "javascript" in low:
            rule = "javascript"
        elif p.remove_policy_lines and any(phrase in low for phrase in POLICY):
            rule = "policy"
        elif any(len(w) > p.max_word_length for w in split):
            rule = "long_word"
        if rule is None:
            kept.append(stripped)
        else:
            counts[f"c4_lines_removed_{rule}"] += 1
    out = "\n".join(kept).strip()
    if len(_SENTENCE_END.findall(out)) < p.min_sentences:
        return out, "c4_too_few_sentences"
    return out, None


def fineweb_verdict(text: str, p: FineWebParams, language: str = "en") -> str | None:
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    if not lines:
        return "fineweb_no_lines"
    if sum(line.endswith(TERMINAL) for line in lines) / len(lines) < p.min_punctuated_lines:
        return "fineweb_few_punctuated_lines"
    if sum(len(line) <= p.short_line_chars for line in lines) / len(lines) > p.max_short_lines:
        return "fineweb_many_short_lines"
    n_words = max(len(words(text, language)), 1)
    if text.count("\n") / n_words > p.max_newlines_per_word:
        return "fineweb_many_newlines"
    seen: set[str] = set()
    dup_chars = 0
    for line in lines:
        if line in seen:
            dup_chars += len(line)
        seen.add(line)
    if dup_chars / max(sum(len(line) for line in lines), 1) > p.max_dup_line_chars:
        return "fineweb_dup_line_chars"
    return None


def build_c4(params: C4Params, ctx: object) -> Step:
    step = Step("c4", lambda batch: ())
    per = PerLanguage("c4", params)

    def check(doc: Document) -> str | None:
        lang, p = per.pick(doc)
        text, verdict = c4_rewrite(doc.text, p, step.counts, lang)
        if verdict is None:
            doc.text = text
        return verdict

    step.run = per_document("c4", check).run
    return step


def build_fineweb(params: FineWebParams, ctx: object) -> Step:
    per = PerLanguage("fineweb", params)

    def check(doc: Document) -> str | None:
        lang, p = per.pick(doc)
        return fineweb_verdict(doc.text, p, lang)

    return per_document("fineweb", check)
