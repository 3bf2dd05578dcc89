"""The text `cptkit vocab` learns from and measures on: the curated documents `cptkit prepare` wrote.

Training text is each source's `curated/part-*.jsonl.gz` (the kept training documents). When a
role holds more text than `sample_bytes`, the sample is spread over the whole corpus and the
same on every run: every k-th part file is read (k about 1 / (2 x share), so a large corpus is
not read whole to sample a little of it), and in those files documents are kept by a hash of
their id with the share that brings the sample to about `sample_bytes`. Held-out text is a role's eval set (`data.eval.<role>`) or the
held-out slices of its sources (`curated/heldout.jsonl.gz`): the documents training never sees,
on which tokens per byte is reported.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from cptkit.errors import UserError

if TYPE_CHECKING:
    from cptkit.config import Config
    from cptkit.data.manifest import Manifest


def _documents(files: list[Path]):
    for path in files:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                yield json.loads(line)


def _draw(doc_id: str) -> float:
    # Its own hash: the held-out split already used a draw from the id (cptkit.data.curate).
    digest = hashlib.blake2b(b"vocab-sample:" + doc_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def source_names(cfg: Config, role: str) -> list[str]:
    return [s.name for s in (cfg.domain_sources if role == "domain" else cfg.general_sources)]


def training_sample(cfg: Config, manifests: dict[str, Manifest], role: str, sample_bytes: int) -> list[str]:
    """About `sample_bytes` of the role's curated training documents (all of them when fewer)."""
    names = source_names(cfg, role)
    total = sum(manifests[n].text_bytes["train"] for n in names)
    share = min(1.0, sample_bytes / total) if total else 1.0
    files = [f for n in names for f in sorted((cfg.prepared_dir / n / "curated").glob("part-*.jsonl.gz"))]
    step = max(1, min(int(1 / (2 * share)), len(files)))
    keep = min(1.0, share * len(files) / len(files[::step])) if files else 1.0
    return [d["text"] for d in _documents(files[::step]) if keep >= 1.0 or _draw(d["id"]) < keep]


def heldout_texts(cfg: Config, role: str) -> list[str]:
    """The role's held-out documents: its eval set, else the held-out slices of its sources."""
    root = cfg.prepared_dir
    if role in cfg.data.eval:
        files = sorted((root / f"eval-{role}" / "curated").glob("*.jsonl.gz"))
    else:
        files = [root / n / "curated" / "heldout.jsonl.gz" for n in source_names(cfg, role)]
        files = [f for f in files if f.is_file()]
    return [d["text"] for d in _documents(files)]


def require_domain_text(texts: list[str], cfg: Config) -> None:
    if not any(t.strip() for t in texts):
        raise UserError(
            "data.domain: no curated training text to learn new tokens from (every document was dropped "
            f"or held out); see the manifest in {cfg.prepared_dir}"
        )
