"""Read a run folder's files into one structure the report renders. Nothing is computed elsewhere."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cptkit.errors import UserError


@dataclass
class RunData:
    dir: Path
    name: str
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    metrics: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    manifests: dict[str, dict] = field(default_factory=dict)

    def eval_names(self) -> list[str]:
        names = {k[: -len("_ppl")] for rec in self.evals for k in rec if k.endswith("_ppl")}
        return sorted(names, key=lambda n: (n != "domain", n != "general", n))


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            raise UserError(f"{path}:{lineno}: not a JSON line") from None
    return out


def load_run(run_dir: Path) -> RunData:
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run folder")
    if not (run_dir / "eval.jsonl").is_file() and not (run_dir / "summary.json").is_file():
        raise UserError(f"{run_dir}: not a cptkit run folder (no eval.jsonl or summary.json)")
    run = RunData(dir=run_dir, name=run_dir.name)
    if (run_dir / "config.yaml").is_file():
        run.config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    if (run_dir / "summary.json").is_file():
        run.summary = json.loads((run_dir / "summary.json").read_text())
    run.metrics = read_jsonl(run_dir / "metrics.jsonl")
    run.evals = read_jsonl(run_dir / "eval.jsonl")
    data_dir = Path(run.config.get("data", {}).get("prepared_dir") or run_dir / "data")
    for manifest in sorted(data_dir.glob("*/manifest.json")):
        run.manifests[manifest.parent.name] = json.loads(manifest.read_text())
    return run
