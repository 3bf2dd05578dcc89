"""The numbers a run follows (batch geometry, budget, schedule, mix), and `cptkit plan`'s printout.

`make_plan` is used both by `cptkit plan` and by training, so the dry run shows exactly what
training will do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from cptkit.config import Config
from cptkit.data.manifest import Manifest
from cptkit.errors import UserError
from cptkit.mixing import MixSchedule, mix_schedule
from cptkit.train.schedules import Schedule, schedule_for
from cptkit.train.stage_plan import describe_stages


@dataclass(frozen=True)
class Cadence:
    """How often the loop logs, evaluates and saves (train.log_every, eval.every_steps,
    checkpoint.every_steps), and whether every checkpoint is evaluated too."""

    log_every: int = 1
    eval_every: int = 500
    save_every: int = 1000
    judge_saves: bool = False

    @classmethod
    def of(cls, cfg: Config) -> Cadence:
        judged = bool(cfg.checkpoint.keep_best) or cfg.train.forgetting_budget is not None
        return cls(cfg.train.log_every, cfg.eval.every_steps, cfg.checkpoint.every_steps, judged)


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
    shares: MixSchedule | None = None
    cadence: Cadence = field(default_factory=lambda: Cadence())

    def progress(self, step: int) -> float:
        """Training progress of optimizer step `step` (0-based): 0 at the first, 1 at the last."""
        return step / max(self.total_steps - 1, 1)

    # When the loop acts, as predicates of the optimizer steps done (`step` >= 1).
    def log_due(self, step: int) -> bool:
        return step % self.cadence.log_every == 0 or step == self.total_steps

    def eval_due(self, step: int) -> bool:
        """Every eval.every_steps, at the end, and at every checkpoint when checkpoints are judged
        (kept by checkpoint.metric, or checked against the forgetting budget)."""
        c = self.cadence
        return step % c.eval_every == 0 or step == self.total_steps or (c.judge_saves and step % c.save_every == 0)

    def save_due(self, step: int) -> bool:
        return step % self.cadence.save_every == 0 or step == self.total_steps

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


def make_plan(cfg: Config, manifests: dict[str, Manifest] | None, world_size: int = 1) -> RunPlan:
    t = cfg.train
    rows, accum = batch_geometry(cfg, world_size)
    domain = [s.name for s in cfg.domain_sources]
    general = [s.name for s in cfg.general_sources] if cfg.replay_in_use else []
    windows = {}
    if manifests is not None:
        windows = {n: manifests[n].windows("train", cfg.data.seq_len) for n in domain + general}
        empty = [n for n, w in windows.items() if w == 0]
        if empty:
            raise UserError(
                f"data: source(s) {', '.join(empty)} hold fewer training tokens than one sequence "
                f"(data.seq_len {cfg.data.seq_len}); add text or lower data.seq_len"
            )
    # The mix without source sizes: enough for the role shares (plan before prepare).
    shares = mix_schedule(cfg, {n: windows.get(n, 1) for n in domain + general})
    if t.max_steps is not None:
        total, budget = t.max_steps, "train.max_steps"
    elif t.max_tokens is not None:
        total, budget = math.ceil(t.max_tokens / (rows * cfg.data.seq_len)), "train.max_tokens"
    elif windows:
        domain_rows = sum(windows[n] for n in domain)
        total = math.ceil(domain_rows / (rows * shares.mean_domain_share))
        budget = "one pass over the domain data"
    else:
        total, budget = 0, "one pass over the domain data (known after `cptkit prepare`)"
    schedule = schedule_for(t, total)
    return RunPlan(
        seq_len=cfg.data.seq_len, rows_per_step=rows, micro_batch_size=t.micro_batch_size,
        world_size=world_size, accumulation=accum, total_steps=total, schedule=schedule,
        budget_source=budget, domain_names=domain, general_names=general, windows=windows, shares=shares,
        cadence=Cadence.of(cfg),
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
        f"schedule         {plan.schedule.describe()}",
        f"mix              {mix_summary(cfg)}",
    ]
    t = cfg.train
    if t.forgetting_budget is not None:
        action = t.forgetting_action
        if action == "rollback":
            action = (f"roll back (lr x{t.rollback_lr_factor:g}, replay +{t.rollback_replay:g} each time, "
                      f"at most {t.max_rollbacks}, then stop)")
        lines.append(f"forgetting       general ppl may rise {t.forgetting_budget:+.1%} over the base model; "
                     f"beyond it: {action}")
    stages = describe_stages(t, cfg.model.name_or_path, plan.total_steps)
    if stages:
        lines.append(stages)
    if plan.total_steps:
        lines.append("")
        lines += schedule_table(plan)
    if plan.windows and plan.total_steps:
        lines.append("")
        lines.append("tokens per source over the whole run:")
        for name in plan.domain_names + plan.general_names:
            mean = _mean_share(plan, name)
            tokens = mean * plan.total_tokens
            available = plan.windows[name] * plan.seq_len
            lines.append(
                f"  {name:<14} {mean:7.2%} of tokens = {tokens:,.0f} tokens, "
                f"{tokens / available:.2f} epoch(s) of its {available:,} training tokens"
            )
    elif not plan.windows:
        lines.append("  (tokens per source: run `cptkit prepare` first to see source sizes and epochs)")
    return "\n".join(lines)


def mix_summary(cfg: Config) -> str:
    cur = cfg.mix.curriculum
    if cur is not None:
        return (f"curriculum: domain share {cur.start:g} -> {cur.end:g} ({cur.shape}), "
                "the rest from data.general")
    return f"replay ratio {cfg.mix.replay_ratio:g} (share of sequences from data.general)"


def _mean_share(plan: RunPlan, name: str) -> float:
    # Both curriculum shapes are symmetric about midway, so the mean of the shares over the
    # evenly spaced steps is their value midway.
    return plan.shares(0.5)[name]


def table_steps(plan: RunPlan, rows: int = 11) -> list[int]:
    """Evenly spaced steps plus the schedule's phase boundaries (0-based)."""
    total = plan.total_steps
    marks = {round(i * (total - 1) / (rows - 1)) for i in range(rows)} | plan.schedule.boundaries()
    return sorted(m for m in marks if 0 <= m < total)


