"""Figures for the report, drawn with matplotlib's non-interactive backend, returned as PNG bytes.

Every figure takes the runs to draw; with several runs each line is prefixed with its run's name,
so one figure compares them.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cptkit.records import EvalRecord, StepRecord  # noqa: E402
from cptkit.report.collect import RunData, mix_schedule  # noqa: E402

WIDTH, HEIGHT = 6.4, 3.4


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _series(records: list[StepRecord] | list[EvalRecord], key: str, x: str = "tokens") -> tuple[list, list]:
    """(x values, key values) of the records that have both, as written (null: not measured)."""
    rows = [r.to_json() for r in records]
    pts = [(r[x], r[key]) for r in rows if r.get(key) is not None and r.get(x) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def _prefix(run: RunData, runs: list[RunData]) -> str:
    return f"{run.name}: " if len(runs) > 1 else ""


def _finish(ax, title: str, xlabel: str, ylabel: str, legend: bool = True) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def _per_key(runs: list[RunData], series: tuple[tuple[str, str, str], ...], title: str, ylabel: str) -> bytes:
    """One line per (metrics key, label, style) per run, against training tokens."""
    fig, ax = plt.subplots(figsize=(WIDTH, HEIGHT))
    for run in runs:
        for key, label, style in series:
            xs, ys = _series(run.metrics, key)
            if xs:
                ax.plot(xs, ys, style, label=f"{_prefix(run, runs)}{label}", linewidth=1)
    _finish(ax, title, "training tokens", ylabel)
    return _png(fig)


def training_loss(runs: list[RunData]) -> bytes:
    return _per_key(runs, (("loss_domain", "domain", "-"), ("loss_replay", "replay (general)", "--")),
                    "Training loss per source", "loss (nats/token)")


def router_loss(runs: list[RunData]) -> bytes:
    """Mixture-of-experts runs: the router load-balancing loss (top_k when routing is even)."""
    return _per_key(runs, (("loss_aux", "load balancing", "-"), ("loss_router_z", "z-loss", "--")),
                    "Router auxiliary loss", "loss")


def eval_perplexity(runs: list[RunData]) -> bytes:
    fig, ax = plt.subplots(figsize=(WIDTH, HEIGHT))
    for run in runs:
        for name in run.eval_names():
            xs, ys = _series(run.evals, f"{name}_ppl")
            ax.plot(xs, ys, "o-", label=f"{_prefix(run, runs)}{name}", markersize=3, linewidth=1)
    ax.set_yscale("log")
    _finish(ax, "Held-out perplexity (first point = base model)", "training tokens", "perplexity")
    ax.grid(alpha=0.3, which="both")
    return _png(fig)


def probe_curves(runs: list[RunData]) -> bytes:
    """Greedy exact match (left) and answer log-likelihood per token (right) over training."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(WIDTH, HEIGHT))
    for run in runs:
        for name in run.probe_names():
            xs, ys = _series(run.evals, f"probe_{name}_exact")
            left.plot(xs, [100 * y for y in ys], "o-", markersize=3, linewidth=1, label=f"{_prefix(run, runs)}{name}")
            xs, ys = _series(run.evals, f"probe_{name}_logprob_tok")
            right.plot(xs, ys, "o-", markersize=3, linewidth=1, label=f"{_prefix(run, runs)}{name}")
    left.set_ylim(0, 100)
    _finish(left, "Probes: greedy exact match", "training tokens", "% of probes")
    _finish(right, "Probes: answer log-likelihood", "training tokens", "nats per answer token", legend=False)
    return _png(fig)


def learning_rate(runs: list[RunData]) -> bytes:
    fig, ax = plt.subplots(figsize=(WIDTH, HEIGHT * 0.8))
    for run in runs:
        xs, ys = _series(run.metrics, "lr", x="step")
        ax.plot(xs, ys, label=run.name, linewidth=1)
    _finish(ax, "Learning-rate schedule", "step", "learning rate", legend=len(runs) > 1)
    return _png(fig)


def mix(runs: list[RunData]) -> bytes | None:
    """The planned share of sequences per source over training; None when no run has one."""
    fig, ax = plt.subplots(figsize=(WIDTH, HEIGHT * 0.8))
    drawn = False
    for run in runs:
        steps, series = mix_schedule(run)
        for name, shares in series.items():
            ax.plot(steps, [100 * s for s in shares], label=f"{_prefix(run, runs)}{name}", linewidth=1.2)
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_ylim(0, 100)
    _finish(ax, "Data mix schedule", "step", "% of training sequences")
    return _png(fig)


def throughput(runs: list[RunData]) -> bytes:
    fig, ax = plt.subplots(figsize=(WIDTH, HEIGHT * 0.8))
    for run in runs:
        xs, ys = _series(run.metrics, "tokens_per_s", x="step")
        ax.plot(xs, ys, label=run.name, linewidth=1)
    _finish(ax, "Training throughput", "step", "tokens / s", legend=len(runs) > 1)
    return _png(fig)


def pareto(points: list[tuple[str, float, float]]) -> list[str]:
    """Runs no other run beats on both forgetting and domain change (lower is better for both)."""
    return [name for name, f, g in points
            if not any((f2 <= f and g2 <= g) and (f2 < f or g2 < g) for _, f2, g2 in points)]


def frontier(points: list[tuple[str, float, float]]) -> bytes:
    """(run, general ppl change, domain ppl change) as relative changes; lower-left is better."""
    fig, ax = plt.subplots(figsize=(WIDTH, HEIGHT * 1.2))
    best = set(pareto(points))
    for name, forget, gain in points:
        ax.scatter([forget * 100], [gain * 100], s=36, color="#1f77b4" if name in best else "#999999", zorder=3)
        ax.annotate(name, (forget * 100, gain * 100), fontsize=8, xytext=(4, 4), textcoords="offset points")
    front = sorted((f * 100, g * 100) for n, f, g in points if n in best)
    if len(front) > 1:
        ax.plot(*zip(*front), "-", color="#1f77b4", linewidth=1, label="frontier (no run better on both)")
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.axhline(0, color="grey", linewidth=0.8)
    _finish(ax, "Forgetting vs domain gain (final vs base)",
            "general perplexity change, % (forgetting; right is worse)", "domain perplexity change, % (down is better)")
    return _png(fig)
