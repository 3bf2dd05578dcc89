"""Memory-mapped token shards: flat token files plus an index of where each document starts.

A split (`train` or `eval`) of a prepared source is a list of shards. Each shard is
    tokens-NNNNN.bin  the documents' tokens back to back (uint16 when the vocabulary fits, else uint32)
    docs-NNNNN.npy    int64 [n_docs, 2]: each document's start offset and its text's UTF-8 bytes
Every document is stored as [start] + text tokens + [EOS], where start is the model's BOS token
(or EOS for models without one), so boundaries survive packing and no text is truncated.

Training reads fixed windows of seq_len + 1 tokens at stride seq_len (inputs and shifted labels
overlap by one token), never crossing a shard; the last window of a shard is padded rather than
dropped, so every token is trained on once per epoch. Position ids restart at each document
start and labels that would predict across a boundary are masked.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IGNORE_INDEX = -100


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)


class ShardWriter:
    """Append documents to numbered shards of one split; `close()` returns the shard list."""

    def __init__(self, folder: Path, dtype: np.dtype, shard_tokens: int):
        self.folder = folder
        self.dtype = dtype
        self.shard_tokens = shard_tokens
        self.shards: list[dict] = []
        self.hasher = hashlib.sha256()
        self._fh = None
        self._starts: list[int] = []
        self._n = 0
        folder.mkdir(parents=True, exist_ok=True)

    def _open(self) -> None:
        index = len(self.shards)
        self._name = f"tokens-{index:05d}.bin"
        self._fh = open(self.folder / self._name, "wb")
        self._starts, self._n = [], 0

    def add(self, tokens: np.ndarray, n_bytes: int) -> None:
        """Append one document's complete token sequence (start and EOS included)."""
        if self._fh is None:
            self._open()
        data = np.ascontiguousarray(tokens, dtype=self.dtype)
        self._starts.append((self._n, n_bytes))
        self._fh.write(data.tobytes())
        self.hasher.update(data.tobytes())
        self._n += len(data)
        if self._n >= self.shard_tokens:
            self._finish()

    def add_many(self, tokens: np.ndarray, offsets: np.ndarray, n_bytes: np.ndarray) -> None:
        """Append documents stored back to back (document i is tokens[offsets[i]:offsets[i+1]]).

        The same shards and hash as calling `add` once per document, in a few large writes.
        """
        first = 0
        n_docs = len(offsets) - 1
        while first < n_docs:
            if self._fh is None:
                self._open()
            ends = offsets[first + 1 :] - offsets[first]
            # `add` closes a shard right after the document that brings it to shard_tokens.
            full = np.flatnonzero(self._n + ends >= self.shard_tokens)
            last = first + (int(full[0]) if len(full) else n_docs - 1 - first)
            data = np.ascontiguousarray(tokens[offsets[first] : offsets[last + 1]], dtype=self.dtype)
            starts = self._n + offsets[first : last + 1] - offsets[first]
            self._starts.extend(zip(starts.tolist(), n_bytes[first : last + 1].tolist()))
            self._fh.write(data.tobytes())
            self.hasher.update(data.tobytes())
            self._n += len(data)
            if self._n >= self.shard_tokens:
                self._finish()
            first = last + 1

    def _finish(self) -> None:
        if self._fh is None:
            return
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        docs_name = self._name.replace("tokens-", "docs-").replace(".bin", ".npy")
        np.save(self.folder / docs_name, np.asarray(self._starts, dtype=np.int64).reshape(-1, 2))
        self.shards.append({
            "tokens": self._name, "docs": docs_name, "n_tokens": self._n, "n_docs": len(self._starts),
        })
        self._fh = None

    def close(self) -> list[dict]:
        self._finish()
        return self.shards


@dataclass
class Shard:
    tokens: np.memmap
    starts: np.ndarray  # document start offsets, sorted
    doc_bytes: np.ndarray  # UTF-8 bytes of each document's text

    def __len__(self) -> int:
        return len(self.tokens)


def open_split(folder: Path, shard_list: list[dict], dtype: str) -> list[Shard]:
    out = []
    for entry in shard_list:
        tokens = np.memmap(folder / entry["tokens"], dtype=np.dtype(dtype), mode="r")
        if len(tokens) != entry["n_tokens"]:
            raise ValueError(f"{folder / entry['tokens']}: {len(tokens)} tokens, manifest says {entry['n_tokens']}")
        docs = np.load(folder / entry["docs"])
        out.append(Shard(tokens=tokens, starts=docs[:, 0].copy(), doc_bytes=docs[:, 1].copy()))
    return out


def windows_in(n_tokens: int, seq_len: int) -> int:
    """Windows of a shard: every token but the first is a label exactly once."""
    return max(-(-(n_tokens - 1) // seq_len), 0)


class WindowIndex:
    """Maps a window number to (shard, offset) for fixed windows of seq_len + 1 tokens."""

    def __init__(self, shards: list[Shard], seq_len: int):
        self.shards = shards
        self.seq_len = seq_len
        per_shard = [windows_in(len(s), seq_len) for s in shards]
        self.cumulative = np.cumsum([0] + per_shard)

    def __len__(self) -> int:
        return int(self.cumulative[-1])

    def window(self, index: int, document_masking: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(input_ids, labels, position_ids) of one window, each of length seq_len."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        k = int(np.searchsorted(self.cumulative, index, side="right")) - 1
        shard = self.shards[k]
        start = (index - int(self.cumulative[k])) * self.seq_len
        return pack_window(shard, start, self.seq_len, document_masking)


def pack_window(
    shard: Shard, start: int, seq_len: int, document_masking: bool = True, end: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One window of seq_len positions starting at token `start`.

    Tokens at or after `end` (default: the shard's end) are not read; positions past them hold
    token 0 with masked labels, so a final short window still scores every token it holds.
    Padding sits after all real tokens, so under the causal mask it changes no real token's logits.
    """
    stop = min(start + seq_len + 1, len(shard) if end is None else end)
    chunk = np.asarray(shard.tokens[start:stop], dtype=np.int64)
    n = len(chunk) - 1
    inputs = np.zeros(seq_len, dtype=np.int64)
    labels = np.full(seq_len, IGNORE_INDEX, dtype=np.int64)
    inputs[:n], labels[:n] = chunk[:-1], chunk[1:]
    # Document starts strictly inside (start, start + seq_len]: the label at i predicts token
    # start+i+1, so a document starting there must not be predicted from the previous one.
    lo = np.searchsorted(shard.starts, start, side="right")
    hi = np.searchsorted(shard.starts, start + seq_len, side="right")
    boundaries = shard.starts[lo:hi] - start  # in 1..seq_len
    labels[boundaries - 1] = IGNORE_INDEX
    if document_masking:
        positions = np.arange(seq_len, dtype=np.int64)
        segment_start = np.zeros(seq_len, dtype=np.int64)
        inside = boundaries[boundaries < seq_len]
        segment_start[inside] = inside
        np.maximum.accumulate(segment_start, out=segment_start)
        positions -= segment_start
    else:
        positions = np.arange(seq_len, dtype=np.int64)
    return inputs, labels, positions
