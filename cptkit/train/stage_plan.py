"""Which steps of a staged run train what (`train.new_embeddings_only_steps`), read from the config
and the model folder's vocab.json; kept free of torch for config validation and `cptkit plan`.
The training side is `cptkit.train.stages`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cptkit.config import Config
    from cptkit.train.config import TrainConfig


def _recorded(name_or_path: str) -> dict:
    """The vocab.json that `cptkit vocab` wrote into the model folder ({} if none)."""
    path = Path(name_or_path).expanduser() / "vocab.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def recorded_start(name_or_path: str) -> int | None:
    """first_new_id from the model folder's vocab.json, if any."""
    value = _recorded(name_or_path).get("first_new_id")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def new_token_start(train: TrainConfig, name_or_path: str) -> int | None:
    return train.new_token_start if train.new_token_start is not None else recorded_start(name_or_path)


def check_stages(cfg: Config) -> list[str]:
    """Config problems of the stage keys, each with its dotted path (for validation)."""
    t = cfg.train
    steps = t.new_embeddings_only_steps
    if not steps:
        return []
    problems = []
    if new_token_start(t, cfg.model.name_or_path) is None:
        problems.append(
            f"train.new_embeddings_only_steps: needs the first new token id: model.name_or_path "
            f"{cfg.model.name_or_path!r} has no vocab.json from cptkit vocab; set train.new_token_start"
        )
    if t.freeze_embeddings:
        problems.append("train.new_embeddings_only_steps and train.freeze_embeddings: stage 1 trains the "
                        "new rows of the input embeddings; unfreeze them")
    return problems


def describe_stages(train: TrainConfig, name_or_path: str, total_steps: int, rows: int | None = None) -> str:
    """Lines for `cptkit plan`: which steps train what."""
    steps = train.new_embeddings_only_steps
    if not steps:
        return ""
    start = new_token_start(train, name_or_path)
    rows = rows or (_recorded(name_or_path).get("embedding_rows") or {}).get("after")
    first = min(steps, total_steps)
    span = f"ids {start:,}-{rows - 1:,}" if start is not None and rows else f"ids from {start}"
    lines = [f"stages: 1) steps 1-{first:,}: only the new rows of the input and output embeddings ({span})"]
    if total_steps > steps:
        lines.append(f"        2) steps {steps + 1:,}-{total_steps:,}: the configured parameters")
    else:
        lines.append(f"        (new_embeddings_only_steps {steps:,} covers all {total_steps:,} steps: nothing else trains)")
    return "\n".join(lines)
