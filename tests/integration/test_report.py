"""Probes during training, and the report: every number in it checked against the run's files.

Two real runs of a tiny Llama: run A learns a made-up fact ("The capital of Zorbia is Quex"),
so its probe flips from wrong to right; run B trains less with more replay. The report is read
back (tables by id, exact values in data-value) and compared with eval.jsonl, probes.jsonl,
summary.json and the manifests; a headless Chromium checks the page where it is installed.
"""

import json
import shutil
import subprocess

import pytest

from cptkit.config import load_config
from cptkit.evaluation.probes import aggregate
from cptkit.evaluation.summary import relative_change
from cptkit.report.sections import fmt
from cptkit.train.loop import train
from tests.helpers import cptkit, make_config, read_jsonl
from tests.report_html import read_tables

FACT = "The capital of Zorbia is Quex. Quex lies on the river Vell."


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model, corpus):
    tmp = tmp_path_factory.mktemp("report")
    facts = tmp / "facts.jsonl"
    facts.write_text("".join(json.dumps({"id": f"f{i}", "text": FACT}) + "\n" for i in range(400)))
    probes = tmp / "facts-probes.jsonl"
    probes.write_text(json.dumps({"id": "zorbia", "prompt": "The capital of Zorbia is", "answer": "Quex",
                                  "distractors": ["Paris"]}) + "\n")
    out = {}
    for name, steps, lr, replay in (("a", 40, 2e-2, 0.25), ("b", 20, 5e-3, 0.5)):
        cfg = make_config(tmp / name, tiny_model, {**corpus, "code": facts}, mix={"replay_ratio": replay},
                          train={"max_steps": steps, "lr": lr, "warmup_steps": 2},
                          eval={"every_steps": 20, "probe_new_tokens": 8,
                                "probes": {"facts": str(probes), "general": "builtin:general"}},
                          checkpoint={"every_steps": steps, "keep_last": 1, "keep_best": 1})
        train(load_config(None, raw=cfg))
        out[name] = tmp / name / "run"
    return out


def test_probes_at_every_evaluation_and_the_fact_is_gained(runs):
    run = runs["a"]
    evals, rows = read_jsonl(run / "eval.jsonl"), read_jsonl(run / "probes.jsonl")
    assert [e["step"] for e in evals] == [0, 20, 40]
    for e in evals:
        mine = [r for r in rows if r["step"] == e["step"]]
        assert {r["set"] for r in mine} == {"facts", "general"}
        assert aggregate(mine, ["facts", "general"]) == {k: e[k] for k in e if k.startswith("probe_")}
    summary = json.loads((run / "summary.json").read_text())
    facts = summary["probes"]["facts"]
    assert facts["base"]["exact"] == 0.0 and facts["final"]["exact"] == 1.0
    assert facts["gained"] == 1 and facts["lost"] == 0
    (changed,) = facts["changed"]
    assert changed["kind"] == "gained" and changed["final_greedy"].strip().startswith("Quex")
    assert facts["delta"]["logprob_tok"] > 1.0  # the answer became far more likely
    assert summary["probes"]["general"]["probes"] >= 50
    for key, rel in summary["change"]["final"].items():
        assert rel == pytest.approx(summary["final"][key] / summary["base"][key] - 1)


def _check_number(cell, expected):
    text, value = cell
    if expected is None:
        assert text == "-" and value is None
        return
    assert value == pytest.approx(expected, rel=1e-12, abs=1e-15)
    return text


def test_single_run_report_numbers_come_from_the_files(runs):
    run = runs["a"]
    out = cptkit("report", str(run))
    assert out.returncode == 0, out.stderr
    html = (run / "report.html").read_text()
    tables = read_tables(html)
    evals = read_jsonl(run / "eval.jsonl")
    summary = json.loads((run / "summary.json").read_text())
    by_step = {e["step"]: e for e in evals}
    base, final, best = evals[0], evals[-1], by_step[summary["best"]["step"]]

    ba = tables["before-after"]
    assert set(ba) == {f"{n}_{k}" for n in ("domain", "general") for k in ("ppl", "bpb", "loss")}
    for key, cells in ba.items():
        assert _check_number(cells[1], base[key]) == fmt(base[key])
        _check_number(cells[2], best[key])
        _check_number(cells[3], relative_change(base[key], best[key]))
        _check_number(cells[4], final[key])
        _check_number(cells[5], summary["change"]["final"][key])
        assert cells[5][0] == f"{summary['change']['final'][key]:+.2%}"

    for name in ("facts", "general"):
        table = tables[f"probes-{name}"]
        for metric, cells in table.items():
            for cell, rec in zip(cells[1:4], (base, best, final)):
                _check_number(cell, rec[f"probe_{name}_{metric}"])
            _check_number(cells[4], final[f"probe_{name}_{metric}"] - base[f"probe_{name}_{metric}"])
        assert table["exact"][3][0] == f"{final[f'probe_{name}_exact'] * 100:.1f}%"
    changed = tables["changed-facts"]["zorbia"]
    assert changed[1][0] == "Quex" and changed[3][0].startswith("Quex")
    rows = {(r["step"], r["id"]): r for r in read_jsonl(run / "probes.jsonl") if r["set"] == "facts"}
    _check_number(changed[4], rows[(0, "zorbia")]["logprob_tok"])
    _check_number(changed[5], rows[(40, "zorbia")]["logprob_tok"])

    for source, cells in tables["data"].items():
        m = json.loads((run / "data" / source / "manifest.json").read_text())
        for cell, expected in zip([cells[i] for i in (1, 2, 3, 5, 7, 8)],
                                  (m["documents"]["read"], m["documents"]["kept"], m["documents"]["dropped"],
                                   m["bad_input"]["total"], m["tokens"]["train"], m["tokens"]["eval"])):
            _check_number(cell, expected)
    assert set(tables["data"]) == {"domain", "general"}
    for fig in ("eval_perplexity", "training_loss", "probes", "learning_rate", "mix", "throughput"):
        assert (run / f"{fig}.png").stat().st_size > 5000
        assert f'id="fig-{fig}"' in html
    assert "http://" not in html and "https://" not in html and "<link" not in html and "<script" not in html


