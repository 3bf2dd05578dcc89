"""Probe sets: the JSONL files of knowledge probes, read and checked (no torch here, so config
validation can check `eval.probes` without it). Scoring is `cptkit.evaluation.probes`.

A probe set is a JSONL file, one probe per line:
    {"id": "capital-france", "prompt": "Question: What is the capital of France?\\nAnswer:",
     "answer": "Paris", "distractors": ["London", "Berlin"]}
`id` (default `file:line`) and `distractors` are optional. `builtin:NAME` names a set shipped in
cptkit/resources/probes/ (`builtin:general`, and `builtin:template` to copy for a domain).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from cptkit.errors import UserError

BUILTIN = "builtin:"
KEYS = {"id", "prompt", "answer", "distractors"}
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


@dataclass
class Probe:
    id: str
    prompt: str
    answer: str
    distractors: list[str] = field(default_factory=list)


@dataclass
class ProbeSet:
    name: str
    source: str  # the path or builtin:NAME it came from
    probes: list[Probe]


def builtin_names() -> list[str]:
    folder = resources.files("cptkit") / "resources" / "probes"
    return sorted(p.name[: -len(".jsonl")] for p in folder.iterdir() if p.name.endswith(".jsonl"))


def resolve_path(spec: str) -> Path:
    """The file a probe-set spec names: `builtin:NAME` or a path (relative paths as data paths are)."""
    if spec.startswith(BUILTIN):
        name = spec[len(BUILTIN) :]
        if name not in builtin_names():
            raise UserError(f"{spec}: no shipped probe set of that name (shipped: {', '.join(builtin_names())})")
        return Path(str(resources.files("cptkit") / "resources" / "probes" / f"{name}.jsonl"))
    return Path(spec).expanduser()


def check_spec(key: str, name: str, spec: str, check_path: bool = True) -> list[str]:
    """Config problems of one `eval.probes` entry (the name and whether the file exists)."""
    problems = []
    if not NAME_PATTERN.match(name):
        problems.append(f"{key}: probe set name {name!r} must be letters, digits, '_' or '-'")
    try:
        path = resolve_path(spec)
    except UserError as exc:
        return [*problems, f"{key}: {exc}"]
    if check_path and not path.is_file():
        problems.append(missing_file(key, spec))
    return problems


def missing_file(key: str, spec: str) -> str:
    return f"{key}: {spec!r} is not a file (a JSONL probe set, or builtin:NAME)"


def file_problems(key: str, spec: str) -> list[str]:
    """The probe set's file, when the spec names one that does not exist (names are check_spec's)."""
    try:
        return [] if resolve_path(spec).is_file() else [missing_file(key, spec)]
    except UserError:
        return []  # an unknown builtin name, reported by check_spec


def _text_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value)


def parse_line(line: str, where: str) -> Probe:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: not a JSON object ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{where}: a probe must be a JSON object with prompt and answer")
    unknown = sorted(set(obj) - KEYS)
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)} (a probe has {', '.join(sorted(KEYS))})")
    for key in ("prompt", "answer"):
        if not isinstance(obj.get(key), str) or not obj[key].strip():
            raise UserError(f"{where}: '{key}' must be a non-empty string")
    distractors = obj.get("distractors", [])
    if not _text_list(distractors):
        raise UserError(f"{where}: 'distractors' must be a list of non-empty strings")
    if obj["answer"] in distractors:
        raise UserError(f"{where}: the answer {obj['answer']!r} is also listed as a distractor")
    pid = obj.get("id", where)
    if not isinstance(pid, str) or not pid:
        raise UserError(f"{where}: 'id' must be a non-empty string")
    return Probe(pid, obj["prompt"], obj["answer"], list(distractors))


def load_probe_set(name: str, spec: str) -> ProbeSet:
    path = resolve_path(spec)
    if not path.is_file():
        raise UserError(f"eval.probes.{name}: {spec!r} is not a file")
    probes, seen = [], set()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        probe = parse_line(line, f"{path}:{lineno}")
        if probe.id in seen:
            raise UserError(f"{path}:{lineno}: probe id {probe.id!r} appears twice")
        seen.add(probe.id)
        probes.append(probe)
    if not probes:
        raise UserError(f"{path}: no probes in this file")
    return ProbeSet(name, spec, probes)


def load_probe_sets(specs: dict[str, str]) -> list[ProbeSet]:
    return [load_probe_set(name, spec) for name, spec in specs.items()]
