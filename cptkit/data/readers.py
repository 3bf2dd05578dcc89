"""Stream documents out of JSONL, JSON, Parquet, CSV and plain-text files, compressed or not.

Nothing here holds a whole file in memory except a single record. Every line or record that
cannot become a document is counted in `BadInput` under a reason, with `file:line` samples:
    invalid_utf8, malformed_json, not_an_object, missing_field, non_string_field, empty_text,
    blank_line, binary_file, unreadable_file, corrupt_compression, empty_file, document_too_large

A large JSONL or Parquet file can be read in parts (`Span`): a byte range of an uncompressed
JSONL file whose lines are numbered from a known first line, a range of the decompressed bytes
of a compressed one (lines counted from the start), or a range of Parquet row groups. JSONL is
read in blocks of `_CHUNK` bytes from the start of a compressed stream whatever the range, so a
stream that breaks off (a truncated `.gz`) breaks off at the same line for every way of cutting
it into parts, and only the part holding that line counts it. A record longer than `max_bytes`
is counted as document_too_large; a JSONL line that long is skipped block by block, never held
in memory whole.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cptkit.data.documents import BadInput, Document

COMPRESSIONS = (".gz", ".zst", ".zstd", ".bz2", ".xz")
FORMATS = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet",
    ".csv": "csv", ".tsv": "csv", ".txt": "text", ".md": "text", ".text": "text",
}
_CHUNK = 1 << 20
DEFAULT_MAX_BYTES = 16 * 2**20


TO_END = 2**63 - 1  # the end of a range that runs to the end of the file


@dataclass(frozen=True)
class Span:
    """Part of a file: JSONL bytes [start, end) whose first line is `first` (lines that start in
    the range belong to it; `first` 0: a compressed file's decompressed bytes, lines counted by
    the reader), or Parquet row groups [start, end) whose first row is `first`."""

    start: int
    end: int
    first: int
_DECODE_ERRORS = (OSError, EOFError, lzma.LZMAError, ValueError)


def detect_format(path: Path, declared: str = "auto") -> str:
    if declared != "auto":
        return declared
    name = path.name.lower()
    for ext in COMPRESSIONS:
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    return FORMATS.get(Path(name).suffix, "text")


def open_binary(path: Path) -> BinaryIO:
    """A buffered binary stream of the file's decompressed bytes."""
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith((".zst", ".zstd")):
        import zstandard

        raw = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
        return io.BufferedReader(raw, buffer_size=_CHUNK)
    if name.endswith(".bz2"):
        return bz2.open(path, "rb")
    if name.endswith(".xz"):
        return lzma.open(path, "rb")
    return open(path, "rb", buffering=_CHUNK)


