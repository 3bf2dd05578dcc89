"""Perplexity under a reference causal LM, scored in batches (CCNet-style quality signal).

The reference model (a local Hugging Face folder, usually small) scores the first `max_tokens`
tokens of each document; a batch is padded on the right and every document's perplexity is
exp(mean token loss over its own tokens only), so padding never enters the score. Documents
above `max_perplexity` (or below `min_perplexity`: boilerplate the model has memorised) are
dropped here, in the worker. `keep_fraction` and the CCNet head / middle / tail buckets need
the whole source's scores and are applied when the source is assembled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from cptkit.data.documents import Document
from cptkit.data.steps import Step
from cptkit.errors import UserError
from cptkit.schema import option

BUCKETS = ("head", "middle", "tail")


@dataclass
class PerplexityParams:
    model: str = option(help="The reference causal LM: a local Hugging Face model folder (or a hub id).")
    batch_size: int = option(8, help="Documents per forward pass.")
    max_tokens: int = option(256, help="Tokens of each document that are scored (its beginning).")
    max_perplexity: float | None = option(None, help="Drop documents scoring above this (perplexity_above_max).")
    min_perplexity: float | None = option(None, help="Drop documents scoring below this (perplexity_below_min).")
    keep_fraction: float | None = option(
        None, help="Keep only this lowest-perplexity share of the source (decided over all its documents)."
    )
    buckets: list[float] = option(
        default_factory=lambda: [1 / 3, 2 / 3],
        help="Two quantiles splitting the source's scores into CCNet head / middle / tail buckets.",
    )
    keep_buckets: list[str] = option(
        default_factory=lambda: list(BUCKETS), help="Buckets to keep, from head, middle, tail."
    )


def check_params(p: PerplexityParams, path: str) -> list[str]:
    out = []
    if p.batch_size <= 0 or p.max_tokens < 2:
        out.append(f"{path}: batch_size must be > 0 and max_tokens >= 2")
    if p.keep_fraction is not None and not 0 < p.keep_fraction <= 1:
        out.append(f"{path}.keep_fraction: must lie in (0, 1], got {p.keep_fraction}")
    if len(p.buckets) != 2 or not 0 < p.buckets[0] < p.buckets[1] < 1:
        out.append(f"{path}.buckets: two increasing quantiles in (0, 1), got {p.buckets}")
    out += [f"{path}.keep_buckets: unknown bucket {b!r} (head, middle, tail)" for b in p.keep_buckets if b not in BUCKETS]
    local = p.model.startswith(("/", ".", "~")) or p.model.count("/") != 1
    if local and not Path(p.model).expanduser().is_dir():
        out.append(f"{path}.model: {p.model!r} is not an existing model folder")
    return out


class Scorer:
    """Batched perplexity of texts under one causal LM (float32, no gradient, no KV cache)."""

    def __init__(self, folder: str, max_tokens: int, threads: int = 0):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        try:
            self.tok = AutoTokenizer.from_pretrained(folder)
            self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        except (OSError, ValueError) as exc:
            raise UserError(f"perplexity filter: cannot load the reference model {folder!r} ({exc})") from None
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        self.max_tokens = max_tokens

    def score(self, texts: list[str]) -> list[float]:
        import torch

        # BOS (when the model has one) gives the first real token a context, so even a one-token
        # document is scored; the batch is padded on the right and padding is masked out.
        bos = [self.tok.bos_token_id] if self.tok.bos_token_id is not None else []
        rows = [(bos + ids)[: self.max_tokens] for ids in self.tok(texts, add_special_tokens=False)["input_ids"]]
        width = max(max(len(r) for r in rows), 2)
        ids = torch.full((len(rows), width), self.tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, : len(r)] = 1
        with torch.no_grad():
            logits = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        nll = -logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
        real = mask[:, 1:].to(nll.dtype)  # a label counts only where the predicted token is real
        counts = real.sum(1)
        means = (nll * real).sum(1) / counts.clamp(min=1)
        return [math.exp(m) if c > 0 else math.nan for m, c in zip(means.tolist(), counts.tolist())]


def build(params: PerplexityParams, ctx) -> Step:
    scorer = Scorer(params.model, params.max_tokens, getattr(ctx, "threads", 0))

    def run(batch: list[Document]):
        for start in range(0, len(batch), params.batch_size):
            chunk = batch[start : start + params.batch_size]
            for doc, ppl in zip(chunk, scorer.score([d.text for d in chunk])):
                yield doc, _verdict(doc, ppl, params)

    return Step("perplexity", run)


def _verdict(doc: Document, ppl: float, p: PerplexityParams) -> str | None:
    if math.isnan(ppl):
        return "perplexity_too_short"
    doc.meta["perplexity"] = round(ppl, 4)
    if p.max_perplexity is not None and ppl > p.max_perplexity:
        return "perplexity_above_max"
    if p.min_perplexity is not None and ppl < p.min_perplexity:
        return "perplexity_below_min"
    return None
