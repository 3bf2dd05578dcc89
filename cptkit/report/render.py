"""`cptkit report`: a self-contained report.html (plots embedded) with PNG copies beside it.

Every number shown is read from the run folders' files (summary.json, eval.jsonl,
metrics.jsonl, probes.jsonl, manifests); nothing is recomputed from the model. The page needs
nothing from the network: styles are inline and figures are embedded as data: URIs. It is laid
out for a laptop screen: one column at most 1100 px wide, figures two by two, wide tables
scrolling sideways inside their box rather than widening the page.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from cptkit.report import plots, sections
from cptkit.report.collect import RunData, load_run
from cptkit.report.sections import fmt

STYLE = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:1.2em auto;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.45em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
h3{font-size:1.02em;margin:1.1em 0 .3em}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:.4em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:right;vertical-align:top}
th{background:#f3f3f3;white-space:nowrap}
td:first-child,th:first-child,th.l,td.text,td.ok,td.prompt,td.answer{text-align:left}
td.answer{white-space:nowrap}
td:first-child{white-space:nowrap}
td.prompt{max-width:22em;white-space:normal}td.text,td.ok{max-width:18em;overflow-wrap:anywhere}
td.ok{background:#e9f6ec}.nl{color:#999}
.better{color:#1a7f37}.worse{color:#b42318}
.figs{display:flex;flex-wrap:wrap;gap:1em}.figs img{width:calc(50% - .5em);min-width:320px;max-width:100%;height:auto;border:1px solid #eee}
.note{color:#555;font-size:.9em;margin:.3em 0}
ul.notes{font-size:.9em;color:#555}li.warn{color:#b42318}
details{margin:.6em 0}summary{cursor:pointer;font-weight:600}
"""


def _figure(name: str, png: bytes | None, folder: Path, caption: str) -> str:
    if png is None:
        return ""
    (folder / f"{name}.png").write_bytes(png)
    data = base64.b64encode(png).decode()
    return f'<img id="fig-{name}" alt="{html.escape(caption)}" title="{html.escape(caption)}" src="data:image/png;base64,{data}">'


def _meta(run: RunData) -> str:
    s, cfg = run.summary, run.config
    train, mix = cfg.get("train", {}), cfg.get("mix", {})
    model = cfg.get("model", {}).get("name_or_path", "?")
    parts = [f"model {html.escape(str(model))}", _method(s),
             f"{fmt(s.get('tokens_trained'))} tokens in {fmt(s.get('steps'))} steps",
             f"{fmt(s.get('wall_s'))} s wall on {fmt(s.get('world_size'))} process(es)"]
    if train:
        parts.append(f"lr {fmt(train.get('lr'))} ({html.escape(str(train.get('schedule')))})")
    if mix.get("replay_ratio") is not None:
        parts.append(f"replay ratio {fmt(mix.get('replay_ratio'))}")
    # Whether the model's own Python code from its folder or the hub ran in this process.
    remote = bool(cfg.get("model", {}).get("trust_remote_code", False))
    parts.append("trust_remote_code on: code from the model's folder ran" if remote else "trust_remote_code off")
    budget = s.get("forgetting_budget")
    if budget:
        parts.append(f"forgetting budget +{100 * budget['budget']:.1f}% general ppl ({budget['action']}): "
                     f"{len(budget['rollbacks'])} rollback(s)" + (f"; {budget['stopped']}" if budget["stopped"] else ""))
    if s.get("skipped_steps"):
        parts.append(f"{len(s['skipped_steps'])} step(s) skipped for non-finite loss or gradient")
    if s.get("loss_spikes"):
        parts.append(f"{len(s['loss_spikes'])} loss spike(s) at step(s) "
                     f"{', '.join(str(x['step']) for x in s['loss_spikes'][:10])}")
    return f"<p class='note'>{'; '.join(parts)}</p>"


def _method(s: dict) -> str:
    """The training method, its rank and how many parameters trained (summary.json)."""
    method, trainable, total = s.get("method"), s.get("trainable_parameters"), s.get("total_parameters")
    if method is None:  # a run from before summary.json named its method
        return "training method not recorded"
    share = f" ({trainable / total:.2%})" if trainable is not None and total else ""
    counts = f"{fmt(trainable)} of {fmt(total)} parameters trained{share}"
    peft = s.get("peft")
    if not peft:
        return f"full training: {counts}"
    scale = f"alpha {fmt(peft.get('alpha'))}" + (", rsLoRA" if peft.get("rslora") else "")
    full = [name for name, on in (("embeddings", peft.get("train_embeddings")),
                                  ("output layer", peft.get("train_lm_head"))) if on]
    return (f"{html.escape(str(method))} r {fmt(peft.get('r'))} ({scale}) on "
            f"{html.escape(', '.join(peft.get('target_modules') or []))}"
            + (f", {' and '.join(full)} in full" if full else "") + f": {counts}")


