"""Resumable states and exported model folders, written so that a crash never leaves a fake one.

Two different things live here (asking for both at once is an error at the CLI):
- the *starting weights* of a run are `model.name_or_path`, loaded by `modeling.load_model`;
- a *resumable state* `checkpoints/step-N/` holds everything to continue a run exactly:
  model weights (safetensors), optimizer state, RNG states, the data position and loop state.
  Weights and optimizer state are whole and keyed by parameter name, whatever the process count
  or sharding of the run that wrote them (`Dist.full_state`), so any run shape can resume them.

Every write goes to a hidden temporary folder; files are fsynced, a COMMITTED marker listing
every file and its size is written last, and the folder is renamed into place. A folder without
a valid marker is never resumed from.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from cptkit.durable import fsync_dir, fsync_file, replace_folder
from cptkit.errors import RunFailure, UserError
from cptkit.faults import crash_point

COMMIT = "COMMITTED"


def commit_folder(tmp: Path, final: Path, point: str) -> None:
    """Seal `tmp` with a marker and move it to `final` atomically (replacing an older one)."""
    files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
    for name in files:
        fsync_file(tmp / name)
    crash_point(f"{point}:written")
    marker = tmp / COMMIT
    marker.write_text(json.dumps({"files": files}, indent=1))
    fsync_file(marker)
    fsync_dir(tmp)
    crash_point(f"{point}:committed")
    replace_folder(tmp, final)


def is_committed(folder: Path) -> bool:
    marker = folder / COMMIT
    try:
        files = json.loads(marker.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return all((folder / n).is_file() and (folder / n).stat().st_size == size for n, size in files.items())


def save_state(
    run_dir: Path,
    step: int,
    weights: dict[str, torch.Tensor],
    optimizer_state: dict,
    state: dict,
    extra_tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write full state dicts (see `Dist.full_state`: the same format for any process count)."""
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-step-{step}-{os.getpid()}"
    final = root / f"step-{step}"
    with written_whole(tmp, final):
        save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp / "model.safetensors"))
        torch.save(optimizer_state, tmp / "optimizer.pt")
        save_file(rng_state(), str(tmp / "rng.safetensors"))
        if extra_tensors:
            save_file(extra_tensors, str(tmp / "extra.safetensors"))
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1))
        commit_folder(tmp, final, point=f"save:{step}")
    return final


