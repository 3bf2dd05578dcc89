"""The base tokenizer: which kind it is, and text as words made of its own tokens.

Three kinds can be extended (docs/vocabulary.md says how each one is):
- `byte_bpe`: byte-level BPE (GPT-2, Llama 3, Qwen). Tokens are strings over a 256-character
  alphabet that stands for the 256 byte values; every text is covered.
- `sp_bpe`: SentencePiece-style BPE as tokenizer.json holds it (Llama 2, Mistral, Gemma). `▁`
  marks a space; a character outside the vocabulary falls back to `<0xXX>` byte tokens.
- `unigram`: SentencePiece Unigram: pieces with log-probability scores, Viterbi segmentation.

WordPiece and WordLevel (encoder models) and tokenizers without a tokenizer.json cannot be
extended: `inspect` refuses them with the reason.

A word is what the tokenizer's model sees at once: one pre-token (byte-level BPE), or a run of
`▁` and the characters up to the next `▁` (SentencePiece kinds, whose pieces never hold a `▁`
after another character). Its old segmentation is a tuple of symbols, one per base token:
`bytes` (a regular token, as the UTF-8 bytes it stands for), `int` (a byte-fallback token, the
byte value) or `str` (an unknown-token span, the text it hides).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from cptkit.errors import UserError

SPACE = "▁"
# A SentencePiece word: a run of spaces and the characters up to the next space (or spaces alone).
_SP_WORD = re.compile(f"{SPACE}*[^{SPACE}]+|{SPACE}+")
_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")

Symbol = bytes | int | str


@lru_cache(maxsize=1)
def byte_alphabet() -> tuple[dict[int, str], dict[str, int]]:
    """The byte-level BPE alphabet (byte value -> character and back).

    Printable Latin-1 bytes stand for themselves; the other 68 bytes are moved to characters
    from U+0100 on, in order (the convention of GPT-2 and every byte-level BPE since).
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    chars = {b: chr(b) for b in keep}
    moved = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + moved)
            moved += 1
    return chars, {c: b for b, c in chars.items()}


def symbol_bytes(sym: Symbol) -> bytes:
    if isinstance(sym, bytes):
        return sym
    if isinstance(sym, int):
        return bytes([sym])
    return sym.encode("utf-8")


@dataclass
class BaseTokenizer:
    kind: str  # byte_bpe | sp_bpe | unigram
    backend: object  # tokenizers.Tokenizer
    spec: dict  # the tokenizer.json content
    vocab: dict[str, int]  # the model's own tokens (added tokens excluded)
    next_id: int  # the first id no token uses: new tokens start here
    unk_id: int | None
    byte_ids: dict[int, int] = field(default_factory=dict)  # id of <0xXX> -> byte value
    ignore_merges: bool = False
    space: str | None = None  # "▁" where the tokenizer writes spaces as it (SentencePiece kinds)
    byte_level: bool = False  # tokens are strings over the byte alphabet

    def token_bytes(self, token: str) -> bytes:
        """What a vocabulary string stands for, as bytes."""
        if self.byte_level:
            back = byte_alphabet()[1]
            return bytes(back[c] for c in token)
        return token.encode("utf-8")

    def token_str(self, data: bytes) -> str:
        """The vocabulary string of a new token's bytes."""
        if self.byte_level:
            chars = byte_alphabet()[0]
            return "".join(chars[b] for b in data)
        return data.decode("utf-8")

    def vocab_bytes(self) -> set[bytes]:
        """Every regular token of the base vocabulary, as bytes (byte-fallback tokens excluded)."""
        return {self.token_bytes(t) for t, i in self.vocab.items() if i not in self.byte_ids and i != self.unk_id}

    def words(self, texts: Iterable[str]) -> Counter[str]:
        """Words (as the model sees them) of the texts, with their counts."""
        counts: Counter[str] = Counter()
        norm, pre = self.backend.normalizer, self.backend.pre_tokenizer
        for text in texts:
            if norm is not None:
                text = norm.normalize_str(text)
            pieces = [p for p, _ in pre.pre_tokenize_str(text)] if pre is not None else [text]
            if self.space:
                pieces = [w for p in pieces for w in _SP_WORD.findall(p)]
            counts.update(pieces)
        return counts

    def segment(self, word: str) -> tuple[Symbol, ...]:
        """The base tokenizer's segmentation of one word, as symbols."""
        raw = word.encode("utf-8")
        out: list[Symbol] = []
        for tok in self.backend.model.tokenize(word):
            if tok.id in self.byte_ids:
                out.append(self.byte_ids[tok.id])
            elif tok.id == self.unk_id:
                start, end = tok.offsets
                out.append(raw[start:end].decode("utf-8", "replace"))
            else:
                out.append(self.token_bytes(tok.value))
        return tuple(out)


