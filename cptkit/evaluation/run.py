"""`cptkit eval CONFIG --checkpoint DIR [--harness TASKS]`: score a saved model.

DIR is either a Hugging Face model folder (`best/`, `final/`, any local model) or a resumable
state (`checkpoints/step-N/`), whose weights are loaded into the config's model. It is scored on
the run's eval sets (perplexity, bits per byte), on the probe sets of `eval.probes`, and with
`--harness` on lm-evaluation-harness tasks. Results are printed and written to
OUTPUT_DIR/evals/<DIR name>.json; harness results are also merged into OUTPUT_DIR/summary.json
under `harness.<DIR name>`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from cptkit import checkpoint
from cptkit.config import Config
from cptkit.distributed import setup
from cptkit.durable import write_json
from cptkit.errors import UserError
from cptkit.evaluation.perplexity import evaluate
from cptkit.evaluation.probes import load_probe_sets, score_probe_sets
from cptkit.evaluation.summary import merge_harness
from cptkit.modeling import load_model, load_tokenizer
from cptkit.train.checks import chunked_head_is_exact
from cptkit.train.losses import CausalLMLoss

log = logging.getLogger("cptkit")


def load_for_eval(cfg: Config, folder: Path, device):
    if (folder / "config.json").is_file():
        return load_model(dataclasses.replace(cfg.model, name_or_path=str(folder)))
    if checkpoint.is_committed(folder) and (folder / "model.safetensors").is_file():
        if cfg.train.peft.active:  # an adapter run's state: its trainable weights over the base
            from cptkit.peft.training import adapted_from_state

            return adapted_from_state(cfg, folder, device)

        model = load_model(cfg.model)
        load_state_weights(model, folder / "model.safetensors", cfg.model.name_or_path)
        return model
    raise UserError(f"--checkpoint {folder}: neither a model folder (config.json) nor a complete checkpoint")


def load_state_weights(model, path: Path, model_name: str) -> None:
    """Load a resumable state's weights into `model`, every key: a state that does not fit the
    config's model (another size or architecture) is refused, never scored half-loaded."""
    from safetensors.torch import load_model as load_weights

    try:
        # strict=False only to collect the differences and name them; tied weights count once.
        missing, unexpected = load_weights(model, str(path), strict=False)
    except RuntimeError as exc:  # shapes that differ
        detail = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), str(exc)[:300])
        raise UserError(f"--checkpoint {path}: its weights do not fit model.name_or_path {model_name!r} ({detail})") from None
    if missing or unexpected:
        raise UserError(
            f"--checkpoint {path}: its weights do not fit model.name_or_path {model_name!r} "
            f"(missing {sorted(missing)[:3]}{' ...' if len(missing) > 3 else ''}, "
            f"unexpected {sorted(unexpected)[:3]}{' ...' if len(unexpected) > 3 else ''}); "
            "give the config the state was trained with"
        )


def tokenizer_for(cfg: Config, folder: Path):
    """The folder's own tokenizer when it has one (an exported model), else the config's."""
    if (folder / "tokenizer_config.json").is_file():
        return load_tokenizer(dataclasses.replace(cfg.model, name_or_path=str(folder)))
    return load_tokenizer(cfg.model)


def evaluate_checkpoint(cfg: Config, folder: Path, harness: str | None = None, harness_limit: int | None = None) -> dict:
    from cptkit.train.setup import eval_sets, prepared_data

    if not folder.is_dir():
        raise UserError(f"--checkpoint {folder}: no such folder")
    if harness is not None:
        from cptkit.evaluation.harness import parse_tasks

        parse_tasks(harness)  # a wrong task path stops here, before data and model are loaded
    probe_sets = load_probe_sets(cfg.eval.probes)
    dist = setup(cfg.model.dtype)
    manifests = prepared_data(cfg, dist)
    lm = load_for_eval(cfg, folder, dist.device).to(dist.device)
    chunk = cfg.train.loss_chunk_tokens if cfg.train.loss_chunk_tokens and chunked_head_is_exact(lm, dist.device) else None
    started = time.time()
    results = evaluate(
        CausalLMLoss(lm, chunk).eval(),
        eval_sets(cfg, manifests),
        seq_len=cfg.data.seq_len,
        micro_batch_size=cfg.eval.micro_batch_size or cfg.train.micro_batch_size,
        device=dist.device,
        autocast=dist.autocast,
        all_reduce=dist.all_reduce_sum,
        rank=dist.rank,
        world_size=dist.world_size,
        document_masking=cfg.train.document_masking,
    )
    tokenizer = tokenizer_for(cfg, folder)
    probe_rows: list[dict] = []
    if probe_sets:
        scores, probe_rows = score_probe_sets(lm, tokenizer, probe_sets, dist.device, dist.autocast,
                                              chunk=chunk, batch_size=cfg.eval.probe_batch_size,
                                              new_tokens=cfg.eval.probe_new_tokens)
        results.update(scores)
    results = {"checkpoint": str(folder), **results, "wall_s": round(time.time() - started, 2)}
    if harness is not None and dist.is_main:
        from cptkit.evaluation.harness import run_harness

        results["harness"] = run_harness(lm, tokenizer, harness, max_length=cfg.data.seq_len,
                                         batch_size=cfg.eval.micro_batch_size or cfg.train.micro_batch_size,
                                         device=dist.device, limit=harness_limit)
        log.info("harness results merged into %s", merge_harness(Path(cfg.output_dir), folder.name, results["harness"]))
    if probe_rows:
        results["probe_results"] = probe_rows
    if dist.is_main:
        out = Path(cfg.output_dir) / "evals" / f"{folder.name}.json"
        write_json(out, results)
        log.info("wrote %s", out)
    return results
