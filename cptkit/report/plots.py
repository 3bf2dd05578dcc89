"""Figures for the report, drawn with matplotlib's non-interactive backend, returned as PNG bytes."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cptkit.report.collect import RunData  # noqa: E402

WIDTH, HEIGHT = 6.4, 3.4


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _series(records: list[dict], key: str, x: str = "tokens") -> tuple[list, list]:
    pts = [(r[x], r[key]) for r in records if r.get(key) is not None and r.get(x) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def training_loss(runs: list[RunData]) -> bytes:
    fig, ax = plt.subplots(figsize=(WIDTH, HEIGHT))
    for run in runs:
        prefix = f"{run.name}: " if len(runs) > 1 else ""
        for key, style in (("loss_domain", "-"), ("loss_replay", "--")):
            xs, ys = _series(run.metrics, key)
            if xs:
                ax.plot(xs, ys, style, label=f"{prefix}{key}", linewidth=1)
    ax.set_xlabel("training tokens")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title("Training loss per source")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def eval_perplexity(runs: list[RunData]) -> bytes:
    fig, ax = plt.subplots(figsize=(WIDTH, HEIGHT))
    for run in runs:
        prefix = f"{run.name}: " if len(runs) > 1 else ""
        for name in run.eval_names():
            xs, ys = _series(run.evals, f"{name}_ppl")
            ax.plot(xs, ys, "o-", label=f"{prefix}{name}", markersize=3, linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("perplexity")
    ax.set_title("Held-out perplexity (step 0 = base model)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _png(fig)


def learning_rate(runs: list[RunData]) -> bytes:
    fig, ax = plt.subplots(figsize=(WIDTH, HEIGHT * 0.8))
    for run in runs:
        xs, ys = _series(run.metrics, "lr", x="step")
        ax.plot(xs, ys, label=run.name, linewidth=1)
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.set_title("Learning-rate schedule")
    ax.grid(alpha=0.3)
    if len(runs) > 1:
        ax.legend(fontsize=8)
    return _png(fig)


def throughput(runs: list[RunData]) -> bytes:
    fig, ax = plt.subplots(figsize=(WIDTH, HEIGHT * 0.8))
    for run in runs:
        xs, ys = _series(run.metrics, "tokens_per_s", x="step")
        ax.plot(xs, ys, label=run.name, linewidth=1)
    ax.set_xlabel("step")
    ax.set_ylabel("tokens / s")
    ax.set_title("Training throughput")
    ax.grid(alpha=0.3)
    if len(runs) > 1:
        ax.legend(fontsize=8)
    return _png(fig)


def frontier(points: list[tuple[str, float, float]]) -> bytes:
    """(run, general ppl change, domain ppl change) as relative changes; lower-left is better."""
    fig, ax = plt.subplots(figsize=(WIDTH, HEIGHT * 1.2))
    for name, forget, gain in points:
        ax.scatter([forget * 100], [gain * 100], s=30)
        ax.annotate(name, (forget * 100, gain * 100), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("general perplexity change, % (forgetting; right is worse)")
    ax.set_ylabel("domain perplexity change, % (down is better)")
    ax.set_title("Forgetting vs domain gain")
    ax.grid(alpha=0.3)
    return _png(fig)
