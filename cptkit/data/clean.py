"""Cleaning: HTML to text, unicode repair, whitespace normalisation.

HTML is parsed by a real HTML5 parser (lexbor, through selectolax), never by regular
expressions: script, style and other non-text elements are removed with their content, block
elements become paragraph breaks, `<br>` a line break, and `<pre>` keeps its spacing. Unicode is
repaired by ftfy (mojibake, bad escapes) and put in NFC form.

Whitespace has two modes. `prose`: spaces and tabs inside a line collapse to one, lines are
stripped, and runs of blank lines become a single paragraph break. `code`: only line endings
and trailing spaces change and at most two blank lines are kept in a row, so indentation (which
is syntax in Python) stays exactly as written.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

from cptkit.data.documents import Document
from cptkit.data.steps import Step, per_document
from cptkit.schema import option

# Elements whose content is never text a reader sees.
SKIP = {"head", "script", "style", "noscript", "template", "iframe", "svg", "math", "object",
        "embed", "canvas", "select", "button", "input", "textarea", "-comment", "!doctype"}
BLOCK = {"address", "article", "aside", "blockquote", "caption", "dd", "div", "dl", "dt",
         "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6",
         "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table", "tbody",
         "thead", "tfoot", "tr", "ul", "body", "html", "details", "summary",
         "abstracttext"}  # the last: PubMed XML abstract sections
CELL = {"td", "th"}
# Markup that real HTML documents contain and plain prose almost never does ("p < 0.05" is not).
_LOOKS_HTML = re.compile(
    r"<(?:!doctype|html|head|body|p|div|span|a\s|br|script|style|table|tr|td|li|ul|ol|h[1-6]|b|i|em|"
    r"strong|sub|sup|img|meta|link|section|article|abstracttext)\b[^>]*>|&(?:[a-z]{2,8}|#\d{2,6});",
    re.IGNORECASE,
)
_SPACES = re.compile(r"[ \t\f\v\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_BLANK_RUNS = re.compile(r"\n{3,}")
_LINE_EDGE = re.compile(r" ?\n ?")
_PARA = "\x00P\x00"  # paragraph-break marker while walking the tree; never in parsed text


@dataclass
class CleanParams:
    html: Literal["auto", "always", "never"] = option(
        "auto", help="Parse the text as HTML: auto (when it contains HTML tags or entities), always, never."
    )
    fix_unicode: bool = option(True, help="Repair mojibake and bad escapes with ftfy, then NFC-normalise.")
    whitespace: Literal["prose", "code", "keep"] = option(
        "prose", help="prose: collapse spaces, one blank line between paragraphs. code: keep indentation, "
        "strip trailing spaces. keep: leave whitespace alone."
    )


def looks_like_html(text: str) -> bool:
    return _LOOKS_HTML.search(text, 0, 100_000) is not None


def html_to_text(markup: str) -> str:
    """The text a reader would see, with paragraph and line breaks where the layout puts them."""
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(markup)
    root = tree.root
    if root is None:
        return ""
    out: list[str] = []
    # An explicit stack instead of recursion: pathological nesting must not overflow the stack.
    stack: list[tuple[object, bool, bool]] = [(root, False, False)]
    while stack:
        node, leaving, in_pre = stack.pop()
        tag = node.tag
        if leaving:
            out.append(_PARA if tag in BLOCK else " ")
            continue
        if tag == "-text":
            text = node.text_content or ""
            out.append(text if in_pre else _SPACES.sub(" ", text.replace("\n", " ").replace("\r", " ")))
            continue
        if tag in SKIP or tag.startswith("-") and tag != "-text":
            continue
        if tag == "br":
            out.append("\n")
            continue
        if tag in BLOCK:
            out.append(_PARA)
        if tag in BLOCK or tag in CELL:
            stack.append((node, True, in_pre))
        children = []
        child = node.child
        while child is not None:
            children.append(child)
            child = child.next
        pre = in_pre or tag == "pre"
        stack.extend((c, False, pre) for c in reversed(children))
    text = "".join(out)
    return "\n\n".join(p for p in (part.strip(" ") for part in text.split(_PARA)) if p.strip())


def normalize_whitespace(text: str, mode: str) -> str:
    if mode == "keep":
        return text
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if mode == "code":
        lines = [line.rstrip() for line in text.split("\n")]
        text = "\n".join(lines).strip("\n")
        return re.sub(r"\n{4,}", "\n\n\n", text) + ("\n" if text else "")
    # Whole-text substitutions, not a loop over lines: runs of spaces become one, then the
    # single space left at either end of a line goes.
    text = _LINE_EDGE.sub("\n", _SPACES.sub(" ", text))
    return _BLANK_RUNS.sub("\n\n", text).strip()


def clean_text(text: str, params: CleanParams) -> str:
    if params.html == "always" or (params.html == "auto" and looks_like_html(text)):
        text = html_to_text(text)
    if params.fix_unicode:
        import ftfy

        # ftfy's own HTML-entity unescaping is off: the parser did that for HTML, and in plain
        # text or code "&amp;" may be what the author wrote.
        text = ftfy.fix_text(text, unescape_html=False, normalization="NFC")
    else:
        text = unicodedata.normalize("NFC", text)
    return normalize_whitespace(text, params.whitespace)


def build(params: CleanParams, ctx: object) -> Step:
    def check(doc: Document) -> str | None:
        doc.text = clean_text(doc.text, params)
        return None if doc.text.strip() else "empty_after_cleaning"

    return per_document("clean", check)
