"""Hugging Face datasets as a source: saved to disk, or named and streamed.

Two kinds of `dataset:` source:
- a folder written by `save_to_disk` (a Dataset or a DatasetDict): memory-mapped Arrow, read
  in row ranges, so a large dataset is split into parts like a large file;
- anything `load_dataset` takes (a hub name with config `name`, `data_dir` and `split`, or a
  local folder of data files), streamed by default: each of the stream's shards is a part.
Document ids are `PATH[SPLIT]:ROW` (or `PATH[SPLIT]#SHARD:ROW` when streamed), 1-based.
Fields are turned into documents by the same rules as file records (missing or non-string
text, empty text, over-long records are counted as bad input).

`datasets` is an optional dependency (`pip install cptkit[hf]`); it is imported only here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cptkit.data.documents import BadInput, Document
from cptkit.data.readers import Limits, to_document
from cptkit.errors import UserError

_ROWS_PER_BATCH = 1000


def _datasets():
    try:
        import datasets
    except ImportError:
        raise UserError("a `dataset:` source needs the datasets package: pip install 'cptkit[hf]'") from None
    return datasets


def is_saved(path: str) -> bool:
    folder = Path(path).expanduser()
    return any((folder / f).is_file() for f in ("dataset_info.json", "state.json", "dataset_dict.json"))


def identity(cfg: Any) -> dict:
    """What the fingerprint knows of a dataset source: its settings and, when local, its files."""
    out = {k: getattr(cfg, k) for k in ("path", "name", "data_dir", "split", "streaming", "revision")}
    folder = Path(cfg.path).expanduser()
    if folder.is_dir():
        files = sorted(f for f in folder.rglob("*") if f.is_file())
        out["files"] = [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    return out


def open_dataset(cfg: Any, where: str):
    """The split as a Dataset (saved or downloaded) or an IterableDataset (streamed)."""
    datasets = _datasets()
    try:
        if is_saved(cfg.path):
            ds = datasets.load_from_disk(str(Path(cfg.path).expanduser()))
            if isinstance(ds, datasets.DatasetDict):
                if cfg.split not in ds:
                    raise UserError(f"{where}.split: {cfg.split!r} is not a split of {cfg.path} ({', '.join(ds)})")
                ds = ds[cfg.split]
            return ds
        return datasets.load_dataset(
            cfg.path, cfg.name, data_dir=cfg.data_dir, split=cfg.split, streaming=cfg.streaming, revision=cfg.revision
        )
    except UserError:
        raise
    except Exception as exc:  # datasets raises many types (FileNotFoundError, ValueError, hub errors)
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{where}: cannot load dataset {cfg.path!r} ({first})") from None


def plan(cfg: Any, part_bytes: int, where: str) -> list[tuple[str, int, int]]:
    """Parts as ("rows", start, end) row ranges of a map-style dataset or ("shard", k, n)."""
    datasets = _datasets()
    ds = open_dataset(cfg, where)
    if isinstance(ds, datasets.IterableDataset):
        n = max(int(getattr(ds, "num_shards", 1) or 1), 1)
        return [("shard", k, n) for k in range(n)]
    rows = len(ds)
    if rows == 0:
        return [("rows", 0, 0)]
    per_row = max(ds.data.nbytes / rows, 1.0)
    step = max(int(part_bytes / per_row), 1)
    return [("rows", s, min(s + step, rows)) for s in range(0, rows, step)]


def read_part(
    cfg: Any, part: tuple[str, int, int], lim: Limits, bad: BadInput, source: str, where: str
) -> Iterator[Document]:
    ds = open_dataset(cfg, where)
    kind, a, b = part
    label = f"{cfg.path}[{cfg.split}]"
    columns = [c for c in (lim.text_field, lim.id_field) if c]
    if kind == "rows":
        present = [c for c in columns if c in ds.column_names]
        view = ds.select_columns(present).select(range(a, b))
        row = a
        for batch in view.iter(batch_size=_ROWS_PER_BATCH):
            size = len(next(iter(batch.values()))) if batch else 0
            for i in range(size):
                row += 1
                obj = {k: v[i] for k, v in batch.items()}
                doc = to_document(obj, f"{label}:{row}", lim, bad, source)
                if doc is not None:
                    yield doc
        if not present and b > a:
            bad.add("missing_field", label, n=b - a, detail=f"no column {lim.text_field!r}")
        return
    stream = ds.shard(num_shards=b, index=a) if b > 1 else ds
    for row, obj in enumerate(stream, start=1):
        doc = to_document(obj, f"{label}#{a}:{row}", lim, bad, source)
        if doc is not None:
            yield doc
