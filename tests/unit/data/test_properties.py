"""Property tests: no input, however malformed, crashes a reader or a step, and none is silent."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cptkit.data.documents import BadInput, Document
from cptkit.data.pipelines import RECIPES, build_steps, parse_pipeline
from cptkit.data.readers import read_file
from cptkit.data.steps import StepStats, run_steps

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def pipelines():
    out = {}
    for name in RECIPES:
        problems = []
        out[name] = build_steps(parse_pipeline(name, "p", problems), None)
        assert not problems
    return out


def lines_in(data: bytes) -> int:
    return data.count(b"\n") + (0 if data.endswith(b"\n") else 1)


@SETTINGS
@given(data=st.binary(max_size=2000))
def test_jsonl_reader_accounts_for_every_line_of_arbitrary_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("p") / "x.jsonl"
    path.write_bytes(data)
    bad = BadInput()
    docs = list(read_file(path, bad=bad))
    expected = 1 if not data else lines_in(data)  # an empty file is counted once
    assert len(docs) + bad.total == expected


@SETTINGS
@given(data=st.binary(max_size=2000), suffix=st.sampled_from([".json", ".csv", ".txt", ".parquet", ".jsonl.gz"]))
def test_other_readers_never_crash_on_arbitrary_bytes(tmp_path_factory, data, suffix):
    path = tmp_path_factory.mktemp("p") / f"x{suffix}"
    path.write_bytes(data)
    bad = BadInput()
    docs = list(read_file(path, bad=bad))
    assert docs or bad.total  # nothing is skipped without a count
    assert all(isinstance(d.text, str) and d.text.strip() for d in docs)


@SETTINGS
@given(records=st.lists(json_values, min_size=1, max_size=8))
def test_arbitrary_json_records_through_every_recipe(tmp_path_factory, records, pipelines):
    path = tmp_path_factory.mktemp("p") / "x.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    bad = BadInput()
    docs = list(read_file(path, bad=bad))
    assert len(docs) + bad.total == len(records)
    for steps in pipelines.values():
        batch = [Document(d.id, d.text) for d in docs]
        stats = {s.name: StepStats(s.name) for s in steps}
        drops = []
        kept = run_steps(steps, batch, stats, lambda d, s, r, out=drops: out.append(r))
        assert len(kept) + len(drops) == len(docs)


@SETTINGS
@given(texts=st.lists(st.text(min_size=1, max_size=400), min_size=1, max_size=6))
def test_arbitrary_text_through_every_recipe(texts, pipelines):
    for steps in pipelines.values():
        batch = [Document(str(i), t) for i, t in enumerate(texts)]
        stats = {s.name: StepStats(s.name) for s in steps}
        drops = []
        kept = run_steps(steps, batch, stats, lambda d, s, r, out=drops: out.append(r))
        assert len(kept) + len(drops) == len(texts)
        assert all(isinstance(r, str) and r for r in drops)