def schedule_table(plan: RunPlan) -> list[str]:
    """The LR curve and the mix schedule side by side, one line per chosen step."""
    roles = ["domain"] + (["general"] if plan.general_names else [])
    head = f"{'step':>10} {'progress':>9} {'lr':>11} " + " ".join(f"{r + ' share':>14}" for r in roles)
    out = [head]
    for step in table_steps(plan):
        p = plan.progress(step)
        d = plan.shares.domain_share(p) if plan.shares else 1.0
        shares = [d, 1 - d][: len(roles)]
        out.append(f"{step + 1:>10,} {p:>9.1%} {plan.schedule(step):>11.4g} "
                   + " ".join(f"{x:>14.2%}" for x in shares))
    return out


def plot_plan(plan: RunPlan, path) -> None:
    """A PNG of the LR curve and the domain share over the run's steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stride = max(plan.total_steps // 2000, 1)  # at most ~2000 points, phase boundaries kept
    steps = sorted(set(range(0, plan.total_steps, stride)) | set(table_steps(plan)))
    fig, (ax_lr, ax_mix) = plt.subplots(2, 1, figsize=(6.4, 5.2), sharex=True)
    ax_lr.plot([s + 1 for s in steps], [plan.schedule(s) for s in steps], linewidth=1.2)
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_title(f"{plan.schedule.name} schedule, {plan.total_steps:,} steps")
    share = [plan.shares.domain_share(plan.progress(s)) if plan.shares else 1.0 for s in steps]
    ax_mix.plot([s + 1 for s in steps], share, linewidth=1.2, label="domain")
    ax_mix.plot([s + 1 for s in steps], [1 - x for x in share], linewidth=1.2, linestyle="--", label="general (replay)")
    ax_mix.set_ylim(-0.02, 1.02)
    ax_mix.set_ylabel("share of sequences")
    ax_mix.set_xlabel("optimizer step")
    ax_mix.legend(loc="center right")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
