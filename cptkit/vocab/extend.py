"""The base tokenizer with the chosen tokens appended; every old id keeps its string and meaning.

New tokens take the ids after the last id the base tokenizer uses (its vocabulary and its added
tokens), in the order they were chosen. How each kind is extended, and what that does to old
text (docs/vocabulary.md has the full argument):

- BPE (`byte_bpe`, `sp_bpe`): each chosen merge is appended after every base merge. BPE applies
  merges by rank, so a word first goes through all base merges exactly as before; a new merge
  can then only join two adjacent tokens of that result, and no base merge involves a new
  token. A word therefore tokenizes as before unless its base tokens contain a chosen pair,
  and then its new tokens are concatenations of its old ones (with `ignore_merges`, as in
  Llama 3, a word that is itself a new token becomes that token). `sp_bpe` characters added to
  the vocabulary replace their byte-fallback tokens wherever the character occurs.
- `unigram`: each chosen piece is appended with score S + eps * (k - 1), where S is the log
  probability the base model gives its best segmentation of the piece's text (k tokens;
  unknown characters at the base's unknown score, min score - 10) and eps = 1e-6. Along base
  token boundaries a piece then wins by eps per token saved, so text changes only where its
  best base segmentation already splits at a new piece's edges (or ties within eps). Text
  with characters the base vocabulary lacks may also change: the new scores lower the minimum
  score, so unknown characters cost more and pieces covering them are preferred more.

`tokenizer.add_tokens` is not used: added tokens are cut out of the raw text before
normalization and pre-tokenization, wherever they occur (an added "ing" splits "singing"), so
every word that contains one re-tokenizes; docs/vocabulary.md lists the other reasons.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass

from cptkit.vocab.base import BaseTokenizer
from cptkit.vocab.select import Selection

EPS = 1e-6
UNK_PENALTY = 10.0  # the unknown-character penalty of the tokenizers (and SentencePiece) Unigram


@dataclass
class NewToken:
    id: int
    token: str  # the vocabulary string
    pieces: list[int]  # the base tokenizer's ids for its text (with repeats), used to initialise rows
    gain: int  # domain sample tokens it saved when chosen
    general: int  # general sample tokens it changed when chosen


def extend(base: BaseTokenizer, selection: Selection):
    """(the extended tokenizers.Tokenizer, the new tokens in id order)."""
    from tokenizers import Tokenizer

    spec = copy.deepcopy(base.spec)
    model = spec["model"]
    new: list[NewToken] = []
    if base.kind == "unigram":
        scores = [s for _, s in model["vocab"]]
        low = min(scores) if scores else 0.0
        for c in selection.tokens:
            token = base.token_str(c.text)
            pieces = _pieces(base, token)
            model["vocab"].append([token, _score(base, token, scores, low)])
            new.append(NewToken(base.next_id + len(new), token, pieces, c.gain, c.general))
    else:
        merges = [m if isinstance(m, list) else m.split(" ", 1) for m in model["merges"]]
        gains: dict[str, NewToken] = {}
        for c in selection.choices:
            token = base.token_str(c.text)
            if c.new:
                gains[token] = NewToken(base.next_id + len(new), token, _pieces(base, token), c.gain, c.general)
                model["vocab"][token] = gains[token].id
                new.append(gains[token])
            else:
                gains[token].gain += c.gain
                gains[token].general += c.general
            if c.key[0] == "merge":
                merges.append([base.token_str(c.key[1]), base.token_str(c.key[2])])
        model["merges"] = merges
    return Tokenizer.from_str(json.dumps(spec, ensure_ascii=False)), new


def _pieces(base: BaseTokenizer, token: str) -> list[int]:
    """The ORIGINAL tokenizer's segmentation of a new token's text (never the extended one's)."""
    return [t.id for t in base.backend.model.tokenize(token)]


def _score(base: BaseTokenizer, token: str, scores: list[float], low: float) -> float:
    """Log probability of the base model's best segmentation of `token`, plus eps per token saved."""
    toks = base.backend.model.tokenize(token)
    raw = token.encode("utf-8")
    total, unknown = 0.0, set()
    for t in toks:
        if t.id in base.byte_ids or t.id == base.unk_id:
            unknown.add(tuple(t.offsets))  # byte-fallback tokens of one character share its span
        else:
            total += scores[t.id]
    chars = sum(len(raw[a:b].decode("utf-8", "replace")) for a, b in unknown)
    return total + chars * (low - UNK_PENALTY) + EPS * (len(toks) - 1)
