"""The records a run writes line by line and later stages read back: one per logged optimizer
step (`metrics.jsonl`) and one per evaluation (`eval.jsonl`, `evals/*.json`, summary.json).

`to_json` gives exactly the object written (the contract's keys, in a stable order) and
`from_json` reads it back, so training, `cptkit eval`, `cptkit report` and the resume logic all
go through the same two types instead of string-keyed dicts. Non-finite numbers are written as
null ("not measured"); `cptkit.durable.json_safe` does that at write time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

# Keys every metrics.jsonl line has, in order; the rest appear only when they apply.
STEP_KEYS = ("step", "tokens", "lr", "loss", "loss_domain", "loss_replay", "loss_reg", "grad_norm",
             "tokens_per_s", "target_tokens", "source_tokens")


@dataclass
class StepRecord:
    """One optimizer step as metrics.jsonl shows it."""

    step: int
    tokens: int
    lr: float
    loss: float
    loss_domain: float | None  # mean next-token loss of the domain rows (None: no such row)
    loss_replay: float | None  # ... of the replayed data.general rows
    loss_reg: float | None  # the regularizer's term as added to the objective (None: not computed)
    grad_norm: float
    tokens_per_s: float
    target_tokens: int  # tokens predicted this step (no boundaries, no padding)
    source_tokens: dict[str, int]  # cumulative sequence positions drawn from each training source
    kl: float | None = None  # unweighted token-mean KL with a KL regularizer; NaN when skipped this step
    loss_aux: float | None = None  # the router load-balancing loss of a mixture-of-experts model
    loss_router_z: float | None = None  # its router z-loss, where one is on
    skipped: str | None = None  # why this step was not applied
    spike: bool = False

    def to_json(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in STEP_KEYS}
        for key in ("kl", "loss_aux", "loss_router_z", "skipped"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.spike:
            out["spike"] = True
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepRecord:
        kl = data.get("kl")
        if "kl" in data and kl is None:
            kl = math.nan  # written as null: KL in use but not computed at this step
        return cls(**{k: data[k] for k in STEP_KEYS}, kl=kl, loss_aux=data.get("loss_aux"),
                   loss_router_z=data.get("loss_router_z"), skipped=data.get("skipped"),
                   spike=bool(data.get("spike", False)))


@dataclass
class EvalRecord:
    """One evaluation: `metrics` holds NAME_loss / NAME_ppl / NAME_bpb / NAME_tokens per eval set
    and probe_NAME_* per probe set; the budget fields are set when a forgetting budget is."""

    step: int
    tokens: int
    metrics: dict[str, float] = field(default_factory=dict)
    general_rise: float | None = None
    within_budget: bool | None = None

    def get(self, key: str, default: Any = None) -> Any:
        return self.metrics.get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self.metrics[key]

    def __contains__(self, key: str) -> bool:
        return key in self.metrics

    def to_json(self) -> dict[str, Any]:
        out = {"step": self.step, "tokens": self.tokens, **self.metrics}
        if self.within_budget is not None:
            out["general_rise"], out["within_budget"] = self.general_rise, self.within_budget
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EvalRecord:
        skip = {"step", "tokens", "general_rise", "within_budget"}
        return cls(data["step"], data["tokens"], {k: v for k, v in data.items() if k not in skip},
                   data.get("general_rise"), data.get("within_budget"))