def _mentions(node, type_name: str) -> bool:
    """Whether a tokenizer.json component (or a Sequence of them) contains `type_name`."""
    if isinstance(node, dict):
        return node.get("type") == type_name or any(_mentions(v, type_name) for v in node.values())
    if isinstance(node, list):
        return any(_mentions(v, type_name) for v in node)
    return False


def inspect(tokenizer, where: str) -> BaseTokenizer:
    """The base tokenizer (a transformers tokenizer) as cptkit extends it, or a UserError naming why not."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not getattr(tokenizer, "is_fast", False):
        raise UserError(
            f"{where}: the tokenizer has no tokenizer.json (a slow, Python-only tokenizer); cptkit vocab "
            "extends the fast tokenizer's BPE merges or Unigram pieces. Save a fast version of it first "
            "(AutoTokenizer.from_pretrained(..., use_fast=True).save_pretrained(...))."
        )
    spec = json.loads(backend.to_str())
    model = spec.get("model") or {}
    mtype = model.get("type")
    added = {int(t["id"]) for t in spec.get("added_tokens") or []}
    pipeline = json.dumps([spec.get("normalizer"), spec.get("pre_tokenizer")], ensure_ascii=False)
    space = SPACE if SPACE in pipeline else None
    if mtype == "BPE":
        return _bpe(backend, spec, model, added, space, where)
    if mtype == "Unigram":
        return _unigram(backend, spec, model, added, space, where)
    raise UserError(
        f"{where}: a {mtype or 'unknown'} tokenizer cannot be extended by cptkit vocab: it extends byte-level "
        "BPE (GPT-2, Llama 3, Qwen), SentencePiece BPE (Llama 2, Mistral, Gemma) and Unigram tokenizers; "
        f"{mtype} (BERT-style encoders) has no merge order or piece scores that new tokens could join "
        "without re-segmenting old text."
    )


def _bpe(backend, spec: dict, model: dict, added: set[int], space: str | None, where: str) -> BaseTokenizer:
    if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        raise UserError(
            f"{where}: this BPE tokenizer marks word pieces with a prefix or suffix (continuing_subword_prefix / "
            "end_of_word_suffix); cptkit vocab extends byte-level and SentencePiece BPE, which do not."
        )
    vocab = dict(model["vocab"])
    unk = model.get("unk_token")
    byte_level = _mentions(spec.get("pre_tokenizer"), "ByteLevel")
    if byte_level:
        kind = "byte_bpe"
    elif space is not None:
        kind = "sp_bpe"
    else:
        raise UserError(
            f"{where}: a BPE tokenizer that is neither byte-level nor SentencePiece-style (no ByteLevel "
            "pre-tokenizer, no ▁ for spaces); cptkit vocab cannot tell where its words end."
        )
    byte_ids = {}
    if kind == "sp_bpe":
        byte_ids = {i: int(m.group(1), 16) for t, i in vocab.items() if (m := _BYTE_TOKEN.fullmatch(t))}
    ids = list(vocab.values()) + list(added)
    return BaseTokenizer(
        kind=kind, backend=backend, spec=spec, vocab=vocab, next_id=max(ids) + 1 if ids else 0,
        unk_id=vocab.get(unk) if unk is not None else None, byte_ids=byte_ids,
        ignore_merges=bool(model.get("ignore_merges")), space=space if kind == "sp_bpe" else None,
        byte_level=byte_level,
    )


def _unigram(backend, spec: dict, model: dict, added: set[int], space: str | None, where: str) -> BaseTokenizer:
    pieces = [p for p, _ in model["vocab"]]
    beyond = sorted(i for i in added if i >= len(pieces))
    if beyond:
        # Unigram ids are positions in the piece list: a new piece cannot skip the ids of these tokens.
        raise UserError(
            f"{where}: added tokens use ids {beyond[0]}..{beyond[-1]} past the Unigram piece list "
            f"({len(pieces)} pieces); a new piece's id is its position, so none can be appended "
            "without taking those ids."
        )
    vocab = {p: i for i, p in enumerate(pieces)}
    byte_ids = {i: int(m.group(1), 16) for p, i in vocab.items() if (m := _BYTE_TOKEN.fullmatch(p))}
    if not model.get("byte_fallback"):
        byte_ids = {}
    return BaseTokenizer(
        kind="unigram", backend=backend, spec=spec, vocab=vocab, next_id=len(pieces),
        unk_id=model.get("unk_id"), byte_ids=byte_ids, space=space,
        byte_level=_mentions(spec.get("pre_tokenizer"), "ByteLevel"),
    )