def run_sections(run: RunData, level: str = "h2", prefix: str = "") -> list[str]:
    """Before/after, probes, harness and data of one run."""
    sub = "h3" if level == "h2" else "h4"
    best_step = run.summary.get("best", {}).get("step", "-")
    out = [_meta(run), f"<{level}>Before and after</{level}>",
           f"<p class='note'>Held-out evaluation of the base model (step 0), the best checkpoint by "
           f"{html.escape(str(run.summary.get('metric', '?')))} (step {best_step}) and the final model.</p>",
           sections.before_after(run, prefix)]
    if run.probe_names():
        out.append(f"<{level}>Probes</{level}>")
        for name in run.probe_names():
            out += [f"<{sub}>{html.escape(name)}</{sub}>", sections.probe_table(run, name, prefix),
                    f"<{sub}>{html.escape(name)}: answers that changed (greedy, base vs final)</{sub}>",
                    sections.changed_answers(run, name, prefix)]
    if run.summary.get("harness"):
        out += [f"<{level}>lm-evaluation-harness</{level}>", sections.harness(run, prefix)]
    if run.manifests:
        out += [f"<{level}>Data</{level}>", sections.data_summary(run, prefix)]
    if run.vocab:
        out += [f"<{level}>Vocabulary</{level}>", sections.vocabulary(run, prefix)]
    return out


def curves(runs: list[RunData], folder: Path) -> list[str]:
    figs = [_figure("eval_perplexity", plots.eval_perplexity(runs), folder, "held-out perplexity per eval set")]
    if any(r.metrics for r in runs):
        figs.append(_figure("training_loss", plots.training_loss(runs), folder, "training loss per source"))
    if any(m.loss_aux is not None for r in runs for m in r.metrics):
        figs.append(_figure("router_loss", plots.router_loss(runs), folder, "router load-balancing loss"))
    if any(r.probe_names() for r in runs):
        figs.append(_figure("probes", plots.probe_curves(runs), folder, "probe results over training"))
    if any(r.metrics for r in runs):
        figs.append(_figure("learning_rate", plots.learning_rate(runs), folder, "learning-rate schedule"))
        figs.append(_figure("mix", plots.mix(runs), folder, "data mix schedule"))
        figs.append(_figure("throughput", plots.throughput(runs), folder, "training throughput"))
    return ["<h2>Curves</h2><div class='figs'>", *figs, "</div>"]


def frontier_points(runs: list[RunData]) -> list[tuple[str, float, float]]:
    points = []
    for run in runs:
        base, final = run.summary.get("base", {}), run.summary.get("final", {})
        if base.get("general_ppl") and final.get("general_ppl") and base.get("domain_ppl") and final.get("domain_ppl"):
            points.append((run.name, final["general_ppl"] / base["general_ppl"] - 1,
                           final["domain_ppl"] / base["domain_ppl"] - 1))
    return points


def _unique_names(runs: list[RunData]) -> None:
    """Runs from folders with the same name (a/run, b/run) get their parent folder's name too."""
    seen: dict[str, int] = {}
    for run in runs:
        seen[run.name] = seen.get(run.name, 0) + 1
    for run in runs:
        if seen[run.name] > 1:
            run.name = f"{run.dir.resolve().parent.name}/{run.name}"


def write_report(run_dirs: list[Path], out: Path | None = None) -> Path:
    runs = [load_run(d) for d in run_dirs]
    _unique_names(runs)
    out = out or (run_dirs[0] / "report.html" if len(runs) == 1 else Path("comparison") / "report.html")
    folder = out.parent
    folder.mkdir(parents=True, exist_ok=True)
    title = runs[0].name if len(runs) == 1 else f"{len(runs)} runs compared"
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>cptkit: {html.escape(title)}</title>",
             f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{STYLE}</style></head><body>",
             f"<h1>cptkit report: {html.escape(title)}</h1>"]
    if len(runs) == 1:
        parts += run_sections(runs[0])
    else:
        parts += ["<h2>Runs side by side</h2>",
                  "<p class='note'>Final model against each run's own base model (step 0).</p>",
                  sections.comparison(runs)]
        points = frontier_points(runs)
        if points:
            parts += ["<h2>Forgetting vs gain</h2>",
                      "<p class='note'>Each run's general and domain perplexity change, final vs base. Runs on "
                      f"the frontier (no other run better on both): {html.escape(', '.join(plots.pareto(points)))}.</p>",
                      _figure("frontier", plots.frontier(points), folder, "forgetting vs domain gain")]
    parts += curves(runs, folder)
    if len(runs) > 1:
        for i, run in enumerate(runs):
            parts += [f"<h2>{html.escape(run.name)}</h2><details open><summary>details</summary>",
                      *run_sections(run, level="h3", prefix=f"run{i}-"), "</details>"]
    parts.append("</body></html>")
    out.write_text("\n".join(parts), encoding="utf-8")
    return out
