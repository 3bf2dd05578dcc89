"""`data/<source>/manifest.json`: what `cptkit prepare` made of one source, read by every later
stage (planning, training, evaluation, the report) through this one type.

It records documents read, kept and dropped (per step and reason), bad input per reason, PII
replacements per type, tokens and UTF-8 bytes per split, the shard list, a content hash of every
token written, and the fingerprint that decides whether the shards can be reused.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cptkit.data.shards import windows_in
from cptkit.durable import write_json

FORMAT_VERSION = 2
SPLITS = ("train", "eval")


@dataclass(kw_only=True)
class Manifest:
    name: str  # the unit's folder name: a training source's name, or eval-NAME
    role: str  # domain | general | eval
    format_version: int = FORMAT_VERSION
    fingerprint: str  # everything the shards depend on; equal fingerprint: reused
    content_hash: str  # sha256 over every token written, train then eval
    inputs: list[str]
    pipeline: list[dict]  # the steps as parsed, with every parameter
    documents: dict[str, int]  # read, kept, dropped, train, eval
    steps: list[dict]  # per step: in, kept, dropped per reason (StepStats.to_json)
    pii: dict[str, int]  # replacements per PII type
    bad_input: dict  # total, per reason, samples with file:line
    tokens: dict[str, int]  # train, eval, total
    text_bytes: dict[str, int]  # UTF-8 bytes of the documents' text per split
    dtype: str  # token dtype of the shards
    vocab_size: int
    start_id: int
    eos_id: int
    shards: dict[str, list[dict]]  # per split: the shard files with their token and document counts
    wall_s: float = 0.0
    warnings: list[dict] = field(default_factory=list)  # steps that dropped much of the source
    rules_off: list[dict] = field(default_factory=list)  # per step and language, rules off for lack of data
    empty_error: str | None = None  # a training source left with no document: why (prepare exits 2)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def windows(self, split: str, seq_len: int) -> int:
        """Training windows of `seq_len` tokens in a split (windows never cross a shard)."""
        return sum(windows_in(s["n_tokens"], seq_len) for s in self.shards[split])

    def write(self, folder: Path) -> None:
        write_json(folder / "manifest.json", self.to_json())


def read_manifest(folder: Path) -> Manifest | None:
    """The manifest of a prepared unit; None when there is none or it is unreadable or outdated."""
    path = folder / "manifest.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if data.get("format_version") != FORMAT_VERSION:
            return None
        return Manifest.from_json(data)
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, AttributeError):
        return None
