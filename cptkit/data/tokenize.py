"""Tokenize document batches in worker processes with the model's own tokenizer.

Workers load the tokenizer once from the folder data preparation saved it to. A fast tokenizer
(`tokenizer.json`) is run through the `tokenizers` library directly: same ids, no transformers
import in the worker, and batch encoding in Rust. Anything else falls back to AutoTokenizer.
Each document becomes [start] + ids + [eos]; nothing is truncated.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cptkit.data.documents import Document

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@dataclass(frozen=True)
class TokenizerSpec:
    folder: str
    start_id: int
    eos_id: int
    use_backend: bool  # True: tokenizers.Tokenizer on tokenizer.json; False: AutoTokenizer


_encoder: Callable[[list[str]], list[list[int]]] | None = None
_spec: TokenizerSpec | None = None


def make_encoder(spec: TokenizerSpec) -> Callable[[list[str]], list[list[int]]]:
    if spec.use_backend:
        from tokenizers import Tokenizer

        backend = Tokenizer.from_file(str(Path(spec.folder) / "tokenizer.json"))
        backend.no_truncation()
        backend.no_padding()

        def encode(texts: list[str]) -> list[list[int]]:
            return [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]

        return encode
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(spec.folder)

    def encode(texts: list[str]) -> list[list[int]]:
        return tok(texts, add_special_tokens=False, verbose=False)["input_ids"]

    return encode


def init_worker(spec: TokenizerSpec) -> None:
    global _encoder, _spec
    _encoder = make_encoder(spec)
    _spec = spec


def encode_documents(texts: list[str]) -> list[np.ndarray]:
    """In a worker: each text as [start] + ids + [eos], int64."""
    assert _encoder is not None and _spec is not None, "init_worker was not called"
    out = []
    for ids in _encoder(texts):
        arr = np.empty(len(ids) + 2, dtype=np.int64)
        arr[0] = _spec.start_id
        arr[1:-1] = ids
        arr[-1] = _spec.eos_id
        out.append(arr)
    return out


def run_batches(
    spec: TokenizerSpec, batches: Iterable[list[Document]], workers: int
) -> Iterator[tuple[list[Document], list[np.ndarray]]]:
    """Tokenize batches of documents, yielding (batch, token arrays) in input order.

    At most 2 * workers batches are in flight, so memory stays bounded however fast the
    readers are (Pool.imap would read the whole input ahead into its task queue).
    """
    if workers <= 1:
        init_worker(spec)
        for batch in batches:
            yield batch, encode_documents([d.text for d in batch])
        return
    import multiprocessing as mp

    # spawn, not fork: the parent may hold torch and Rust thread pools that do not survive fork.
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=init_worker, initargs=(spec,)) as pool:
        pending: deque = deque()
        for batch in batches:
            pending.append((batch, pool.apply_async(encode_documents, ([d.text for d in batch],))))
            if len(pending) >= 2 * workers:
                done, result = pending.popleft()
                yield done, result.get()
        while pending:
            done, result = pending.popleft()
            yield done, result.get()
