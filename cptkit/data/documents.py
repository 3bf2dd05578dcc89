"""The unit that flows through data preparation, and the tally of bad input.

Every document carries an id (the source's id field, or `file:line`) so that anything dropped or
rejected later can be traced back to where it came from.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

MAX_SAMPLES = 5


@dataclass
class Document:
    id: str
    text: str
    source: str = ""
    meta: dict = field(default_factory=dict)


@dataclass
class BadInput:
    """Counts of unusable input per reason, with a few `file:line` samples of each."""

    counts: Counter = field(default_factory=Counter)
    samples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, where: str, n: int = 1, detail: str = "") -> None:
        self.counts[reason] += n
        examples = self.samples.setdefault(reason, [])
        if len(examples) < MAX_SAMPLES:
            examples.append(f"{where}: {detail}" if detail else where)

    def merge(self, other: BadInput) -> None:
        for reason, n in other.counts.items():
            self.counts[reason] += n
            examples = self.samples.setdefault(reason, [])
            examples.extend(other.samples.get(reason, [])[: MAX_SAMPLES - len(examples)])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_json(self) -> dict:
        return {
            "total": self.total,
            "reasons": dict(sorted(self.counts.items())),
            "samples": {k: v for k, v in sorted(self.samples.items())},
        }
