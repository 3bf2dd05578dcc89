"""The shape of a curation step, and the tally each one keeps.

A step takes a batch of documents and yields each one back with a verdict: `None` keeps it
(its text may have been rewritten), a string drops it for that reason. Batches let a step that
needs them (the reference-LM perplexity filter) score many documents in one forward; the
others are written per document and wrapped by `per_document`.

Every step counts what it saw, kept, dropped per reason and rewrote, so the manifest can say
for each document where it went and why.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from cptkit.data.documents import Document

Verdict = str | None
BatchFn = Callable[[list[Document]], Iterable[tuple[Document, Verdict]]]


@dataclass
class Step:
    """A named batch function; `name` is what the manifest and the dropped records show."""

    name: str
    run: BatchFn
    # Extra counts the step keeps while it runs (PII replacements per type); moved into the
    # step's StepStats after every batch.
    counts: Counter = field(default_factory=Counter)


@dataclass
class StepStats:
    """What one step did: documents in, kept, dropped per reason, rewritten, and extra counts."""

    name: str
    seen: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    modified: int = 0
    counts: Counter = field(default_factory=Counter)  # e.g. PII replacements per type

    def merge(self, other: StepStats) -> None:
        self.seen += other.seen
        self.kept += other.kept
        self.dropped.update(other.dropped)
        self.modified += other.modified
        self.counts.update(other.counts)

    def to_json(self) -> dict:
        out = {"name": self.name, "in": self.seen, "kept": self.kept,
               "dropped": dict(sorted(self.dropped.items()))}
        if self.modified:
            out["modified"] = self.modified
        if self.counts:
            out["counts"] = dict(sorted(self.counts.items()))
        return out

    @classmethod
    def from_json(cls, data: dict) -> StepStats:
        return cls(name=data["name"], seen=data["in"], kept=data["kept"], dropped=Counter(data["dropped"]),
                   modified=data.get("modified", 0), counts=Counter(data.get("counts", {})))


def per_document(name: str, fn: Callable[[Document], Verdict]) -> Step:
    """A step from a function that looks at (and may rewrite) one document at a time."""

    def run(batch: list[Document]) -> Iterator[tuple[Document, Verdict]]:
        for doc in batch:
            yield doc, fn(doc)

    return Step(name, run)


def run_steps(
    steps: list[Step], batch: list[Document], stats: dict[str, StepStats],
    on_drop: Callable[[Document, str, str], None],
) -> list[Document]:
    """Pass a batch through every step in order; return the survivors, report every drop."""
    for step in steps:
        tally = stats[step.name]
        survivors = []
        before = [d.text for d in batch]
        for (doc, verdict), text in zip(step.run(batch), before):
            tally.seen += 1
            if doc.text is not text:
                tally.modified += doc.text != text
            if verdict is None:
                tally.kept += 1
                survivors.append(doc)
            else:
                tally.dropped[verdict] += 1
                on_drop(doc, step.name, verdict)
        tally.counts.update(step.counts)
        step.counts.clear()
        batch = survivors
        if not batch:
            break
    return batch
