"""`cptkit report`: a self-contained report.html (plots embedded) with PNG copies beside it.

Every number shown is read from the run folders' files (summary.json, eval.jsonl,
metrics.jsonl, manifests); nothing is recomputed from the model.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from cptkit.report import plots
from cptkit.report.collect import RunData, load_run

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:1.5em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
.better{color:#1a7f37}.worse{color:#b42318}
.figs{display:flex;flex-wrap:wrap;gap:1em}.figs img{max-width:100%;width:520px;border:1px solid #eee}
.note{color:#555;font-size:.9em}
"""


def _num(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return f"{value:,}" if isinstance(value, int) else html.escape(str(value))


def _change(before, after) -> str:
    if not before or after is None:
        return "-"
    rel = after / before - 1
    cls = "better" if rel < 0 else "worse" if rel > 0 else ""
    return f'<span class="{cls}">{rel:+.2%}</span>'


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def before_after(run: RunData) -> str:
    s = run.summary
    base, best, final = s.get("base", {}), s.get("best", {}), s.get("final", {})
    rows = []
    for name in run.eval_names():
        for kind in ("ppl", "bpb", "loss"):
            key = f"{name}_{kind}"
            b = base.get(key)
            rows.append([f"{name} {kind}", _num(b), _num(best.get(key)), _change(b, best.get(key)),
                         _num(final.get(key)), _change(b, final.get(key))])
    return _table(["metric", "base (step 0)", f"best (step {best.get('step', '-')})", "change",
                   "final", "change"], rows)


def data_summary(run: RunData) -> str:
    rows = []
    for name, m in run.manifests.items():
        d, bad = m["documents"], m["bad_input"]
        dropped = {}
        for step in m["steps"]:
            for reason, n in step["dropped"].items():
                dropped[f"{step['name']}:{reason}"] = n
        reasons = ", ".join(f"{html.escape(k)} {v:,}" for k, v in sorted(dropped.items(), key=lambda kv: -kv[1]))
        bad_text = ", ".join(f"{html.escape(k)} {v:,}" for k, v in bad["reasons"].items())
        rows.append([html.escape(name), _num(d["read"]), _num(d["kept"]), _num(d["dropped"]), reasons or "-",
                     _num(bad["total"]), bad_text or "-", _num(m["tokens"]["train"]), _num(m["tokens"]["eval"])])
    return _table(["source", "documents read", "kept", "dropped", "drop reasons", "bad input",
                   "bad input reasons", "train tokens", "held-out tokens"], rows)


def _figure(name: str, png: bytes, folder: Path) -> str:
    (folder / f"{name}.png").write_bytes(png)
    data = base64.b64encode(png).decode()
    return f'<img alt="{name}" src="data:image/png;base64,{data}">'


def frontier_points(runs: list[RunData]) -> list[tuple[str, float, float]]:
    points = []
    for run in runs:
        base, final = run.summary.get("base", {}), run.summary.get("final", {})
        if base.get("general_ppl") and final.get("general_ppl") and base.get("domain_ppl") and final.get("domain_ppl"):
            points.append((run.name, final["general_ppl"] / base["general_ppl"] - 1,
                           final["domain_ppl"] / base["domain_ppl"] - 1))
    return points


def comparison(runs: list[RunData]) -> str:
    rows = []
    for run in runs:
        s = run.summary
        base, final = s.get("base", {}), s.get("final", {})
        rows.append([html.escape(run.name), _num(s.get("tokens_trained")),
                     _num(final.get("domain_ppl")), _change(base.get("domain_ppl"), final.get("domain_ppl")),
                     _num(final.get("general_ppl")), _change(base.get("general_ppl"), final.get("general_ppl")),
                     _num(s.get("wall_s"))])
    return _table(["run", "tokens trained", "domain ppl", "vs base", "general ppl", "vs base", "wall s"], rows)


def write_report(run_dirs: list[Path], out: Path | None = None) -> Path:
    runs = [load_run(d) for d in run_dirs]
    out = out or (run_dirs[0] / "report.html" if len(runs) == 1 else Path("comparison") / "report.html")
    folder = out.parent
    folder.mkdir(parents=True, exist_ok=True)
    title = runs[0].name if len(runs) == 1 else f"{len(runs)} runs compared"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>cptkit: {html.escape(title)}</title>",
             f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{STYLE}</style></head><body>",
             f"<h1>cptkit report: {html.escape(title)}</h1>"]
    if len(runs) > 1:
        parts += ["<h2>Runs side by side</h2>", comparison(runs)]
        points = frontier_points(runs)
        if points:
            parts += ["<h2>Forgetting vs gain</h2>", _figure("frontier", plots.frontier(points), folder)]
    for run in runs:
        if len(runs) > 1:
            parts.append(f"<h2>{html.escape(run.name)}</h2>")
        s = run.summary
        parts.append(f"<p class='note'>{_num(s.get('tokens_trained'))} tokens in {_num(s.get('steps'))} steps, "
                     f"{_num(s.get('wall_s'))} s; model {html.escape(str(run.config.get('model', {}).get('name_or_path', '?')))}</p>")
        parts += ["<h2>Before and after</h2>" if len(runs) == 1 else "", before_after(run)]
        if run.manifests:
            parts += ["<h2>Data</h2>", data_summary(run)]
    parts.append("<h2>Curves</h2><div class='figs'>")
    parts.append(_figure("eval_perplexity", plots.eval_perplexity(runs), folder))
    if any(r.metrics for r in runs):
        parts.append(_figure("training_loss", plots.training_loss(runs), folder))
        parts.append(_figure("learning_rate", plots.learning_rate(runs), folder))
        parts.append(_figure("throughput", plots.throughput(runs), folder))
    parts.append("</div></body></html>")
    out.write_text("\n".join(parts), encoding="utf-8")
    return out
