"""Next-token loss on packed batches, summed per sequence over real (unmasked) targets only.

Two ways to the same number:
- `chunked` (default where it is exact): the decoder's hidden states go through the output
  layer a chunk of tokens at a time, and only for positions that have a target. The loss and
  its gradient are computed chunk by chunk in one pass (`LinearCrossEntropy`), so a
  [tokens, vocabulary] float32 tensor never exists beyond one chunk. This matters for 128k
  vocabularies, where full logits of a 4 x 4096 batch take 8 GB in float32.
- `full`: the model's own forward returns full logits and cross-entropy is taken on them. Used
  for architectures whose output is not a plain linear layer of the last hidden state (logit
  soft-capping or scaling); `cptkit.train.checks.chunked_head_is_exact` decides at start-up.

Training and evaluation share these functions, so both count exactly the same tokens: a label
of -100 (document boundary or padding) contributes nothing to the sum or the count.

KL to a frozen reference (regularizer.kind kl) rides along in the same pass: the reference
decoder runs under no_grad outside, its hidden states come in, and per chunk the student and
reference logits give CE, KL and the combined gradient (see `LinearCrossEntropy`). The KL is
summed over real targets only; the caller's coefficient turns the sum into a token mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cptkit.data.shards import IGNORE_INDEX
from cptkit.train.moe import RouterSpec, real_tokens, router_aux, weighted_sums


@dataclass
class KLTerm:
    """The frozen reference's side of the KL term, for the real tokens that carry it.

    `hidden` holds the reference decoder's last hidden states (no gradient) of the tokens listed
    in `index` (positions in the flattened list of real targets, ascending); `coef` multiplies
    each token's KL in the summed loss; `reverse` picks KL(current || reference) instead of
    the default KL(reference || current).
    """

    hidden: torch.Tensor  # [K, H]
    weight: torch.Tensor  # reference output layer [V, H]
    bias: torch.Tensor | None
    index: torch.Tensor  # [K] int64, ascending
    coef: float
    reverse: bool = False


_LSE_ROWS = 64  # rows per block when summing exponentials in log_probs


def log_probs(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-softmax, logsumexp) of fresh float32 logits, computed in their memory. Student and
    reference share this exact path, so identical logits give bit-identical log-probabilities
    and a KL of exactly 0."""
    # torch.logsumexp would allocate a second [chunk, vocabulary] float32 tensor, doubling the
    # chunk's memory; shifting in place and summing exponentials a block of rows at a time
    # keeps the extra memory to one block.
    peak = logits.amax(dim=1)
    logits.sub_(peak[:, None])  # in place: callers pass a fresh tensor
    log_norm = torch.empty_like(peak)
    for r in range(0, len(logits), _LSE_ROWS):
        log_norm[r : r + _LSE_ROWS] = logits[r : r + _LSE_ROWS].exp().sum(dim=1).log_()
    return logits.sub_(log_norm[:, None]), peak.add_(log_norm)


_KL_BLOCK_FLOATS = 1 << 17  # 512 KiB of float32 per block in kl_softmax_grad on CPU: a core's cache holds a few


