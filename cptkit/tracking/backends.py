"""One class per tracker, each a thin layer over the tracker's own client library.

Every backend takes (config, run folder, run name, the ids it saved before or None, the step a
resumed run continues from or None), and offers `params`, `scalars`, `text`, `close`, `state` (the
ids to save) and `describe`. The libraries are optional extras, imported only when configured.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cptkit.errors import UserError

if TYPE_CHECKING:
    from cptkit.tracking.config import LoggingConfig

# MLflow limits (mlflow.utils.validation): values per log_batch call and a parameter value's length.
_MLFLOW_METRICS_PER_BATCH = 1000
_MLFLOW_PARAMS_PER_BATCH = 100
_MLFLOW_PARAM_CHARS = 6000


def _require(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"logging.trackers: {extra} is not installed; pip install 'cptkit[{extra}]'") from None


def flatten(record: dict, prefix: str = "", sep: str = "/") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'PREFIXa/b': 1}; leaves keep their values."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + sep, sep))
        else:
            out[name] = value
    return out


def _flat_params(config: dict) -> dict[str, str | int | float | bool]:
    """Dotted keys; lists, mappings and nulls as JSON text (trackers want scalar parameters)."""
    out = {}
    for key, value in flatten(config, sep=".").items():
        out[key] = value if isinstance(value, (str, int, float, bool)) else json.dumps(value)
    return out


class TensorBoard:
    name = "tensorboard"

    def __init__(self, cfg: LoggingConfig, run_dir: Path, run_name: str, saved: dict | None, resume_step: int | None):
        _require("tensorboard", "tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.dir = Path(cfg.tensorboard_dir or (saved or {}).get("dir") or run_dir / "tensorboard")
        # A resumed run hides what the crashed process wrote after the resumed step; a fresh run in
        # a folder with older event files hides all of them (purge from step 0).
        purge = 0 if resume_step is None else resume_step + 1
        self.writer = SummaryWriter(log_dir=str(self.dir), purge_step=purge)
        self.run_name = run_name

    def state(self) -> dict:
        return {"dir": str(self.dir)}

    def describe(self) -> str:
        return f"tensorboard ({self.dir})"

    def params(self, config: dict) -> None:
        from torch.utils.tensorboard.summary import hparams

        for summary in hparams(_flat_params(config), {}):
            self.writer.file_writer.add_summary(summary)
        text = json.dumps(config, indent=2, default=str)
        self.writer.add_text("config", "    " + text.replace("\n", "\n    "), 0)  # indented: shown as code
        self.writer.flush()

    def scalars(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()  # one flush per record: a watcher sees every step as it comes

    def text(self, tag: str, text: str, step: int) -> None:
        self.writer.add_text(tag, text, step)

    def close(self, failed: bool) -> None:
        self.writer.close()


class WandB:
    name = "wandb"

    def __init__(self, cfg: LoggingConfig, run_dir: Path, run_name: str, saved: dict | None, resume_step: int | None):
        wandb = _require("wandb", "wandb")
        self.id = (saved or {}).get("id") or secrets.token_hex(4)
        run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.run = wandb.init(project=cfg.project, entity=cfg.wandb_entity, name=run_name, id=self.id,
                                  resume="allow", dir=str(run_dir), mode=cfg.wandb_mode or os.environ.get("WANDB_MODE"))
        except Exception as exc:  # wandb raises its own error types (no login, bad entity)
            raise UserError(f"logging.trackers: wandb could not start a run ({str(exc).splitlines()[0][:300]})") from None
        # Our own step metric as the x-axis: it may go back (a rollback, a resume), W&B's _step may not.
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")

    def state(self) -> dict:
        return {"id": self.id, "project": self.run.project}

    def describe(self) -> str:
        return f"wandb (run {self.id}, {self.run.settings.mode})"

    def params(self, config: dict) -> None:
        self.run.config.update(config, allow_val_change=True)  # W&B shows nested keys dotted

    def scalars(self, values: dict[str, float], step: int) -> None:
        self.run.log({"step": step, **values})

    def text(self, tag: str, text: str, step: int) -> None:
        pass  # the event's numbers went to `scalars`; W&B has no plain text panel on a step

    def close(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)


class MLflow:
    name = "mlflow"

    def __init__(self, cfg: LoggingConfig, run_dir: Path, run_name: str, saved: dict | None, resume_step: int | None):
        _require("mlflow", "mlflow")
        from mlflow.tracking import MlflowClient

        saved = saved or {}
        uri = (cfg.mlflow_tracking_uri or saved.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
               or (run_dir / "mlruns").resolve().as_uri())
        if uri.startswith("file:") or "://" not in uri:
            # MLflow 3 refuses its file store unless told it is wanted; a local store is what cptkit means here.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        try:
            self.client = MlflowClient(tracking_uri=uri)
            if saved.get("run_id"):
                self.run_id = saved["run_id"]
                self.client.update_run(self.run_id, status="RUNNING")
            else:
                exp = self.client.get_experiment_by_name(cfg.project)
                exp_id = exp.experiment_id if exp else self.client.create_experiment(cfg.project)
                self.run_id = self.client.create_run(exp_id, run_name=run_name).info.run_id
        except Exception as exc:  # MlflowException and connection errors
            raise UserError(f"logging.mlflow_tracking_uri {uri}: cannot start an MLflow run "
                            f"({str(exc).splitlines()[0][:300]})") from None
        self.uri = uri

    def state(self) -> dict:
        return {"run_id": self.run_id, "tracking_uri": self.uri}

    def describe(self) -> str:
        return f"mlflow (run {self.run_id} at {self.uri})"

    def params(self, config: dict) -> None:
        from mlflow.entities import Param

        # Parameters cannot change once logged: a resumed run adds only the keys the run lacks.
        known = self.client.get_run(self.run_id).data.params
        items = [Param(_mlflow_key(k), str(v)[:_MLFLOW_PARAM_CHARS]) for k, v in _flat_params(config).items()
                 if _mlflow_key(k) not in known]
        for i in range(0, len(items), _MLFLOW_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + _MLFLOW_PARAMS_PER_BATCH])

    def scalars(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(_mlflow_key(k), v, now, step) for k, v in values.items()]
        for i in range(0, len(items), _MLFLOW_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=items[i : i + _MLFLOW_METRICS_PER_BATCH])

    def text(self, tag: str, text: str, step: int) -> None:
        self.client.log_text(self.run_id, text, f"{tag}/step-{step:08d}.json")

    def close(self, failed: bool) -> None:
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


def _mlflow_key(key: str) -> str:
    # MLflow names allow letters, digits, and _ - . / and space; a source name may hold anything.
    return re.sub(r"[^\w\-./ ]", "_", key)


BACKENDS = {"tensorboard": TensorBoard, "wandb": WandB, "mlflow": MLflow}
