"""`cptkit train`: the one training loop, from prepared shards to checkpoints and summary.json.

Setup (prepared data, plan, model, optimizer, resume) is in `cptkit.train.setup`; this module is
the loop itself, readable top to bottom: one optimizer step = the mix schedule picks the global
rows, this process runs its micro batches with gradient accumulation, clips, steps, logs, and
at the configured steps evaluates and saves.
"""

from __future__ import annotations

import json
import logging
import time

import torch

from cptkit import checkpoint
from cptkit.evaluation.perplexity import evaluate
from cptkit.evaluation.probes import score_probe_sets
from cptkit.evaluation.summary import complete_summary
from cptkit.faults import crash_point, nan_step
from cptkit.train.budget import boosted
from cptkit.train.optim import set_lr
from cptkit.train.setup import Run, build_run

log = logging.getLogger("cptkit")


def train(cfg, resume: bool | str = False) -> dict:
    run = build_run(cfg, resume)
    acc, model, optimizer, plan = run.dist.accelerator, run.model, run.optimizer, run.plan
    device = run.dist.device
    if run.step == 0:
        run_eval(run)  # step 0: the untouched base model, before any update
        if run.budget.active and run.budget.action == "rollback":
            save(run, evaluated=True)  # the base model: a rollback target that is always within budget
    model.train()
    progress = run.progress()
    total = plan.total_steps
    while run.step < total:
        started = time.perf_counter()
        lr = plan.schedule(run.step) * run.budget.lr_scale
        set_lr(optimizer, lr)
        rows = run.stream.next_step(plan.rows_per_step, progress=plan.progress(run.step))
        micro_batches = run.stream.micro_batches(rows, plan.micro_batch_size, run.dist.world_size, run.dist.rank)
        # The loss is a mean over every predicted token of the global batch, so each process
        # divides its sum by the global count (DDP then averages gradients over processes).
        local_targets = sum(int((b["labels"] != -100).sum()) for b in micro_batches)
        global_targets = int(run.dist.all_reduce_sum(torch.tensor(float(local_targets), device=device)))
        scale = run.dist.world_size / max(global_targets, 1)
        replays = [torch.tensor([s in run.replay_names for s in b["sources"]]) for b in micro_batches]
        kl, kl_coef, kl_targets = kl_for_step(run, micro_batches, replays, global_targets)
        kl_sum = torch.zeros((), dtype=torch.float64, device=device)
        by_role = torch.zeros(2, 2, dtype=torch.float64, device=device)  # [domain, replay] x [sum, count]
        for i, batch in enumerate(micro_batches):
            last = i == len(micro_batches) - 1
            inputs = {k: batch[k].to(device) for k in ("input_ids", "position_ids", "labels")}
            replay = replays[i].to(device)
            # DDP all-reduces gradients once per optimizer step, on the last micro batch.
            with run.dist.gradient_sync(model, sync=last):
                with acc.autocast():
                    # The frozen reference (KL) runs outside the wrapped model, under no_grad.
                    ref = kl.reference(inputs, replay, kl_coef) if kl is not None else None
                    out = model(**inputs, ref=ref) if ref is not None else model(**inputs)
                loss_sum, row_sums, row_counts = out[:3]
                if nan_step(run.step + 1):  # fault injection for the tests (cptkit.faults)
                    loss_sum, row_sums = loss_sum * float("nan"), row_sums * float("nan")
                acc.backward(loss_sum * scale)
            if ref is not None:
                kl_sum += out[3].double()
            for role, rows_of_role in enumerate((~replay, replay)):
                by_role[role, 0] += row_sums[rows_of_role].double().sum()
                by_role[role, 1] += row_counts[rows_of_role].sum()
        # EWC / L2-SP: the penalty's gradient joins the averaged loss gradient before clipping.
        penalty = run.regularizer.anchor.add_to_grads() if run.regularizer.anchor is not None else None
        max_norm = cfg.train.max_grad_norm or float("inf")
        grad_norm = run.dist.clip_grad_norm(model, max_norm)
        by_role = run.dist.all_reduce_sum(by_role)
        loss = float(by_role[:, 0].sum() / by_role[:, 1].sum().clamp(min=1))
        # Loss and gradient norm are global, so every process takes the same decision.
        bad = run.guard.bad_reason(loss, grad_norm)
        if bad is None:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        run.step += 1
        run.tokens += plan.tokens_per_step
        crash_point(f"step:{run.step}")
        kl_mean = float(run.dist.all_reduce_sum(kl_sum)) / kl_targets if kl is not None else None
        elapsed = time.perf_counter() - started
        run.train_wall += elapsed
        record = {
            "step": run.step,
            "tokens": run.tokens,
            "lr": lr,
            "loss": loss,
            "loss_domain": _mean(by_role[0]),
            "loss_replay": _mean(by_role[1]),
            "loss_reg": loss_reg(run, penalty, kl_mean),
            "grad_norm": grad_norm,
            "tokens_per_s": plan.tokens_per_step / elapsed,
            "target_tokens": global_targets,  # tokens predicted this step (no boundaries, no padding)
            # Cumulative tokens (sequence positions) drawn from each training source so far.
            "source_tokens": {n: c * plan.seq_len for n, c in run.stream.mixer.count.items()},
        }
        if run.regularizer.kl is not None:
            record["kl"] = kl_mean  # unweighted token-mean KL; null on steps that skip it
        if bad is not None:
            record["skipped"] = bad
        elif run.guard.applied(run.step, loss):
            record["spike"] = True
        if run.step % cfg.train.log_every == 0 or run.step == total or bad is not None or "spike" in record:
            run.log_metrics(record)
        if bad is not None:
            run.guard.skipped(run.step, bad, checkpoint.latest_state(run.dir))
        progress.update(run.step, loss, record["tokens_per_s"])
        evaluated = False
        if run.step % cfg.eval.every_steps == 0 or run.step == total or (
            run.step % cfg.checkpoint.every_steps == 0 and (cfg.checkpoint.keep_best or run.budget.active)
        ):
            evaluation = run_eval(run)
            evaluated = True
            if not evaluation.get("within_budget", True):
                action = over_budget(run, evaluation)
                if action == "stop":
                    break  # final/ and summary.json are written as for a finished run
                if action == "rollback":
                    continue  # the loop goes on from the restored step
        if run.step % cfg.checkpoint.every_steps == 0 or run.step == total:
            save(run, evaluated)
    progress.close()
    return finish(run)


