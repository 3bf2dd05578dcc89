"""Resizing the embeddings for the new tokens, and initialising the new rows.

Each new token's input row is the mean of the input rows of the pieces the ORIGINAL tokenizer
splits its text into (counted with repeats), and so is its output row when the output layer is
not tied to the input embeddings (a tied one is the same matrix, so it follows). Optionally a
new row is rescaled to the mean L2 norm of the matrix's existing rows: a mean of several
vectors is shorter than they are. Rows past the new tokens (padding to a multiple of
`pad_to_multiple_of`) are never produced by the tokenizer; they get the mean of all existing
rows, which gives them an average logit (the argument for mean initialisation in Hewitt, 2021)
rather than a random one. Existing rows are never changed, and neither are rows the base model
had beyond its tokenizer's ids unless a new token takes their id.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from cptkit.errors import UserError
from cptkit.vocab.extend import NewToken


@dataclass
class Resized:
    rows_before: int
    rows_after: int
    tied: bool
    first_new: int  # the first new token's id
    used: int  # rows the tokenizer uses now: first_new + new tokens


def padded_rows(needed: int, current: int, multiple: int) -> int:
    """Rows to give the embeddings: `needed` rounded up to `multiple`, never fewer than now."""
    return max(current, math.ceil(needed / multiple) * multiple)


def resize_and_initialise(model, tokens: list[NewToken], first_new: int, multiple: int,
                          rescale_norm: bool = False) -> Resized:
    """Resize `model`'s input (and output) embeddings in place and fill the new rows."""
    rows_before = model.get_input_embeddings().weight.shape[0]
    if first_new > rows_before:
        raise UserError(
            f"the model has {rows_before} embedding rows but its tokenizer already uses ids up to "
            f"{first_new - 1}; the model folder and its tokenizer do not belong together"
        )
    used = first_new + len(tokens)
    rows = padded_rows(used, rows_before, multiple)
    if rows != rows_before:
        model.resize_token_embeddings(rows, mean_resizing=False)
    inp = model.get_input_embeddings()
    out = model.get_output_embeddings()
    tied = out is None or out.weight is inp.weight
    with torch.no_grad():
        _fill(inp.weight, tokens, first_new, used, rows_before, rescale_norm)
        if not tied:
            _fill(out.weight, tokens, first_new, used, rows_before, rescale_norm)
        bias = getattr(out, "bias", None) if out is not None else None
        if bias is not None:
            _fill(bias[:, None], tokens, first_new, used, rows_before, False)
    return Resized(rows_before, rows, tied, first_new, used)


def _fill(weight: torch.Tensor, tokens: list[NewToken], first_new: int, used: int, rows_before: int,
          rescale_norm: bool) -> None:
    old = weight[:first_new].float()
    norm = old.norm(dim=1).mean() if rescale_norm else None
    for t in tokens:
        row = old[t.pieces].mean(0)
        if norm is not None:
            row = row * (norm / row.norm().clamp_min(torch.finfo(row.dtype).tiny))
        weight[t.id] = row.to(weight.dtype)
    pad_from = max(used, rows_before)
    if weight.shape[0] > pad_from:
        weight[pad_from:] = old.mean(0).to(weight.dtype)
