"""The text `cptkit vocab` reads: a spread, stable sample of the curated training documents."""

from __future__ import annotations

import gzip
import json
from types import SimpleNamespace

from cptkit.vocab.corpus import heldout_texts, training_sample


def _source(root, name, files, docs_per_file):
    folder = root / name / "curated"
    folder.mkdir(parents=True)
    total = 0
    for f in range(files):
        with gzip.open(folder / f"part-{f:05d}.jsonl.gz", "wt", encoding="utf-8") as fh:
            for d in range(docs_per_file):
                text = f"document {f}-{d} " + "x" * 90
                total += len(text)
                fh.write(json.dumps({"id": f"{name}:{f}:{d}", "text": text}) + "\n")
    with gzip.open(folder / "heldout.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.write(json.dumps({"id": "h", "text": f"held out of {name}"}) + "\n")
    return total


def test_a_large_source_is_sampled_from_spread_files_to_about_the_asked_size(tmp_path):
    total = _source(tmp_path, "domain", files=20, docs_per_file=200)
    cfg = SimpleNamespace(domain_sources=[SimpleNamespace(name="domain")], general_sources=[],
                          prepared_dir=tmp_path, data=SimpleNamespace(eval={}))
    manifests = {"domain": SimpleNamespace(text_bytes={"train": total})}  # all a Manifest holds that this reads
    sample = training_sample(cfg, manifests, "domain", total // 10)
    got = sum(len(t) for t in sample)
    assert 0.8 * total / 10 < got < 1.2 * total / 10
    files = {t.split()[1].split("-")[0] for t in sample}
    assert files == {"0", "5", "10", "15"}  # every 5th file: 1 / (2 x 0.1)
    assert training_sample(cfg, manifests, "domain", total // 10) == sample  # the same every time
    assert len(training_sample(cfg, manifests, "domain", 10 * total)) == 20 * 200  # small: all of it
    assert heldout_texts(cfg, "domain") == ["held out of domain"]