def kl_softmax_grad(logp: torch.Tensor, ref_logits: torch.Tensor, coef: float, reverse: bool,
                    rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token KL, and softmax + coef * dKL/dlogits (the CE gradient without its one-hot part),
    from the student's log-probabilities and the reference's fresh float32 logits.

    forward, KL(ref || cur) = sum_v p_ref (log p_ref - log p_cur):   dKL/dz = p - p_ref
    reverse, KL(cur || ref) = sum_v p (log p - log p_ref):           dKL/dz = p * (d - KL), d = log p - log p_ref
    Both inputs are consumed: the gradient is formed in `logp`'s memory, and the only other
    memory is one block of `rows` rows. On CPU the rows go a small block at a time, because on a
    small model these passes over [tokens, vocabulary] memory, not the matrix products, are most
    of what KL adds: a block stays in cache through all its steps (the reference's log-softmax
    included) instead of every step streaming the whole chunk through memory. A GPU takes the
    chunk as one block. The reference's log-probabilities come from `log_probs` on the same
    groups of `_LSE_ROWS` rows as the student's, so identical logits still give bit-identical
    log-probabilities, exactly p as the gradient and a KL of exactly 0. The forward gradient
    p + coef * (p - p_ref) is one `lerp` from p towards p_ref (weight -coef).
    """
    n, width = logp.shape
    cpu = logp.device.type == "cpu"
    if rows is None:
        rows = min(max(_KL_BLOCK_FLOATS // width, 4), _LSE_ROWS) if cpu else n
    group = _LSE_ROWS if cpu else n  # rows per log_probs call: the student's grouping
    kl = torch.empty(n, dtype=torch.float32, device=logp.device)
    buf = torch.empty(min(rows, n), width, dtype=logp.dtype, device=logp.device)
    for g in range(0, n, group):
        log_probs(ref_logits[g : g + group])  # in place: the reference's log-probabilities
        for r in range(g, min(g + group, n), rows):
            end = min(r + rows, g + group, n)
            lp, rl, tmp = logp[r:end], ref_logits[r:end], buf[: end - r]
            if not reverse:
                p_ref = torch.exp(rl, out=tmp)
                torch.sum(rl.sub_(lp).mul_(p_ref), dim=1, out=kl[r:end])  # p_ref (log p_ref - log p)
                lp.exp_().lerp_(p_ref, -coef)
            else:
                d = torch.sub(lp, rl, out=rl)
                p = lp.exp_()
                block_kl = torch.sum(torch.mul(p, d, out=tmp), dim=1, out=kl[r:end])
                p.add_(d.sub_(block_kl[:, None]).mul_(p), alpha=coef)
    return kl, logp


class LinearCrossEntropy(torch.autograd.Function):
    """sum_i CE(hidden_i @ weight.T + bias, target_i) [+ coef * sum_j KL_j], gradients in the forward.

    Returns (loss sum, per-token CE, per-token KL); only the sum carries a gradient. Because the
    upstream gradient of a sum is one scalar, the gradients of each chunk can be formed right
    away (softmax - onehot, plus coef times the KL gradient on the tokens that carry KL) and the
    chunk's logits freed: no [tokens, vocabulary] float32 tensor outlives its chunk, for the
    student or the reference.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk: int, kl: KLTerm | None = None):
        n = hidden.shape[0]
        losses = torch.empty(n, dtype=torch.float32, device=hidden.device)
        kls = torch.zeros(0 if kl is None else len(kl.index), dtype=torch.float32, device=hidden.device)
        need_h, need_w = hidden.requires_grad, weight.requires_grad
        need_b = bias is not None and bias.requires_grad
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
        w = weight.to(hidden.dtype)
        b = bias.to(hidden.dtype) if bias is not None else None
        if kl is not None:
            ref_w = kl.weight.to(kl.hidden.dtype)
            ref_b = kl.bias.to(kl.hidden.dtype) if kl.bias is not None else None
            bounds = torch.searchsorted(kl.index, torch.arange(0, n + chunk, chunk, device=kl.index.device)).tolist()
        for c, s in enumerate(range(0, n, chunk)):
            h = hidden[s : s + chunk]
            t = targets[s : s + chunk]
            logp, lse = log_probs(F.linear(h, w, b).float())
            losses[s : s + chunk] = -logp.gather(1, t[:, None]).squeeze(1)
            lo, hi = (bounds[c], bounds[c + 1]) if kl is not None else (0, 0)
            if hi > lo:  # tokens of this chunk that carry KL
                ref_logits = F.linear(kl.hidden[lo:hi], ref_w, ref_b).float()
                if hi - lo == len(t):  # all of them: no gather, no scatter
                    kls[lo:hi], grad = kl_softmax_grad(logp, ref_logits, kl.coef, kl.reverse)
                else:
                    rows = kl.index[lo:hi] - s
                    kls[lo:hi], part = kl_softmax_grad(logp[rows], ref_logits, kl.coef, kl.reverse)
                    grad = logp.exp_().index_copy_(0, rows, part)
                del ref_logits
            elif need_h or need_w or need_b:
                grad = logp.exp_()  # softmax, reusing the log-probabilities' memory
            if need_h or need_w or need_b:
                grad[torch.arange(len(t), device=t.device), t] -= 1.0
                if need_b:
                    grad_b += grad.sum(0)
                grad = grad.to(h.dtype)
                if need_h:
                    grad_h[s : s + chunk] = grad @ w
                if need_w:
                    grad_w += (grad.t() @ h).float()
            logp = grad = None  # free this chunk's buffers before the next one's logits exist
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.dtypes = (weight.dtype, bias.dtype if bias is not None else None)
        ctx.mark_non_differentiable(losses, kls)
        total = losses.sum()
        if kl is not None:
            total = total + kl.coef * kls.sum()
        return total, losses, kls

    @staticmethod
    def backward(ctx, grad_sum, grad_losses, grad_kls):
        del grad_losses, grad_kls  # per-token values are reported, not differentiated
        grad_h, grad_w, grad_b = ctx.saved_tensors
        w_dtype, b_dtype = ctx.dtypes
        gh = grad_h * grad_sum.to(grad_h.dtype) if grad_h is not None else None
        gw = (grad_w * grad_sum).to(w_dtype) if grad_w is not None else None
        gb = (grad_b * grad_sum).to(b_dtype) if grad_b is not None else None
        return gh, gw, gb, None, None, None


