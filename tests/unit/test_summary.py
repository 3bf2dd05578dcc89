"""summary.json additions: relative changes, probe comparison, harness merge (exact values)."""

import json

import pytest

from cptkit.evaluation.summary import (
    changed_answers,
    merge_harness,
    probe_summary,
    relative_changes,
)


def test_relative_changes_cover_eval_metrics_only():
    base = {"domain_ppl": 20.0, "domain_loss": 3.0, "general_bpb": 1.0, "domain_tokens": 100,
            "probe_general_exact": 0.5}
    final = {"domain_ppl": 15.0, "domain_loss": 2.7, "general_bpb": 1.1, "domain_tokens": 100,
             "probe_general_exact": 0.25}
    assert relative_changes(base, final) == pytest.approx({"domain_ppl": -0.25, "domain_loss": -0.1,
                                                           "general_bpb": 0.1})
    assert relative_changes({"x_ppl": 0.0}, {"x_ppl": 1.0}) == {"x_ppl": None}


def _row(step, pid, exact, greedy, lp):
    return {"step": step, "set": "g", "id": pid, "prompt": f"p {pid}", "answer": "a", "exact": exact,
            "greedy": greedy, "logprob": lp * 2, "logprob_tok": lp}


def test_changed_answers_lost_first_then_gained_then_text():
    base = [_row(0, "a", True, " a.", -1.0), _row(0, "b", False, " x", -3.0), _row(0, "c", False, " y", -2.0),
            _row(0, "d", False, " z", -2.0), _row(0, "e", True, " a", -0.5)]
    final = [_row(9, "a", False, " q", -2.0), _row(9, "b", True, " a", -1.0), _row(9, "c", False, " w", -2.5),
             _row(9, "d", False, " z", -1.0), _row(9, "e", True, " a", -0.4)]
    changed = changed_answers(base, final)
    assert [(c["id"], c["kind"]) for c in changed] == [("a", "lost"), ("b", "gained"), ("c", "text")]
    assert changed[0]["base_greedy"] == " a." and changed[0]["final_greedy"] == " q"
    assert len(changed_answers(base, final, limit=2)) == 2


def test_probe_summary_counts_and_deltas():
    base_rec = {"step": 0, "probe_g_exact": 0.4, "probe_g_logprob": -4.0, "probe_g_logprob_tok": -2.0,
                "probe_g_choice": 0.6}
    final_rec = {"step": 9, "probe_g_exact": 0.2, "probe_g_logprob": -5.0, "probe_g_logprob_tok": -2.5,
                 "probe_g_choice": 0.4}
    rows = [_row(0, "a", True, " a", -1.0), _row(0, "b", False, " b", -1.0),
            _row(9, "a", False, " c", -2.0), _row(9, "b", False, " b", -1.0)]
    out = probe_summary(base_rec, final_rec, final_rec, rows)["g"]
    assert out["probes"] == 2 and out["gained"] == 0 and out["lost"] == 1
    assert out["base"] == {"exact": 0.4, "logprob": -4.0, "logprob_tok": -2.0, "choice": 0.6}
    assert out["delta"] == pytest.approx({"exact": -0.2, "logprob": -1.0, "logprob_tok": -0.5, "choice": -0.2})
    assert [c["id"] for c in out["changed"]] == ["a"]


def test_merge_harness_keeps_every_other_key(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"base": {"domain_ppl": 3.0}, "harness": {"best": {"x": 1}}}))
    merge_harness(tmp_path, "final", {"tasks": {"t": {"acc": 0.5}}})
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s == {"base": {"domain_ppl": 3.0}, "harness": {"best": {"x": 1}, "final": {"tasks": {"t": {"acc": 0.5}}}}}


def test_a_summary_write_that_fails_midway_leaves_the_old_summary(tmp_path, monkeypatch):
    old = {"base": {"domain_ppl": 3.0}}
    (tmp_path / "summary.json").write_text(json.dumps(old))

    def disk_full(path):
        raise OSError("No space left on device")

    monkeypatch.setattr("cptkit.durable.fsync_file", disk_full)  # the new file never reaches the disk
    with pytest.raises(OSError):
        merge_harness(tmp_path, "final", {"tasks": {"t": {"acc": 0.5}}})
    assert json.loads((tmp_path / "summary.json").read_text()) == old
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
