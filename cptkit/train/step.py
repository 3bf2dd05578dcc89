"""One optimizer step: this process's micro batches with gradient accumulation, the
regularizer's gradient, clipping, the numerical guard and the update.

The loss is a mean over every predicted token of the global batch (all micro batches of all
processes), so each process scales its summed loss by world_size / (global target count):
DDP averages gradients over processes, which turns the sum of the scaled sums into that mean.
The same holds under FSDP, whose reduce-scatter also averages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from cptkit.train.batches import Row
    from cptkit.train.run import Run


@dataclass
class LossSums:
    """A step's next-token loss and target counts per role (domain, replay), its KL sum and its
    target-weighted router loss sums (mixture-of-experts models).

    float64, one tensor, so that all processes' sums are combined by a single all-reduce.
    """

    # [domain sum, domain count, replay sum, replay count, kl sum, router load-balancing sum, router z sum]
    values: torch.Tensor

    @classmethod
    def zeros(cls, device: torch.device) -> LossSums:
        return cls(torch.zeros(7, dtype=torch.float64, device=device))

    def add(self, row_sums: torch.Tensor, row_counts: torch.Tensor, replay: torch.Tensor) -> None:
        by_role = self.values[:4].view(2, 2)
        for role, rows in enumerate((~replay, replay)):
            by_role[role, 0] += row_sums[rows].double().sum()
            by_role[role, 1] += row_counts[rows].sum()

    def add_kl(self, kl_sum: torch.Tensor) -> None:
        self.values[4] += kl_sum.double()

    def add_router(self, sums: torch.Tensor) -> None:
        self.values[5:7] += sums.double()

    @property
    def loss(self) -> float:
        by_role = self.values[:4].view(2, 2)
        return float(by_role[:, 0].sum() / by_role[:, 1].sum().clamp(min=1))

    def role_loss(self, role: int) -> float | None:
        total, count = self.values[2 * role], self.values[2 * role + 1]
        return float(total / count) if count > 0 else None

    @property
    def kl_sum(self) -> float:
        return float(self.values[4])

    def router_means(self, targets: int) -> tuple[float, float]:
        """(load balancing, z-loss): their means over micro batches weighted by target tokens."""
        return float(self.values[5]) / max(targets, 1), float(self.values[6]) / max(targets, 1)


@dataclass
class StepResult:
    loss: float  # mean next-token loss over the step's global batch
    loss_domain: float | None
    loss_replay: float | None
    grad_norm: float  # global, before clipping
    target_tokens: int  # tokens predicted over all processes
    kl: float | None  # unweighted token-mean KL; None when the step computed none
    penalty: float | None  # EWC / L2-SP penalty at the weights before the update
    skipped: str | None  # why the update was not applied (non-finite loss or gradient)
    loss_aux: float | None = None  # MoE: the router load-balancing loss (before its coefficient)
    loss_router_z: float | None = None  # MoE with a z-loss: the router z-loss


def train_step(run: Run, rows: list[Row]) -> StepResult:
    """Forward and backward over this process's share of `rows`, then clip, guard and update."""
    dist, plan = run.dist, run.plan
    batches = run.stream.micro_batches(rows, plan.micro_batch_size, dist.world_size, dist.rank)
    local = sum(int((b["labels"] != -100).sum()) for b in batches)
    targets = int(dist.all_reduce_sum(torch.tensor(float(local), device=dist.device)))
    replays = [torch.tensor([s in run.replay_names for s in b["sources"]]) for b in batches]
    kl_coef, kl_targets = kl_coefficient(run, batches, replays, targets)
    sums = LossSums.zeros(dist.device)
    for i, (batch, replay) in enumerate(zip(batches, replays)):
        micro_step(run, batch, replay.to(dist.device), kl_coef, dist.world_size / max(targets, 1),
                   sync=i == len(batches) - 1, sums=sums)
    # EWC / L2-SP: the penalty's gradient joins the averaged loss gradient before clipping.
    anchor = run.regularizer.anchor
    penalty = anchor.add_to_grads() if anchor is not None else None
    run.stages.mask_gradients(run.step)  # stage 1 after `cptkit vocab`: only the new embedding rows
    grad_norm = dist.clip_grad_norm(run.model, run.optimizer, run.cfg.train.max_grad_norm or math.inf)
    dist.all_reduce_sum(sums.values)
    # Loss and gradient norm are global, so every process takes the same decision.
    skipped = run.guard.bad_reason(sums.loss, grad_norm)
    with run.stages.update(run.optimizer, run.step):
        dist.optimizer_step(run.optimizer, apply=skipped is None)
    run.optimizer.zero_grad(set_to_none=True)
    router = dist.accelerator.unwrap_model(run.model).router
    aux, z = sums.router_means(targets) if router is not None else (None, None)
    return StepResult(
        loss=sums.loss, loss_domain=sums.role_loss(0), loss_replay=sums.role_loss(1), grad_norm=grad_norm,
        target_tokens=targets, kl=sums.kl_sum / kl_targets if kl_coef is not None else None,
        penalty=penalty, skipped=skipped, loss_aux=aux, loss_router_z=z if router is not None and router.z_coef else None,
    )


def micro_step(run: Run, batch: dict, replay: torch.Tensor, kl_coef: float | None, scale: float,
               sync: bool, sums: LossSums) -> None:
    """Forward and backward of one micro batch; its loss sums go into `sums`."""
    dist, kl = run.dist, run.regularizer.kl
    inputs = {k: batch[k].to(dist.device) for k in ("input_ids", "position_ids", "labels")}
    # DDP all-reduces gradients once per optimizer step, on the last micro batch (`sync`).
    with dist.gradient_sync(run.model, sync=sync):
        with dist.autocast():
            # The frozen reference (KL) runs outside the wrapped model, under no_grad.
            ref = kl.reference(inputs, replay, kl_coef) if kl_coef is not None else None
            out = run.model(**inputs, ref=ref) if ref is not None else run.model(**inputs)
        dist.precision.backward(out[0] * scale)
    sums.add(out[1], out[2], replay)
    if ref is not None:
        sums.add_kl(out[3])
    if dist.accelerator.unwrap_model(run.model).router is not None:
        sums.add_router(out[-1])  # MoE: the router losses' target-weighted sums come last


def kl_coefficient(run: Run, batches: list[dict], replays: list[torch.Tensor], targets: int
                   ) -> tuple[float | None, int]:
    """(coefficient of the summed KL, global count of tokens carrying KL) for this step.

    The coefficient turns the summed KL into weight * (token mean over the tokens carrying KL)
    once the whole sum is scaled by 1 / (global target count). None: no KL this step.
    """
    kl = run.regularizer.kl
    if kl is None or not kl.active(run.step):
        return None, 0
    local = sum(kl.targets(b["labels"], r) for b, r in zip(batches, replays))
    total = int(run.dist.all_reduce_sum(torch.tensor(float(local), device=run.dist.device)))
    if total == 0:
        return None, 0  # e.g. kl_on: replay and no replay row in this step
    return kl.weight * targets / total, total