@dataclass
class LossOutput:
    total: torch.Tensor  # scalar sum over every target of the batch (+ coef * KL sum; differentiable)
    row_sums: torch.Tensor  # [B] float32, detached: next-token loss only
    row_counts: torch.Tensor  # [B] number of targets per row
    kl_sum: torch.Tensor | None = None  # detached sum of per-token KL over the tokens that carry it
    # MoE with router losses on: [2] detached (targets x load balancing, targets x z-loss), see cptkit.train.moe
    aux_sums: torch.Tensor | None = None


@dataclass
class Reference:
    """What the frozen reference model gives one micro batch, for the KL term.

    `mask` [B, T] marks the positions whose KL counts (only real targets are ever used). For
    the chunked loss `states` are the reference's last hidden states of the real targets under
    `mask`, flattened row by row, with its output layer in `weight`/`bias`; for the full-logits
    loss `states` are its logits [B, T, V].
    """

    mask: torch.Tensor
    states: torch.Tensor
    weight: torch.Tensor | None
    bias: torch.Tensor | None
    coef: float
    reverse: bool


def model_inputs(batch: dict[str, torch.Tensor]) -> dict:
    # use_cache=False: with a cache, transformers ignores the document boundaries in position_ids.
    return {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "use_cache": False}


def forward_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**model_inputs(batch)).logits


def sequence_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of token losses, number of targets) per sequence, losses in float32."""
    b, t, v = logits.shape
    losses = F.cross_entropy(
        logits.reshape(b * t, v).float(), labels.reshape(b * t), ignore_index=IGNORE_INDEX, reduction="none"
    ).view(b, t)
    mask = labels != IGNORE_INDEX
    return losses.sum(dim=1), mask.sum(dim=1)


def decoder_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Linear] | None:
    """The model's decoder stack and its linear output layer, when it has that plain shape."""
    head = model.get_output_embeddings()
    decoder = getattr(model, getattr(model, "base_model_prefix", ""), None)
    if not isinstance(head, torch.nn.Linear) or not isinstance(decoder, torch.nn.Module):
        return None
    return decoder, head


def _with_router_aux(total: torch.Tensor, outputs, labels: torch.Tensor, router: RouterSpec | None):
    """(total + coef * targets * router loss, the detached sums to log) for a MoE forward's outputs.

    Weighting by the micro batch's targets makes the loop's division by the global target count
    give a target-weighted mean of per-micro-batch router losses (cptkit.train.moe).
    """
    if router is None:
        return total, None
    if not outputs.router_logits:  # no MoE layer in this model after all (e.g. Qwen2-MoE mlp_only_layers)
        return total, torch.zeros(2, dtype=torch.float32, device=total.device)
    aux = router_aux(outputs.router_logits, router, real_tokens(labels))
    targets = (labels != IGNORE_INDEX).sum()
    return total + targets * aux.value, weighted_sums(aux, targets)


