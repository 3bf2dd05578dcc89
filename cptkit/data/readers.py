"""Stream documents out of JSONL, JSON, Parquet, CSV and plain-text files, compressed or not.

Nothing here holds a whole file in memory except a single record. Every line or record that
cannot become a document is counted in `BadInput` under a reason, with `file:line` samples:
    invalid_utf8, malformed_json, not_an_object, missing_field, non_string_field, empty_text,
    blank_line, binary_file, unreadable_file, corrupt_compression, empty_file
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
from pathlib import Path
from typing import Any, BinaryIO

from cptkit.data.documents import BadInput, Document

COMPRESSIONS = (".gz", ".zst", ".zstd", ".bz2", ".xz")
FORMATS = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet",
    ".csv": "csv", ".tsv": "csv", ".txt": "text", ".md": "text", ".text": "text",
}
_CHUNK = 1 << 20
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
) -> Iterator[Document]:
    """Yield the documents of one file; count whatever cannot become a document in `bad`."""
    bad = bad if bad is not None else BadInput()
    kind = detect_format(path, fmt)
    reader = {"jsonl": _read_jsonl, "json": _read_json, "parquet": _read_parquet,
              "csv": _read_csv, "text": _read_text}[kind]
    where = str(path)
    try:
        if path.stat().st_size == 0:
            bad.add("empty_file", f"{where}:0")
            return
        yield from reader(path, text_field, id_field, bad, source)
    except _DECODE_ERRORS as exc:
        reason = "unreadable_file" if isinstance(exc, (FileNotFoundError, PermissionError)) else (
            "corrupt_compression" if path.name.lower().endswith(COMPRESSIONS) else "unreadable_file")
        bad.add(reason, f"{where}", detail=_short(exc))


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 160 else text[:157] + "..."


def _record(
    obj: Any, where: str, text_field: str, id_field: str | None, bad: BadInput, source: str
) -> Document | None:
    """Turn one parsed record into a Document, or count why it cannot be one."""
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
    doc_id = where
    if id_field is not None and obj.get(id_field) is not None:
        doc_id = str(obj[id_field])
    return Document(id=doc_id, text=text, source=source)


def _read_jsonl(path, text_field, id_field, bad, source) -> Iterator[Document]:
    with open_binary(path) as fh:
        for lineno, raw in enumerate(fh, start=1):
            where = f"{path}:{lineno}"
            if not raw.strip():
                # A trailing newline yields no line; a blank line inside the file is counted.
                bad.add("blank_line", where)
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                bad.add("invalid_utf8", where, detail=f"byte {exc.start}")
                continue
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as exc:
                bad.add("malformed_json", where, detail=str(exc)[:120])
                continue
            doc = _record(obj, where, text_field, id_field, bad, source)
            if doc is not None:
                yield doc


def _read_json(path, text_field, id_field, bad, source) -> Iterator[Document]:
    """A JSON array of objects, a single object, or {"key": [objects]}; decoded one value at a time."""
    with open_binary(path) as fh:
        stream = io.TextIOWrapper(fh, encoding="utf-8", errors="strict")
        for where, obj in _json_values(stream, str(path), bad):
            if isinstance(obj, dict) and text_field not in obj:
                lists = [v for v in obj.values() if isinstance(v, list)]
                if len(lists) == 1:  # a {"data": [...]} wrapper around the records
                    for j, item in enumerate(lists[0]):
                        doc = _record(item, f"{where}#{j}", text_field, id_field, bad, source)
                        if doc is not None:
                            yield doc
                    continue
            doc = _record(obj, where, text_field, id_field, bad, source)
            if doc is not None:
                yield doc


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


def _read_parquet(path, text_field, id_field, bad, source) -> Iterator[Document]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises its own error types for non-parquet bytes
        bad.add("unreadable_file", f"{path}", detail=_short(exc))
        return
    names = set(pf.schema_arrow.names)
    if text_field not in names:
        bad.add("missing_field", f"{path}", n=max(pf.metadata.num_rows, 1), detail=f"no column {text_field!r}")
        return
    columns = [text_field] + ([id_field] if id_field and id_field in names else [])
    row = 0
    for batch in pf.iter_batches(columns=columns, batch_size=1024):
        data = batch.to_pydict()
        ids = data.get(id_field) if id_field else None
        for i, text in enumerate(data[text_field]):
            row += 1
            obj = {text_field: text}
            if ids is not None:
                obj[id_field] = ids[i]
            doc = _record(obj, f"{path}:{row}", text_field, id_field, bad, source)
            if doc is not None:
                yield doc


def _read_csv(path, text_field, id_field, bad, source) -> Iterator[Document]:
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
        if text_field not in fields:
            bad.add("missing_field", f"{path}:1", detail=f"no column {text_field!r} in header")
            return
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                bad.add("malformed_csv", f"{path}:{reader.line_num}", detail=str(exc)[:120])
                return
            where = f"{path}:{reader.line_num}"
            text = row.get(text_field)
            if isinstance(text, str) and _has_surrogates(text):
                bad.add("invalid_utf8", where)
                continue
            doc = _record(row, where, text_field, id_field, bad, source)
            if doc is not None:
                yield doc


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _read_text(path, text_field, id_field, bad, source) -> Iterator[Document]:
    """One document per file; binary files and invalid UTF-8 are refused with a reason."""
    with open_binary(path) as fh:
        data = fh.read()
    where = f"{path}:1"
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
