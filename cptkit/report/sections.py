"""The report's tables as HTML, one function per section.

Every number cell carries its exact value in `data-value` beside the rounded text, so a test (or
a script) can check each one against the run's files. Relative changes are (after / base - 1):
negative is better for perplexity, loss and bits per byte, and is shown green.
"""

from __future__ import annotations

import html

from cptkit.evaluation.summary import relative_change
from cptkit.report.collect import RunData


def fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 10**digits else f"{value:.{digits}g}"
    if isinstance(value, int):
        return f"{value:,}"
    return html.escape(str(value))


def num(value, digits: int = 4) -> str:
    if value is None or isinstance(value, bool):
        return f"<td>{fmt(value)}</td>"
    return f'<td data-value="{value!r}">{fmt(value, digits)}</td>'


def pct(value, signed: bool = False) -> str:
    """A share (0.25) shown as a percentage (25.0%)."""
    if value is None:
        return "<td>-</td>"
    return f'<td data-value="{value!r}">{value * 100:{"+" if signed else ""}.1f}%</td>'


def change(rel: float | None, lower_is_better: bool = True) -> str:
    if rel is None:
        return "<td>-</td>"
    good = rel < 0 if lower_is_better else rel > 0
    cls = "better" if good else "worse" if rel != 0 else ""
    return f'<td class="{cls}" data-value="{rel!r}">{rel:+.2%}</td>'


def text(value: str, cls: str = "") -> str:
    shown = html.escape(value).replace("\n", "<span class='nl'>&#9166;</span>")
    return f"<td class='{cls or 'text'}'>{shown}</td>"


def table(table_id: str, header: list[str], rows: list[tuple[str, list[str]]]) -> str:
    """rows: (data-key, cells already rendered as <td>); wrapped to scroll sideways if too wide."""
    # Headers of text columns sit left like their cells; number columns stay right-aligned.
    first = rows[0][1] if rows else []
    left = [i < len(first) and first[i].startswith("<td class='") and "data-value" not in first[i]
            for i in range(len(header))]
    head = "".join(f"<th{' class=l' if is_left else ''}>{html.escape(h)}</th>" for h, is_left in zip(header, left))
    body = "".join(f"<tr data-key='{html.escape(key)}'>{''.join(cells)}</tr>" for key, cells in rows)
    return f"<div class='scroll'><table id='{table_id}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def before_after(run: RunData, prefix: str = "") -> str:
    s = run.summary
    base, best, final = s.get("base", {}), s.get("best", {}), s.get("final", {})
    rows = []
    for name in run.eval_names():
        for kind in ("ppl", "bpb", "loss"):
            key = f"{name}_{kind}"
            b = base.get(key)
            rows.append((key, [f"<td>{html.escape(name)} {kind}</td>", num(b), num(best.get(key)),
                               change(relative_change(b, best.get(key))), num(final.get(key)),
                               change(relative_change(b, final.get(key)))]))
    header = ["metric", "base (step 0)", f"best (step {best.get('step', '-')})", "change", "final", "change"]
    return table(f"{prefix}before-after", header, rows)


PROBE_ROWS = (("exact", "greedy exact match", True), ("choice", "choice among distractors", True),
              ("logprob_tok", "answer log-likelihood per token", False), ("logprob", "answer log-likelihood", False))


def probe_table(run: RunData, name: str, prefix: str = "") -> str:
    p = run.summary["probes"][name]
    rows = []
    for metric, label, is_share in PROBE_ROWS:
        values = [p[w].get(metric) for w in ("base", "best", "final")]
        if all(v is None for v in values):
            continue
        cell = pct if is_share else num
        delta = p["delta"].get(metric)
        rows.append((metric, [f"<td>{label}</td>", *(cell(v) for v in values),
                              pct(delta, signed=True) if is_share else num(delta)]))
    header = ["metric", "base", f"best (step {run.summary.get('best', {}).get('step', '-')})", "final",
              "final - base"]
    note = (f"<p class='note'>{p['probes']} probes; greedy exact match gained by {p['gained']} and lost by "
            f"{p['lost']}. Log-likelihoods are in nats (higher is better).</p>")
    return table(f"{prefix}probes-{name}", header, rows) + note


def changed_answers(run: RunData, name: str, prefix: str = "") -> str:
    changed = run.summary["probes"][name].get("changed", [])
    if not changed:
        return "<p class='note'>No probe's greedy answer changed.</p>"
    rows = []
    for c in changed:
        rows.append((c["id"], [text(c["prompt"], "prompt"), text(c["answer"], "answer"),
                               text(c["base_greedy"], "ok" if c["base_exact"] else "text"),
                               text(c["final_greedy"], "ok" if c["final_exact"] else "text"),
                               num(c["base_logprob_tok"], 3), num(c["final_logprob_tok"], 3)]))
    header = ["prompt", "answer", "base model says", "final model says", "log-lik./token before", "after"]
    return table(f"{prefix}changed-{name}", header, rows)


