"""Perplexity and bits-per-byte on held-out sets, in constant memory.

For an eval set NAME (definitions fixed by the user contract):
    NAME_loss = total next-token loss in nats / number of predicted tokens
    NAME_ppl  = exp(NAME_loss)
    NAME_bpb  = total loss in nats / ln 2 / UTF-8 bytes of the text scored
Predicted tokens are every token of every scored document after its start token (the text
tokens and the closing EOS); padding and cross-document targets are never counted. Only whole
documents are scored: the set is cut at the first document boundary after `max_tokens`, so the
byte count is exact. Each forward's logits are reduced to two numbers per sequence at once, and
nothing of size [tokens, vocabulary] is kept between batches.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cptkit.data.manifest import Manifest
from cptkit.data.shards import Shard, open_split, pack_window


@dataclass
class EvalSet:
    name: str
    windows: list[tuple[Shard, int, int]] = field(default_factory=list)  # (shard, start, end)
    n_bytes: int = 0

    @property
    def n_windows(self) -> int:
        return len(self.windows)


def build_eval_set(name: str, parts: list[tuple[Path, Manifest]], seq_len: int, max_tokens: int) -> EvalSet:
    """Windows over the `eval` split of each (folder, manifest); the budget split evenly among them."""
    out = EvalSet(name)
    budget = max(max_tokens // max(len(parts), 1), 1)
    for folder, manifest in parts:
        left = budget
        for shard in open_split(folder / "eval", manifest.shards["eval"], manifest.dtype):
            if left <= 0:
                break
            # Cut at the first document start at or after `left` tokens (or the shard's end).
            k = int(np.searchsorted(shard.starts, min(left, len(shard)), side="left"))
            end = int(shard.starts[k]) if k < len(shard.starts) else len(shard)
            out.n_bytes += int(shard.doc_bytes[:k].sum())
            out.windows += [(shard, s, end) for s in range(0, end - 1, seq_len)]
            left -= end
    return out


@torch.no_grad()
def evaluate(
    loss_fn: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    eval_sets: list[EvalSet],
    seq_len: int,
    micro_batch_size: int,
    device: torch.device,
    autocast,
    all_reduce=None,
    rank: int = 0,
    world_size: int = 1,
    document_masking: bool = True,
) -> dict[str, float]:
    """{NAME_loss, NAME_ppl, NAME_bpb, NAME_tokens} for every set; windows split across processes.

    `loss_fn(input_ids=, position_ids=, labels=)` returns (total, per-row sums, per-row counts):
    a `CausalLMLoss` module (wrapped for DDP/FSDP or not) in eval mode, or a function doing the same.
    """
    results: dict[str, float] = {}
    for es in eval_sets:
        mine = es.windows[rank::world_size]
        totals = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, target count
        # Every process runs as many forwards as the busiest one: a sharded (FSDP) model gathers
        # weights in each forward, collectively. A process out of windows scores the set's
        # first window again and does not count it.
        for i in range(0, -(-len(es.windows) // world_size), micro_batch_size):
            part = mine[i : i + micro_batch_size]
            packed = [pack_window(sh, s, seq_len, document_masking, end=e) for sh, s, e in part or es.windows[:1]]
            inputs, labels, positions = (torch.from_numpy(np.stack(x)).to(device) for x in zip(*packed))
            with autocast():
                _, loss_sum, count = loss_fn(input_ids=inputs, position_ids=positions, labels=labels)
            if part:
                totals[0] += loss_sum.double().sum()
                totals[1] += count.sum()
        if all_reduce is not None:
            totals = all_reduce(totals)
        loss_sum, count = float(totals[0]), int(totals[1])
        mean = loss_sum / count if count else float("nan")
        results[f"{es.name}_loss"] = mean
        results[f"{es.name}_ppl"] = math.exp(mean) if count else float("nan")
        results[f"{es.name}_bpb"] = loss_sum / math.log(2) / es.n_bytes if es.n_bytes else float("nan")
        results[f"{es.name}_tokens"] = count
    return results
