"""A diagonal Fisher of the starting model, estimated on general text, saved as safetensors.

Estimator. Each sequence of general text (teacher-forced on the data) gives the gradient g of
the summed log-likelihood of its labels. With labels *sampled from the model's own predictions*
(fisher_kind true), the per-position score vectors have zero mean given their context, so the
cross terms vanish in expectation and E[g^2] = sum over positions of the per-token Fisher.
Hence

    F = (sum over sequences of g^2) / (number of target tokens actually scored)

is an unbiased estimate of the per-token Fisher diagonal: the same scale as the token-mean
training loss, so the EWC weight reads as "how much the old data counts per token". The
denominator is what was seen, never what was asked for: if the general data holds fewer
tokens than regularizer.fisher_tokens, the smaller count is used (and recorded).
fisher_kind empirical uses the data's own next tokens instead (the "empirical Fisher"): the
same estimator, but its cross terms do not vanish, so it is an approximation.

The Fisher covers every parameter (frozen ones too), so a saved file fits any later run of
the same architecture; the file's metadata records kind, tokens, sequences and model. Under
train.peft it covers the trainable parameters only (adapters, matrices trained in full, under
peft's names): the frozen base needs none, and its gradients would cost a full model's memory.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from cptkit.data.shards import IGNORE_INDEX, WindowIndex
from cptkit.durable import replaced
from cptkit.errors import UserError
from cptkit.train.losses import LinearCrossEntropy, decoder_and_head, model_inputs

log = logging.getLogger("cptkit")


def fisher_sequences(windows: list[WindowIndex], tokens: int, seed: int) -> tuple[list[tuple[int, int]], int]:
    """(source, window) pairs in a seeded order until `tokens` targets are covered; and the count."""
    starts = np.cumsum([0] + [len(index) for index in windows])  # window k of all sources together
    order = np.random.default_rng([seed, 0xF15]).permutation(int(starts[-1]))
    chosen, seen = [], 0
    for k in order:
        if seen >= tokens:
            break
        s = int(np.searchsorted(starts, k, side="right")) - 1
        w = int(k - starts[s])
        _, labels, _ = windows[s].window(w)
        chosen.append((s, w))
        seen += int((labels != IGNORE_INDEX).sum())
    return chosen, seen


def _sampled(logits: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.multinomial(F.softmax(logits.float(), dim=-1), 1, generator=gen).squeeze(1)


def _sequence_backward(lm, batch: dict, kind: str, gen: torch.Generator, chunk: int | None) -> None:
    """Backward of the summed log-likelihood of one sequence's (data or sampled) labels."""
    labels = batch["labels"]
    mask = labels != IGNORE_INDEX
    parts = decoder_and_head(lm) if chunk else None
    if parts is None:
        logits = lm(**model_inputs(batch)).logits[mask]
        targets = _sampled(logits.detach(), gen) if kind == "true" else labels[mask]
        F.cross_entropy(logits.float(), targets, reduction="sum").backward()
        return
    decoder, head = parts
    hidden = decoder(**model_inputs(batch)).last_hidden_state[mask]
    targets = labels[mask]
    if kind == "true":
        with torch.no_grad():
            w = head.weight.to(hidden.dtype)
            b = head.bias.to(hidden.dtype) if head.bias is not None else None
            targets = torch.cat([_sampled(F.linear(hidden[s : s + chunk], w, b), gen)
                                 for s in range(0, len(hidden), chunk)])
    total, _, _ = LinearCrossEntropy.apply(hidden, head.weight, head.bias, targets, chunk)
    total.backward()


def estimate_fisher(lm: torch.nn.Module, windows: list[WindowIndex], tokens: int, kind: str, seed: int,
                    dist, autocast, chunk: int | None, trainable_only: bool = False
                    ) -> tuple[dict[str, torch.Tensor], dict]:
    """The per-token diagonal Fisher of every parameter of `lm` (sequences split over processes).

    `trainable_only` (adapter runs): of the trainable parameters only. The frozen base never
    moves, so its Fisher would be unused, and computing it needs a gradient of every base weight.
    """
    chosen, seen = fisher_sequences(windows, tokens, seed)
    params = {n: p for n, p in lm.named_parameters() if p.requires_grad or not trainable_only}
    was_training, flags = lm.training, {n: p.requires_grad for n, p in params.items()}
    lm.eval()  # no dropout: the Fisher of the model as it predicts
    for p in params.values():
        p.requires_grad_(True)
    device = dist.device
    gen = torch.Generator(device=device).manual_seed(seed)
    fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    try:
        lm.zero_grad(set_to_none=True)
        for s, w in chosen[dist.rank :: dist.world_size]:
            packed = windows[s].window(w)
            batch = {k: torch.from_numpy(x)[None].to(device) for k, x in zip(("input_ids", "labels", "position_ids"), packed)}
            with autocast():
                _sequence_backward(lm, batch, kind, gen, chunk)
            for n, p in params.items():
                if p.grad is not None:
                    fisher[n].add_(p.grad.float().square())
            lm.zero_grad(set_to_none=True)
    finally:
        for n, p in params.items():
            p.requires_grad_(flags[n])
        lm.train(was_training)
    for n in fisher:
        fisher[n] = dist.all_reduce_sum(fisher[n]).div_(max(seen, 1))
    meta = {"kind": kind, "tokens": seen, "sequences": len(chosen), "requested_tokens": tokens}
    return fisher, meta


def save_fisher(path: Path, fisher: dict[str, torch.Tensor], meta: dict) -> None:
    """Write atomically: a crash never leaves a half-written Fisher that a later run would load."""
    with replaced(path) as tmp:
        save_file({n: t.detach().cpu().contiguous() for n, t in fisher.items()}, str(tmp),
                  metadata={"cptkit": json.dumps(meta)})


def load_fisher(path: Path, lm: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict]:
    """The Fisher for `lm`'s trainable parameters; refuses a file that does not fit the model."""
    wanted = {n: p for n, p in lm.named_parameters() if p.requires_grad}
    try:
        with safe_open(str(path), framework="pt") as fh:
            names = fh.keys()  # a safe_open handle is not iterable itself
            stored = {n: fh.get_tensor(n) for n in names}
            meta = json.loads((fh.metadata() or {}).get("cptkit", "{}"))
    except Exception as exc:  # safetensors raises its own error type for a corrupt file
        raise UserError(f"{path}: not a readable Fisher file ({str(exc).strip()[:200]})") from None
    missing = sorted(set(wanted) - set(stored))
    if missing:
        raise UserError(f"{path}: no Fisher for {len(missing)} parameter(s) of this model, e.g. {missing[0]}")
    out = {n: stored[n] for n in wanted}
    for n, p in wanted.items():
        if out[n].shape != p.shape:
            raise UserError(f"{path}: Fisher of {n} has shape {tuple(out[n].shape)}, the model's is {tuple(p.shape)}")
    return out, meta
