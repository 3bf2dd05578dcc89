"""Plain-text tables printed at the end of `prepare`, `train` and `demo`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cptkit.data.manifest import Manifest


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


def prepare_table(manifests: dict[str, Manifest]) -> str:
    """Per source, one row per step: documents in, kept, dropped, and why; then tokens.

    Each step's `in` is the previous step's `kept`, so a row shows where documents went.
    """
    rows: list[list] = []
    for name, m in manifests.items():
        bad = m.bad_input
        rows.append([name, None, None, None, ""])
        rows.append(["  read", m.documents["read"] + bad["total"], m.documents["read"], bad["total"],
                     _reasons("bad input: ", bad["reasons"])])
        for step in m.steps:
            notes = [_reasons("", step["dropped"])]
            if step.get("modified"):
                notes.append(f"rewrote {step['modified']:,}")
            if step.get("counts"):
                notes.append(_reasons("replaced: " if step["name"] == "pii" else "", step["counts"]))
            rows.append([f"  {step['name']}", step["in"], step["kept"], sum(step["dropped"].values()),
                         "; ".join(n for n in notes if n)])
        n_shards = len(m.shards["train"]) + len(m.shards["eval"])
        rows.append(["  tokens", m.tokens["total"], m.tokens["train"], None,
                     f"{m.tokens['eval']:,} held out, {n_shards} shard(s)"])
    header = ["source / step", "in", "kept", "dropped", "reasons"]
    cells = [[_fmt(c) if c is not None else "" for c in row] for row in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for j, row in enumerate(cells):
        # Names and reasons read left to right; counts line up on the right.
        parts = [c.ljust(w) if i in (0, 4) else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(parts).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _reasons(prefix: str, counts: dict) -> str:
    if not counts:
        return ""
    return prefix + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


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
