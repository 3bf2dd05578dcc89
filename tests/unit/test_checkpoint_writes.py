"""A checkpoint write that fails is reported as one; any other error is not called a full disk.

A full disk is a file-size limit (RLIMIT_FSIZE) in a child process: writes past it fail with
EFBIG, through the same code paths as ENOSPC (safetensors' writer, torch.save's zip writer).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from cptkit import checkpoint
from cptkit.errors import RunFailure

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent("""
    import json, resource, signal, sys
    import torch
    from cptkit import checkpoint
    from cptkit.errors import RunFailure
    run_dir, weights_n, optimizer_n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    checkpoint.save_state(__import__("pathlib").Path(run_dir), 1, {"w": torch.zeros(4)}, {"state": {}}, {"step": 1})
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
    try:
        checkpoint.save_state(__import__("pathlib").Path(run_dir), 2, {"w": torch.zeros(weights_n)},
                              {"state": {"w": {"exp_avg": torch.zeros(optimizer_n)}}}, {"step": 2})
        print(json.dumps({"error": None}))
    except Exception as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
""")


def save_with_a_full_disk(tmp_path: Path, weights_n: int, optimizer_n: int) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), str(weights_n), str(optimizer_n)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("where, weights_n, optimizer_n", [
    ("weights (safetensors)", 100_000, 4),
    ("optimizer state (torch.save)", 4, 100_000),
])
def test_a_full_disk_is_reported_as_a_failed_write_with_the_previous_state_intact(tmp_path, where, weights_n,
                                                                                  optimizer_n):
    result = save_with_a_full_disk(tmp_path, weights_n, optimizer_n)
    assert result["error"] == "RunFailure", (where, result)
    assert f"could not write {tmp_path / 'checkpoints' / 'step-2'}" in result["message"]
    assert f"{tmp_path / 'checkpoints' / 'step-1'}, is intact" in result["message"]
    reason = "File too large" if where.startswith("weights") else "write failed"
    assert reason in result["message"]
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-1"]  # no partial folder left


def test_an_error_that_is_not_a_failed_write_propagates_as_it_is(tmp_path):
    checkpoint.save_state(tmp_path, 1, {"w": torch.zeros(4)}, {"state": {}}, {"step": 1})
    shared = torch.zeros(8)
    # Two names for one tensor: safetensors refuses with a RuntimeError. A bug, not a full disk.
    with pytest.raises(RuntimeError, match="share memory") as caught:
        checkpoint.save_state(tmp_path, 2, {"a": shared, "b": shared}, {"state": {}}, {"step": 2})
    assert not isinstance(caught.value, RunFailure)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-1"]


@pytest.mark.parametrize("exc, reason", [
    (OSError(28, "No space left on device"), "No space left on device"),
    (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"), "write failed"),
    (RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"), "write failed"),
    (RuntimeError("Some tensors share memory"), None),
    (RuntimeError("CUDA error: an illegal memory access was encountered"), None),
])
def test_write_failure_tells_failed_writes_from_other_runtime_errors(exc, reason):
    got = checkpoint.write_failure(exc)
    assert (got is None) if reason is None else (reason in got)
