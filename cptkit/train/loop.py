"""`cptkit train`: the one training loop, from prepared shards to checkpoints and summary.json.

Setup (prepared data, plan, model, optimizer, resume) is `cptkit.train.setup`, one optimizer
step is `cptkit.train.step`; this module is the loop itself, readable top to bottom: the mix
schedule picks the step's rows, the step runs, it is logged, and where the plan says so the
model is evaluated (evaluate -> judge -> record) and a checkpoint is saved.
"""

from __future__ import annotations

import logging
import time

from cptkit import checkpoint
from cptkit.config import Config
from cptkit.evaluation import base_scores
from cptkit.evaluation.perplexity import evaluate as perplexity
from cptkit.evaluation.probes import score_probe_sets
from cptkit.evaluation.summary import complete_summary
from cptkit.faults import crash_point
from cptkit.records import EvalRecord, StepRecord
from cptkit.train.optim import set_lr
from cptkit.train.run import Run
from cptkit.train.setup import build_run
from cptkit.train.step import StepResult, train_step

log = logging.getLogger("cptkit")


def train(cfg: Config, resume: bool | str = False) -> dict:
    run = build_run(cfg, resume)
    try:
        return train_loop(run)
    except BaseException:
        run.close(failed=True)  # the trackers mark the run failed; the line files are complete
        raise


def train_loop(run: Run) -> dict:
    plan = run.plan
    if run.step == 0:
        evaluate(run)  # step 0: the untouched base model, before any update
        if run.budget.rolls_back:
            save(run)  # the base model: a rollback target that is always within budget
    run.model.train()
    progress = run.progress()
    while run.step < plan.total_steps:
        started = time.perf_counter()
        lr = run.budget.lr(plan.schedule(run.step))
        set_lr(run.optimizer, lr)
        rows = run.stream.next_step(plan.rows_per_step, progress=plan.progress(run.step))
        run.faults.begin(run.step + 1)
        result = train_step(run, rows)
        run.step += 1
        run.tokens += plan.tokens_per_step
        run.faults.end(run.step)
        record = log_step(run, result, lr, time.perf_counter() - started)
        progress.update(run.step, record.loss, record.tokens_per_s)
        if plan.eval_due(run.step):
            action = evaluate(run)
            if action == "stop":
                break  # final/ and summary.json are written as for a finished run
            if action == "rollback":
                continue  # the loop goes on from the restored step
        if plan.save_due(run.step):
            save(run)
    progress.close()
    return finish(run)


def log_step(run: Run, result: StepResult, lr: float, elapsed: float) -> StepRecord:
    """The step's record: to metrics.jsonl when the plan says so, or when it was skipped or spiked."""
    run.clock.train += elapsed
    reg = run.regularizer
    record = StepRecord(
        step=run.step, tokens=run.tokens, lr=lr, loss=result.loss,
        loss_domain=result.loss_domain, loss_replay=result.loss_replay,
        loss_reg=reg.logged_term(result.penalty, result.kl), grad_norm=result.grad_norm,
        tokens_per_s=run.plan.tokens_per_step / elapsed, target_tokens=result.target_tokens,
        source_tokens=run.stream.source_tokens(run.plan.seq_len), skipped=result.skipped,
        loss_aux=result.loss_aux, loss_router_z=result.loss_router_z,
    )
    if reg.kl is not None:  # null on a step that computed no KL
        record.kl = result.kl if result.kl is not None else float("nan")
    if result.skipped is None:
        record.spike = run.guard.applied(run.step, result.loss)
    if run.plan.log_due(run.step) or record.skipped or record.spike:
        run.logs.step(record)
    if result.skipped is not None:
        run.guard.skipped(run.step, result.skipped, checkpoint.latest_state(run.dir))
    return record


def evaluate(run: Run) -> str | None:
    """Evaluate -> judge -> record. Returns the action taken when the evaluation is over the
    forgetting budget (keep_going, stop, rollback), None when within it."""
    record = measure(run)
    new_best = judge(run, record)
    remember(run, record)
    if new_best:
        run.best.export()
        log.info("step %d: new best %s %.4f, exported to %s", run.step, run.best.metric,
                 record[run.best.metric], run.dir / "best")
    run.dist.barrier()
    if record.within_budget is False:
        return over_budget(run, record)
    return None


def measure(run: Run) -> EvalRecord:
    """Perplexity and bits per byte of every eval set, and the probes, at the current weights;
    at step 0 of a fresh run, an earlier run's identical record where one is kept (base_scores)."""
    base = run.step == 0 and run.base_key is not None
    kept = reused_base(run) if base else None
    metrics, rows = kept or score(run)
    if base and kept is None and run.dist.is_main:
        base_scores.store(run.cfg.prepared_dir, run.base_key, metrics, rows, run.dir)
    if run.probe_sets:
        run.logs.probes(run.step, run.tokens, rows)
    return EvalRecord(run.step, run.tokens, metrics)


def reused_base(run: Run) -> tuple[dict, list[dict]] | None:
    """The main process reads the kept record and every process gets its answer."""
    kept = base_scores.load(run.cfg.prepared_dir, run.base_key) if run.dist.is_main else None
    return run.dist.broadcast_object(kept)


