"""Splitting a source into parts: the unit of parallel work and of resuming.

A part is a whole file, a byte range of a large uncompressed JSONL file (cut just after a
newline, with the number of its first line counted, so document ids stay `file:line`), a range
of row groups of a large Parquet file, or a row range / stream shard of a Hugging Face dataset.
Compressed files, JSON arrays, CSV and text files are read whole: they cannot be entered in
the middle. Parts are numbered in input order; whatever order workers finish them in, the
source is assembled in this order, so the output does not depend on scheduling.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cptkit.data import hfsource
from cptkit.data.documents import BadInput, Document
from cptkit.data.readers import COMPRESSIONS, Limits, Span, detect_format, read_file

_SCAN = 1 << 20


@dataclass(frozen=True)
class Part:
    index: int
    path: str  # the file, or the dataset's path
    span: Span | None = None  # a range of a file; None: the whole file
    dataset_part: tuple[str, int, int] | None = None  # for a `dataset:` source

    def describe(self) -> str:
        if self.dataset_part is not None:
            kind, a, b = self.dataset_part
            return f"{self.path} {'rows' if kind == 'rows' else 'shard'} {a}..{b}"
        if self.span is not None:
            return f"{self.path} from line/row {self.span.first}"
        return self.path


def jsonl_spans(path: Path, part_bytes: int) -> list[Span]:
    """Byte ranges of about part_bytes, each ending just after a newline, with first line numbers."""
    size = path.stat().st_size
    if size <= part_bytes:
        return [Span(0, size, 1)]
    spans, start, first = [], 0, 1
    pos = lines = 0
    target = part_bytes
    with open(path, "rb") as fh:
        while chunk := fh.read(_SCAN):
            while target < pos + len(chunk):
                i = chunk.find(b"\n", max(target - pos, 0))
                if i < 0:
                    break  # the cut falls in a later chunk
                cut = pos + i + 1
                spans.append(Span(start, cut, first))
                start, first = cut, 1 + lines + chunk.count(b"\n", 0, i + 1)
                target = cut + part_bytes
            lines += chunk.count(b"\n")
            pos += len(chunk)
    if start < size:
        spans.append(Span(start, size, first))
    return spans


def parquet_spans(path: Path, part_bytes: int) -> list[Span] | None:
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
    except Exception:  # not a readable parquet file: the reader counts it when it reads it whole
        return None
    spans, start, first, size, row = [], 0, 1, 0, 0
    for g in range(meta.num_row_groups):
        size += meta.row_group(g).total_byte_size
        row += meta.row_group(g).num_rows
        if size >= part_bytes or g == meta.num_row_groups - 1:
            spans.append(Span(start, g + 1, first))
            start, first, size = g + 1, row + 1, 0
    return spans or None


def plan_parts(src, files: list[Path], part_bytes: int, where: str) -> list[Part]:
    """The parts of one source, in input order."""
    if src.dataset is not None:
        ranges = hfsource.plan(src.dataset, part_bytes, f"{where}.dataset")
        return [Part(i, src.dataset.path, dataset_part=r) for i, r in enumerate(ranges)]
    parts: list[Part] = []
    for f in files:
        fmt = detect_format(f, src.format)
        spans: list[Span] | None = None
        big = f.stat().st_size > part_bytes and not f.name.lower().endswith(COMPRESSIONS)
        if big and fmt == "jsonl":
            spans = jsonl_spans(f, part_bytes)
        elif big and fmt == "parquet":
            spans = parquet_spans(f, part_bytes)
        for span in spans or [None]:
            parts.append(Part(len(parts), str(f), span))
    return parts


def read_part(part: Part, src, lim: Limits, bad: BadInput, source: str, where: str) -> Iterator[Document]:
    if part.dataset_part is not None:
        yield from hfsource.read_part(src.dataset, part.dataset_part, lim, bad, source, f"{where}.dataset")
        return
    yield from read_file(Path(part.path), lim.text_field, lim.id_field, src.format, bad, source,
                         span=part.span, max_bytes=lim.max_bytes)