def kl_for_step(run: Run, micro_batches: list[dict], replays: list[torch.Tensor], global_targets: int):
    """(KL term or None, its coefficient, global KL token count) for this optimizer step.

    The coefficient turns the summed KL into weight * (token mean over the tokens carrying KL)
    once the loop scales the whole sum by 1 / (global target count).
    """
    kl = run.regularizer.kl
    if kl is None or not kl.active(run.step):
        return None, 0.0, 0
    local = sum(kl.targets(b["labels"], r) for b, r in zip(micro_batches, replays))
    total = int(run.dist.all_reduce_sum(torch.tensor(float(local), device=run.dist.device)))
    if total == 0:
        return None, 0.0, 0  # e.g. kl_on: replay and no replay row in this step
    return kl, kl.weight * global_targets / total, total


def loss_reg(run: Run, penalty: float | None, kl_mean: float | None) -> float | None:
    """The regularizer's term as added to the objective; null on a step that skipped it."""
    reg = run.regularizer
    if reg.anchor is not None:
        return penalty
    if reg.kl is not None:
        return None if kl_mean is None else reg.kl.weight * kl_mean
    return 0.0


def _mean(role: torch.Tensor) -> float | None:
    return float(role[0] / role[1]) if role[1] > 0 else None


def run_eval(run: Run) -> dict:
    cfg = run.cfg
    acc = run.dist.accelerator
    run.model.eval()
    results = evaluate(
        run.model,
        run.eval_sets,
        seq_len=cfg.data.seq_len,
        micro_batch_size=cfg.eval.micro_batch_size or cfg.train.micro_batch_size,
        device=run.dist.device,
        autocast=acc.autocast,
        all_reduce=run.dist.all_reduce_sum,
        rank=run.dist.rank,
        world_size=run.dist.world_size,
        document_masking=cfg.train.document_masking,
    )
    crash_point(f"eval:{run.step}")
    if run.probe_sets:
        # Every process scores the same probes on whole weights (gathered under FSDP).
        scores, rows = run.dist.call_gathered(
            run.model, score_probe_sets, run.tokenizer, run.probe_sets, run.dist.device, acc.autocast,
            acc.unwrap_model(run.model).chunk, cfg.eval.probe_batch_size, cfg.eval.probe_new_tokens,
        )
        results.update(scores)
        run.log_probes(rows)
    run.model.train()
    record = {"step": run.step, "tokens": run.tokens, **results}
    metric = results.get(cfg.checkpoint.metric)
    rise = run.budget.rise(run.base if run.step else record, results)
    within = run.budget.allows(rise)
    if run.budget.active:
        record["general_rise"], record["within_budget"] = rise, within
    run.log_eval(record)
    # An evaluation over the forgetting budget can be neither best/ nor a kept best checkpoint.
    run.metric_at[run.step] = metric if within else None
    if not within:
        metric = None
    if metric is not None and metric == metric and (run.best is None or metric < run.best[cfg.checkpoint.metric]):
        run.best = record
        weights, _ = run.dist.full_state(run.model)  # every process: FSDP gathers the shards
        if run.dist.is_main:
            checkpoint.export_model(run.lm, run.tokenizer, run.dir / "best", run.save_dtype, weights)
        log.info("step %d: new best %s %.4f, exported to %s", run.step, cfg.checkpoint.metric, metric, run.dir / "best")
    parts = [f"{name} ppl {results[f'{name}_ppl']:.3f}" for name in (es.name for es in run.eval_sets)]
    parts += [f"probes {ps.name} exact {results[f'probe_{ps.name}_exact']:.1%}" for ps in run.probe_sets]
    log.info("eval step %d: %s", run.step, ", ".join(parts))
    run.dist.barrier()
    return record


