"""Helpers for tests: configs, the real command line in a subprocess, JSON lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def make_config(tmp: Path, model: Path, corpus: dict[str, Path], **sections) -> dict:
    """A small complete run config as a dict; keyword arguments update its sections."""
    cfg = {
        "model": {"name_or_path": str(model), "dtype": "float32"},
        "data": {
            "seq_len": 64,
            "domain": {"paths": [str(corpus["code"])], "id_field": "id"},
            "general": {"paths": [str(corpus["general"])], "id_field": "id"},
            "heldout_fraction": 0.1,
            "num_workers": 1,
        },
        "mix": {"replay_ratio": 0.25},
        "train": {"lr": 3e-3, "global_batch_tokens": 512, "micro_batch_size": 4, "max_steps": 8,
                  "warmup_steps": 1, "seed": 7},
        "checkpoint": {"every_steps": 4, "keep_last": 2, "keep_best": 1},
        # Probes are off in general tests (their own tests turn them on): they cost a generate per eval.
        "eval": {"every_steps": 4, "max_tokens": 2000, "probes": {}},
        "output_dir": str(tmp / "run"),
    }
    for section, values in sections.items():
        if isinstance(values, dict) and isinstance(cfg.get(section), dict):
            cfg[section].update(values)
        else:
            cfg[section] = values
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def cptkit(*args: str, cwd: Path | None = None, timeout: int = 600, **popen) -> subprocess.CompletedProcess:
    """Run the real command line in a new process."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "cptkit", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, **popen)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def every_output(outputs: list[subprocess.CompletedProcess], roots: list[Path], tokenizer, dtype: str) -> dict[str, str]:
    """{where: text} of the console and every file below `roots`, gzip files decompressed and the
    prepared token shards (`*.bin` under a prepared source) decoded with `tokenizer`: what a search
    for leaked secrets or personal data must look through."""
    import gzip

    import numpy as np

    searched = {"console": "".join(o.stdout + o.stderr for o in outputs)}
    for root in roots:
        for file in sorted(p for p in root.rglob("*") if p.is_file()):
            data = file.read_bytes()
            if file.suffix == ".gz":
                data = gzip.decompress(data)
            if file.suffix == ".bin" and "prepared" in file.parts[-4:-1]:
                data = tokenizer.decode(np.frombuffer(data, dtype=dtype).tolist()).encode()
            searched[str(file)] = data.decode("utf-8", "replace")
    return searched
