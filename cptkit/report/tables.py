"""Plain-text tables printed at the end of `prepare`, `train` and `demo`."""

from __future__ import annotations


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def render(rows: list[list], header: list[str]) -> str:
    cells = [[_fmt(c) for c in row] for row in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for j, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def prepare_table(manifests: dict[str, dict]) -> str:
    """One row per source and step: documents in, kept, dropped by reason; then bad input."""
    rows = []
    for name, m in manifests.items():
        bad = m["bad_input"]
        rows.append([name, "read", m["documents"]["read"] + bad["total"], m["documents"]["read"], bad["total"],
                     ", ".join(f"{k} {v}" for k, v in bad["reasons"].items())])
        for step in m["steps"]:
            dropped = sum(step["dropped"].values())
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(step["dropped"].items(), key=lambda kv: -kv[1]))
            rows.append(["", step["name"], step["in"], step["kept"], dropped, reasons])
        rows.append(["", "tokens", m["tokens"]["total"], m["tokens"]["train"], None,
                     f"{m['tokens']['eval']:,} held out, {len(m['shards']['train']) + len(m['shards']['eval'])} shard(s)"])
    return render(rows, ["source", "step", "in", "kept", "dropped", "reasons"])


def before_after_table(summary: dict) -> str:
    """Eval sets as rows: perplexity and bits-per-byte of the base and the final model."""
    base, final, best = summary.get("base", {}), summary.get("final", {}), summary.get("best", {})
    names = sorted({k[: -len("_ppl")] for k in base if k.endswith("_ppl")}, key=lambda n: (n != "domain", n))
    rows = []
    for name in names:
        b, f = base.get(f"{name}_ppl"), final.get(f"{name}_ppl")
        change = f"{(f / b - 1):+.1%}" if b and f else "-"
        rows.append([name, b, f, change, base.get(f"{name}_bpb"), final.get(f"{name}_bpb"), best.get(f"{name}_ppl")])
    return render(rows, ["eval set", "ppl before", "ppl after", "change", "bpb before", "bpb after",
                         f"ppl best (step {best.get('step')})"])
