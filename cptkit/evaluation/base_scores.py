"""The base model's step-0 scores, kept for the next run that would compute the same ones.

A sweep from one starting model (replay ratios, KL weights, learning rates, one run after
another on the same prepared data) scores the same untouched weights on the same held-out
windows and probes at step 0 every time: on a 7B model with the default 2M eval tokens per set
that is minutes per run. With `eval.reuse_base` (the default) the first run writes its step-0
perplexities, bits per byte and probe results to PREPARED_DIR/base-scores/KEY.json, and a later
fresh run whose KEY matches reads them instead of scoring again. KEY is a sha256 over
everything the scores depend on:

- every parameter and buffer of the model as built for step 0, every element (the bytes on the
  CPU, a checksum on an accelerator: another checkpoint, an expanded vocabulary, LoRA adapters
  with another seed, a quantised base and a cast all differ);
- the eval windows' tokens, document starts and byte counts;
- the probes (prompts, answers, distractors) and the tokenizer (its whole definition);
- the settings: the `eval` section but `every_steps`, `model`, `train.peft`, `data.seq_len`,
  `train.micro_batch_size`, `train.document_masking`, `train.loss_chunk_tokens` and the loss
  chunk in use, the attention kernel, the device type, the process count and
  `train.distributed`;
- cptkit's own source and the torch and transformers versions.

A reused record is equal to a computed one to the last bit (JSON keeps floats exactly). A run
that resumes never reuses (its step 0 is behind it); a file that cannot be read is scored again
and rewritten; a folder that cannot be written costs a warning, not the run.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch

import cptkit
from cptkit.durable import json_safe, write_json
from cptkit.evaluation.perplexity import EvalSet
from cptkit.evaluation.probe_sets import ProbeSet
from cptkit.schema import to_dict

log = logging.getLogger("cptkit")

FOLDER = "base-scores"


def base_key(cfg, lm: torch.nn.Module, tokenizer, eval_sets: list[EvalSet], probe_sets: list[ProbeSet],
             chunk: int | None, dist) -> str:
    """The sha256 (hex) naming the step-0 record of this model, data and settings."""
    digest = hashlib.sha256()
    digest.update(json.dumps(_settings(cfg, lm, chunk, dist), sort_keys=True, default=str).encode())
    _weights(digest, lm)
    _windows(digest, eval_sets)
    digest.update(json.dumps([to_dict(ps) for ps in probe_sets], sort_keys=True).encode())
    _tokenizer(digest, tokenizer)
    _sources(digest)
    return digest.hexdigest()


def _settings(cfg, lm, chunk, dist) -> dict:
    import transformers

    evaluation = {k: v for k, v in to_dict(cfg.eval).items() if k != "every_steps"}
    return {
        "eval": evaluation, "model": to_dict(cfg.model), "peft": to_dict(cfg.train.peft),
        "seq_len": cfg.data.seq_len, "micro_batch_size": cfg.train.micro_batch_size,
        "document_masking": cfg.train.document_masking, "loss_chunk_tokens": cfg.train.loss_chunk_tokens,
        "chunk": chunk, "attention": getattr(lm.config, "_attn_implementation", None),
        "device": dist.device.type, "world_size": dist.world_size, "distributed": to_dict(cfg.train.distributed),
        "torch": torch.__version__, "transformers": transformers.__version__,
    }


def _weights(digest, lm: torch.nn.Module) -> None:
    """Every element: the bytes themselves on the CPU; on an accelerator a checksum computed
    there (a 7B model's 14 GB would take tens of seconds to copy out and hash)."""
    multipliers: dict[torch.device, torch.Tensor] = {}
    for name, tensor in list(lm.named_parameters()) + list(lm.named_buffers()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        flat = tensor.detach().reshape(-1)
        if flat.device.type == "cpu":
            digest.update(flat.contiguous().view(torch.uint8).numpy().data)
            continue
        if flat.device not in multipliers:
            multipliers[flat.device] = _multipliers().to(flat.device)
        digest.update(checksum(flat, multipliers[flat.device]).tobytes())


def checksum(tensor: torch.Tensor, multipliers: torch.Tensor) -> np.ndarray:
    """Two 64-bit sums over every element's bits read as an integer, each element times a fixed
    odd multiplier of its position, computed where the tensor lives. Any one changed element
    changes both sums; integer sums wrap, so they do not depend on the order of addition."""
    ints = tensor.detach().reshape(-1).view(_INTS[tensor.element_size()])
    sums = torch.zeros(2, dtype=torch.int64, device=tensor.device)
    for i, start in enumerate(range(0, ints.numel(), CHUNK)):
        part = ints[start : start + CHUNK].to(torch.int64)
        weights = multipliers[:, : part.numel()]
        sums += (part * weights).sum(dim=1) * (2 * i + 1)
    return sums.cpu().numpy()


CHUNK = 1 << 22
_INTS = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _multipliers() -> torch.Tensor:
    """[2, CHUNK] fixed odd 64-bit integers (the same on every machine and run)."""
    drawn = torch.randint(-(1 << 62), 1 << 62, (2, CHUNK), generator=torch.Generator().manual_seed(0))
    return torch.bitwise_or(drawn, 1)


def _windows(digest, eval_sets: list[EvalSet]) -> None:
    for es in eval_sets:
        digest.update(f"{es.name}:{es.n_bytes}:{es.n_windows};".encode())
        shards: dict[int, list] = {}
        for shard, start, end in es.windows:
            seen = shards.setdefault(id(shard), [shard, 0])
            seen[1] = max(seen[1], end)
            digest.update(np.array([len(shards), start, end], dtype=np.int64).tobytes())
        for shard, end in shards.values():
            k = int(np.searchsorted(shard.starts, end, side="left"))
            for array in (shard.tokens[:end], shard.starts[:k], shard.doc_bytes[:k]):
                digest.update(np.ascontiguousarray(array).tobytes())


def _tokenizer(digest, tokenizer) -> None:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    definition = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    digest.update(f"{type(tokenizer).__name__}:{tokenizer.special_tokens_map};".encode())
    digest.update(definition.encode())


def _sources(digest) -> None:
    package = Path(cptkit.__file__).parent
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())


def load(folder: Path, key: str) -> tuple[dict, list[dict]] | None:
    """(metrics, probe rows) from an earlier run's record, or None when there is none to trust."""
    path = folder / FOLDER / f"{key}.json"
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        metrics, rows = saved["metrics"], saved["probe_rows"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("step 0: %s cannot be read (%s); scoring the base model again", path, err)
        return None
    log.info("step 0: the base model's scores reused from %s (same weights, eval data, probes and "
             "settings; eval.reuse_base: false scores it again)", path)
    return metrics, rows


def store(folder: Path, key: str, metrics: dict, rows: list[dict], run_dir: Path) -> None:
    """Keep the step-0 record for later runs; skipped when a value is not finite (JSON keeps
    those as null, so a read would not give them back)."""
    record = {"run": str(run_dir), "metrics": metrics, "probe_rows": rows}
    if json_safe(record) != record:  # NaN is not equal to itself either
        return
    try:
        write_json(folder / FOLDER / f"{key}.json", record)
    except OSError as err:
        log.warning("step 0: the base model's scores could not be kept in %s (%s); the next run scores "
                    "it again", folder / FOLDER, err)
