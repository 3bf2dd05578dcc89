"""The run's line-per-record files and the console progress display.

metrics.jsonl and eval.jsonl are appended one JSON object per line and flushed at once, so a
crash loses at most the line being written. On resume, lines past the resumed step are cut
first, so a resumed run's files read exactly like an uninterrupted run's.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path

from cptkit.durable import json_safe, write_text

log = logging.getLogger("cptkit")


class JsonLines:
    def __init__(self, path: Path, fresh: bool):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.fh = open(path, "w" if fresh else "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self.fh.write(json.dumps(json_safe(record)) + "\n")  # NaN as null: "not measured"
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


def truncate_after(path: Path, step: int) -> list[dict]:
    """Keep the records with step <= `step` (a resumed run rewrites the rest); return them."""
    if not path.is_file():
        return []
    kept, lines = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by the crash
        if record.get("step", 0) <= step:
            kept.append(record)
            lines.append(line)
    write_text(path, "".join(line + "\n" for line in lines))
    return kept


class Progress:
    """A tqdm bar on a terminal; otherwise a plain log line at most every `every_s` seconds."""

    def __init__(self, total: int, initial: int, enabled: bool, every_s: float = 10.0):
        self.total = total
        self.enabled = enabled
        self.every_s = every_s
        self.last = 0.0
        self.start = time.time()
        self.start_step = initial
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)

    def update(self, step: int, loss: float, tokens_per_s: float, force: bool = False) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens_per_s:,.0f}")
            return
        now = time.time()
        if not force and now - self.last < self.every_s and step != self.total:
            return
        self.last = now
        done = step - self.start_step
        eta = (now - self.start) / done * (self.total - step) if done else float("nan")
        log.info(
            "step %d/%d  loss %.4f  %s tok/s  eta %s", step, self.total, loss, f"{tokens_per_s:,.0f}", _hms(eta)
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _hms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
