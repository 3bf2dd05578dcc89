"""Start-up checks that run the model twice on the same tokens and compare.

- `chunked_head_is_exact`: the fused chunked loss (hidden states through the output layer a
  chunk at a time) must give the model's own loss; where the head scales or caps its logits it
  does not, and training uses the full logits instead.
- `ensure_document_masking`: a document packed after another must get the logits it gets alone
  (position ids restarting at each document). Where the model's attention ignores restarting
  position ids (OPT), cptkit installs an explicit per-document mask (`cptkit.train.attention`)
  and checks again; a model that still lets attention cross documents is refused.

Both compare two forwards with `_agree`, whose tolerance depends on the precision the weights
are in: float32 forwards of two shapes agree to rounding; under FSDP mixed precision the
gathered weights are bfloat16 and the shapes round differently by up to ~1e-2, far below what
a capped head or attention across documents changes (~1).
"""

from __future__ import annotations

import contextlib
import logging

import torch

from cptkit.errors import UserError
from cptkit.train.attention import install_document_mask, remove_document_mask
from cptkit.train.losses import chunked_loss, decoder_and_head, full_loss

log = logging.getLogger("cptkit")

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


def packed_vs_alone(model: torch.nn.Module, device: torch.device, lengths: tuple[int, int] = (7, 9)
                    ) -> tuple[float, float]:
    """(largest logit difference, the rounding allowed) of the second of two random documents
    packed after the first (position ids restarting) versus alone."""
    gen = torch.Generator().manual_seed(0)
    a, b = _tokens(model, lengths[0], gen, device), _tokens(model, lengths[1], gen, device)
    pos_a, pos_b = torch.arange(lengths[0], device=device), torch.arange(lengths[1], device=device)
    with _evaluating(model):
        alone = model(input_ids=b, position_ids=pos_b[None], use_cache=False).logits
        packed = model(input_ids=torch.cat([a, b], 1), position_ids=torch.cat([pos_a, pos_b])[None],
                       use_cache=False).logits[:, lengths[0]:]
    _, diff = _agree(alone, packed, alone.dtype, "logits")
    return diff, TOLERANCE["logits"][0 if alone.dtype == torch.float32 else 1]


def ensure_document_masking(model: torch.nn.Module, device: torch.device) -> str:
    """Make packed documents attend only within themselves; say how: "position_ids" (the model
    does it) or "explicit_mask" (cptkit's mask hook, `cptkit.train.attention`). Raises UserError
    when neither works."""
    diff, tolerance = packed_vs_alone(model, device)
    if diff <= tolerance:
        return "position_ids"
    install_document_mask(model)
    masked, tolerance = packed_vs_alone(model, device)
    if masked <= tolerance:
        log.info("model %s: attention ignores restarting position ids (packed-vs-alone logit difference %.3g); "
                 "cptkit passes an explicit per-document attention mask", type(model).__name__, diff)
        return "explicit_mask"
    remove_document_mask(model)
    raise UserError(
        f"model {type(model).__name__}: attention crosses document boundaries in packed sequences "
        f"(logit difference {diff:.3g}, {masked:.3g} with an explicit per-document mask) with attn_implementation "
        f"{getattr(model.config, '_attn_implementation', '?')!r}. Set train.document_masking: false "
        "to train packed without per-document attention, or try model.attn_implementation: eager."
    )
