"""Sources beyond files (Hugging Face datasets) and the Ray executor, through `cptkit prepare`."""

import json

import pytest

from cptkit.config import load_config
from cptkit.data.prepare import prepare
from tests.helpers import cptkit, make_config, write_config

TEXTS = [f"Document number {i} talks about the care of patients with asthma, item {i}." for i in range(60)]


def config(tmp_path, tiny_model, domain, **data):
    cfg = make_config(tmp_path, tiny_model, {"code": tmp_path, "general": tmp_path})
    cfg["data"].update({"domain": domain, "general": None, "heldout_fraction": 0.2, **data})
    cfg["mix"] = {"replay_ratio": 0.0}
    return cfg


def test_dataset_saved_to_disk(tmp_path, tiny_model):
    from datasets import Dataset, DatasetDict

    rows = {"content": TEXTS + [None, "", TEXTS[0]], "uid": [f"u{i}" for i in range(63)]}
    DatasetDict({"train": Dataset.from_dict(rows), "test": Dataset.from_dict({"content": ["x"], "uid": ["t"]})}
                ).save_to_disk(str(tmp_path / "ds"))
    domain = {"dataset": {"path": str(tmp_path / "ds"), "split": "train"}, "text_field": "content",
              "pipeline": ["clean", {"dedup": {"near": False}}]}
    cfg = config(tmp_path, tiny_model, domain, part_bytes=1500, heldout_fraction=0.0)
    manifests = prepare(load_config(None, raw=cfg))
    m = manifests["domain"]
    assert m.documents["read"] == 61 and m.bad_input["reasons"] == {"empty_text": 1, "non_string_field": 1}
    assert m.steps[-1]["dropped"] == {"exact_duplicate": 1} and m.documents["train"] == 60
    import gzip

    dropped = [json.loads(line) for line in gzip.open(tmp_path / "run" / "data" / "domain" / "dropped" / "corpus.jsonl.gz", "rt")]
    assert dropped == [{"id": f"{tmp_path / 'ds'}[train]:63", "text": TEXTS[0], "step": "dedup",
                        "reason": "exact_duplicate", "duplicate_of": f"{tmp_path / 'ds'}[train]:1"}]
    assert m.inputs == [str(tmp_path / "ds")]
    assert len(json.loads((tmp_path / "run" / "data" / ".work" / "domain" / "key.json").read_text())["parts"]) > 1
    cfg["data"]["domain"]["dataset"]["split"] = "validation"
    out = cptkit("prepare", str(write_config(tmp_path / "c.yaml", cfg)))
    assert out.returncode == 2 and "data.domain.dataset.split: 'validation' is not a split" in out.stderr


def test_dataset_by_name_with_data_dir_and_split_streamed(tmp_path, tiny_model):
    import pyarrow as pa
    import pyarrow.parquet as pq

    # The layout of a hub dataset such as The Stack: data/<language>/train-*.parquet
    for lang, texts in (("python", TEXTS[:30]), ("python2", TEXTS[30:])):
        folder = tmp_path / "stack" / "data" / lang
        folder.mkdir(parents=True)
        for k in range(3):
            pq.write_table(pa.table({"content": texts[k::3]}), folder / f"train-{k:05d}.parquet")
    domain = {"dataset": {"path": str(tmp_path / "stack"), "data_dir": "data/python", "split": "train"},
              "text_field": "content"}
    m = prepare(load_config(None, raw=config(tmp_path, tiny_model, domain)))["domain"]
    assert m.documents["read"] == 30 and m.tokens["total"] > 0
    import gzip

    curated = tmp_path / "run" / "data" / "domain" / "curated"
    train = [json.loads(line) for f in sorted(curated.glob("part-*.jsonl.gz")) for line in gzip.open(f, "rt")]
    heldout = [json.loads(line) for line in gzip.open(curated / "heldout.jsonl.gz", "rt")]
    assert (len(train), len(heldout)) == (m.documents["train"], m.documents["eval"]) and heldout
    assert all(d["id"].startswith(f"{tmp_path / 'stack'}[train]#") for d in train + heldout)
    parts = json.loads((tmp_path / "run" / "data" / ".work" / "domain" / "key.json").read_text())["parts"]
    assert [p["dataset_part"] for p in parts] == [["shard", k, 3] for k in range(3)]  # one part per file


@pytest.mark.slow
def test_ray_executor_matches_local(tmp_path, tiny_model, corpus):
    ray = pytest.importorskip("ray")
    domain = {"paths": [str(corpus["code"])], "id_field": "id", "pipeline": ["clean", "pii", "dedup"]}
    local = prepare(load_config(None, raw=config(tmp_path / "local", tiny_model, domain, part_bytes=20_000)))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        cfg = config(tmp_path / "ray", tiny_model, domain, part_bytes=20_000, executor="ray")
        remote = prepare(load_config(None, raw=cfg))
    finally:
        ray.shutdown()
    assert remote["domain"].content_hash == local["domain"].content_hash
    assert remote["domain"].steps == local["domain"].steps