def harness(run: RunData, prefix: str = "") -> str:
    rows = []
    for checkpoint, result in run.summary.get("harness", {}).items():
        for task, metrics in result.get("tasks", {}).items():
            for metric, value in metrics.items():
                rows.append((f"{checkpoint}/{task}/{metric}", [text(checkpoint), text(task), text(metric), num(value)]))
    return table(f"{prefix}harness", ["checkpoint", "task", "metric", "value"], rows)


def data_summary(run: RunData, prefix: str = "") -> str:
    rows = []
    for name, m in run.manifests.items():
        d, bad = m.documents, m.bad_input
        dropped = {}
        for step in m.steps:
            for reason, n in step["dropped"].items():
                dropped[f"{step['name']}: {reason}"] = n
        reasons = "<br>".join(f"{html.escape(k)} {v:,}" for k, v in sorted(dropped.items(), key=lambda kv: -kv[1]))
        bad_text = "<br>".join(f"{html.escape(k)} {v:,}" for k, v in bad["reasons"].items())
        rows.append((name, [text(name), num(d["read"]), num(d["kept"]), num(d["dropped"]),
                            f"<td class='text'>{reasons or '-'}</td>", num(bad["total"]),
                            f"<td class='text'>{bad_text or '-'}</td>", num(m.tokens["train"]),
                            num(m.tokens["eval"])]))
    header = ["source", "read", "kept", "dropped", "dropped per reason", "bad lines", "bad lines per reason",
              "train tokens", "held-out tokens"]
    return table(f"{prefix}data", header, rows) + curation_notes(run)


def curation_notes(run: RunData) -> str:
    """Steps that dropped much of a source (data.warn_drop_fraction), and rules off for a language."""
    items = []
    for m in run.manifests.values():
        for w in m.warnings:
            reasons = ", ".join(f"{r} {n:,}" for r, n in w["reasons"].items())
            samples = f"; e.g. {', '.join(w['samples'])}" if w["samples"] else ""
            items.append(f"<li class='warn'>{html.escape(m.name)}: step {html.escape(w['step'])} dropped "
                         f"{w['dropped']:,} of {w['in']:,} documents ({w['fraction']:.0%}): "
                         f"{html.escape(reasons + samples)}</li>")
        for r in m.rules_off:
            items.append(f"<li>{html.escape(m.name)}: {html.escape(r['step'])} rule {html.escape(r['rule'])} is off "
                         f"for {html.escape(r['language'])} ({html.escape(r['reason'])})</li>")
    return f"<ul class='notes'>{''.join(items)}</ul>" if items else ""


def comparison(runs: list[RunData]) -> str:
    probe_names = sorted({n for r in runs for n in r.probe_names()})
    rows = []
    for run in runs:
        s = run.summary
        base, final = s.get("base", {}), s.get("final", {})
        cells = [text(run.name), num(s.get("tokens_trained"))]
        for key in ("domain_ppl", "general_ppl"):
            cells += [num(base.get(key)), num(final.get(key)), change(relative_change(base.get(key), final.get(key)))]
        for name in probe_names:
            p = s.get("probes", {}).get(name)
            cells += [pct(p["final"]["exact"]) if p else "<td>-</td>",
                      pct(p["delta"]["exact"], signed=True) if p else "<td>-</td>"]
        cells.append(num(s.get("wall_s")))
        peft = s.get("peft") or {}
        method = s.get("method", "-") + (f" r {peft['r']}" if peft.get("r") else "")
        cells += [text(method), num(s.get("trainable_parameters"))]
        rows.append((run.name, cells))
    header = ["run", "tokens trained", "domain ppl base", "final", "change", "general ppl base", "final", "change"]
    for name in probe_names:
        header += [f"probes {name} exact", "vs base"]
    header += ["wall s", "method", "trained parameters"]
    return table("comparison", header, rows)


def vocabulary(run: RunData, prefix: str = "") -> str:
    """After `cptkit vocab`: tokens per byte and per character before and after, per held-out set."""
    v = run.vocab
    rows = []
    for name, m in v["heldout"].items():
        rows.append((name, [text(name), num(m["tokens_per_byte_before"], 3), num(m["tokens_per_byte_after"], 3),
                            num(m["tokens_per_char_before"], 3), num(m["tokens_per_char_after"], 3),
                            change(-m["fewer_tokens"]), pct(m["new_token_share"])]))
    header = ["held-out set", "tokens/byte before", "after", "tokens/char before", "after", "tokens",
              "new-token share"]
    note = (f"<p class='note'>{v['added']:,} tokens added to the base vocabulary (ids from "
            f"{v['first_new_id']:,}); bits per byte stay comparable across the two tokenizers.</p>")
    return table(f"{prefix}vocab", header, rows) + note
