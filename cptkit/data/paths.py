"""Input paths of a source: files, folders (read recursively) and globs."""

from __future__ import annotations

import glob
import os
from pathlib import Path


def expand_paths(patterns: list[str]) -> list[Path]:
    """Files named by paths, folders (recursive) and globs, sorted and without repeats."""
    seen: dict[Path, None] = {}
    for pattern in patterns:
        pattern = os.path.expanduser(pattern)
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        for match in matches:
            path = Path(match)
            if path.is_dir():
                for f in sorted(path.rglob("*")):
                    if f.is_file() and not f.name.startswith("."):
                        seen.setdefault(f, None)
            elif path.is_file():
                seen.setdefault(path, None)
    return list(seen)
