"""Making writes survive a power cut: fsync files and the folders that name them.

A rename is only durable once the folder holding it is synced; a file's bytes only once the
file is. Checkpoints (`cptkit.checkpoint`) and prepared shards (`cptkit.data.prepare`) are
written into a temporary folder, synced with these, then renamed into place.
"""

from __future__ import annotations

import os
from pathlib import Path


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
