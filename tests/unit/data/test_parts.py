"""Parts: byte ranges cut at newlines with exact line numbers, ranges of compressed streams, groups of
small files; whatever the cut, the same documents, ids and bad-input counts; bounded memory."""

import gzip
import json
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cptkit.config import SourceConfig
from cptkit.data.documents import BadInput
from cptkit.data.parts import Part, jsonl_spans, parquet_spans, plan_parts, read_part, text_bytes
from cptkit.data.readers import TO_END, Limits, Span, read_file


def test_jsonl_spans_cover_the_file_and_number_lines(tmp_path):
    path = tmp_path / "a.jsonl"
    lines = [json.dumps({"text": f"doc {i} " + "x" * (i * 7 % 50)}) for i in range(500)]
    path.write_text("\n".join(lines[:250]) + "\n\n" + "\n".join(lines[250:]) + "\n")  # a blank line at 251
    spans = jsonl_spans(path, 2000)
    assert len(spans) > 5 and spans[0].start == 0 and spans[-1].end == path.stat().st_size
    data = path.read_bytes()
    for a, b in zip(spans, spans[1:]):
        assert a.end == b.start and data[a.end - 1 : a.end] == b"\n"
        assert b.first == data[: b.start].count(b"\n") + 1
    whole_bad, parts_bad = BadInput(), BadInput()
    whole = [(d.id, d.text) for d in read_file(path, bad=whole_bad)]
    src = SourceConfig(paths=[str(path)])
    parts = plan_parts(src, [path], 2000, "data.domain")
    pieces = [(d.id, d.text) for p in parts for d in read_part(p, src, Limits("text", None, 1 << 20), parts_bad, "", "")]
    assert pieces == whole and len(whole) == 500
    assert whole[250][0] == f"{path}:252"  # line numbers count the blank line
    assert parts_bad.counts == whole_bad.counts == {"blank_line": 1}


def test_parquet_spans_are_row_group_ranges(tmp_path):
    path = tmp_path / "p.parquet"
    table = pa.table({"text": [f"row {i} " + "y" * 100 for i in range(1000)]})
    pq.write_table(table, path, row_group_size=100)
    spans = parquet_spans(path, 5000)
    assert spans[0].start == 0 and spans[-1].end == 10 and all(s.first == s.start * 100 + 1 for s in spans)
    src = SourceConfig(paths=[str(path)])
    parts = plan_parts(src, [path], 5000, "d")
    ids = [d.id for p in parts for d in read_part(p, src, Limits("text", None, 1 << 20), BadInput(), "", "")]
    assert ids == [d.id for d in read_file(path)] and ids[-1] == f"{path}:1000"


def test_a_50_mb_line_is_counted_and_never_held_in_memory(tmp_path):
    path = tmp_path / "big.jsonl"
    with open(path, "wb") as fh:
        fh.write(b'{"text": "before"}\n')
        fh.write(b'{"text": "' + b"z" * (50 * 2**20) + b'"}\n')
        fh.write(b'{"text": "after"}\n')
    bad = BadInput()
    tracemalloc.start()
    docs = [d.text for d in read_file(path, bad=bad, max_bytes=2**20)]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert docs == ["before", "after"]
    assert bad.counts == {"document_too_large": 1} and bad.samples["document_too_large"][0].startswith(f"{path}:2")
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB"


def test_too_large_text_files_and_records(tmp_path):
    (tmp_path / "big.txt").write_text("w " * 1000)
    bad = BadInput()
    assert list(read_file(tmp_path / "big.txt", bad=bad, max_bytes=100)) == []
    assert bad.counts == {"document_too_large": 1}
    (tmp_path / "s.jsonl").write_text(json.dumps({"text": "\ud800 lone"}) + "\n")
    bad = BadInput()
    assert list(read_file(tmp_path / "s.jsonl", bad=bad)) == [] and bad.counts == {"lone_surrogate": 1}


def _read_parts(parts, src, bad):
    return [(d.id, d.text) for p in parts for d in read_part(p, src, Limits("text", None, 1 << 20), bad, "", "")]


