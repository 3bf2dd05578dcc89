"""Next-token loss on packed batches, summed per sequence over real (unmasked) targets only.

Training and evaluation share this function, so both count exactly the same tokens: a label of
-100 (document boundary or padding) contributes nothing to the sum or the count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cptkit.data.shards import IGNORE_INDEX


def forward_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    # use_cache=False: with a cache, transformers ignores the document boundaries in position_ids.
    out = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False)
    return out.logits


def sequence_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of token losses, number of targets) per sequence, losses in float32."""
    b, t, v = logits.shape
    losses = F.cross_entropy(
        logits.reshape(b * t, v).float(), labels.reshape(b * t), ignore_index=IGNORE_INDEX, reduction="none"
    ).view(b, t)
    mask = labels != IGNORE_INDEX
    return losses.sum(dim=1), mask.sum(dim=1)