def test_comparison_report_and_frontier(runs, tmp_path):
    out = cptkit("report", str(runs["a"]), str(runs["b"]), "--out", str(tmp_path / "cmp" / "report.html"))
    assert out.returncode == 0, out.stderr
    html = (tmp_path / "cmp" / "report.html").read_text()
    tables = read_tables(html)
    names = {"a/run": runs["a"], "b/run": runs["b"]}  # both folders are called run: parents tell them apart
    assert set(tables["comparison"]) == set(names)
    for name, folder in names.items():
        s = json.loads((folder / "summary.json").read_text())
        cells = tables["comparison"][name]
        _check_number(cells[1], s["tokens_trained"])
        for i, key in ((2, "domain_ppl"), (5, "general_ppl")):
            _check_number(cells[i], s["base"][key])
            _check_number(cells[i + 1], s["final"][key])
            _check_number(cells[i + 2], s["change"]["final"][key])
        _check_number(cells[8], s["probes"]["facts"]["final"]["exact"])
        _check_number(cells[9], s["probes"]["facts"]["delta"]["exact"])
        assert cells[-2][0] == "full" and s["method"] == "full"
        _check_number(cells[-1], s["trainable_parameters"])
    # each run's own sections follow, with their own table ids
    assert "run0-before-after" in tables and "run1-probes-facts" in tables
    assert (tmp_path / "cmp" / "frontier.png").stat().st_size > 5000
    assert "Runs on the frontier" in html


CHECK = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const out = {width: window.innerWidth, scrollWidth: document.documentElement.scrollWidth,
    images: imgs.length, broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.id),
    narrowest: Math.min(...imgs.map(i => i.getBoundingClientRect().width)),
    boxesPastEdge: [...document.querySelectorAll('.scroll')].filter(
      d => d.getBoundingClientRect().right > window.innerWidth + 1).length,
    fontPx: parseFloat(getComputedStyle(document.querySelector('td')).fontSize),
    fetched: performance.getEntriesByType('resource').map(e => e.name)};
  const pre = document.createElement('pre'); pre.id = 'layout-check'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _chromium(*args, profile):
    cmd = [shutil.which("chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed here")
@pytest.mark.parametrize("size", [(1366, 768), (1280, 720)])
def test_report_renders_in_a_real_browser_on_a_laptop_screen(runs, tmp_path, size):
    cptkit("report", str(runs["a"]))
    page = tmp_path / "checked.html"
    page.write_text((runs["a"] / "report.html").read_text().replace("</body>", CHECK + "</body>"))
    w, h = size
    dom = _chromium(f"--window-size={w},{h}", "--virtual-time-budget=5000", "--dump-dom", page.as_uri(),
                    profile=tmp_path / "profile1")
    start = dom.stdout.index('<pre id="layout-check">') + len('<pre id="layout-check">')
    check = json.loads(dom.stdout[start : dom.stdout.index("</pre>", start)].replace("&quot;", '"'))
    assert check["width"] == w
    assert check["scrollWidth"] <= w  # nothing makes the page scroll sideways
    assert check["images"] == 6 and check["broken"] == []
    assert check["narrowest"] >= 320  # figures stay legible
    assert check["boxesPastEdge"] == 0
    assert check["fontPx"] >= 12
    assert check["fetched"] == []  # self-contained: the page loads nothing
    shot = tmp_path / "shot.png"
    _chromium(f"--window-size={w},{h}", f"--screenshot={shot}", (runs["a"] / "report.html").as_uri(),
              profile=tmp_path / "profile2")
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")) == (w, h)
    assert len(png) > 20_000  # a page with content, not a blank screen