def test_part_target_gives_every_worker_several_parts_within_the_bounds():
    from cptkit.data.parts import MIN_PART_BYTES, PARTS_PER_WORKER, part_target

    mb = 2**20
    assert part_target(60 * mb, 2, 64 * mb) == -(-60 * mb // (2 * PARTS_PER_WORKER))  # 7.5 MiB: 8 parts
    assert part_target(10 * mb, 16, 64 * mb) == MIN_PART_BYTES  # never below the floor
    assert part_target(10**12, 2, 64 * mb) == 64 * mb  # never above data.part_bytes
    assert part_target(10 * mb, 2, 30_000) == 30_000  # a part_bytes below the floor wins


def test_a_small_file_is_cut_for_the_workers_and_small_files_are_grouped(tmp_path):
    big = tmp_path / "a-big.jsonl"
    big.write_text("".join(json.dumps({"text": f"doc {i} " + "x" * (i % 40)}) + "\n" for i in range(400)))
    for k in range(30):
        (tmp_path / f"b-{k:02d}.jsonl").write_text(json.dumps({"text": f"small {k}"}) + "\n")
    (tmp_path / "c.txt").write_text("one document per text file")
    files = sorted(tmp_path.iterdir())
    src = SourceConfig(paths=[str(tmp_path)])
    whole_bad, parts_bad = BadInput(), BadInput()
    whole = [(d.id, d.text) for f in files for d in read_file(f, bad=whole_bad)]
    parts = plan_parts(src, files, 10**9, "d", target=2000)
    assert [p.index for p in parts] == list(range(len(parts)))
    cut = [p for p in parts if p.path == str(big)]
    assert len(cut) > 5 and all(p.span is not None for p in cut)  # smaller than part_bytes, cut all the same
    grouped = [p for p in parts if p.span is None]
    assert len(grouped) == 1 and grouped[0].files == tuple(str(f) for f in files[1:])  # 31 files, one part
    assert _read_parts(parts, src, parts_bad) == whole and len(whole) == 431
    assert parts_bad.counts == whole_bad.counts == {}
    listed = [Part.from_json(p.index, json.loads(json.dumps(p.to_json()))) for p in parts]
    assert listed == parts  # what the work folder's key.json keeps


def _lines_with_a_blank_and_a_long_one(n):
    lines = [json.dumps({"text": f"line {i} " + "z" * (i * 13 % 300)}) for i in range(n)]
    lines[17] = ""  # a blank line
    lines[40] = json.dumps({"text": "w" * 5000})  # longer than max_bytes below
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
def test_a_compressed_file_is_cut_into_ranges_of_its_decompressed_bytes(tmp_path, suffix):
    import zstandard

    data = _lines_with_a_blank_and_a_long_one(600).encode()
    path = tmp_path / f"a{suffix}"
    path.write_bytes(gzip.compress(data) if suffix.endswith(".gz") else zstandard.ZstdCompressor().compress(data))
    assert text_bytes(path) == len(data)  # recorded in the file (gzip ISIZE, zstd frame header)
    src = SourceConfig(paths=[str(path)])
    lim = Limits("text", None, 4096)
    whole_bad, parts_bad = BadInput(), BadInput()
    whole = [(d.id, d.text) for d in read_file(path, bad=whole_bad, max_bytes=4096)]
    parts = plan_parts(src, [path], 10**9, "d", target=-(-len(data) // 7))
    assert len(parts) == 7 and parts[-1].span.end > len(data) and all(p.span.first == 0 for p in parts)
    pieces = [(d.id, d.text) for p in parts for d in read_part(p, src, lim, parts_bad, "", "")]
    assert pieces == whole and len(whole) == 598
    assert whole[17][0] == f"{path}:19"  # line numbers count the blank line, in every part
    assert parts_bad.counts == whole_bad.counts == {"blank_line": 1, "document_too_large": 1}


def test_a_truncated_stream_loses_the_same_lines_however_it_is_cut(tmp_path, monkeypatch):
    import cptkit.data.readers as readers

    monkeypatch.setattr(readers, "_CHUNK", 4096)  # many blocks in a small file
    data = _lines_with_a_blank_and_a_long_one(3000).encode()
    path = tmp_path / "cut.jsonl.gz"
    packed = gzip.compress(data)
    path.write_bytes(packed[: len(packed) * 2 // 3])  # breaks off two thirds in
    src = SourceConfig(paths=[str(path)])
    lim = Limits("text", None, 4096)
    whole_bad = BadInput()
    whole = [(d.id, d.text) for d in read_file(path, bad=whole_bad, max_bytes=4096)]
    assert 1000 < len(whole) < 2990 and whole_bad.counts["corrupt_compression"] == 1
    # The last 4 bytes are compressed data, not the size field: the size is estimated instead.
    assert text_bytes(path) == path.stat().st_size * 4
    for n in (2, 5, 13):
        bad = BadInput()
        parts = plan_parts(src, [path], 10**9, "d", target=text_bytes(path) // n)
        assert len(parts) >= n, n
        pieces = [(d.id, d.text) for p in parts for d in read_part(p, src, lim, bad, "", "")]
        assert pieces == whole and bad.counts == whole_bad.counts, n


def test_reading_a_range_of_a_compressed_file_that_holds_no_line_start(tmp_path):
    path = tmp_path / "one.jsonl.gz"
    path.write_bytes(gzip.compress((json.dumps({"text": "q" * 3000}) + "\n").encode()))
    src = SourceConfig(paths=[str(path)])
    spans = [Span(0, 1000, 0), Span(1000, 2000, 0), Span(2000, TO_END, 0)]
    texts = [[d.text for d in read_part(Part(i, str(path), s), src, Limits("text", None, 1 << 20), BadInput(), "", "")]
             for i, s in enumerate(spans)]
    assert texts == [["q" * 3000], [], []]