def read_file(
    path: Path,
    text_field: str = "text",
    id_field: str | None = None,
    fmt: str = "auto",
    bad: BadInput | None = None,
    source: str = "",
    span: Span | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Iterator[Document]:
    """Yield the documents of one file (or of one span of it); count what cannot be one in `bad`."""
    bad = bad if bad is not None else BadInput()
    kind = detect_format(path, fmt)
    where = str(path)
    try:
        if path.stat().st_size == 0:
            bad.add("empty_file", f"{where}:0")
            return
        limits = Limits(text_field, id_field, max_bytes)
        if kind == "jsonl":
            yield from _read_jsonl(path, limits, bad, source, span)
        elif kind == "parquet":
            yield from _read_parquet(path, limits, bad, source, span)
        else:
            reader = {"json": _read_json, "csv": _read_csv, "text": _read_text}[kind]
            yield from reader(path, limits, bad, source)
    except _DECODE_ERRORS as exc:
        reason = "unreadable_file" if isinstance(exc, (FileNotFoundError, PermissionError)) else (
            "corrupt_compression" if path.name.lower().endswith(COMPRESSIONS) else "unreadable_file")
        bad.add(reason, f"{where}", detail=_short(exc))


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 160 else text[:157] + "..."


@dataclass(frozen=True)
class Limits:
    text_field: str
    id_field: str | None
    max_bytes: int


def too_large(text: str, max_bytes: int) -> bool:
    # A character is at most 4 UTF-8 bytes: encode only texts that might be over the limit.
    return len(text) * 4 > max_bytes and len(text.encode("utf-8", "surrogatepass")) > max_bytes


def to_document(obj: Any, where: str, lim: Limits, bad: BadInput, source: str) -> Document | None:
    """Turn one parsed record into a Document, or count why it cannot be one."""
    text_field, id_field = lim.text_field, lim.id_field
    if not isinstance(obj, dict):
        bad.add("not_an_object", where, detail=type(obj).__name__)
        return None
    if text_field not in obj:
        bad.add("missing_field", where, detail=f"no {text_field!r}")
        return None
    text = obj[text_field]
    if not isinstance(text, str):
        bad.add("non_string_field", where, detail=f"{text_field!r} is {type(text).__name__}")
        return None
    if not text.strip():
        bad.add("empty_text", where)
        return None
    if too_large(text, lim.max_bytes):
        bad.add("document_too_large", where, detail=f"over {lim.max_bytes:,} bytes")
        return None
    if _has_surrogates(text):  # JSON "\ud800" escapes decode to text no UTF-8 file can hold
        bad.add("lone_surrogate", where)
        return None
    doc_id = where
    if id_field is not None and obj.get(id_field) is not None:
        doc_id = str(obj[id_field])
        if _has_surrogates(doc_id):
            doc_id = doc_id.encode("utf-8", "backslashreplace").decode("utf-8")
    return Document(id=doc_id, text=text, source=source)


def _read_jsonl(path, lim: Limits, bad, source, span: Span | None) -> Iterator[Document]:
    with open_binary(path) as fh:
        if span is None:
            pos, lineno, head, end = 0, 1, b"", TO_END
        elif span.first == 0:  # a range of a compressed stream: find where its first line starts
            try:
                pos, lineno, head = _align(fh, span.start)
            except _DECODE_ERRORS:
                return  # the stream breaks off before this range: the part holding that line counts it
            end = span.end
        else:
            fh.seek(span.start)
            pos, lineno, head, end = span.start, span.first, b"", span.end
        for raw in _lines(fh, pos, end, lim.max_bytes, head):
            where = f"{path}:{lineno}"
            lineno += 1
            if raw is None:
                bad.add("document_too_large", where, detail=f"line over {lim.max_bytes:,} bytes")
                continue
            doc = _jsonl_line(raw, where, lim, bad, source)
            if doc is not None:
                yield doc


def _align(fh, start: int) -> tuple[int, int, bytes]:
    """Read a stream from its beginning to the first line that starts at or after `start`:
    (that line's offset, its line number, the bytes already read past it)."""
    pos = lines = 0
    if start <= 0:
        return 0, 1, b""
    while block := fh.read(_CHUNK):
        # A line starts at `start` exactly when byte start - 1 is a newline.
        if pos + len(block) >= start:
            j = block.find(b"\n", start - 1 - pos if start - 1 >= pos else 0)
            if j >= 0:
                return pos + j + 1, 1 + lines + block.count(b"\n", 0, j + 1), block[j + 1 :]
        lines += block.count(b"\n")
        pos += len(block)
    return pos, lines + 1, b""


def _lines(fh, pos: int, end: int, max_bytes: int, head: bytes = b"") -> Iterator[bytes | None]:
    """The lines (newline included) of `fh`, read on from offset `pos` (a line start, with `head`
    already read), that start before `end`; None for a line longer than max_bytes (without its
    newline), whose bytes are dropped as they are read."""
    pending: list[bytes] = []
    size = 0  # bytes of the current line read so far
    block = head
    while pos < end:
        if not block:
            block = fh.read(_CHUNK)
            if not block:
                break
        i = 0
        while True:
            j = block.find(b"\n", i)
            if j < 0:
                size += len(block) - i
                if size <= max_bytes:
                    pending.append(block[i:])
                else:
                    pending.clear()
                break
            size += j - i
            if size > max_bytes:
                yield None
            else:
                yield b"".join(pending) + block[i : j + 1] if pending else block[i : j + 1]
            pending.clear()
            pos += size + 1
            size, i = 0, j + 1
            if pos >= end:
                return
        block = b""
    if size:  # a last line without a newline
        yield None if size > max_bytes else b"".join(pending)


def _jsonl_line(raw: bytes, where: str, lim: Limits, bad: BadInput, source: str) -> Document | None:
    if not raw.strip():
        # A trailing newline yields no line; a blank line inside the file is counted.
        bad.add("blank_line", where)
        return None
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad.add("invalid_utf8", where, detail=f"byte {exc.start}")
        return None
    try:
        obj = json.loads(line)
    except (json.JSONDecodeError, RecursionError) as exc:
        bad.add("malformed_json", where, detail=str(exc)[:120])
        return None
    return to_document(obj, where, lim, bad, source)


def _read_json(path, lim: Limits, bad, source) -> Iterator[Document]:
    """A JSON array of objects, a single object, or {"key": [objects]}; decoded one value at a time."""
    with open_binary(path) as fh:
        stream = io.TextIOWrapper(fh, encoding="utf-8", errors="strict")
        before, values = bad.total, 0  # documents yielded
        for where, obj in _json_values(stream, str(path), bad):
            if isinstance(obj, dict) and lim.text_field not in obj:
                lists = [v for v in obj.values() if isinstance(v, list)]
                if len(lists) == 1:  # a {"data": [...]} wrapper around the records
                    for j, item in enumerate(lists[0]):
                        doc = to_document(item, f"{where}#{j}", lim, bad, source)
                        if doc is not None:
                            values += 1
                            yield doc
                    continue
            doc = to_document(obj, where, lim, bad, source)
            if doc is not None:
                values += 1
                yield doc
        if values == 0 and bad.total == before:
            bad.add("empty_file", f"{path}:1", detail="no record")


def _json_values(stream: io.TextIOBase, name: str, bad: BadInput) -> Iterator[tuple[str, Any]]:
    """The top-level values of a JSON document or of its outer array, with their line numbers."""
    decoder = json.JSONDecoder()
    buf, pos, line, eof = "", 0, 1, False
    while True:
        while pos < len(buf) and buf[pos] in " \t\r\n,[]":
            line += buf[pos] == "\n"
            pos += 1
        if pos == len(buf):
            if eof:
                return
            buf, pos, eof = _refill(stream, buf, pos, name, bad)
            continue
        try:
            obj, end = decoder.raw_decode(buf, pos)
        except json.JSONDecodeError as exc:
            if eof:
                bad.add("malformed_json", f"{name}:{line}", detail=str(exc)[:120])
                return
            buf, pos, eof = _refill(stream, buf, pos, name, bad)
            continue
        yield f"{name}:{line}", obj
        line += buf.count("\n", pos, end)
        pos = end


def _refill(stream, buf: str, pos: int, name: str, bad: BadInput) -> tuple[str, int, bool]:
    try:
        chunk = stream.read(_CHUNK)
    except UnicodeDecodeError as exc:
        bad.add("invalid_utf8", name, detail=f"byte {exc.start} of a chunk; the rest of the file is skipped")
        return buf[pos:], 0, True
    return buf[pos:] + chunk, 0, not chunk


def _read_parquet(path, lim: Limits, bad, source, span: Span | None) -> Iterator[Document]:
    import pyarrow.parquet as pq

    text_field, id_field = lim.text_field, lim.id_field
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises its own error types for non-parquet bytes
        bad.add("unreadable_file", f"{path}", detail=_short(exc))
        return
    names = set(pf.schema_arrow.names)
    groups = list(range(span.start, span.end)) if span is not None else None
    if text_field not in names:
        rows = pf.metadata.num_rows if groups is None else sum(pf.metadata.row_group(g).num_rows for g in groups)
        bad.add("missing_field", f"{path}", n=max(rows, 1), detail=f"no column {text_field!r}")
        return
    columns = [text_field] + ([id_field] if id_field and id_field in names else [])
    row = span.first - 1 if span is not None else 0
    for batch in pf.iter_batches(columns=columns, batch_size=1024, row_groups=groups):
        data = batch.to_pydict()
        ids = data.get(id_field) if id_field else None
        for i, text in enumerate(data[text_field]):
            row += 1
            obj = {text_field: text}
            if ids is not None:
                obj[id_field] = ids[i]
            doc = to_document(obj, f"{path}:{row}", lim, bad, source)
            if doc is not None:
                yield doc


def _read_csv(path, lim: Limits, bad, source) -> Iterator[Document]:
    csv.field_size_limit(sys.maxsize)
    delimiter = "\t" if ".tsv" in path.name.lower() else ","
    with open_binary(path) as fh:
        stream = io.TextIOWrapper(fh, encoding="utf-8", errors="surrogateescape", newline="")
        reader = csv.DictReader(stream, delimiter=delimiter)
        try:
            fields = reader.fieldnames or []
        except csv.Error as exc:
            bad.add("malformed_csv", f"{path}:1", detail=str(exc))
            return
        if lim.text_field not in fields:
            bad.add("missing_field", f"{path}:1", detail=f"no column {lim.text_field!r} in header")
            return
        while True:
            try:
                row = next(reader)
            except StopIteration:
                if reader.line_num <= 1:
                    bad.add("empty_file", f"{path}:1", detail="a header and no rows")
                return
            except csv.Error as exc:
                bad.add("malformed_csv", f"{path}:{reader.line_num}", detail=str(exc)[:120])
                return
            where = f"{path}:{reader.line_num}"
            text = row.get(lim.text_field)
            if isinstance(text, str) and _has_surrogates(text):
                bad.add("invalid_utf8", where)
                continue
            doc = to_document(row, where, lim, bad, source)
            if doc is not None:
                yield doc


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _read_text(path, lim: Limits, bad, source) -> Iterator[Document]:
    """One document per file; binary files and invalid UTF-8 are refused with a reason."""
    where = f"{path}:1"
    with open_binary(path) as fh:
        data = fh.read(lim.max_bytes + 1)
    if len(data) > lim.max_bytes:
        bad.add("document_too_large", where, detail=f"file over {lim.max_bytes:,} bytes")
        return
    if b"\x00" in data[:8192]:
        bad.add("binary_file", where)
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad.add("invalid_utf8", f"{path}:{line}", detail=f"byte {exc.start}")
        return
    if not text.strip():
        bad.add("empty_text", where)
        return
    yield Document(id=str(path), text=text, source=source)
