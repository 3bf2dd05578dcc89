"""The router auxiliary loss of mixture-of-experts models, computed the way their own forward
computes it, so that continued pre-training keeps the experts' load balanced.

A Hugging Face MoE model (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE, ...) returns its load-balancing
loss only from its own forward with `output_router_logits=True`, and adds it to the loss only
when given labels. cptkit computes its loss itself (`cptkit.train.losses`), so without this module
the routers get no balancing signal and routing can collapse onto a few experts.

Definition (Switch Transformer eq. 4-6, as transformers' `load_balancing_loss_func` computes
it for these families). Over the real tokens t of one forward batch and every MoE layer l:

    f_e = (top-k assignments of tokens to expert e, over t and l) / (tokens x layers)
    P_e = (router probability of expert e, summed over t and l) / (tokens x layers)
    load_balancing = E * sum_e f_e * P_e          (= top_k when routing is perfectly even)

and, where asked for (ST-MoE), z = mean over t and l of logsumexp(router logits)^2. Only P and z
carry gradients (f comes from a top-k). Real tokens are the positions up to each row's last
target (`real_tokens`): padding at the end of a shard's last window is excluded, every packed
document's tokens count. For an unpacked, unpadded batch the value equals the model's own
`aux_loss` (tests/unit/test_moe.py checks Mixtral, Qwen2-MoE and OLMoE).

How micro batches and processes combine (a choice; transformers defines the loss per forward
batch only): each micro batch gets the value above over its own tokens, and the step's value is
the mean of the micro batches' values weighted by their target tokens. The loss module adds
`coef * n_targets * value` to each micro batch's summed loss, so the loop's normalisation (the
summed loss over the global target count) yields exactly CE mean + coef * that weighted mean,
with no extra communication. Micro batches hold the same rows for any process count (see
`cptkit.train.batches`), so the per-step value does not depend on the number of processes; it
does depend on `train.micro_batch_size`, because routing statistics are pooled per forward, as
in the model's own definition (a micro batch of one row balances each sequence separately).
Pooling over the whole global batch (Qwen's "global-batch" balancing) would need every micro
batch's routing before the first backward; cptkit does not do it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cptkit.data.shards import IGNORE_INDEX
from cptkit.train.config import RouterLossConfig

# Config attribute names across MoE families, in the order they are tried.
_EXPERTS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
_TOP_K = ("num_experts_per_tok", "moe_topk", "top_k", "num_selected_experts")


@dataclass(frozen=True)
class RouterSpec:
    """What the loss needs to know about a MoE model's routers."""

    num_experts: int
    top_k: int
    aux_coef: float
    z_coef: float

    @property
    def active(self) -> bool:
        return self.aux_coef > 0 or self.z_coef > 0


@dataclass
class RouterAux:
    """One forward batch's router losses. `value` (aux_coef * load_balancing + z_coef * z) carries
    the gradient; the parts are detached, for logging."""

    value: torch.Tensor
    load_balancing: torch.Tensor
    z_loss: torch.Tensor


def _first(config, names: tuple[str, ...]) -> int | None:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def router_spec(config, cfg: RouterLossConfig | None = None) -> RouterSpec | None:
    """The router spec of a MoE model's config, or None for a dense model.

    A model is MoE when its config defines a router auxiliary loss (`router_aux_loss_coef` or
    `output_router_logits`) and more than one expert. Coefficients: the config section's where
    set, else the model's own.
    """
    cfg = cfg or RouterLossConfig()
    if not (hasattr(config, "router_aux_loss_coef") or hasattr(config, "output_router_logits")):
        return None
    experts, top_k = _first(config, _EXPERTS), _first(config, _TOP_K)
    if not experts or experts < 2 or not top_k:
        return None
    aux = cfg.aux_loss_coef if cfg.aux_loss_coef is not None else float(getattr(config, "router_aux_loss_coef", 0) or 0)
    z = cfg.z_loss_coef if cfg.z_loss_coef is not None else float(getattr(config, "router_z_loss_coef", 0) or 0)
    return RouterSpec(num_experts=experts, top_k=min(top_k, experts), aux_coef=aux, z_coef=z)


def real_tokens(labels: torch.Tensor) -> torch.Tensor:
    """[B, T] True at the positions that hold a real input token: up to each row's last target.

    A packed window is padded only after its last real token (the end of a shard), and the last
    real token always has a target (the shard's final EOS), so this excludes exactly the padding.
    Document boundaries (masked labels inside a row) stay in: their tokens are routed like any.
    """
    t = labels.shape[1]
    has_target = labels != IGNORE_INDEX
    positions = torch.arange(t, device=labels.device).expand_as(labels)
    last = torch.where(has_target, positions, torch.full_like(positions, -1)).amax(dim=1, keepdim=True)
    return positions <= last


def router_aux(router_logits: tuple[torch.Tensor, ...], spec: RouterSpec, token_mask: torch.Tensor | None = None
               ) -> RouterAux:
    """The router losses of one forward batch from its decoder's `router_logits` (one [B*T, E]
    tensor per MoE layer), over the tokens `token_mask` [B, T] marks (all when None)."""
    e, k = spec.num_experts, spec.top_k
    device = router_logits[0].device
    hits = torch.zeros(e, dtype=torch.float32, device=device)
    probs = torch.zeros(e, dtype=torch.float32, device=device)
    z_sum = torch.zeros((), dtype=torch.float32, device=device)
    weight = None if token_mask is None else token_mask.reshape(-1, 1).to(device=device, dtype=torch.float32)
    rows = 0.0
    for logits in router_logits:
        logits = logits.float()
        p = F.softmax(logits, dim=-1)
        chosen = torch.topk(p, k, dim=-1).indices  # ties break as in the model's own routing
        w = torch.ones(p.shape[0], 1, device=device) if weight is None else weight
        hits = hits + torch.zeros_like(hits).scatter_add_(0, chosen.reshape(-1), w.expand(-1, k).reshape(-1))
        probs = probs + (p * w).sum(dim=0)
        if spec.z_coef > 0:
            z_sum = z_sum + (torch.logsumexp(logits, dim=-1).pow(2) * w.squeeze(1)).sum()
        rows = rows + w.sum()
    rows = torch.as_tensor(rows, dtype=torch.float32, device=device).clamp(min=1.0)  # a batch of padding only
    load_balancing = e * torch.sum((hits / rows) * (probs / rows))
    z_loss = z_sum / rows
    value = spec.aux_coef * load_balancing + spec.z_coef * z_loss
    return RouterAux(value=value, load_balancing=load_balancing.detach(), z_loss=z_loss.detach())


def weighted_sums(aux: RouterAux, targets: torch.Tensor) -> torch.Tensor:
    """[2] detached (targets x load_balancing, targets x z): summed over micro batches and processes
    and divided by the global target count, they give the step's logged `loss_aux` and `loss_router_z`."""
    n = targets.to(torch.float32)
    return torch.stack([n * aux.load_balancing, n * aux.z_loss])
