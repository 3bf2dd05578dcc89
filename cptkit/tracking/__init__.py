"""Experiment trackers: TensorBoard, Weights & Biases and MLflow receive what the run files hold.

`logging.trackers: [tensorboard, wandb, mlflow]` (none by default; `pip install
'cptkit[trackers]'`, or one of the extras `tensorboard`, `wandb`, `mlflow`). Each tracker gets:

- the resolved config as hyperparameters (dotted keys, `train.lr`), once at the start;
- every metrics.jsonl record as `train/KEY` scalars (per-source losses, lr, grad norm,
  tokens/s, ...; nested mappings flatten to `train/source_tokens/NAME`), and every eval.jsonl
  record as `eval/KEY` (every eval set's loss, ppl and bpb, probes, the budget's rise), at the
  optimizer step; a skipped step or a spike as `train/skipped` / `train/spike` = 1;
- events (a rollback, a stop, a skipped step) as `events/NAME/KEY` scalars and a text entry.

Only the main process (rank 0) opens trackers; on the others every call does nothing. The run ids
are kept in OUTPUT_DIR/trackers.json, so `--resume` continues the same tracker runs: the same
W&B run id (`resume="allow"`), the same MLflow run, the same TensorBoard folder, where the
points the crashed process wrote after the resumed step are hidden (TensorBoard's purge step).
W&B and MLflow keep such points; a resumed run's points at those steps appear beside them.

Decisions where the issue is silent: x-axis is the optimizer step (W&B: a `step` metric, so a
rollback to an earlier step is allowed); values that are not finite are left out, as
metrics.jsonl writes them as null; a tracker that fails while the run goes on (a server that
stopped answering) is reported once and turned off, so a dashboard never stops a training run,
while a tracker that cannot start (not installed, a bad URI) stops the run before it starts.
MLflow's default store is a local file store, OUTPUT_DIR/mlruns (MLflow 3 asks for
MLFLOW_ALLOW_FILE_STORE=true there; cptkit sets it for file: URIs).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from cptkit.durable import write_json
from cptkit.errors import UserError
from cptkit.tracking.backends import flatten
from cptkit.tracking.config import LoggingConfig

log = logging.getLogger("cptkit")

STATE_FILE = "trackers.json"
__all__ = ["STATE_FILE", "LoggingConfig", "Trackers", "scalars"]


def scalars(record: dict, prefix: str) -> dict[str, float]:
    """The finite numbers of a record (booleans as 0/1), flattened under `prefix`; `step` left out."""
    out = {}
    for key, value in flatten({k: v for k, v in record.items() if k != "step"}, prefix).items():
        if isinstance(value, (int, float)) and math.isfinite(value):  # booleans are ints: 0 / 1
            out[key] = float(value)
    return out


class Trackers:
    """The run's open trackers; a no-op with none (the default, and every process but rank 0)."""

    def __init__(self, backends: list | None = None):
        self.backends = list(backends or [])

    @classmethod
    def open(cls, cfg: LoggingConfig, run_dir: Path, *, is_main: bool, resume_step: int | None) -> Trackers:
        """Start (or, with `resume_step`, continue) the configured trackers of the run in `run_dir`."""
        if not is_main or not cfg.trackers:
            return cls()
        from cptkit.tracking.backends import BACKENDS

        saved = _read_state(run_dir) if resume_step is not None else {}
        name = cfg.run_name or Path(run_dir).resolve().name
        backends = []
        for tracker in dict.fromkeys(cfg.trackers):  # each once, in the order given
            backends.append(BACKENDS[tracker](cfg, Path(run_dir), name, saved.get(tracker), resume_step))
        _write_state(run_dir, {**saved, **{b.name: b.state() for b in backends}})
        log.info("trackers: %s%s", ", ".join(b.describe() for b in backends),
                 f" (continuing from step {resume_step})" if resume_step is not None else "")
        return cls(backends)

    def _each(self, method: str, *args) -> None:
        for backend in list(self.backends):
            try:
                getattr(backend, method)(*args)
            except Exception as exc:  # a tracker's own failure must not end the training run
                log.warning("tracker %s failed (%s: %s); it is turned off for the rest of the run",
                            backend.name, type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
                self.backends.remove(backend)

    def log_params(self, config: dict) -> None:
        """The resolved config (as `to_dict(cfg)` gives it) as hyperparameters."""
        self._each("params", config)

    def log_step(self, record: dict, step: int) -> None:
        """One metrics.jsonl record."""
        self._each("scalars", scalars(record, "train/"), step)
        if isinstance(record.get("skipped"), str):
            self.log_event("skipped_step", {"reason": record["skipped"]}, step)

    def log_eval(self, record: dict, step: int) -> None:
        """One eval.jsonl record."""
        self._each("scalars", scalars(record, "eval/"), step)

    def log_event(self, name: str, record: dict, step: int) -> None:
        """A run event (rollback, stop, skipped step): its numbers as scalars, the whole as text."""
        self._each("scalars", {f"events/{name}": 1.0, **scalars(record, f"events/{name}/")}, step)
        self._each("text", f"events/{name}", json.dumps(record, sort_keys=True, default=str), step)

    def close(self, failed: bool = False) -> None:
        self._each("close", failed)
        self.backends = []


def _read_state(run_dir: Path) -> dict:
    path = Path(run_dir) / STATE_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read the tracker run ids ({exc}); delete it to start new tracker runs") from None


def _write_state(run_dir: Path, state: dict) -> None:
    """Atomically: a crash leaves the old ids or the new ones, never half a file."""
    write_json(Path(run_dir) / STATE_FILE, state, indent=1)
