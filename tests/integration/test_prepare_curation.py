"""`cptkit prepare` with curation: the medical recipe end to end, decontamination, dedup across
files and sources, determinism, resuming after a crash, fingerprints, bad input."""

import gzip
import json
import logging
import shutil

import pytest

from benchmarks.curation_corpus import write_corpus
from cptkit.config import load_config
from cptkit.data import executors
from cptkit.data.prepare import prepare
from cptkit.data.signatures import normalize
from tests.helpers import cptkit, make_config, write_config


def read_gz(folder):
    out = []
    for path in sorted(folder.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            out += [json.loads(line) for line in fh]
    return out


@pytest.fixture(scope="module")
def medical(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pubmed")
    expected = write_corpus(folder / "train", 300, seed=3)
    docs = [json.loads(line) for line in (folder / "train" / "pubmed-00.jsonl").read_text().splitlines()]
    plain = [d for d in docs if len(d["abstract"]) > 400 and not any(
        x in d["abstract"] for x in ("<", "@", "MRN", "555-"))]  # no markup or PII: same text after cleaning
    # The eval set: three training abstracts as they are, one with a word changed.
    evals = plain[:3] + [{**plain[3], "abstract": plain[3]["abstract"].replace(" the ", " a ", 1)}]
    (folder / "eval.jsonl").write_text("".join(json.dumps(d) + "\n" for d in evals))
    # The general source repeats four domain abstracts: cross-source duplicates of those the
    # domain keeps; and has one text of its own (a source left empty would stop prepare).
    own = {"text": "Rivers carry water from the hills to the sea, and towns grow where they can be crossed."}
    (folder / "general.jsonl").write_text("".join(json.dumps(d) + "\n" for d in
                                                  [{"text": d["abstract"]} for d in plain[5:9]] + [own]))
    return folder, expected, plain


def medical_config(tmp_path, tiny_model, folder, **data):
    cfg = make_config(tmp_path, tiny_model, {"code": folder, "general": folder})
    cfg["data"].update({
        "domain": {"paths": [str(folder / "train")], "text_field": "abstract", "id_field": "pmid", "pipeline": "medical"},
        "general": {"paths": [str(folder / "general.jsonl")], "pipeline": ["dedup"]},
        "eval": {"domain": {"paths": [str(folder / "eval.jsonl")], "text_field": "abstract", "id_field": "pmid"}},
        "part_bytes": 40_000, "num_workers": 2, "heldout_fraction": 0.0, **data,
    })
    return cfg


def test_medical_recipe_end_to_end(tmp_path, tiny_model, medical):
    folder, expected, plain = medical
    path = write_config(tmp_path / "c.yaml", medical_config(tmp_path, tiny_model, folder))
    out = cptkit("prepare", str(path))
    assert out.returncode == 0, out.stderr
    for step in ("clean", "language", "gopher_quality", "pii", "decontaminate", "dedup"):
        assert f"  {step}" in out.stdout
    data = tmp_path / "run" / "data"
    m = json.loads((data / "domain" / "manifest.json").read_text())
    steps = {s["name"]: s for s in m["steps"]}
    assert list(steps) == ["clean", "length", "language", "gopher_quality", "gopher_repetition", "pii",
                           "tokenize", "decontaminate", "dedup"]
    # Each step's input is the previous step's output; nothing disappears between them.
    chain = [m["documents"]["read"]] + [s["kept"] for s in m["steps"]]
    assert [s["in"] for s in m["steps"]] == chain[:-1] and chain[-1] == m["documents"]["kept"]
    assert m["documents"]["read"] == expected.documents and m["documents"]["eval"] == 0
    assert m["documents"]["kept"] + m["documents"]["dropped"] == m["documents"]["read"]
    assert steps["language"]["dropped"] == {"language_ko": expected.korean}
    assert steps["length"]["dropped"] == {"too_few_words": expected.junk}
    assert steps["decontaminate"]["dropped"]["eval_exact"] >= 1 and steps["decontaminate"]["dropped"]["eval_near"] >= 1
    assert sum(steps["dedup"]["dropped"].values()) >= expected.exact_duplicates
    # PII runs after the filters, so it sees (and counts) only the documents they kept.
    assert set(m["pii"]) == set(expected.pii) and all(n > 0 for n in m["pii"].values())
    curated = read_gz(data / "domain" / "curated")
    assert len(curated) == m["documents"]["kept"] and not (data / "domain" / "curated" / "heldout.jsonl.gz").exists()
    text = "\n".join(d["text"] for d in curated)
    assert "AbstractText" not in text and "@hospital.example.org" not in text and "(415) 555-" not in text
    assert text.count("<PATIENT_ID>") == m["pii"]["patient_id"] - sum("<PATIENT_ID>" in d["text"] for d in
                                                                       read_gz(data / "domain" / "dropped"))
    assert all(d["language"] == "en" for d in curated)
    eval_texts = {normalize(line["abstract"]) for line in map(json.loads, (folder / "eval.jsonl").open())}
    assert not eval_texts & {normalize(d["text"]) for d in curated}
    dropped = read_gz(data / "domain" / "dropped")
    assert all(normalize(d["text"]) in eval_texts for d in dropped if d["reason"] == "eval_exact")
    assert len(dropped) == m["documents"]["dropped"] and all(d["step"] and d["reason"] for d in dropped)
    assert all(d["duplicate_of"].isdigit() for d in dropped if d["step"] == "dedup")
    general = json.loads((data / "general" / "manifest.json").read_text())
    cross = [d for d in read_gz(data / "general" / "dropped") if d["reason"] == "exact_duplicate"]
    # A general copy is a duplicate when the domain abstract reached dedup (kept, or itself a repeat).
    reached = {d["id"] for d in curated} | {d["id"] for d in dropped if d["step"] == "dedup"}
    repeated = [d["pmid"] for d in plain[5:9] if d["pmid"] in reached]
    assert repeated and general["steps"][-1]["dropped"] == {"exact_duplicate": len(repeated)}
    assert {d["duplicate_of"] for d in cross} <= reached


def test_same_output_whatever_the_parts_and_workers(tmp_path, tiny_model, medical):
    folder, _, _ = medical
    hashes, curated = [], []
    for i, (part_bytes, workers) in enumerate([(30_000, 2), (10**9, 1)]):
        cfg = medical_config(tmp_path / str(i), tiny_model, folder, part_bytes=part_bytes, num_workers=workers)
        manifests = prepare(load_config(None, raw=cfg))
        hashes.append({k: v.content_hash for k, v in manifests.items()})
        curated.append(read_gz(tmp_path / str(i) / "run" / "data" / "domain" / "curated"))
    assert hashes[0] == hashes[1] and curated[0] == curated[1]


def _layouts(folder, medical_folder):
    """The same abstracts as one file, as many small files, and as one gzip file."""
    lines = [line for f in sorted((medical_folder / "train").glob("*.jsonl")) for line in f.read_text().splitlines()]
    (folder / "single").mkdir(parents=True)
    (folder / "single" / "all.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "many").mkdir()
    for k in range(0, len(lines), 6):
        (folder / "many" / f"part-{k:04d}.jsonl").write_text("\n".join(lines[k : k + 6]) + "\n")
    (folder / "gz").mkdir()
    (folder / "gz" / "all.jsonl.gz").write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return {"single": folder / "single", "many": folder / "many", "gz": folder / "gz"}


@pytest.mark.parametrize("layout", ["single", "many", "gz"])
def test_one_file_many_files_or_a_compressed_one_give_the_same_output_for_any_workers(
        tmp_path, tiny_model, medical, monkeypatch, layout):
    from cptkit.data import parts

    folder, _, _ = medical
    inputs = _layouts(tmp_path / "inputs", folder)
    outputs, listed = [], []
    for i, (workers, part_bytes) in enumerate([(1, 10**9), (2, 64 * 2**20)]):
        if i == 1:  # parts sized for the workers have a floor of 1 MiB: a small corpus needs a lower one
            monkeypatch.setattr(parts, "MIN_PART_BYTES", 4096)
        cfg = medical_config(tmp_path / str(i), tiny_model, folder, part_bytes=part_bytes, num_workers=workers)
        cfg["data"]["domain"]["paths"] = [str(inputs[layout])]
        cfg["data"]["heldout_fraction"] = 0.05
        cfg["data"].pop("eval")
        manifests = prepare(load_config(None, raw=cfg))
        data = tmp_path / str(i) / "run" / "data"
        listed.append(len(json.loads((data / ".work" / "domain" / "key.json").read_text())["parts"]))
        outputs.append(({k: (m.content_hash, m.documents, m.steps, m.bad_input) for k, m in manifests.items()},
                        read_gz(data / "domain" / "curated"), sorted(d["id"] for d in read_gz(data / "domain" / "dropped")),
                        {f.name: f.read_bytes() for f in sorted((data / "domain").rglob("*.bin"))}))
    assert listed[0] == 1 and listed[1] >= 8  # one part, then several for each of the two workers
    assert outputs[0] == outputs[1]


def test_resume_after_a_crash_redoes_only_unfinished_parts(tmp_path, tiny_model, medical, monkeypatch, caplog):
    folder, _, _ = medical
    cfg = load_config(None, raw=medical_config(tmp_path, tiny_model, folder, num_workers=1, part_bytes=30_000))
    real = executors.process_part

    def crash_on_third(task):
        if task.name == "domain" and task.part.index == 2:
            raise KeyboardInterrupt  # as if the machine went away mid-part
        return real(task)

    monkeypatch.setattr(executors, "process_part", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        prepare(cfg)
    work = tmp_path / "run" / "data" / ".work" / "domain"
    finished = sorted(p.name for p in work.glob("part-*"))
    assert finished == ["part-00000", "part-00001"]
    assert not (tmp_path / "run" / "data" / "domain").exists()
    (work / ".tmp-part-00002-999").mkdir()  # what a killed worker leaves behind
    monkeypatch.setattr(executors, "process_part", real)
    with caplog.at_level(logging.INFO, logger="cptkit.data.prepare"):
        resumed = prepare(cfg)
    total = len(json.loads((work / "key.json").read_text())["parts"])
    # Every part but the two finished domain parts: the rest of the domain, general and the eval set.
    assert f"curating {total} of {total + 2} parts" in caplog.text
    assert not list(work.glob(".tmp-*"))
    fresh = prepare(load_config(None, raw=medical_config(tmp_path / "fresh", tiny_model, folder, num_workers=1,
                                                         part_bytes=30_000)))
    assert resumed["domain"].content_hash == fresh["domain"].content_hash


def test_eval_data_change_reassembles_training_sources_without_recurating(tmp_path, tiny_model, medical, caplog):
    folder, _, _ = medical
    local = tmp_path / "copy"
    shutil.copytree(folder, local)
    cfg = load_config(None, raw=medical_config(tmp_path, tiny_model, local))
    first = prepare(cfg)
    with caplog.at_level(logging.INFO, logger="cptkit.data.prepare"):
        again = prepare(cfg)
        assert "curating" not in caplog.text and again["domain"].fingerprint == first["domain"].fingerprint
        caplog.clear()
        with open(local / "eval.jsonl", "a") as fh:
            fh.write(json.dumps({"pmid": "e1", "abstract": "A new held-out abstract about asthma care."}) + "\n")
        changed = prepare(cfg)
    assert changed["domain"].fingerprint != first["domain"].fingerprint
    assert "domain: inputs, tokenizer or settings changed" in caplog.text
    assert "curating 1 of" in caplog.text  # only the eval file's part; the domain parts are reused


def test_bad_input_is_counted_with_file_and_line(tmp_path, tiny_model):
    src = tmp_path / "in"
    src.mkdir()
    good = {"text": "A perfectly good document about the care of patients with asthma in the clinic."}
    (src / "a.jsonl").write_bytes(
        json.dumps(good).encode() + b"\n{broken json\n" + b'{"text": "bad \xff byte"}\n' + b'{"text": 7}\n'
        + b'{"body": "no text field"}\n' + b"\n" + b'{"text": "' + b"x" * (50 * 2**20) + b'"}\n'
        + json.dumps(good).encode() + b"\n"
    )
    (src / "b.jsonl").write_bytes(bytes(range(256)) * 64)  # binary data with a .jsonl name
    (src / "c.txt").write_bytes(b"\x00\x01ELF binary\x00" * 100)
    (src / "d.jsonl").write_bytes(b"")
    cfg = make_config(tmp_path, tiny_model, {"code": src, "general": src}, data={
        "domain": {"paths": [str(src)], "pipeline": ["clean", "dedup"]}, "general": None, "num_workers": 2,
        "heldout_fraction": 0.0})
    cfg["mix"] = {"replay_ratio": 0.0}
    out = cptkit("prepare", str(write_config(tmp_path / "c.yaml", cfg)))
    assert out.returncode == 0, out.stderr
    m = json.loads((tmp_path / "run" / "data" / "domain" / "manifest.json").read_text())
    reasons = m["bad_input"]["reasons"]
    for reason in ("malformed_json", "invalid_utf8", "non_string_field", "missing_field", "blank_line",
                   "document_too_large", "binary_file", "empty_file"):
        assert reasons.get(reason, 0) >= 1, (reason, reasons)
    assert m["bad_input"]["samples"]["document_too_large"][0].startswith(f"{src / 'a.jsonl'}:7")
    assert m["documents"]["read"] == 2 and m["steps"][-1]["dropped"] == {"exact_duplicate": 1}
    assert "bad input: " in out.stdout


def test_perplexity_filter_keeps_the_lowest_share_with_buckets(tmp_path, tiny_model, corpus):
    cfg = make_config(tmp_path, tiny_model, corpus)
    step = {"perplexity": {"model": str(tiny_model), "batch_size": 4, "max_tokens": 32, "keep_fraction": 0.5}}
    cfg["data"].update({"domain": {"paths": [str(corpus["general"])], "id_field": "id", "pipeline": [step]},
                        "general": None, "num_workers": 1, "heldout_fraction": 0.0})
    cfg["mix"] = {"replay_ratio": 0.0}
    m = prepare(load_config(None, raw=cfg))["domain"]
    steps = {s["name"]: s for s in m.steps}
    n = steps["tokenize"]["kept"]
    assert steps["perplexity_select"] == {"name": "perplexity_select", "in": n, "kept": -(-n // 2),
                                          "dropped": {"above_keep_fraction": n // 2}}
    data = tmp_path / "run" / "data" / "domain"
    kept = read_gz(data / "curated")
    dropped = [d for d in read_gz(data / "dropped") if d["step"] == "perplexity_select"]
    assert len(kept) == m.documents["kept"] == -(-n // 2) and len(dropped) == n // 2
    assert {d["perplexity_bucket"] for d in kept} <= {"head", "middle"}  # the tail third is above the median
    scored = sorted(json.loads(line)["perplexity"] for line in _part_lines(tmp_path))
    assert sorted(d["perplexity"] for d in kept) == scored[: len(kept)]


def _part_lines(tmp_path):
    for path in sorted((tmp_path / "run" / "data" / ".work" / "domain").glob("part-*/docs.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            yield from fh
