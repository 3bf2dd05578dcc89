"""EWC and L2-SP: a quadratic pull of every trainable weight back towards its starting value.

    penalty = (weight / 2) * sum_i F_i * (theta_i - theta0_i)^2          gradient: weight * F * (theta - theta0)

EWC uses a diagonal Fisher F (see `fisher.py`); L2-SP is the same with F = 1. The penalty is a
pure function of the weights; `penalty_and_grad` gives both in one pass and is what training
uses. The penalty's gradient is added to each weight's `.grad` once per optimizer step, after
the last micro batch's backward: by then DDP has averaged the loss gradients over processes,
and the penalty gradient is the same on every process, so nothing needs another all-reduce.

Under FSDP the parameters are DTensors: anchors and Fisher are sharded like them, so each
process holds its shards only, and the penalty's sum spans all processes.

Memory: the anchors theta0 are a float32 copy of the trainable weights on the training device
(4 bytes per parameter), and EWC's Fisher is another (4 more); frozen weights are skipped, as
their penalty is always 0. A step adds one temporary the size of the largest tensor.
"""

from __future__ import annotations

import torch


def penalty(theta: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor],
            fisher: dict[str, torch.Tensor] | None, weight: float) -> torch.Tensor:
    """(weight / 2) * sum F (theta - anchor)^2 as a differentiable scalar (F = 1 without fisher)."""
    terms = []
    for name, t in theta.items():
        sq = (t.float() - anchor[name]) ** 2
        terms.append((sq * fisher[name] if fisher is not None else sq).sum())
    return 0.5 * weight * torch.stack(terms).sum()


@torch.no_grad()
def penalty_and_grad(theta: torch.Tensor, anchor: torch.Tensor, fisher: torch.Tensor | None,
                     weight: float) -> tuple[float, torch.Tensor]:
    """One tensor's penalty and its gradient weight * F * (theta - anchor), in float32."""
    value, grad = _penalty_and_grad(theta, anchor, fisher, weight)
    return float(_whole(value)), grad


def _penalty_and_grad(theta, anchor, fisher, weight):
    """As penalty_and_grad, the value left as a tensor: a partial sum per process under FSDP."""
    diff = theta.detach().float() - anchor
    grad = diff * fisher if fisher is not None else diff.clone()
    value = 0.5 * weight * (grad * diff).sum()
    return value, grad.mul_(weight)


def _whole(value: torch.Tensor) -> torch.Tensor:
    """The sum over every process's shards (one collective), or the value itself unsharded."""
    from torch.distributed.tensor import DTensor

    return value.full_tensor() if isinstance(value, DTensor) else value


class AnchorPenalty:
    """The run's penalty: anchors taken from the starting weights, Fisher optional (L2-SP)."""

    def __init__(self, named_params: dict[str, torch.nn.Parameter], weight: float,
                 fisher: dict[str, torch.Tensor] | None = None):
        self.params = {n: p for n, p in named_params.items() if p.requires_grad}
        self.weight = weight
        # Captured before a resumed run loads its checkpoint, so theta0 is always the start.
        self.anchors = {n: p.detach().float().clone() for n, p in self.params.items()}
        self.fisher = None
        if fisher is not None:
            self.fisher = {n: _like(fisher[n].to(p.device, torch.float32), p) for n, p in self.params.items()}

    @torch.no_grad()
    def add_to_grads(self) -> float:
        """Add the penalty's gradient to every trainable weight's .grad; return the penalty."""
        total = None
        for name, p in self.params.items():
            f = self.fisher[name] if self.fisher is not None else None
            value, grad = _penalty_and_grad(p, self.anchors[name], f, self.weight)
            total = value if total is None else total + value
            if p.grad is None:
                p.grad = grad.to(p.dtype)
            else:
                p.grad.add_(grad.to(p.grad.dtype))
        return 0.0 if total is None else float(_whole(total))

    @torch.no_grad()
    def value(self) -> float:
        values = [_penalty_and_grad(p, self.anchors[n], None if self.fisher is None else self.fisher[n],
                                    self.weight)[0] for n, p in self.params.items()]
        return float(_whole(sum(values))) if values else 0.0


def _like(full: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """`full` laid out as `param`: sharded the same way when FSDP made the parameter a DTensor."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(param, DTensor):
        return distribute_tensor(full, param.device_mesh, param.placements)
    return full
