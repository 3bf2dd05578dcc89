import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from cptkit.data.documents import BadInput
from cptkit.data.readers import read_file


def read(path, **kw):
    bad = BadInput()
    docs = list(read_file(path, bad=bad, **kw))
    return docs, bad


def test_jsonl_counts_every_bad_line_with_file_and_line(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(
        b'{"text": "one"}\n'
        b'{"text": broken\n'
        b'\n'
        b'{"other": "x"}\n'
        b'{"text": 5}\n'
        b'[1, 2]\n'
        b'{"text": "bad \xff byte"}\n'
        b'{"text": "   "}\n'
        b'{"text": "two", "id": "doc-2"}\n'
    )
    docs, bad = read(path, id_field="id")
    assert [d.text for d in docs] == ["one", "two"]
    assert docs[0].id == f"{path}:1" and docs[1].id == "doc-2"
    assert dict(bad.counts) == {"malformed_json": 1, "blank_line": 1, "missing_field": 1, "non_string_field": 1,
                                "not_an_object": 1, "invalid_utf8": 1, "empty_text": 1}
    assert bad.samples["malformed_json"][0].startswith(f"{path}:2")
    assert bad.samples["invalid_utf8"][0].startswith(f"{path}:7")


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst", ".jsonl"])
def test_compressed_jsonl(tmp_path, suffix):
    lines = "".join(json.dumps({"body": f"document {i}"}) + "\n" for i in range(1000)).encode()
    path = tmp_path / f"c{suffix}"
    if suffix.endswith(".gz"):
        path.write_bytes(gzip.compress(lines))
    elif suffix.endswith(".zst"):
        path.write_bytes(zstandard.ZstdCompressor().compress(lines))
    else:
        path.write_bytes(lines)
    docs, bad = read(path, text_field="body")
    assert len(docs) == 1000 and docs[-1].text == "document 999" and bad.total == 0


def test_corrupt_compression_is_counted_not_raised(tmp_path):
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"text": "a"}\n' * 100)[:40])
    docs, bad = read(path)
    assert bad.counts["corrupt_compression"] == 1


def test_json_array_streamed_with_line_numbers(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('[\n  {"text": "a"},\n  {"text": 3},\n  {"text": "c"}\n]\n')
    docs, bad = read(path)
    assert [d.text for d in docs] == ["a", "c"]
    assert bad.samples["non_string_field"][0].startswith(f"{path}:3")
    wrapped = tmp_path / "w.json"
    wrapped.write_text(json.dumps({"data": [{"text": "x"}, {"text": "y"}]}))
    assert [d.text for d in read(wrapped)[0]] == ["x", "y"]


def test_json_truncated_file_is_counted(tmp_path):
    path = tmp_path / "t.json"
    path.write_text('[{"text": "a"}, {"text": "b')
    docs, bad = read(path)
    assert [d.text for d in docs] == ["a"] and bad.counts["malformed_json"] == 1


def test_parquet_rows_and_missing_column(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"content": ["x", None, "z"], "uid": ["u1", "u2", "u3"]}), path)
    docs, bad = read(path, text_field="content", id_field="uid")
    assert [(d.id, d.text) for d in docs] == [("u1", "x"), ("u3", "z")]
    assert bad.counts["non_string_field"] == 1
    docs, bad = read(path, text_field="text")
    assert docs == [] and bad.counts["missing_field"] == 3


def test_csv_with_multiline_fields(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('id,text\n1,"first\nline two"\n2,second\n3,\n')
    docs, bad = read(path, id_field="id")
    assert [(d.id, d.text) for d in docs] == [("1", "first\nline two"), ("2", "second")]
    assert bad.counts["empty_text"] == 1


def test_text_files_binary_and_empty(tmp_path):
    (tmp_path / "a.txt").write_text("plain text document\n")
    (tmp_path / "b.txt").write_bytes(b"\x00\x01\x02binary")
    (tmp_path / "c.txt").write_bytes(b"")
    (tmp_path / "d.md").write_bytes(b"ok\n\xc3\x28 broken")
    assert [d.text for d in read(tmp_path / "a.txt")[0]] == ["plain text document\n"]
    assert read(tmp_path / "b.txt")[1].counts == {"binary_file": 1}
    assert read(tmp_path / "c.txt")[1].counts == {"empty_file": 1}
    bad = read(tmp_path / "d.md")[1]
    assert bad.counts == {"invalid_utf8": 1} and bad.samples["invalid_utf8"][0].startswith(f"{tmp_path / 'd.md'}:2")
