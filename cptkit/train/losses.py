"""Next-token loss on packed batches, summed per sequence over real (unmasked) targets only.

Two ways to the same number:
- `chunked` (default where it is exact): the decoder's hidden states go through the output
  layer a chunk of tokens at a time, and only for positions that have a target. The loss and
  its gradient are computed chunk by chunk in one pass (`LinearCrossEntropy`), so a
  [tokens, vocabulary] float32 tensor never exists beyond one chunk. This matters for 128k
  vocabularies, where full logits of a 4 x 4096 batch take 8 GB in float32.
- `full`: the model's own forward returns full logits and cross-entropy is taken on them. Used
  for architectures whose output is not a plain linear layer of the last hidden state (logit
  soft-capping or scaling); `check_chunked_head` decides at start-up by comparing the two.

Training and evaluation share these functions, so both count exactly the same tokens: a label
of -100 (document boundary or padding) contributes nothing to the sum or the count.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cptkit.data.shards import IGNORE_INDEX


class LinearCrossEntropy(torch.autograd.Function):
    """sum_i CE(hidden_i @ weight.T + bias, target_i), with the gradient computed in the forward.

    Returns (loss sum, per-token losses); only the sum carries a gradient. Because the upstream
    gradient of a sum is one scalar, the gradients of each chunk can be formed right away
    (softmax - onehot) and the chunk's logits freed.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk: int):
        n = hidden.shape[0]
        losses = torch.empty(n, dtype=torch.float32, device=hidden.device)
        need_h, need_w = hidden.requires_grad, weight.requires_grad
        need_b = bias is not None and bias.requires_grad
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
        w = weight.to(hidden.dtype)
        b = bias.to(hidden.dtype) if bias is not None else None
        for s in range(0, n, chunk):
            h = hidden[s : s + chunk]
            t = targets[s : s + chunk]
            logits = F.linear(h, w, b).float()
            target = logits.gather(1, t[:, None]).squeeze(1)
            # log-sum-exp and softmax in place: torch.logsumexp would allocate a second
            # [chunk, vocabulary] float32 tensor, doubling the chunk's memory.
            peak = logits.amax(dim=1)
            probs = logits.sub_(peak[:, None]).exp_()
            norm = probs.sum(dim=1)
            losses[s : s + chunk] = norm.log() + peak - target
            if need_h or need_w or need_b:
                probs.div_(norm[:, None])
                probs[torch.arange(len(t), device=t.device), t] -= 1.0
                if need_b:
                    grad_b += probs.sum(0)
                probs = probs.to(h.dtype)
                if need_h:
                    grad_h[s : s + chunk] = probs @ w
                if need_w:
                    grad_w += (probs.t() @ h).float()
            del logits
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.dtypes = (weight.dtype, bias.dtype if bias is not None else None)
        ctx.mark_non_differentiable(losses)
        return losses.sum(), losses

    @staticmethod
    def backward(ctx, grad_sum, grad_losses):
        del grad_losses  # per-token losses are reported, not differentiated
        grad_h, grad_w, grad_b = ctx.saved_tensors
        w_dtype, b_dtype = ctx.dtypes
        gh = grad_h * grad_sum.to(grad_h.dtype) if grad_h is not None else None
        gw = (grad_w * grad_sum).to(w_dtype) if grad_w is not None else None
        gb = (grad_b * grad_sum).to(b_dtype) if grad_b is not None else None
        return gh, gw, gb, None, None


@dataclass
class LossOutput:
    total: torch.Tensor  # scalar sum over every target of the batch (differentiable)
    row_sums: torch.Tensor  # [B] float32, detached
    row_counts: torch.Tensor  # [B] number of targets per row


def _inputs(batch: dict[str, torch.Tensor]) -> dict:
    # use_cache=False: with a cache, transformers ignores the document boundaries in position_ids.
    return {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "use_cache": False}


def forward_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**_inputs(batch)).logits


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


def chunked_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], chunk: int) -> LossOutput:
    decoder, head = decoder_and_head(model)
    hidden = decoder(**_inputs(batch)).last_hidden_state
    labels = batch["labels"]
    mask = labels != IGNORE_INDEX
    rows = torch.arange(labels.shape[0], device=labels.device)[:, None].expand_as(labels)[mask]
    total, per_token = LinearCrossEntropy.apply(hidden[mask], head.weight, head.bias, labels[mask], chunk)
    row_sums = torch.zeros(labels.shape[0], dtype=torch.float32, device=labels.device).index_add_(0, rows, per_token)
    return LossOutput(total, row_sums, mask.sum(dim=1))


def full_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> LossOutput:
    logits = forward_logits(model, batch)
    row_sums, counts = sequence_losses(logits, batch["labels"])
    return LossOutput(row_sums.sum(), row_sums.detach(), counts)


def lm_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], chunk: int | None) -> LossOutput:
    """Chunked when `chunk` is set (see `check_chunked_head`), else through full logits."""
    return chunked_loss(model, batch, chunk) if chunk else full_loss(model, batch)


class CausalLMLoss(torch.nn.Module):
    """The language model with its loss as one module, so DDP and FSDP wrap the whole step.

    Calling the decoder and the output layer separately (the chunked loss) from outside the
    wrapped module would bypass the wrapper's forward; inside this module it does not.
    """

    def __init__(self, lm: torch.nn.Module, chunk: int | None):
        super().__init__()
        self.lm = lm
        self.chunk = chunk

    def forward(self, input_ids, position_ids, labels) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch = {"input_ids": input_ids, "position_ids": position_ids, "labels": labels}
        out = lm_loss(self.lm, batch, self.chunk)
        return out.total, out.row_sums, out.row_counts


@torch.no_grad()
def check_chunked_head(model: torch.nn.Module, device: torch.device) -> bool:
    """True when hidden states through the output layer reproduce the model's own logits."""
    if decoder_and_head(model) is None:
        return False
    vocab = model.get_input_embeddings().weight.shape[0]
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (1, 12), generator=gen).to(device)
    batch = {"input_ids": ids, "position_ids": torch.arange(12, device=device)[None],
             "labels": torch.roll(ids, -1, 1)}
    was_training = model.training
    model.eval()
    try:
        full = full_loss(model, batch).row_sums
        chunked = chunked_loss(model, batch, chunk=5).row_sums
    finally:
        model.train(was_training)
    # In bfloat16 (FSDP mixed precision gathers bfloat16 weights) the two matmul shapes may
    # round logits differently; a scaled or capped head differs by far more than this.
    tol = 1e-4 if model.get_output_embeddings().weight.dtype == torch.float32 else 1e-2
    return bool(torch.allclose(full, chunked, rtol=tol, atol=tol))
