"""Resume is refused when the run-defining config changed (kill-and-resume equivalence: test_faults.py)."""

from tests.helpers import cptkit, make_config, write_config


def test_resume_refuses_a_changed_config(tmp_path, tiny_model, corpus):
    cfg = make_config(tmp_path, tiny_model, corpus, train={"max_steps": 8}, eval={"every_steps": 4, "probes": {}})
    path = write_config(tmp_path / "run.yaml", cfg)
    assert cptkit("train", str(path), "--set", "train.max_steps=4").returncode == 0
    out = cptkit("train", str(path), "--resume")
    assert out.returncode == 2
    assert "the config changed since this checkpoint was written (train)" in out.stderr
    # How the steps are computed, or how faults are handled, may change on resume.
    out = cptkit("train", str(path), "--resume", "--set", "train.max_steps=4", "--set", "train.max_bad_steps=9")
    assert out.returncode == 0, out.stderr
