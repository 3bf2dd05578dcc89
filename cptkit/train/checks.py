"""Start-up checks that run the model twice on the same tokens and compare.

- `chunked_head_is_exact`: the fused chunked loss (hidden states through the output layer a
  chunk at a time) must give the model's own loss; where the head scales or caps its logits it
  does not, and training uses the full logits instead.
- `check_document_masking`: a document packed after another must get the logits it gets alone
  (position ids restarting at each document); where attention crosses documents, training
  packed would be wrong, and the run is refused with what to change.

Both compare two forwards with `_agree`, whose tolerance depends on the precision the weights
are in: float32 forwards of two shapes agree to rounding; under FSDP mixed precision the
gathered weights are bfloat16 and the shapes round differently by up to ~1e-2, far below what
a capped head or attention across documents changes (~1).
"""

from __future__ import annotations

import contextlib

import torch

from cptkit.errors import UserError
from cptkit.train.losses import chunked_loss, decoder_and_head, full_loss

# Largest allowed difference, relative for losses and absolute for logits:
# (with float32 weights, with lower-precision weights).
TOLERANCE = {"loss": (1e-4, 1e-2), "logits": (1e-3, 5e-2)}


def _agree(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype, kind: str) -> tuple[bool, float]:
    """(within tolerance, largest difference) of two outputs of the same tokens."""
    tol = TOLERANCE[kind][0 if dtype == torch.float32 else 1]
    a, b = a.float(), b.float()
    diff = float((a - b).abs().max())
    if kind == "loss":
        return bool(torch.allclose(a, b, rtol=tol, atol=tol)), diff
    return diff <= tol, diff


@contextlib.contextmanager
def _evaluating(model: torch.nn.Module):
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _tokens(model: torch.nn.Module, n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    vocab = model.get_input_embeddings().weight.shape[0]
    return torch.randint(0, vocab, (1, n), generator=gen).to(device)


def chunked_head_is_exact(model: torch.nn.Module, device: torch.device) -> bool:
    """True when hidden states through the output layer reproduce the model's own loss."""
    if decoder_and_head(model) is None:
        return False
    ids = _tokens(model, 12, torch.Generator().manual_seed(0), device)
    batch = {"input_ids": ids, "position_ids": torch.arange(12, device=device)[None],
             "labels": torch.roll(ids, -1, 1)}
    with _evaluating(model):
        full = full_loss(model, batch).row_sums
        chunked = chunked_loss(model, batch, chunk=5).row_sums
    return _agree(full, chunked, model.get_output_embeddings().weight.dtype, "loss")[0]


def check_document_masking(model: torch.nn.Module, device: torch.device) -> None:
    """Refuse to train packed if this architecture lets attention cross documents."""
    gen = torch.Generator().manual_seed(0)
    a, b = _tokens(model, 7, gen, device), _tokens(model, 9, gen, device)
    pos_a, pos_b = torch.arange(7, device=device), torch.arange(9, device=device)
    with _evaluating(model):
        alone = model(input_ids=b, position_ids=pos_b[None], use_cache=False).logits
        packed = model(
            input_ids=torch.cat([a, b], 1), position_ids=torch.cat([pos_a, pos_b])[None], use_cache=False
        ).logits[:, 7:]
    ok, diff = _agree(alone, packed, alone.dtype, "logits")
    if not ok:
        raise UserError(
            f"model {type(model).__name__}: attention crosses document boundaries in packed sequences "
            f"(logit difference {diff:.3g}) with attn_implementation "
            f"{getattr(model.config, '_attn_implementation', '?')!r}. Set train.document_masking: false "
            "to train packed without per-document attention, or try model.attn_implementation: sdpa."
        )
