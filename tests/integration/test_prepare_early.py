"""A fresh prepare tokenizes with the model folder's tokenizer.json while transformers loads the
tokenizer (cptkit/data/early_tokenizer.py): the output must be the one the saved tokenizer
gives, whether the guess holds or not, and a crash after the first part must resume by part."""

import gzip
import json
import shutil

import pytest

import cptkit.data.prepare as prep
from cptkit.config import load_config
from cptkit.data import early_tokenizer
from cptkit.data.curate import part_folder
from tests.helpers import make_config


def _config(tmp_path, model, corpus, name, **data):
    cfg = make_config(tmp_path, model, corpus, output_dir=str(tmp_path / name))
    cfg["data"].update({"prepared_dir": str(tmp_path / f"{name}-shards"), "part_bytes": 20_000, **data})
    return load_config(None, raw=cfg)


def _outputs(root):
    """Every output file of a prepared folder by relative path: manifests less their wall times,
    gzip files decompressed (their headers carry the time they were written)."""
    out = {}
    for f in sorted(p for p in root.rglob("*") if p.is_file() and ".work" not in p.parts):
        if f.name == "manifest.json":
            out[str(f.relative_to(root))] = {k: v for k, v in json.loads(f.read_text()).items() if k != "wall_s"}
        else:
            out[str(f.relative_to(root))] = gzip.decompress(f.read_bytes()) if f.suffix == ".gz" else f.read_bytes()
    return out


@pytest.fixture
def starts(monkeypatch):
    """The early starts prepare makes (None where it made none)."""
    made = []
    real = early_tokenizer.early_start

    def recording(model, load):
        made.append(real(model, load))
        return made[-1]

    monkeypatch.setattr(prep, "early_start", recording)
    return made


def test_the_early_start_gives_the_output_of_the_saved_tokenizer(tmp_path, tiny_model, corpus, starts, monkeypatch):
    early = prep.prepare(_config(tmp_path, tiny_model, corpus, "early", num_workers=2))
    assert len(starts) == 1 and starts[0] is not None and starts[0].holds()
    monkeypatch.setattr(prep, "early_start", lambda model, load: None)
    late = prep.prepare(_config(tmp_path, tiny_model, corpus, "late", num_workers=2))
    assert {k: m.content_hash for k, m in early.items()} == {k: m.content_hash for k, m in late.items()}
    assert _outputs(tmp_path / "early-shards") == _outputs(tmp_path / "late-shards")


def test_shards_up_to_date_or_a_stamped_tokenizer_make_no_early_start(tmp_path, tiny_model, corpus, starts):
    cfg = _config(tmp_path, tiny_model, corpus, "run")
    prep.prepare(cfg)
    prep.prepare(cfg)  # up to date: the stamp is reused, nothing to guess
    prep.prepare(cfg, force=True)  # forced: loaded again, and the workers start early again
    assert [s is not None for s in starts] == [True, True]


def test_a_guess_that_does_not_hold_is_tokenized_again(tmp_path, tiny_model, corpus, starts, monkeypatch):
    # transformers adds a special token tokenizer_config.json names and tokenizer.json lacks: the
    # saved tokenizer.json is not the model folder's, so the early parts must be thrown away.
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["extra_special_tokens"] = ["<|domain|>"]
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    guessed = prep.prepare(_config(tmp_path, model, corpus, "guessed"))
    assert starts[0] is not None and not starts[0].holds()
    monkeypatch.setattr(prep, "early_start", lambda model, load: None)
    loaded = prep.prepare(_config(tmp_path, model, corpus, "loaded"))
    assert {k: m.content_hash for k, m in guessed.items()} == {k: m.content_hash for k, m in loaded.items()}
    assert _outputs(tmp_path / "guessed-shards") == _outputs(tmp_path / "loaded-shards")


def test_a_crash_after_the_first_part_resumes_by_part(tmp_path, tiny_model, corpus, starts, monkeypatch):
    cfg = _config(tmp_path, tiny_model, corpus, "run")

    class Crash(Exception):
        pass

    def crash_point(name):
        if name == "prepare:parts:1":
            raise Crash

    monkeypatch.setattr(prep, "crash_point", crash_point)
    with pytest.raises(Crash):
        prep.prepare(cfg)
    assert starts[0] is not None
    work = cfg.prepared_dir / ".work" / "domain"
    marker = json.loads((work / "key.json").read_text())
    assert isinstance(marker["key"], str)  # confirmed before the crash point: the plan is kept
    first = part_folder(work, 0)
    assert first.is_dir()
    made = first.stat().st_mtime_ns
    monkeypatch.setattr(prep, "crash_point", lambda name: None)
    prep.prepare(cfg)
    assert first.stat().st_mtime_ns == made  # the finished part was not made again
