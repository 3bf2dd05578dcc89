"""Candidate tokens: a tokenizer of the base's kind trained on the domain corpus.

The domain tokenizer has the base's own normalizer and pre-tokenizer, so its tokens are strings
of the same alphabet, cut at the same word boundaries; only its model (BPE merges, or Unigram
pieces) is learned from the domain text. Its tokens that the base vocabulary lacks are the
candidates; `select.py` then chooses among them by the tokens they save.

For the SentencePiece kinds the domain tokenizer also splits at every `▁` (SentencePiece's own
`split_by_whitespace`), so that no candidate holds a `▁` after another character: such a
piece could join two words, which the base tokenizer never does.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from cptkit.vocab.base import SPACE, BaseTokenizer

UNK = "<unk>"
# Longest Unigram piece (characters) the domain tokenizer may learn; SentencePiece's default.
MAX_PIECE_CHARS = 16


@dataclass
class Candidates:
    strings: set[bytes]  # new token candidates, as the bytes they stand for
    domain_vocab: int  # tokens in the domain tokenizer
    dropped: Counter = field(default_factory=Counter)  # reason -> domain tokens not kept as candidates


def train_domain_tokenizer(base: BaseTokenizer, texts: list[str], vocab_size: int):
    """A tokenizer of the base's kind (same normalizer and word splitting) trained on `texts`."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    if base.kind == "unigram":
        tok = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=[UNK], unk_token=UNK, show_progress=False,
            max_piece_length=MAX_PIECE_CHARS,
        )
    else:
        tok = Tokenizer(models.BPE())
        alphabet = pre_tokenizers.ByteLevel.alphabet() if base.byte_level else []
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, initial_alphabet=alphabet, min_frequency=2, show_progress=False,
        )
    tok.normalizer = base.backend.normalizer
    pre = base.backend.pre_tokenizer
    if base.space:
        split = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="never", split=True)
        pre = pre_tokenizers.Sequence([pre, split]) if pre is not None else split
    tok.pre_tokenizer = pre
    tok.train_from_iterator(texts, trainer)
    return tok


def candidate_strings(base: BaseTokenizer, domain_tokenizer) -> Candidates:
    """The domain tokenizer's tokens that the base vocabulary lacks, with the reasons for the others."""
    old = base.vocab_bytes()
    vocab = domain_tokenizer.get_vocab(with_added_tokens=False)
    out = Candidates(set(), len(vocab))
    for token in vocab:
        if token == UNK:
            continue
        data = base.token_bytes(token)
        if data in old:
            out.dropped["in_base_vocabulary"] += 1
        elif base.space and SPACE in token.lstrip(SPACE):
            out.dropped["spans_words"] += 1
        elif not _valid(base, data):
            out.dropped["not_whole_characters"] += 1
        else:
            out.strings.add(data)
    return out


def _valid(base: BaseTokenizer, data: bytes) -> bool:
    """SentencePiece pieces are text; byte-level tokens may end inside a character."""
    if base.byte_level:
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
