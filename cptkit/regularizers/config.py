"""The `regularizer` section of the run config: penalties against forgetting (no torch here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cptkit.schema import option


@dataclass
class RegularizerConfig:
    kind: Literal["none", "kl", "ewc", "l2sp"] = option(
        "none",
        help="Penalty against forgetting. kl: KL divergence to the frozen starting model on the training "
        "tokens. ewc: (weight/2) * sum F (theta - theta0)^2 with a diagonal Fisher F from data.general. "
        "l2sp: the same with F = 1.",
    )
    weight: float = option(
        0.1, ge=0, help="Weight of the penalty in the loss (beta for kl, lambda for ewc and l2sp)."
    )
    kl_direction: Literal["forward", "reverse"] = option(
        "forward",
        help="forward: KL(reference || current), mass-covering, what kl_div(log_softmax(current), "
        "softmax(reference)) computes. reverse: KL(current || reference), mode-seeking.",
    )
    kl_on: Literal["all", "replay"] = option(
        "all", help="Tokens the KL term covers: all training tokens, or only those of data.general rows."
    )
    kl_every: int = option(1, ge=1, help="Compute the KL term on every this many optimizer steps (1: every step).")
    reference_dtype: Literal["float32", "bfloat16"] = option(
        "float32", help="Weights of the frozen reference model for kl; bfloat16 halves its memory."
    )
    fisher_path: str | None = option(
        None,
        help="ewc: a Fisher saved by an earlier run (RUN_DIR/fisher.safetensors) to reuse; without "
        "it the Fisher is estimated on data.general at the start and saved there.",
    )
    fisher_tokens: int = option(
        200_000, gt=0, help="ewc: training tokens of data.general to estimate the Fisher on (fewer if the data holds fewer)."
    )
    fisher_kind: Literal["true", "empirical"] = option(
        "true",
        help="ewc: true: labels sampled from the model's own predictions (the Fisher information). "
        "empirical: the data's own next tokens (the empirical Fisher, an approximation).",
    )