def score(run: Run) -> tuple[dict, list[dict]]:
    cfg, dist = run.cfg, run.dist
    run.model.eval()
    metrics = perplexity(
        run.model, run.eval_sets, seq_len=cfg.data.seq_len,
        micro_batch_size=cfg.eval.micro_batch_size or cfg.train.micro_batch_size, device=dist.device,
        autocast=dist.autocast, all_reduce=dist.all_reduce_sum, rank=dist.rank, world_size=dist.world_size,
        document_masking=cfg.train.document_masking,
    )
    crash_point(f"eval:{run.step}")
    rows: list[dict] = []
    if run.probe_sets:
        # Every process scores the same probes on whole weights (gathered under FSDP).
        scores, rows = dist.call_gathered(
            run.model, score_probe_sets, run.tokenizer, run.probe_sets, dist.device, dist.autocast,
            dist.accelerator.unwrap_model(run.model).chunk, cfg.eval.probe_batch_size, cfg.eval.probe_new_tokens,
        )
        metrics.update(scores)
    run.model.train()
    return metrics, rows


def judge(run: Run, record: EvalRecord) -> bool:
    """Set the record's budget verdict and let the best tracker score it; True: a new best."""
    rise = run.budget.rise(run.base if run.step else record, record)
    within = run.budget.allows(rise)
    if run.budget.active:
        record.general_rise, record.within_budget = rise, within
    return run.best.consider(record, within)


def remember(run: Run, record: EvalRecord) -> None:
    if run.step == 0:
        run.base = record
    run.last_eval = record
    run.logs.eval(record)
    parts = [f"{es.name} ppl {record[f'{es.name}_ppl']:.3f}" for es in run.eval_sets]
    parts += [f"probes {ps.name} exact {record[f'probe_{ps.name}_exact']:.1%}" for ps in run.probe_sets]
    log.info("eval step %d: %s", run.step, ", ".join(parts))


def over_budget(run: Run, record: EvalRecord) -> str:
    """Act on an evaluation over the forgetting budget; return the action taken."""
    budget, step = run.budget, run.step
    action = budget.next_action()
    rise = record.general_rise
    if action == "keep_going":
        log.info("step %d: general perplexity %+.1f%% over the base, beyond the budget %+.1f%%; "
                 "best/ stays within budget", step, 100 * rise, 100 * budget.budget)
        return action
    if action == "rollback":
        states = checkpoint.committed_states(run.dir) if run.dist.is_main else []
        committed = run.dist.broadcast_object([checkpoint.step_of(p) for p in states])
        target = budget.rollback_target(run.best.scores, committed, step)
        if target is not None:
            rollback(run, target, rise)
            return action
    budget.stopped = (f"step {step}: general perplexity {100 * rise:+.1f}% over the base model, beyond the "
                      f"forgetting budget of {100 * budget.budget:+.1f}%")
    run.logs.event("stop", {"reason": budget.stopped, "general_rise": rise}, step)
    log.warning("%s; stopping (train.forgetting_action %s%s)", budget.stopped, budget.action,
                f", {len(budget.rollbacks)} rollbacks done" if budget.rollbacks else "")
    return "stop"


def rollback(run: Run, target: int, rise: float) -> None:
    """Restore the checkpoint at step `target` and continue with a lower LR and more replay."""
    at = run.step
    folder = run.dir / "checkpoints" / f"step-{target}"
    weights, optimizer_state, state = checkpoint.load_state(folder)
    run.dist.load_full_state(run.model, run.optimizer, weights, optimizer_state, where=str(folder),
                             trainable_only=run.trainable_only)
    run.load_state_dict(state, rollback=True)
    adjusted = run.budget.adjust(at, target, rise)
    run.apply_budget()
    run.logs.rewind(run.step)
    run.logs.event("rollback", adjusted, at)
    log.warning("step %d: general perplexity %+.1f%% over the base model, beyond the forgetting budget %+.1f%%: "
                "rolled back to step %d; lr x%g, replay +%.2f from now on", at, 100 * rise,
                100 * run.budget.budget, target, adjusted["lr_scale"], adjusted["replay_boost"])


def save(run: Run) -> None:
    cfg = run.cfg
    # Every process takes part; an adapter run's checkpoint leaves out the frozen base.
    weights, optimizer_state = run.dist.full_state(run.model, run.optimizer, trainable_only=run.trainable_only)
    if run.dist.is_main:
        path = checkpoint.save_state(run.dir, run.step, weights, optimizer_state, run.state_dict())
        checkpoint.prune(run.dir, cfg.checkpoint.keep_last, cfg.checkpoint.keep_best, run.best.kept_scores(),
                         always=run.budget.protected_steps())
        log.info("step %d: saved %s", run.step, path)
    run.dist.barrier()


def finish(run: Run) -> dict:
    run.export("final")
    summary = run.summary()
    if run.dist.is_main:
        summary = complete_summary(summary, run.dir, run.base, run.best.best, run.last_eval)
        run.write_summary(summary)
    run.close()
    return summary
