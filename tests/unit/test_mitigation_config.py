"""Config rules of the forgetting mitigations: each mistake named by its dotted key."""

import pytest
import yaml

from cptkit.config import load_config
from cptkit.errors import UserError


def write(tmp_path, general=True, **sections):
    (tmp_path / "d.jsonl").write_text('{"text": "hello"}\n')
    (tmp_path / "model").mkdir(exist_ok=True)
    cfg = {"model": {"name_or_path": str(tmp_path / "model")},
           "data": {"domain": [{"paths": [str(tmp_path / "d.jsonl")], "name": "pubmed"},
                               {"paths": [str(tmp_path / "d.jsonl")], "name": "notes"}]},
           "output_dir": str(tmp_path / "run")}
    if general:
        cfg["data"]["general"] = {"paths": [str(tmp_path / "d.jsonl")]}
    cfg.update(sections)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def problems(path):
    with pytest.raises(UserError) as exc:
        load_config(path)
    return exc.value.problems


def test_curriculum_and_weights_load_and_replay_ratio_stays_unset(tmp_path):
    cfg = load_config(write(tmp_path, mix={"curriculum": {"start": 0.5, "end": 0.9, "shape": "cosine"},
                                           "weights": {"pubmed": 3, "notes": 1}}))
    assert cfg.mix.replay_ratio is None and cfg.replay_in_use
    assert cfg.mix.curriculum.shape == "cosine" and cfg.mix.weights == {"pubmed": 3.0, "notes": 1.0}
    assert load_config(write(tmp_path)).mix.replay_ratio == 0.05  # the documented default


def test_mix_mistakes_are_named(tmp_path):
    found = problems(write(tmp_path, mix={"replay_ratio": 0.1, "curriculum": {"start": 0.0, "end": 1.2},
                                          "weights": {"pubmed": 1, "pubmd": 2, "general": -1}}))
    assert "mix.replay_ratio and mix.curriculum: give one (the curriculum sets the replay share as 1 - domain share)" in found
    assert "mix.curriculum.start: the domain share must lie in (0, 1], got 0.0" in found
    assert "mix.curriculum.end: the domain share must lie in (0, 1], got 1.2" in found
    assert "mix.weights.pubmd: no training source has this name (sources: pubmed, notes, general)" in found
    assert any(p.startswith("mix.weights.general: must be > 0, got -1") for p in found)
    assert any(p.startswith("mix.weights: names domain source(s) pubmed but not notes") for p in found)
    found = problems(write(tmp_path, general=False, mix={"curriculum": {"start": 0.5, "end": 0.9}}))
    assert found == ["mix.curriculum: a domain share below 1 needs data.general (the rest of the mix)"]


def test_schedule_and_freezing_mistakes_are_named(tmp_path):
    found = problems(write(tmp_path, train={"schedule": "infinite", "decay_ratio": 0.6, "cooldown_ratio": 0.5,
                                            "constant_lr_ratio": 0, "freeze_layers": -1, "embedding_lr_scale": 0}))
    assert any(p.startswith("train.cooldown_ratio + train.decay_ratio: 0.5 + 0.6 exceeds 1") for p in found)
    assert "train.constant_lr_ratio: must lie in (0, 1], got 0.0" in found
    assert "train.freeze_layers: must be >= 0, got -1" in found
    assert any(p.startswith("train.embedding_lr_scale: must be > 0, got 0") for p in found)
    found = problems(write(tmp_path, train={"freeze_embeddings": True, "embedding_lr_scale": 0.1, "schedule": "wsdx"}))
    assert "train.schedule: must be one of 'cosine', 'constant', 'wsd', 'infinite', got string 'wsdx'" in found


def test_regularizer_mistakes_are_named(tmp_path):
    found = problems(write(tmp_path, general=False, regularizer={"kind": "ewc", "kl_every": 0}))
    assert "regularizer.kl_every: must be >= 1, got 0" in found
    assert any(p.startswith("regularizer.kl_on / kl_every / kl_direction / reference_dtype: only used with") for p in found)
    assert "regularizer.kind: ewc estimates its Fisher on data.general; give data.general or regularizer.fisher_path" in found
    found = problems(write(tmp_path, mix={"replay_ratio": 0.0}, regularizer={"kind": "kl", "kl_on": "replay"}))
    assert found == ["regularizer.kl_on: replay needs replayed data.general rows (mix.replay_ratio > 0 or a curriculum)"]
    found = problems(write(tmp_path, regularizer={"kind": "ewc", "fisher_path": str(tmp_path / "none.safetensors")}))
    assert found == [f"regularizer.fisher_path: {str(tmp_path / 'none.safetensors')!r} is not a file"]
    found = problems(write(tmp_path, regularizer={"kind": "l2sp", "fisher_path": "x", "fisher_kind": "exact"}))
    assert "regularizer.fisher_kind: must be one of 'true', 'empirical', got string 'exact'" in found
    assert "regularizer.fisher_path: only used with regularizer.kind ewc, not 'l2sp'" in found


def test_mix_schedule_uses_named_weights_else_source_sizes(tmp_path):
    from cptkit.mixing import mix_schedule

    sizes = {"pubmed": 300, "notes": 100, "general": 50}
    cfg = load_config(write(tmp_path, mix={"replay_ratio": 0.2, "weights": {"pubmed": 1, "notes": 1}}))
    assert mix_schedule(cfg, sizes)(0.5) == pytest.approx({"pubmed": 0.4, "notes": 0.4, "general": 0.2})
    cfg = load_config(write(tmp_path, mix={"replay_ratio": 0.2}))
    assert mix_schedule(cfg, sizes)(0.5) == pytest.approx({"pubmed": 0.6, "notes": 0.2, "general": 0.2})
    cfg = load_config(write(tmp_path, mix={"curriculum": {"start": 0.5, "end": 1.0}}))
    mix = mix_schedule(cfg, sizes)
    assert mix(0.0)["general"] == pytest.approx(0.5) and mix(1.0)["general"] == 0.0
    assert load_config(write(tmp_path, mix={"curriculum": {"start": 1.0, "end": 1.0}})).replay_in_use is False