def chunked_loss(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], chunk: int, ref: Reference | None = None,
    router: RouterSpec | None = None,
) -> LossOutput:
    """One decoder forward; the output layer, CE (and KL to `ref`) chunk by chunk over real targets."""
    decoder, head = decoder_and_head(model)
    extra = {"output_router_logits": True} if router is not None else {}
    outputs = decoder(**model_inputs(batch), **extra)
    hidden = outputs.last_hidden_state
    labels = batch["labels"]
    mask = labels != IGNORE_INDEX
    rows = torch.arange(labels.shape[0], device=labels.device)[:, None].expand_as(labels)[mask]
    kl = None
    if ref is not None:
        index = ref.mask[mask].nonzero().squeeze(1)
        kl = KLTerm(ref.states, ref.weight, ref.bias, index, ref.coef, ref.reverse)
    total, per_token, kls = LinearCrossEntropy.apply(hidden[mask], head.weight, head.bias, labels[mask], chunk, kl)
    row_sums = torch.zeros(labels.shape[0], dtype=torch.float32, device=labels.device).index_add_(0, rows, per_token)
    total, aux_sums = _with_router_aux(total, outputs, labels, router)
    return LossOutput(total, row_sums, mask.sum(dim=1), kls.sum() if ref is not None else None, aux_sums)


def full_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], ref: Reference | None = None,
              router: RouterSpec | None = None) -> LossOutput:
    """Through the model's full logits (architectures whose head is not a plain linear layer)."""
    outputs = model(**model_inputs(batch), **({"output_router_logits": True} if router is not None else {}))
    logits = outputs.logits
    row_sums, counts = sequence_losses(logits, batch["labels"])
    total, kl_sum = row_sums.sum(), None
    if ref is not None:
        take = ref.mask & (batch["labels"] != IGNORE_INDEX)
        logp = F.log_softmax(logits[take].float(), dim=-1)
        ref_logp = F.log_softmax(ref.states[take].float(), dim=-1)
        a, b = (logp, ref_logp) if ref.reverse else (ref_logp, logp)
        kls = (a.exp() * (a - b)).sum(-1)
        total = total + ref.coef * kls.sum()
        kl_sum = kls.detach().sum()
    total, aux_sums = _with_router_aux(total, outputs, batch["labels"], router)
    return LossOutput(total, row_sums.detach(), counts, kl_sum, aux_sums)


def lm_loss(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], chunk: int | None, ref: Reference | None = None,
    router: RouterSpec | None = None,
) -> LossOutput:
    """Chunked when `chunk` is set (see `cptkit.train.checks`), else through full logits."""
    return chunked_loss(model, batch, chunk, ref, router) if chunk else full_loss(model, batch, ref, router)


class CausalLMLoss(torch.nn.Module):
    """The language model with its loss as one module, so DDP and FSDP wrap the whole step.

    Calling the decoder and the output layer separately (the chunked loss) from outside the
    wrapped module would bypass the wrapper's forward; inside this module it does not.

    Returns (total, per-row loss sums, per-row target counts); with `ref` (the frozen reference
    model's side of a KL term, computed outside: it is not part of what DDP/FSDP wrap) a fourth
    value, the detached KL sum. One student forward serves both terms. With `router` (a MoE
    model's router losses, `cptkit.train.moe.router_spec`) and in training mode, `total` includes
    them and the last value is their detached target-weighted sums ([2]: load balancing, z-loss).
    """

    def __init__(self, lm: torch.nn.Module, chunk: int | None, router: RouterSpec | None = None):
        super().__init__()
        self.lm = lm
        self.chunk = chunk
        self.router = router if router is not None and router.active else None

    def forward(self, input_ids, position_ids, labels, ref: Reference | None = None) -> tuple[torch.Tensor, ...]:
        batch = {"input_ids": input_ids, "position_ids": position_ids, "labels": labels}
        # Router losses are a training objective: evaluation (eval mode) scores the LM loss only.
        router = self.router if self.training else None
        out = lm_loss(self.lm, batch, self.chunk, ref, router)
        values = (out.total, out.row_sums, out.row_counts) + ((out.kl_sum,) if ref is not None else ())
        return values + ((out.aux_sums,) if router is not None else ())

