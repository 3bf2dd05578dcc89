"""Making writes survive a power cut: fsync files and the folders that name them.

A rename is only durable once the folder holding it is synced; a file's bytes only once the
file is. Every file a run writes whole goes through `replaced`: the bytes go to a temporary
file beside it, are synced, and the temporary file is renamed over the target, so a reader
sees the old file or the new one, never half of one. `write_text` and `write_json` are the
two common cases. Checkpoints (`cptkit.checkpoint`), prepared shards (`cptkit.data.prepare`) and
`cptkit vocab`'s model folder are whole folders: written into a temporary folder, synced with
`fsync_tree`, then moved into place by `replace_folder`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """Every file below `folder`, then every folder (so their entries are durable too)."""
    folders = [folder]
    for path in folder.rglob("*"):
        if path.is_file():
            fsync_file(path)
        elif path.is_dir():
            folders.append(path)
    for path in folders:
        fsync_dir(path)


@contextlib.contextmanager
def replaced(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is synced and renamed over `path`.

    On an exception the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_text(path: Path, text: str) -> None:
    with replaced(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def json_safe(value: Any) -> Any:
    """JSON has no NaN or infinity: such numbers become null ("not measured")."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json(path: Path, obj: Any, indent: int | None = 2) -> None:
    """`obj` as JSON (non-finite numbers as null), atomically."""
    write_text(path, json.dumps(json_safe(obj), indent=indent, ensure_ascii=False) + "\n")


def replace_folder(tmp: Path, final: Path) -> None:
    """Move the finished folder `tmp` to `final`, replacing an older one: the old folder is
    renamed aside first and removed only once the new one is in place, so `final` is never gone
    for long and never half-written."""
    old = final.with_name(f".old-{final.name}-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)
