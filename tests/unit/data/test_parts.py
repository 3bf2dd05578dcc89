"""Parts of large files: byte ranges cut at newlines with exact line numbers; bounded memory."""

import json
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq

from cptkit.config import SourceConfig
from cptkit.data.documents import BadInput
from cptkit.data.parts import jsonl_spans, parquet_spans, plan_parts, read_part
from cptkit.data.readers import Limits, read_file


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