@contextlib.contextmanager
def written_whole(tmp: Path, final: Path):
    """Run the writes of one folder; on a write failure (disk full) remove the partial folder.

    The earlier states and exports are untouched, so the run can be resumed from the newest
    one once there is space again. Any other error (a bug, e.g. tensors that share memory) also
    removes the partial folder, then propagates as it is: calling it a full disk would mislead.
    """
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield
    except (OSError, RuntimeError, SafetensorError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        reason = write_failure(exc)
        if reason is None:
            raise
        run_dir = final.parent.parent if final.parent.name == "checkpoints" else final.parent
        previous = latest_state(run_dir)
        intact = f"the newest complete checkpoint, {previous}, is intact" if previous else "nothing was overwritten"
        raise RunFailure(
            f"could not write {final} ({reason}); the partial copy was removed and {intact}. "
            "Free space (or fix what stopped the write), then continue with --resume."
        ) from None


# How torch.save reports a failed write (its zip writer, inline_container.cc), e.g. on a full disk.
_TORCH_WRITE_FAILED = ("file write failed", "unexpected pos", "PytorchStreamWriter failed writing")


def write_failure(exc: BaseException) -> str | None:
    """Why a write failed (the system's reason), when `exc` is a failed write; None otherwise.

    OSError is one by definition. torch.save raises RuntimeError for a failed write and for
    other faults alike, and safetensors its own error type for serialization faults and failed
    writes alike, so only their write messages count.
    """
    text = str(exc).strip()
    if isinstance(exc, OSError):
        return exc.strerror or text or type(exc).__name__
    if isinstance(exc, RuntimeError) and any(m in text for m in _TORCH_WRITE_FAILED):
        return f"write failed: {text.splitlines()[-1][:200]}"
    if isinstance(exc, SafetensorError) and "I/O error" in text:
        return text.split("I/O error:", 1)[1].strip()[:200]
    return None


def load_state(folder: Path) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """(model weights, optimizer state, loop state) of a committed state; restores the RNG."""
    if not is_committed(folder):
        raise UserError(f"{folder}: not a complete checkpoint (no valid {COMMIT} marker)")
    weights = load_file(str(folder / "model.safetensors"))
    # weights_only: the optimizer state is plain tensors, numbers and names; nothing else is unpickled.
    try:
        optimizer_state = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise UserError(f"{folder / 'optimizer.pt'}: not a plain optimizer state (refused: "
                        f"{(str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]})") from None
    set_rng_state(load_file(str(folder / "rng.safetensors")))
    return weights, optimizer_state, json.loads((folder / "trainer_state.json").read_text())


def step_of(folder: Path) -> int:
    return int(folder.name.split("-", 1)[1])


def committed_states(run_dir: Path) -> list[Path]:
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step-*") if p.name[5:].isdigit() and is_committed(p)]
    return sorted(found, key=step_of)


def latest_state(run_dir: Path) -> Path | None:
    states = committed_states(run_dir)
    return states[-1] if states else None


def prune(run_dir: Path, keep_last: int, keep_best: int, scores: dict[int, float],
          always: set[int] = frozenset()) -> list[Path]:
    """Delete states that are neither among the newest `keep_last`, the best `keep_best`, nor `always`."""
    states = committed_states(run_dir)
    keep = ({step_of(p) for p in states[-keep_last:]} if keep_last else set()) | set(always)
    scored = sorted((scores[step_of(p)], step_of(p)) for p in states if step_of(p) in scores)
    keep |= {step for _, step in scored[:keep_best]}
    removed = [p for p in states if step_of(p) not in keep]
    for p in removed:
        shutil.rmtree(p, ignore_errors=True)
    for tmp in (run_dir / "checkpoints").glob(".tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)  # left by a crash during a save
    return removed


def remove_partial_writes(run_dir: Path) -> None:
    """Delete what a killed process left half-written: temporary and replaced folders."""
    for folder in (run_dir, run_dir / "checkpoints"):
        if folder.is_dir():
            for p in folder.iterdir():
                if p.is_dir() and p.name.startswith((".tmp-", ".old-")):
                    shutil.rmtree(p, ignore_errors=True)


def export_model(
    model: torch.nn.Module, tokenizer, folder: Path, dtype: torch.dtype, weights: dict[str, torch.Tensor] | None = None
) -> None:
    """A plain Hugging Face model folder (config, safetensors weights, tokenizer), atomically.

    `weights`: the full state dict when the model's own is sharded (see `Dist.full_state`).
    """
    tmp = folder.with_name(f".tmp-{folder.name}-{os.getpid()}")
    weights = model.state_dict() if weights is None else weights
    state = {k: v.detach().to(dtype) if v.is_floating_point() else v for k, v in weights.items()}
    with written_whole(tmp, folder):
        model.save_pretrained(tmp, state_dict=state, safe_serialization=True)
        crash_point(f"export:{folder.name}")
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        config_path = tmp / "config.json"
        config = json.loads(config_path.read_text())
        config["dtype"] = str(dtype).replace("torch.", "")
        config["use_cache"] = True  # the exported model is for generation as much as for training
        config_path.write_text(json.dumps(config, indent=2))
        commit_folder(tmp, folder, point=f"export:{folder.name}")


def rng_state() -> dict[str, torch.Tensor]:
    out = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"torch_cuda_{i}"] = s
    return out


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch_cpu"])
    cuda = [state[k] for k in sorted(state) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