def over_budget(run: Run, record: dict) -> str:
    """Act on an evaluation over the forgetting budget; return the action taken."""
    budget, step = run.budget, run.step
    action = budget.next_action()
    rise = record["general_rise"]
    if action == "keep_going":
        log.info("step %d: general perplexity %+.1f%% over the base, beyond the budget %+.1f%%; "
                 "best/ stays within budget", step, 100 * rise, 100 * budget.budget)
        return action
    if action == "rollback":
        states = checkpoint.committed_states(run.dir) if run.dist.is_main else []
        committed = run.dist.broadcast_object([checkpoint.step_of(p) for p in states])
        target = budget.rollback_target(run.metric_at, committed, step)
        if target is None:
            action = "stop"
        else:
            rollback(run, target, rise)
            return action
    budget.stopped = (f"step {step}: general perplexity {100 * rise:+.1f}% over the base model, beyond the "
                      f"forgetting budget of {100 * budget.budget:+.1f}%")
    log.warning("%s; stopping (train.forgetting_action %s%s)", budget.stopped, budget.action,
                f", {len(budget.rollbacks)} rollbacks done" if budget.rollbacks else "")
    return "stop"


def rollback(run: Run, target: int, rise: float) -> None:
    """Restore the checkpoint at step `target` and continue with a lower LR and more replay."""
    at = run.step
    folder = run.dir / "checkpoints" / f"step-{target}"
    # The rollback history survives the restore, and so does best/: it holds the best weights
    # within budget whichever path reached them.
    kept, best = run.budget.state_dict(), run.best
    weights, optimizer_state, state = checkpoint.load_state(folder)
    run.dist.load_full_state(run.model, run.optimizer, weights, optimizer_state, where=str(folder))
    run.load_state_dict(state)
    run.budget.load_state_dict(kept)
    run.best = best
    record = run.budget.adjust(at, target, rise)
    run.stream.mixer.shares = boosted(run.plan.shares, run.budget.replay_boost)
    run.rewind_logs()
    log.warning("step %d: general perplexity %+.1f%% over the base model, beyond the forgetting budget %+.1f%%: "
                "rolled back to step %d; lr x%g, replay +%.2f from now on", at, 100 * rise,
                100 * run.budget.budget, target, record["lr_scale"], record["replay_boost"])


def save(run: Run, evaluated: bool) -> None:
    cfg = run.cfg
    weights, optimizer_state = run.dist.full_state(run.model, run.optimizer)  # every process takes part
    if run.dist.is_main:
        path = checkpoint.save_state(run.dir, run.step, weights, optimizer_state, run.state_dict())
        checkpoint.prune(
            run.dir,
            cfg.checkpoint.keep_last,
            cfg.checkpoint.keep_best,
            {s: m for s, m in run.metric_at.items() if m is not None and m == m},
            # The base model's state at step 0 is the rollback target of last resort.
            always={0} if run.budget.active and run.budget.action == "rollback" else set(),
        )
        log.info("step %d: saved %s", run.step, path)
    run.dist.barrier()


def finish(run: Run) -> dict:
    weights, _ = run.dist.full_state(run.model)
    if run.dist.is_main:
        checkpoint.export_model(run.lm, run.tokenizer, run.dir / "final", run.save_dtype, weights)
    summary = run.summary()
    if run.dist.is_main:
        summary = complete_summary(summary, run.dir, run.base, run.best, run.last_eval)
        (run.dir / "summary.json").write_text(json.dumps(summary, indent=2))
    run.close()
    return summary
