"""Read a run folder's files into one structure the report renders.

Everything the report shows comes from here: config.yaml, summary.json, metrics.jsonl,
eval.jsonl, probes.jsonl and the data manifests. The one derived series, the planned data mix
per step, is recomputed from config.yaml and the manifests with the same planning code that
training used, so it is what the run followed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cptkit.data.manifest import Manifest
from cptkit.errors import UserError
from cptkit.records import EvalRecord, StepRecord

log = logging.getLogger("cptkit")


@dataclass
class RunData:
    dir: Path
    name: str
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    metrics: list[StepRecord] = field(default_factory=list)
    evals: list[EvalRecord] = field(default_factory=list)
    probes: list[dict] = field(default_factory=list)  # probes.jsonl lines
    manifests: dict[str, Manifest] = field(default_factory=dict)
    vocab: dict | None = None  # the starting model folder's vocab.json (`cptkit vocab`), if any

    def eval_names(self) -> list[str]:
        names = {k[: -len("_ppl")] for rec in self.evals for k in rec.metrics if k.endswith("_ppl")}
        names |= {k[: -len("_ppl")] for k in self.summary.get("base", {}) if k.endswith("_ppl")}
        return sorted(names, key=lambda n: (n != "domain", n != "general", n))

    def probe_names(self) -> list[str]:
        return list(self.summary.get("probes", {}))


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


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a JSON file ({exc})") from None


def load_run(run_dir: Path) -> RunData:
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run folder")
    if not (run_dir / "eval.jsonl").is_file() and not (run_dir / "summary.json").is_file():
        raise UserError(f"{run_dir}: not a cptkit run folder (no eval.jsonl or summary.json)")
    run = RunData(dir=run_dir, name=run_dir.resolve().name)
    if (run_dir / "config.yaml").is_file():
        try:
            run.config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        except yaml.YAMLError:
            raise UserError(f"{run_dir / 'config.yaml'}: not valid YAML") from None
    if (run_dir / "summary.json").is_file():
        run.summary = _read_json(run_dir / "summary.json")
    run.metrics = _records(run_dir / "metrics.jsonl", StepRecord)
    run.evals = _records(run_dir / "eval.jsonl", EvalRecord)
    run.probes = read_jsonl(run_dir / "probes.jsonl")
    run.vocab = _vocab_record(run.config)
    data_dir = Path(run.config.get("data", {}).get("prepared_dir") or run_dir / "data")
    for manifest in sorted(data_dir.glob("*/manifest.json")):
        try:
            run.manifests[manifest.parent.name] = Manifest.from_json(_read_json(manifest))
        except TypeError as exc:
            raise UserError(f"{manifest}: not a cptkit manifest ({exc})") from None
    return run


def _vocab_record(config: dict) -> dict | None:
    """vocab.json of the run's starting model folder, when `cptkit vocab` wrote it (else None)."""
    path = Path(str(config.get("model", {}).get("name_or_path", ""))).expanduser() / "vocab.json"
    if not path.is_file():
        return None
    record = _read_json(path)
    return record if "heldout" in record and "first_new_id" in record else None


def _records(path: Path, kind: type[StepRecord] | type[EvalRecord]) -> list:
    rows = read_jsonl(path)
    try:
        return [kind.from_json(r) for r in rows]
    except (KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"{path}: a line is not a {kind.__name__} ({exc!r})") from None


def mix_schedule(run: RunData, points: int = 200) -> tuple[list[int], dict[str, list[float]]]:
    """(steps, {source: share of sequences at that step}) as planned from config.yaml and manifests.

    Empty when the run's config or manifests cannot be read back (e.g. an older run folder).
    """
    from cptkit.config import load_config
    from cptkit.planning import make_plan

    try:
        cfg = load_config(None, raw=json.loads(json.dumps(run.config)), check_paths=False)
        names = [s.name for s in cfg.domain_sources + cfg.general_sources]
        if not all(n in run.manifests for n in names):
            return [], {}
        plan = make_plan(cfg, {n: run.manifests[n] for n in names}, run.summary.get("world_size", 1))
    except (UserError, KeyError, TypeError, ValueError) as exc:
        log.info("report: no mix schedule for %s (%s)", run.name, exc)
        return [], {}
    if plan.shares is None or not plan.total_steps:
        return [], {}
    total = plan.total_steps
    steps = sorted({round(i * (total - 1) / max(points - 1, 1)) for i in range(points)})
    series: dict[str, list[float]] = {}
    for step in steps:
        for name, share in plan.shares(step / total).items():
            series.setdefault(name, []).append(share)
    return [s + 1 for s in steps], series
