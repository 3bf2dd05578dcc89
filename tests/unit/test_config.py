import re

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cptkit.config import Config, load_config
from cptkit.errors import UserError
from cptkit.schema import reference


def minimal(tmp_path, **extra):
    (tmp_path / "d.jsonl").write_text('{"text": "hello"}\n')
    (tmp_path / "model").mkdir(exist_ok=True)
    cfg = {"model": {"name_or_path": str(tmp_path / "model")},
           "data": {"domain": {"paths": [str(tmp_path / "d.jsonl")]}},
           "output_dir": str(tmp_path / "run")}
    for k, v in extra.items():
        cfg.setdefault(k, {}).update(v) if isinstance(v, dict) else cfg.__setitem__(k, v)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def problems_of(exc: UserError) -> list[str]:
    return exc.value.problems


def test_minimal_config_gets_documented_defaults(tmp_path):
    cfg = load_config(minimal(tmp_path))
    assert cfg.train.schedule == "cosine"
    assert cfg.data.seq_len == 2048
    assert cfg.mix.replay_ratio == 0.0  # no general data: no replay
    assert cfg.domain_sources[0].name == "domain"
    assert cfg.checkpoint.metric == "domain_ppl"


def test_every_type_problem_is_listed_with_its_dotted_path(tmp_path):
    path = minimal(tmp_path, train={"lr": "fast", "bogus": 1, "micro_batch_size": 2.5}, mix={"replay_ratio": [1]})
    with pytest.raises(UserError) as exc:
        load_config(path)
    # In the file's order (safe_dump sorted the sections: mix before train).
    found = problems_of(exc)
    assert len(found) == 4
    assert found[0] == "mix.replay_ratio: must be a number, got a list"
    assert found[1].startswith("train.bogus: unknown key (known keys here: betas, ")
    assert " document_masking, " in found[1] and " eps, " in found[1]
    assert found[2:] == ["train.lr: must be a number, got string 'fast'",
                         "train.micro_batch_size: must be an integer, got number 2.5"]


def test_every_value_problem_is_listed_once_types_are_right(tmp_path):
    path = minimal(tmp_path, train={"warmup_ratio": 2.0}, mix={"replay_ratio": 0.1}, checkpoint={"metric": "accuracy"})
    with pytest.raises(UserError) as exc:
        load_config(path)
    found = problems_of(exc)
    assert len(found) == 3
    assert "train.warmup_ratio: must lie in [0, 1), got 2.0" in found
    assert "mix.replay_ratio: replay needs data.general (the text to replay)" in found
    assert any(p.startswith("checkpoint.metric: 'accuracy' is not an eval metric") for p in found)


def test_required_keys_and_missing_paths(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"data": {"domain": {"paths": ["nowhere/*.jsonl"]}}, "model": {}}))
    with pytest.raises(UserError) as exc:
        load_config(path)
    found = "\n".join(problems_of(exc))
    assert "model.name_or_path: required, but missing" in found
    assert "output_dir: required, but missing" in found
    path.write_text(yaml.safe_dump({"model": {"name_or_path": "./no-such-model"}, "output_dir": "x",
                                    "data": {"domain": {"paths": ["nowhere/*.jsonl"]}}}))
    with pytest.raises(UserError) as exc:
        load_config(path)
    found = "\n".join(problems_of(exc))
    assert "data.domain.paths: 'nowhere/*.jsonl' matches no file" in found
    assert "model.name_or_path: './no-such-model' is not an existing folder" in found


def test_set_overrides_use_dotted_keys_and_yaml_values(tmp_path):
    cfg = load_config(minimal(tmp_path), ["train.lr=2e-5", "train.max_tokens=1.0e6", "data.seq_len=128",
                                          "train.document_masking=false"])
    assert cfg.train.lr == 2e-5 and cfg.train.max_tokens == 1_000_000 and cfg.data.seq_len == 128
    assert cfg.train.document_masking is False
    with pytest.raises(UserError, match="expected dotted.key=value"):
        load_config(minimal(tmp_path), ["train.lr"])


def test_contradictory_budgets_are_rejected_together(tmp_path):
    with pytest.raises(UserError) as exc:
        load_config(minimal(tmp_path, train={"max_tokens": 1000, "max_steps": 5}))
    assert any("give one budget, not both" in p for p in problems_of(exc))


def test_bad_yaml_names_the_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name_or_path: x\n data: [\n")
    with pytest.raises(UserError, match=r"c.yaml:\d+: not valid YAML"):
        load_config(path)


def test_sources_accept_one_or_many(tmp_path):
    (tmp_path / "e.jsonl").write_text('{"text": "x"}\n')
    cfg = load_config(minimal(tmp_path), [f"data.domain=[{{paths: {tmp_path / 'e.jsonl'}}}, {{paths: {tmp_path / 'd.jsonl'}}}]"])
    assert [s.name for s in cfg.domain_sources] == ["domain0", "domain1"]
    assert cfg.domain_sources[0].paths == [str(tmp_path / "e.jsonl")]


def test_reference_documents_every_field():
    rows = reference(Config)
    keys = {r[0] for r in rows}
    assert {"model.name_or_path", "train.lr", "data.domain.text_field", "checkpoint.keep_best"} <= keys
    undocumented = [r[0] for r in rows if not r[3]]
    assert undocumented == []


# Every key of the config, given values of every kind: either a config or a UserError, never a crash.
KEYS = [key for key, *_ in reference(Config)]
wrong_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(key=st.sampled_from(KEYS), value=wrong_values)
@example(key="data.seq_len", value=131073)  # a rule across sections (one micro batch > the global batch)
def test_any_value_for_any_key_is_accepted_or_named(tmp_path_factory, key, value):
    path = minimal(tmp_path_factory.mktemp("c"))
    raw = yaml.safe_load(path.read_text())
    node = raw
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else {}
    node[leaf] = value
    path.write_text(yaml.safe_dump(raw))
    try:
        load_config(path)
    except UserError as exc:
        # Each problem names the dotted keys it is about (a section, or the key itself) before its
        # colon; a rule across sections names every key it relates.
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
        section = key.split(".")[0]
        named = [re.findall(r"[\w.]+", p.split(":")[0]) for p in exc.problems]
        assert any(k == section or k.startswith(section + ".") for keys in named for k in keys), exc.problems


def test_loading_a_config_imports_no_torch(tmp_path):
    """Config is a leaf: `cptkit plan`, validation and tools that only read configs stay light."""
    import subprocess
    import sys

    (tmp_path / "d.jsonl").write_text('{"text": "x"}\n')
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"model": {"name_or_path": "org/model"}, "data": {"domain": {"paths": [str(tmp_path / "d.jsonl")]},
                                      "general": {"paths": [str(tmp_path / "d.jsonl")]}},
                                      "mix": {"curriculum": {"start": 0.5, "end": 0.1}}, "output_dir": str(tmp_path / "run")}))
    code = ("import sys\nfrom cptkit.config import load_config\nload_config(sys.argv[1])\n"
            "heavy = sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules)\nprint(heavy)\n")
    done = subprocess.run([sys.executable, "-c", code, str(config)], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "torch" not in done.stdout and "transformers" not in done.stdout, done.stdout
