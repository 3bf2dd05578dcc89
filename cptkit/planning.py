"""The numbers a run follows (batch geometry, budget, schedule, mix), and `cptkit plan`'s printout.

`make_plan` is used both by `cptkit plan` and by training, so the dry run shows exactly what
training will do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from cptkit.config import Config
from cptkit.data.prepare import window_count
from cptkit.errors import UserError
from cptkit.mixing import Shares, replay_shares
from cptkit.train.schedules import Schedule, warmup_steps


@dataclass
class RunPlan:
    seq_len: int
    rows_per_step: int  # sequences per optimizer step, all processes together
    micro_batch_size: int
    world_size: int
    accumulation: int  # micro batches per process per optimizer step
    total_steps: int
    schedule: Schedule
    budget_source: str  # where total_steps came from
    domain_names: list[str]
    general_names: list[str]
    windows: dict[str, int] = field(default_factory=dict)  # training windows per source
    shares: Shares | None = None

    @property
    def tokens_per_step(self) -> int:
        return self.rows_per_step * self.seq_len

    @property
    def total_tokens(self) -> int:
        return self.total_steps * self.tokens_per_step


def batch_geometry(cfg: Config, world_size: int) -> tuple[int, int]:
    """(rows per step, accumulation steps); the global batch must split evenly over processes."""
    t = cfg.train
    rows = max(t.global_batch_tokens // cfg.data.seq_len, 1)
    per_pass = t.micro_batch_size * world_size
    if rows % per_pass:
        fits = [r * cfg.data.seq_len for r in (rows - rows % per_pass, rows - rows % per_pass + per_pass) if r > 0]
        raise UserError(
            f"train.global_batch_tokens: {t.global_batch_tokens} tokens = {rows} sequences of "
            f"data.seq_len {cfg.data.seq_len}, which does not split into micro batches of "
            f"train.micro_batch_size {t.micro_batch_size} over {world_size} process(es). "
            f"Nearest global_batch_tokens that fit: {', '.join(map(str, fits))}."
        )
    return rows, rows // per_pass


def make_plan(cfg: Config, manifests: dict[str, dict] | None, world_size: int = 1) -> RunPlan:
    t = cfg.train
    rows, accum = batch_geometry(cfg, world_size)
    domain = [s.name for s in cfg.domain_sources]
    general = [s.name for s in cfg.general_sources] if cfg.mix.replay_ratio else []
    windows = {}
    if manifests is not None:
        windows = {n: window_count(manifests[n], "train", cfg.data.seq_len) for n in domain + general}
        empty = [n for n, w in windows.items() if w == 0]
        if empty:
            raise UserError(
                f"data: source(s) {', '.join(empty)} hold fewer training tokens than one sequence "
                f"(data.seq_len {cfg.data.seq_len}); add text or lower data.seq_len"
            )
    replay = cfg.mix.replay_ratio or 0.0
    if t.max_steps is not None:
        total, budget = t.max_steps, "train.max_steps"
    elif t.max_tokens is not None:
        total, budget = math.ceil(t.max_tokens / (rows * cfg.data.seq_len)), "train.max_tokens"
    elif windows:
        domain_rows = sum(windows[n] for n in domain)
        total, budget = math.ceil(domain_rows / (rows * (1 - replay))), "one pass over the domain data"
    else:
        total, budget = 0, "one pass over the domain data (known after `cptkit prepare`)"
    shares = None
    if windows:
        # Within a role, sources share in proportion to their size (their natural mixture).
        shares = replay_shares({n: windows[n] for n in domain}, {n: windows[n] for n in general}, replay)
    schedule = Schedule(
        kind=t.schedule,
        peak=t.lr,
        total=total,
        warmup=warmup_steps(total, t.warmup_ratio, t.warmup_steps),
        min_ratio=t.min_lr_ratio,
    )
    return RunPlan(
        seq_len=cfg.data.seq_len, rows_per_step=rows, micro_batch_size=t.micro_batch_size,
        world_size=world_size, accumulation=accum, total_steps=total, schedule=schedule,
        budget_source=budget, domain_names=domain, general_names=general, windows=windows, shares=shares,
    )


def describe(plan: RunPlan, cfg: Config) -> str:
    lines = [
        f"model            {cfg.model.name_or_path} ({cfg.model.dtype})",
        f"processes        {plan.world_size}",
        f"global batch     {plan.rows_per_step} sequences x {plan.seq_len} tokens = "
        f"{plan.tokens_per_step:,} tokens per step",
        f"micro batches    {plan.micro_batch_size} sequences, {plan.accumulation} accumulation step(s) per process",
        f"budget           {plan.total_steps:,} steps = {plan.total_tokens:,} tokens ({plan.budget_source})",
        f"warmup           {plan.schedule.warmup:,} steps",
        f"schedule         {plan.schedule.kind}, peak lr {plan.schedule.peak:g}, floor "
        f"{plan.schedule.peak * plan.schedule.min_ratio:g}" if plan.schedule.kind == "cosine" else
        f"schedule         {plan.schedule.kind}, lr {plan.schedule.peak:g}",
    ]
    if plan.total_steps:
        marks = sorted({0, plan.schedule.warmup - 1, plan.total_steps // 4, plan.total_steps // 2,
                        3 * plan.total_steps // 4, plan.total_steps - 1} - {-1})
        lines.append("lr at step       " + "  ".join(f"{s + 1}: {plan.schedule(s):.3g}" for s in marks))
    lines.append(f"mix              replay ratio {cfg.mix.replay_ratio:g} (share of sequences from data.general)")
    if plan.shares and plan.total_steps:
        share = plan.shares(0.0)
        for name in plan.domain_names + plan.general_names:
            tokens = share[name] * plan.total_tokens
            available = plan.windows[name] * plan.seq_len
            lines.append(
                f"  {name:<14} {share[name]:7.2%} of tokens = {tokens:,.0f} tokens, "
                f"{tokens / available:.2f} epoch(s) of its {available:,} training tokens"
            )
    elif not plan.windows:
        lines.append("  (tokens per source: run `cptkit prepare` first to see source sizes and epochs)")
    return "\n".join(lines)
