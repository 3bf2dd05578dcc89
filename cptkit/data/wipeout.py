"""A guard against curation that silently removes a source: warnings, and the error for none left.

`prepare` hands over, per source, the steps' tallies (`StepStats`: seen, kept, dropped per
reason) and a few dropped ids per step (`sample_ids`, from the dropped records). Then:

- `drop_warnings`: every step that dropped more than `warn_drop_fraction` (default 0.5) of the
  documents that reached it gives a `DropWarning` naming the step, its top reasons and three
  sample ids. The fraction is of the step's own input, not of the documents read, so a step that
  removes most of what an earlier step left is caught too. A step that saw nothing gives none.
- `empty_source_error`: a training source left with no document gives the text of a
  `UserError` (exit status 2): the step that dropped the most, its reasons and samples, and the
  likely cause read from those reasons (a language mismatch, stop words of the wrong language,
  a script without spaces read as words, duplicates, ...), instead of training on 0 tokens.

Both are pure functions over the tallies; `GuardOptions` holds the one config field.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cptkit.data.steps import StepStats
from cptkit.schema import option

SAMPLES = 3
TOP_REASONS = 3


@dataclass
class GuardOptions:
    """The field `data.warn_drop_fraction`; the config moves it into DataConfig unchanged."""

    warn_drop_fraction: float = option(
        0.5, ge=0, le=1, help="Warn when a curation step drops more than this share of the documents "
        "that reach it (the warning names the step, its top reasons and sample ids; manifest and report record it)."
    )


@dataclass
class DropWarning:
    source: str
    step: str
    seen: int
    dropped: int
    reasons: list[tuple[str, int]]  # the top reasons, most frequent first
    samples: list[str] = field(default_factory=list)  # ids of dropped documents

    @property
    def fraction(self) -> float:
        return self.dropped / self.seen if self.seen else 0.0

    def message(self) -> str:
        reasons = ", ".join(f"{r} {n:,}" for r, n in self.reasons)
        samples = f"; e.g. {', '.join(self.samples)}" if self.samples else ""
        return (f"{self.source}: step {self.step} dropped {self.dropped:,} of {self.seen:,} documents "
                f"({self.fraction:.0%}): {reasons}{samples}")

    def to_json(self) -> dict:
        return {"source": self.source, "step": self.step, "in": self.seen, "dropped": self.dropped,
                "fraction": round(self.fraction, 4), "reasons": dict(self.reasons), "samples": self.samples}


def _dropped(stats: StepStats) -> int:
    return sum(stats.dropped.values())


def _warning(source: str, stats: StepStats, samples: dict[str, list[str]]) -> DropWarning:
    top = sorted(stats.dropped.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_REASONS]
    return DropWarning(source, stats.name, stats.seen, _dropped(stats), top, list(samples.get(stats.name, []))[:SAMPLES])


def drop_warnings(source: str, steps: Iterable[StepStats], samples: dict[str, list[str]],
                  warn_drop_fraction: float = 0.5) -> list[DropWarning]:
    """A warning for every step that dropped more than the fraction of the documents it saw."""
    return [_warning(source, s, samples) for s in steps
            if s.seen and _dropped(s) / s.seen > warn_drop_fraction]


def empty_source_error(source: str, where: str, steps: Iterable[StepStats], samples: dict[str, list[str]],
                       languages: list[str], train_documents: int, read: int) -> str | None:
    """The error text for a training source with no training document left, else None.

    `where` is the source's dotted config path (data.domain, data.general[1]); `languages` its
    declared languages; `read` the documents read (0: the inputs themselves are empty).
    """
    if train_documents > 0:
        return None
    if read == 0:
        return (f"{where} ({source}): no document was read from its inputs, so there is nothing to train on; "
                "check its paths (or dataset) and text_field, and the bad-input counts in the prepare table")
    steps = list(steps)
    worst = max(steps, key=_dropped, default=None)
    if worst is None or _dropped(worst) == 0:
        return (f"{where} ({source}): {read:,} documents read but none is left for training "
                "(all held out?); lower data.heldout_fraction or add documents")
    w = _warning(source, worst, samples)
    return (f"{where} ({source}): no training document left; step {w.step} dropped the most, "
            f"{w.dropped:,} of {w.seen:,} ({', '.join(f'{r} {n:,}' for r, n in w.reasons)})"
            + (f", e.g. {', '.join(w.samples)}" if w.samples else "")
            + f". Likely cause: {likely_cause(w.step, [r for r, _ in w.reasons], languages, where)}")


def likely_cause(step: str, reasons: list[str], languages: list[str], where: str = "data.<role>") -> str:
    """A one-sentence guess at why `step` dropped documents for its top `reasons`."""
    langs = ", ".join(languages) or "en"
    top = reasons[0] if reasons else ""
    if top.startswith("language_"):
        found = top.removeprefix("language_")
        return (f"a language mismatch: the documents are detected as {found!r} but the source's language is "
                f"[{langs}]; set {where}.language: {found} (or add it to the language step's languages)")
    if top == "low_language_score":
        return "language id is unsure of these documents (short, mixed or code-heavy text); lower language.min_score"
    if top == "gopher_stop_words":
        return (f"too few stop words of [{langs}]: the text is not in that language, or is not prose; "
                f"check {where}.language")
    if top in ("gopher_too_few_words", "too_few_words", "gopher_mean_word_length", "c4_too_few_sentences"):
        return (f"word or sentence counts do not fit this text: for a script written without spaces "
                f"(Chinese, Japanese, Thai) {where}.language must name it so words are segmented; otherwise "
                "lower the step's minimum")
    if top in ("exact_duplicate", "near_duplicate"):
        return "the source repeats itself (or an earlier source, with dedup.across_sources)"
    if top in ("eval_exact", "eval_near"):
        return "the training documents are the eval set's documents: point data.eval elsewhere"
    if top in ("empty_after_cleaning", "no_tokens"):
        return "the documents are empty once cleaned (markup only?); check text_field and clean.html"
    return f"the {step} step's thresholds do not fit this data; read its dropped documents and loosen them"


def samples_from_records(records: Iterable[dict], k: int = SAMPLES,
                         steps: Iterable[str] | None = None) -> dict[str, list[str]]:
    """The first `k` ids per step of dropped records {"id", "step", ...}.

    With `steps` (the steps that need samples, e.g. those warned about) reading stops as soon as
    each has `k`, so a large dropped file is not read to its end.
    """
    wanted = set(steps) if steps is not None else None
    out: dict[str, list[str]] = {}
    for rec in records:
        if wanted is not None and rec["step"] not in wanted:
            continue
        ids = out.setdefault(rec["step"], [])
        if len(ids) < k:
            ids.append(str(rec["id"]))
        if wanted is not None and len(out) == len(wanted) and all(len(v) >= k for v in out.values()):
            break
    return out


def sample_ids(dropped_dir: Path, k: int = SAMPLES, steps: Iterable[str] | None = None) -> dict[str, list[str]]:
    """`samples_from_records` over a source's dropped/*.jsonl.gz files, in file order."""
    def records():
        for path in sorted(Path(dropped_dir).glob("*.jsonl.gz")):
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                for line in fh:
                    yield json.loads(line)

    return samples_from_records(records(), k, steps)
