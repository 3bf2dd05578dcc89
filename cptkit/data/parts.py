"""Splitting a source into parts: the unit of parallel work and of resuming.

A part is one of:
- a byte range of an uncompressed JSONL file, cut just after a newline, with the number of its
  first line counted, so document ids stay `file:line`;
- a range of the decompressed bytes of a compressed JSONL file (`.gz`, `.zst`, ...). A
  compressed stream cannot be entered in the middle, so the worker decompresses from the start,
  counting lines, and keeps the lines that start inside its range; decompressing is some 50
  times faster than tokenizing, so the bytes skipped cost little;
- a range of row groups of a Parquet file, or a row range / stream shard of a Hugging Face
  dataset;
- a run of consecutive whole files (JSON arrays, CSV, text, and any file smaller than a part),
  so that thousands of small files do not pay a part's fixed cost each.

How large a part is (`part_target`): small enough that every worker gets several parts even
from one small file (all cores busy, and the last parts finish close together), never larger
than `data.part_bytes`, never smaller than `MIN_PART_BYTES` (a part has a fixed cost: its
folder, files and arrays). Parts are numbered in input order and assembled in that order
whatever order the workers finish them in, and a document's id and text do not depend on the
part it falls in, so the shards, curated files and content hash are the same for any part size
and worker count. The parts of a source are planned once and listed in its work folder, so a
resumed prepare redoes exactly the unfinished ones.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cptkit.data import hfsource
from cptkit.data.documents import BadInput, Document
from cptkit.data.readers import COMPRESSIONS, TO_END, Limits, Span, detect_format, read_file

_SCAN = 1 << 20
PARTS_PER_WORKER = 4
MIN_PART_BYTES = 1 << 20
# Assumed expansion of a compressed file whose size is not recorded in it (bz2, xz, a zstd
# frame without its content size): a guess that only sizes parts, never decides content.
_EXPANSION = 4
# Deflate cannot expand data more than about 1032-fold: a gzip size field above that is not the
# file's (a truncated file ends in compressed bytes, not in its recorded size) and is ignored.
_DEFLATE_MAX_RATIO = 1032


@dataclass(frozen=True)
class Part:
    index: int
    path: str  # the file (the first file of a run of whole files), or the dataset's path
    span: Span | None = None  # a range of the file; None: the whole file
    dataset_part: tuple[str, int, int] | None = None  # for a `dataset:` source
    more: tuple[str, ...] = ()  # whole files read after `path`, in order

    @property
    def files(self) -> tuple[str, ...]:
        return (self.path, *self.more)

    def describe(self) -> str:
        if self.dataset_part is not None:
            kind, a, b = self.dataset_part
            return f"{self.path} {'rows' if kind == 'rows' else 'shard'} {a}..{b}"
        if self.span is not None:
            return f"{self.path} from byte/row {self.span.start}"
        return self.path + (f" and {len(self.more)} more files" if self.more else "")

    def to_json(self) -> dict:
        return {"path": self.path, "span": [self.span.start, self.span.end, self.span.first] if self.span else None,
                "dataset_part": list(self.dataset_part) if self.dataset_part else None, "more": list(self.more)}

    @classmethod
    def from_json(cls, index: int, entry: dict) -> Part:
        return cls(index, entry["path"], Span(*entry["span"]) if entry["span"] else None,
                   tuple(entry["dataset_part"]) if entry["dataset_part"] else None, tuple(entry.get("more", ())))


def part_target(total_bytes: int, workers: int, part_bytes: int) -> int:
    """Bytes per part for a source of `total_bytes` (uncompressed) run by `workers` workers."""
    enough = -(-total_bytes // (PARTS_PER_WORKER * max(workers, 1)))
    return max(min(part_bytes, enough), min(MIN_PART_BYTES, part_bytes))


def compressed(path: Path) -> bool:
    return path.name.lower().endswith(COMPRESSIONS)


def text_bytes(path: Path) -> int:
    """The file's size once decompressed: exact for an uncompressed file, recorded in the file
    where the format has it (gzip's last member, a zstd frame header), otherwise estimated."""
    size = path.stat().st_size
    name = path.name.lower()
    try:
        if name.endswith(".gz") and size >= 18:
            with open(path, "rb") as fh:
                fh.seek(-4, 2)
                recorded = struct.unpack("<I", fh.read(4))[0]  # ISIZE: modulo 2**32
            return recorded if size <= recorded <= size * _DEFLATE_MAX_RATIO else size * _EXPANSION
        if name.endswith((".zst", ".zstd")):
            import zstandard

            with open(path, "rb") as fh:
                recorded = zstandard.frame_content_size(fh.read(18))
            return recorded if recorded > 0 else size * _EXPANSION
    except Exception:  # unreadable, or not what its name says: the reader counts it when it reads it
        return size
    return size * _EXPANSION if compressed(path) else size


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


def stream_spans(expected: int, part_bytes: int) -> list[Span]:
    """Equal ranges of a compressed file's decompressed bytes (first line unknown: 0); the last
    one is open-ended, so every line belongs to exactly one range even when `expected` is off."""
    n = max(-(-expected // part_bytes), 1)
    step = -(-expected // n)
    return [Span(k * step, (k + 1) * step if k < n - 1 else TO_END, 0) for k in range(n)]


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


def _file_spans(path: Path, fmt: str, size: int, target: int) -> list[Span] | None:
    """The ranges a file is split into, or None to read it whole."""
    if size <= target:
        return None
    if fmt == "jsonl":
        return stream_spans(size, target) if compressed(path) else jsonl_spans(path, target)
    if fmt == "parquet" and not compressed(path):
        return parquet_spans(path, target)
    return None  # JSON arrays, CSV (quoted newlines) and text cannot be entered in the middle


def plan_parts(src, files: list[Path], part_bytes: int, where: str, target: int | None = None) -> list[Part]:
    """The parts of one source, in input order. `target` (default part_bytes) is the size to
    aim for; a file larger than it is split where its format allows, smaller files are grouped."""
    if src.dataset is not None:
        ranges = hfsource.plan(src.dataset, part_bytes, f"{where}.dataset")
        return [Part(i, src.dataset.path, dataset_part=r) for i, r in enumerate(ranges)]
    target = target or part_bytes
    parts: list[Part] = []
    group: list[str] = []
    group_bytes = 0

    def close_group() -> None:
        nonlocal group, group_bytes
        if group:
            parts.append(Part(len(parts), group[0], more=tuple(group[1:])))
        group, group_bytes = [], 0

    for f in files:
        size = text_bytes(f)
        spans = _file_spans(f, detect_format(f, src.format), size, target)
        if spans:
            close_group()
            for span in spans:
                parts.append(Part(len(parts), str(f), span))
            continue
        if group and group_bytes + size > target:
            close_group()
        group.append(str(f))
        group_bytes += size
    close_group()
    return parts


def source_bytes(src, files: list[Path]) -> int:
    """A source's (decompressed) input bytes, for `part_target`; 0 for a dataset."""
    return 0 if src.dataset is not None else sum(text_bytes(f) for f in files)


def read_part(part: Part, src, lim: Limits, bad: BadInput, source: str, where: str) -> Iterator[Document]:
    if part.dataset_part is not None:
        yield from hfsource.read_part(src.dataset, part.dataset_part, lim, bad, source, f"{where}.dataset")
        return
    for path in part.files:
        yield from read_file(Path(path), lim.text_field, lim.id_field, src.format, bad, source,
                             span=part.span, max_bytes=lim.max_bytes)
