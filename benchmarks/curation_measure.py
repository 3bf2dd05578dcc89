"""Shared by the curation benchmarks: a tokenizer for the generated corpus, and a command's wall
time and peak memory, counting every process it starts (workers included).

CPU time (user + system of every process, from the kernel's accounting of waited-for
children) does not depend on what else the machine is running, unlike wall time.
Peak memory is sampled every 50 ms as the sum of the resident set sizes of the process and all
its descendants (what the machine must hold at once), plus the largest single process.
"""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import threading
import time
from pathlib import Path


def tokenizer_model(folder: Path, sample: Path) -> Path:
    """A tiny Llama folder whose byte-level BPE tokenizer (8k vocabulary) is trained on `sample`."""
    from cptkit.demo import DemoSize, build_base_init

    if (folder / "tokenizer.json").is_file():
        return folder
    size = DemoSize(vocab=8192, hidden=32, layers=1, heads=2, seq_len=256, batch_rows=8, micro=4,
                    pretrain_tokens=0, cpt_tokens=0, code_files=0, eval_tokens=0)
    return build_base_init(folder, [sample], size)


def run_measured(cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> dict:
    """Run `cmd`; return wall seconds, CPU seconds (every process it started, user + system),
    peak total RSS and peak single-process RSS in MiB."""
    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak = {"total": 0, "single": 0}
    done = threading.Event()
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def sample() -> None:
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                sizes = []
                for p in procs:
                    with contextlib.suppress(psutil.Error):  # a worker that just exited
                        sizes.append(p.memory_info().rss)
                peak["total"] = max(peak["total"], sum(sizes))
                peak["single"] = max(peak["single"], max(sizes, default=0))
            except psutil.Error:
                pass
            done.wait(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    output, _ = proc.communicate()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # Descendants that exited and were waited for (pool workers included) count in RUSAGE_CHILDREN.
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    done.set()
    thread.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{output[-3000:]}")
    return {"wall_s": wall, "cpu_s": cpu, "peak_mib": peak["total"] / 2**20, "peak_single_mib": peak["single"] / 2**20,
            "output": output}
