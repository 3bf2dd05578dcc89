"""The best checkpoint: which evaluation is best, which checkpoints are kept for it, `best/`.

`checkpoint.metric` (an eval set's NAME_ppl / NAME_loss / NAME_bpb; lower is better) scores
every evaluation. An evaluation over the forgetting budget, or whose metric is not a number,
scores nothing: it can be neither `best/` nor a kept best checkpoint. The tracker is the only
owner of these facts; the loop asks it and it answers.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from cptkit.records import EvalRecord


class BestTracker:
    def __init__(self, metric: str, export: Callable[[], None] = lambda: None):
        self.metric = metric
        self._export = export  # writes the model as it is now to best/ (every process calls it)
        self.best: EvalRecord | None = None
        self.scores: dict[int, float | None] = {}  # step -> score of its evaluation (None: none)

    def consider(self, record: EvalRecord, within_budget: bool) -> bool:
        """Score an evaluation; True when it is the new best (the caller then exports it)."""
        value = record.get(self.metric)
        ok = within_budget and value is not None and not math.isnan(value)
        self.scores[record.step] = value if ok else None
        if not ok or (self.best is not None and value >= self.best[self.metric]):
            return False
        self.best = record
        return True

    def export(self) -> None:
        """Write best/ from the model as it is now, the state of the best evaluation."""
        self._export()

    def kept_scores(self) -> dict[int, float]:
        """Scores of the evaluated checkpoint steps, for pruning all but the best `keep_best`."""
        return {step: score for step, score in self.scores.items() if score is not None}

    def state_dict(self) -> dict:
        return {"best": self.best.to_json() if self.best else None,
                "scores": {str(k): v for k, v in self.scores.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.best = EvalRecord.from_json(state["best"]) if state["best"] else None
        self.scores = {int(k): v for k, v in state["scores"].items()}
