"""The `logging` section: which experiment trackers a run feeds, and under what names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cptkit.schema import option

TrackerName = Literal["tensorboard", "wandb", "mlflow"]


@dataclass
class LoggingConfig:
    """`logging`: where a run's scalars go besides metrics.jsonl and eval.jsonl."""

    trackers: list[TrackerName] = option(
        default_factory=list,
        help="Experiment trackers fed with the same scalars as metrics.jsonl and eval.jsonl and the resolved "
        "config: any of tensorboard, wandb, mlflow (pip install 'cptkit[trackers]'). None by default.",
    )
    project: str = option("cptkit", help="The W&B project and the MLflow experiment the run is logged under.")
    run_name: str | None = option(None, help="The run's name in the trackers; default: the output_dir folder's name.")
    tensorboard_dir: str | None = option(
        None, help="tensorboard: folder of the event files; default OUTPUT_DIR/tensorboard."
    )
    wandb_entity: str | None = option(None, help="wandb: the team or user owning the project; default: yours.")
    wandb_mode: Literal["online", "offline"] | None = option(
        None, help="wandb: online, or offline (files under OUTPUT_DIR/wandb, upload later with `wandb sync`); "
        "default: WANDB_MODE, else online.",
    )
    mlflow_tracking_uri: str | None = option(
        None, help="mlflow: tracking server or store URI; default: MLFLOW_TRACKING_URI, else the local file "
        "store OUTPUT_DIR/mlruns.",
    )
