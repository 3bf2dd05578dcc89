"""Where every document goes (train, eval or dropped), decided over every prepared unit at once:
perplexity selection, held-out routing, decontamination and deduplication, from the
per-document arrays the workers wrote.

Order (each only over the documents the previous ones kept):
1. perplexity selection within each unit (keep_fraction, CCNet buckets);
2. held-out routing: in a training source whose role has no data.eval set, a stable draw from
   the document id below data.heldout_fraction sends it to the eval split (at most
   data.heldout_max_docs, the first in input order); an eval unit sends everything there;
3. the eval index: every eval document of every unit (data.eval sets and held-out slices);
4. decontaminate: training documents matching the index are dropped;
5. dedup: among the remaining training documents, in unit order, all but the first of each
   group of duplicates are dropped (see dedup.py). Eval documents are never dropped by 4 or 5.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cptkit.data import dedup as dd
from cptkit.data.pipelines import step_params

TRAIN, EVAL, DROPPED = 0, 1, -1


class DropCode(enum.IntEnum):
    """Why assembly dropped a document; stored per document as an int8 (0: not dropped here)."""

    KEPT = 0
    ABOVE_KEEP_FRACTION = 1
    BUCKET_NOT_KEPT = 2
    EVAL_EXACT = 3
    EVAL_NEAR = 4
    EXACT_DUPLICATE = 5
    NEAR_DUPLICATE = 6

    @property
    def step(self) -> str:
        """The step the manifest and the dropped records name."""
        return _DROP_STEP[self]

    @property
    def reason(self) -> str:
        return self.name.lower()


_DROP_STEP = {
    DropCode.ABOVE_KEEP_FRACTION: "perplexity_select", DropCode.BUCKET_NOT_KEPT: "perplexity_select",
    DropCode.EVAL_EXACT: "decontaminate", DropCode.EVAL_NEAR: "decontaminate",
    DropCode.EXACT_DUPLICATE: "dedup", DropCode.NEAR_DUPLICATE: "dedup",
}
ASSEMBLY_DROPS = tuple(c for c in DropCode if c is not DropCode.KEPT)
BUCKET_NAMES = {0: "head", 1: "middle", 2: "tail"}


@dataclass
class DocumentTable:
    """One prepared unit (a training source or an eval set) as assembly sees it: its plan, its
    finished parts, one row per document the workers kept, and the decisions about each row."""

    plan: object  # prepare.SourcePlan
    specs: list
    parts: list[Path]  # part folders in order
    dtype: str = "uint16"  # token dtype of tokens.bin
    signed: bool = True  # the workers computed exact hashes and band keys
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    part_sizes: list[int] = field(default_factory=list)
    # Outcomes, per document: split (TRAIN/EVAL/DROPPED), drop code, bucket, duplicate-of.
    split: np.ndarray | None = None
    code: np.ndarray | None = None
    bucket: np.ndarray | None = None
    dup_of: dict[int, tuple[str, int]] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.arrays["draw"])

    def load(self) -> None:
        chunks: dict[str, list[np.ndarray]] = {}
        for folder in self.parts:
            with np.load(folder / "arrays.npz") as data:
                for key in ("draw", "exact", "bands", "ppl", "n_bytes"):
                    chunks.setdefault(key, []).append(data[key])
                self.part_sizes.append(len(data["draw"]))
        width = max((c.shape[1] for c in chunks.get("bands", [])), default=0)
        self.arrays = {k: np.concatenate(v) if v else np.zeros(0) for k, v in chunks.items() if k != "bands"}
        bands = [b for b in chunks.get("bands", []) if b.shape[1] == width]
        self.arrays["bands"] = np.concatenate(bands) if bands else np.zeros((0, width), dtype=np.uint64)
        for key, dtype in (("draw", np.float64), ("exact", np.uint64), ("ppl", np.float64), ("n_bytes", np.int64)):
            self.arrays.setdefault(key, np.zeros(0, dtype=dtype))
            self.arrays[key] = self.arrays[key].astype(dtype, copy=False)


def assign_splits(units: list[DocumentTable], heldout_fraction: float, heldout_max_docs: int) -> None:
    """Send every document to train, eval or dropped: fill split / code / bucket / dup_of (in place)."""
    for u in units:
        u.split = np.full(u.n, TRAIN, dtype=np.int8)
        u.code = np.zeros(u.n, dtype=np.int8)
        u.bucket = np.full(u.n, -1, dtype=np.int8)
        _perplexity(u)
        _route(u, heldout_fraction, heldout_max_docs)
    eval_exact, eval_bands = _eval_index(units)
    for u in units:
        _decontaminate(u, eval_exact, eval_bands)
    _dedup(units)


def _perplexity(u: DocumentTable) -> None:
    p = step_params(u.specs, "perplexity")
    if p is None:
        return
    bucket, reason = dd.perplexity_select(u.arrays["ppl"], p.buckets, p.keep_buckets, p.keep_fraction)
    u.bucket[:] = bucket
    u.code[reason == 1], u.code[reason == 2] = DropCode.ABOVE_KEEP_FRACTION, DropCode.BUCKET_NOT_KEPT
    u.split[reason > 0] = DROPPED


def _route(u: DocumentTable, fraction: float, cap: int) -> None:
    alive = u.split != DROPPED
    if u.plan.eval_only:
        u.split[alive] = EVAL
    elif u.plan.heldout:
        chosen = np.flatnonzero(alive & (u.arrays["draw"] < fraction))[:cap]
        u.split[chosen] = EVAL


def _eval_index(units: list[DocumentTable]) -> tuple[np.ndarray, np.ndarray]:
    exact, bands = [], []
    width = max((u.arrays["bands"].shape[1] for u in units), default=0)
    for u in units:
        if not u.signed:
            continue
        rows = u.split == EVAL
        exact.append(u.arrays["exact"][rows])
        if u.arrays["bands"].shape[1] == width and width:
            bands.append(u.arrays["bands"][rows])
    return (np.concatenate(exact) if exact else np.zeros(0, dtype=np.uint64),
            np.concatenate(bands) if bands else np.zeros((0, width), dtype=np.uint64))


def _decontaminate(u: DocumentTable, eval_exact: np.ndarray, eval_bands: np.ndarray) -> None:
    p = step_params(u.specs, "decontaminate")
    if p is None or u.plan.eval_only:
        return
    rows = np.flatnonzero(u.split == TRAIN)
    bands = u.arrays["bands"][rows] if p.near and u.arrays["bands"].shape[1] == eval_bands.shape[1] else None
    kind = dd.contaminated(u.arrays["exact"][rows] if p.exact else None, bands, eval_exact, eval_bands)
    u.code[rows[kind == dd.EXACT]] = DropCode.EVAL_EXACT
    u.code[rows[kind == dd.NEAR]] = DropCode.EVAL_NEAR
    u.split[rows[kind != dd.KEEP]] = DROPPED


def _dedup(units: list[DocumentTable]) -> None:
    """Group the units (one shared group for across_sources, else each alone) and drop repeats."""
    groups: dict[str, list[DocumentTable]] = {}
    for u in units:
        p = step_params(u.specs, "dedup")
        if p is None:
            continue
        shared = p.across_sources and not u.plan.eval_only
        groups.setdefault("*" if shared else u.plan.name, []).append(u)
    for members in groups.values():
        target = EVAL if members[0].plan.eval_only else TRAIN
        rows = [np.flatnonzero(u.split == target) for u in members]
        width = min(u.arrays["bands"].shape[1] for u in members)
        exact = np.concatenate([u.arrays["exact"][r] for u, r in zip(members, rows)])
        bands = np.concatenate([u.arrays["bands"][r][:, :width] for u, r in zip(members, rows)]) if width else None
        kind, of = dd.duplicates(exact, bands)
        owner = np.concatenate([np.full(len(r), i) for i, r in enumerate(rows)]) if rows else np.zeros(0, int)
        local = np.concatenate(rows) if rows else np.zeros(0, int)
        for i, (u, r) in enumerate(zip(members, rows)):
            p = step_params(u.specs, "dedup")
            mine = owner == i
            k = kind[mine]
            if p.near and not p.exact:  # an exact copy is also a near duplicate
                k = np.where(k == dd.EXACT, dd.NEAR, k)
            hit = ((k == dd.EXACT) & p.exact) | ((k == dd.NEAR) & p.near)
            targets = r[hit]
            u.code[targets] = np.where(k[hit] == dd.EXACT, DropCode.EXACT_DUPLICATE, DropCode.NEAR_DUPLICATE)
            u.split[targets] = DROPPED
            for row, first in zip(targets, of[mine][hit]):
                u.dup_of[int(row)] = (members[owner[first]].plan.name, int(local[first]))
