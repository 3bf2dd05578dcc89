"""`cptkit prepare`: raw documents to curated, tokenized, packed shards with a manifest, per source.

Data flows one way: readers -> per-document curation steps -> tokenizer -> part folders (in
workers, in parallel) -> corpus-wide decisions (held-out routing, decontamination, dedup) ->
shards. Two stages, each safe to interrupt:

1. Parts. Each source is split into parts (files, byte ranges of large files, dataset shards;
   see parts.py) and every part is processed by a worker into `PREPARED/.work/NAME/part-NNNNN`
   (see curate.py). A part folder appears only when complete, so a rerun after a crash skips
   finished parts and redoes the rest. Parts stay while the source's inputs and per-document
   settings are unchanged, so changing, say, the eval set re-assembles without re-curating.
2. Assembly. Decisions that need the whole corpus are taken in the main process (splits.py),
   then each source is written in a temporary folder and renamed into place only once its
   manifest is written, so nothing that looks complete is ever partial.

Fingerprints decide what is redone: a source's part key covers its inputs (paths, sizes,
modification times), reader and step settings and the tokenizer; its final key adds the held-out
and shard settings and, when it has a corpus-wide step, the part keys of every other unit (eval
data and other sources change what decontamination and cross-source dedup remove).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cptkit.config import Config, SourceConfig
from cptkit.data import hfsource
from cptkit.data.assemble import step_table, write_unit
from cptkit.data.curate import PartTask, part_folder
from cptkit.data.early_tokenizer import EarlyStart, early_start
from cptkit.data.executors import run_tasks
from cptkit.data.lang import rules_off
from cptkit.data.manifest import FORMAT_VERSION, Manifest, read_manifest
from cptkit.data.parts import Part, part_target, plan_parts, source_bytes
from cptkit.data.paths import expand_paths
from cptkit.data.pipelines import CORPUS_WIDE, StepSpec
from cptkit.data.shards import token_dtype
from cptkit.data.splits import DocumentTable, assign_splits
from cptkit.data.steps import StepStats
from cptkit.data.tokenize import TokenizerSpec
from cptkit.data.tokenizer_stamp import Saved, reuse, save_stamped
from cptkit.data.wipeout import DropWarning, drop_warnings, empty_source_error, sample_ids
from cptkit.durable import fsync_dir, fsync_tree, write_json
from cptkit.errors import UserError
from cptkit.faults import crash_point
from cptkit.schema import to_dict

log = logging.getLogger(__name__)


@dataclass
class SourcePlan:
    """One prepared unit: a training source (maybe with a held-out split) or an eval set."""

    name: str  # folder name under the prepared dir
    role: str  # domain | general | eval
    source: SourceConfig
    heldout: bool  # route a slice of the documents to the eval split
    eval_only: bool = False  # every document goes to the eval split
    where: str = ""  # the source's dotted path in the config
    specs: list[StepSpec] = field(default_factory=list)


def source_plans(cfg: Config) -> list[SourcePlan]:
    """Every prepared unit of the (normalised) config, training sources first, in config order."""
    plans = []
    for role, sources in (("domain", cfg.domain_sources), ("general", cfg.general_sources)):
        heldout = role not in cfg.data.eval
        plans += [SourcePlan(s.name, role, s, heldout, where=s.where, specs=s.steps) for s in sources]
    plans += [
        SourcePlan(f"eval-{name}", "eval", src, heldout=False, eval_only=True, where=src.where, specs=src.steps)
        for name, src in cfg.data.eval.items()
    ]
    return plans


def save_tokenizer(cfg: Config, folder: Path) -> tuple[TokenizerSpec, str, int]:
    """Save the model's tokenizer where workers can load it; return spec, fingerprint, vocab size."""
    from cptkit.modeling import load_tokenizer

    tok = load_tokenizer(cfg.model)
    tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tok.save_pretrained(tmp)
    digest = hashlib.sha256()
    for f in sorted(tmp.iterdir()):
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    use_backend = (folder / "tokenizer.json").is_file() and getattr(tok, "is_fast", False)
    spec = TokenizerSpec(str(folder), start, tok.eos_token_id, use_backend)
    if use_backend:
        use_backend = _backend_agrees(spec, tok)
        spec = TokenizerSpec(str(folder), start, tok.eos_token_id, use_backend)
    return spec, digest.hexdigest(), len(tok)


def _backend_agrees(spec: TokenizerSpec, tok) -> bool:
    """The raw tokenizers backend must give the same ids as the HF tokenizer on sample text."""
    from cptkit.data.tokenize import make_encoder

    sample = ["Hello world.\n  def f(x):\n\treturn x  # ünïcode 漢字 1234", " leading space"]
    return make_encoder(spec)(sample) == tok(sample, add_special_tokens=False)["input_ids"]


def needs_signatures(plan: SourcePlan, decontaminating: bool) -> bool:
    """Whether workers compute exact hashes and MinHash band keys for this unit's documents:
    for a corpus-wide step of its own, or when it holds eval documents (an eval set, a held-out
    slice) and some source decontaminates against them. Otherwise nothing reads them."""
    own = any(s.name in CORPUS_WIDE for s in plan.specs)
    return own or (decontaminating and (plan.eval_only or plan.heldout))


def decontaminating(plans: list[SourcePlan]) -> bool:
    return any(s.name == "decontaminate" for p in plans for s in p.specs)


def _inputs(plan: SourcePlan) -> list[Path]:
    if plan.source.dataset is not None:
        return []
    files = expand_paths(plan.source.paths)
    if not files:
        raise UserError(f"{plan.where}.paths: {plan.source.paths} match no file")
    return files


def part_key(plan: SourcePlan, files: list[Path], tokenizer_hash: str, cfg: Config, signed: bool) -> str:
    """Everything the parts of this unit depend on."""
    if plan.source.dataset is not None:
        inputs = hfsource.identity(plan.source.dataset)
    else:
        inputs = [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    key = {
        "version": FORMAT_VERSION,
        "inputs": inputs,
        "source": {k: v for k, v in to_dict(plan.source).items() if k not in ("name", "pipeline")},
        "steps": [s.to_json() for s in plan.specs],
        "minhash": to_dict(cfg.data.minhash) if signed else None,
        "tokenizer": tokenizer_hash,
        "part_bytes": cfg.data.part_bytes,
        "max_document_bytes": cfg.data.max_document_bytes,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def final_key(plan: SourcePlan, keys: dict[str, str], cfg: Config) -> str:
    corpus_wide = any(s.name in CORPUS_WIDE for s in plan.specs)
    key = {
        "parts": keys[plan.name],
        "heldout": [plan.heldout, plan.eval_only, cfg.data.heldout_fraction, cfg.data.heldout_max_docs],
        "shard_tokens": cfg.data.shard_tokens,
        "warn_drop_fraction": cfg.data.warn_drop_fraction,
        "others": sorted(keys.items()) if corpus_wide else None,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def prepare(cfg: Config, force: bool = False) -> dict[str, Manifest]:
    """Prepare every source of the config; return {folder name: manifest}."""
    root = cfg.prepared_dir
    root.mkdir(parents=True, exist_ok=True)
    for stale in [*root.glob(".tmp-*"), *root.glob("tokenizer.tmp-*")]:
        shutil.rmtree(stale, ignore_errors=True)  # left by an interrupted prepare
    plans = source_plans(cfg)
    files = {p.name: _inputs(p) for p in plans}
    decon = decontaminating(plans)
    (spec, tok_hash, vocab), units = _tokenizer(cfg, plans, files, decon, force)
    keys = _part_keys(cfg, plans, files, tok_hash, decon)
    manifests: dict[str, Manifest] = {}
    todo = []
    for plan in plans:
        key = final_key(plan, keys, cfg)
        existing = read_manifest(root / plan.name)
        if existing and existing.fingerprint == key and not force:
            log.info("%s: shards up to date (%s tokens), reused", plan.name, f"{existing.tokens['total']:,}")
            manifests[plan.name] = existing
            continue
        if existing:
            log.info("%s: inputs, tokenizer or settings changed; preparing again", plan.name)
        todo.append((plan, key))
    if not todo:
        _refuse_empty(manifests)
        return manifests
    if units is None:
        # A corpus-wide step looks at every unit, so all of them need their parts.
        wide = any(any(s.name in CORPUS_WIDE for s in p.specs) for p, _ in todo)
        needed = plans if wide else [p for p, _ in todo]
        units = _run_parts(cfg, needed, files, keys, spec, token_dtype(vocab).name, force, decon)
    assign_splits(list(units.values()), cfg.data.heldout_fraction, cfg.data.heldout_max_docs)
    for plan, key in todo:
        manifests[plan.name] = _write(cfg, units[plan.name], units, files[plan.name], key, spec, vocab, root)
    _refuse_empty(manifests)
    return {p.name: manifests[p.name] for p in plans if p.name in manifests}


def _tokenizer(cfg: Config, plans: list[SourcePlan], files, decon: bool, force: bool
               ) -> tuple[Saved, dict[str, DocumentTable] | None]:
    """The saved tokenizer (reused while its stamp holds), and the units if the workers already
    made them: with nothing to reuse they start before transformers has loaded (early_tokenizer.py;
    a Ray worker may not see the model folder, so Ray waits for the load)."""
    root = cfg.prepared_dir
    folder = root / "tokenizer"

    def load() -> Saved:
        return save_stamped(cfg.model, folder, lambda: save_tokenizer(cfg, folder))

    saved = reuse(cfg.model, folder, force)
    if saved is not None or cfg.data.executor != "local":
        return saved or load(), None
    if not force and any(read_manifest(root / p.name) for p in plans):
        return load(), None  # shards may still be up to date: find out before tokenizing anything
    early = early_start(cfg.model, load)
    if early is None:
        return load(), None
    units = _run_early(cfg, plans, files, early, decon)
    return early.saved(), units


def _part_keys(cfg: Config, plans: list[SourcePlan], files, tok_hash: str, decon: bool) -> dict[str, str]:
    return {p.name: part_key(p, files[p.name], tok_hash, cfg, needs_signatures(p, decon)) for p in plans}


class _GuessFailed(Exception):
    """The tokenizer transformers saved is not the one the workers were started with."""


def _run_early(cfg: Config, plans: list[SourcePlan], files, early: EarlyStart, decon: bool
               ) -> dict[str, DocumentTable] | None:
    """Every plan's parts, made with the early guess (early_tokenizer.py); None when the guess
    does not hold, its parts discarded. The part markers get their keys at the first finished
    part, once the saved tokenizer confirms the guess, so a crash after it resumes by part."""
    work = cfg.prepared_dir / ".work"

    def confirm() -> None:
        if not early.holds():
            raise _GuessFailed
        keys = _part_keys(cfg, plans, files, early.saved()[1], decon)
        for plan in plans:
            marker = work / plan.name / "key.json"
            write_json(marker, {**json.loads(marker.read_text()), "key": keys[plan.name]})

    try:
        return _run_parts(cfg, plans, files, None, early.spec, token_dtype(early.vocab).name, True, decon, confirm)
    except _GuessFailed:
        log.info("the saved tokenizer differs from %s/tokenizer.json; tokenizing again", cfg.model.name_or_path)
        for plan in plans:
            shutil.rmtree(work / plan.name, ignore_errors=True)
        return None
    finally:
        early.join()  # on an error too: the thread's tokenizer folder is complete before prepare stops


def _guard(cfg: Config, plan: SourcePlan, folder: Path, steps: list[dict], train_docs: int, read: int
           ) -> tuple[list[DropWarning], str | None]:
    """Steps that dropped more than data.warn_drop_fraction of what reached them (logged), and
    for a training source left with no document, the reason prepare stops (see wipeout.py)."""
    stats = [StepStats.from_json(s) for s in steps]
    fraction = cfg.data.warn_drop_fraction
    empty = plan.role != "eval" and train_docs == 0
    need = {w.step for w in drop_warnings(plan.name, stats, {}, fraction)}
    if empty and stats:
        need.add(max(stats, key=lambda t: sum(t.dropped.values())).name)
    samples = sample_ids(folder / "dropped", steps=need) if need else {}
    warnings = drop_warnings(plan.name, stats, samples, fraction)
    for w in warnings:
        log.warning("%s (data.warn_drop_fraction %g)", w.message(), fraction)
    error = (empty_source_error(plan.name, plan.where, stats, samples, plan.source.language, train_docs, read)
             if empty else None)
    return warnings, error


def _refuse_empty(manifests: dict[str, Manifest]) -> None:
    """Stop (exit 2) when a training source was left with no document, freshly or as prepared before;
    its curated and dropped files stay in place for audit."""
    problems = [m.empty_error for m in manifests.values() if m.empty_error]
    if problems:
        raise UserError(f"prepare: {len(problems)} training source(s) left with no document:", problems)


def _run_parts(cfg: Config, plans: list[SourcePlan], files, keys: dict[str, str] | None, spec, dtype: str,
               force: bool, decon: bool, confirm: Callable[[], None] | None = None) -> dict[str, DocumentTable]:
    """Make sure every part of every plan is finished; return the loaded units. Without `keys`
    (an early start) the parts are planned afresh and `confirm()` runs at the first finished part."""
    work = cfg.prepared_dir / ".work"
    workers = cfg.data.num_workers or min(os.cpu_count() or 1, 16)
    threads = max((os.cpu_count() or 1) // workers, 1)
    tasks, units = [], {}
    for plan in plans:
        folder = work / plan.name
        key = keys[plan.name] if keys is not None else None
        parts = _part_list(cfg, plan, files[plan.name], key, folder, force, workers)
        signed = needs_signatures(plan, decon)
        minhash = cfg.data.minhash if signed else None
        for part in parts:
            if not part_folder(folder, part.index).is_dir():
                tasks.append(PartTask(part, plan.source, plan.name, plan.where, tuple(plan.specs), str(folder),
                                      spec, dtype, minhash, cfg.data.max_document_bytes, threads))
        units[plan.name] = DocumentTable(plan, plan.specs, [part_folder(folder, p.index) for p in parts], dtype, signed)
    total = sum(len(u.parts) for u in units.values())
    if tasks:
        log.info("curating %d of %d parts with %d %s worker(s)", len(tasks), total, workers, cfg.data.executor)
    started = time.time()
    for done, result in enumerate(run_tasks(tasks, cfg.data.executor, workers, cfg.data.ray_address), start=1):
        if confirm is not None and done == 1:
            confirm()
        log.info("part %d/%d done: %s documents read, %s kept (%.0f s)", done, len(tasks),
                 f"{result['read']:,}", f"{result['kept']:,}", time.time() - started)
        crash_point(f"prepare:parts:{done}")
    if confirm is not None and not tasks:
        confirm()
    for unit in units.values():
        unit.load()
    return units


def _part_list(cfg: Config, plan: SourcePlan, files, key: str | None, folder: Path, force: bool, workers: int
               ) -> list[Part]:
    """The unit's parts, planned once per part key; finished parts of an older key are removed.
    An early start, whose key is not known yet (None), comes with `force`: planned afresh.

    The plan depends on the worker count (enough parts for every worker), but it is saved with
    the key and reused as it is, so a prepare resumed with other workers redoes only the parts
    left unfinished; the output does not depend on the plan (see parts.py)."""
    marker = folder / "key.json"
    saved = json.loads(marker.read_text()) if marker.is_file() else None
    if force or saved is None or saved.get("key") != key:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        target = part_target(source_bytes(plan.source, files), workers, cfg.data.part_bytes)
        parts = plan_parts(plan.source, files, cfg.data.part_bytes, plan.where, target)
        write_json(marker, {"key": key, "parts": [p.to_json() for p in parts]})
        return parts
    for partial in folder.glob(".tmp-*"):
        shutil.rmtree(partial, ignore_errors=True)  # a part a crash left unfinished: redone
    return [Part.from_json(i, e) for i, e in enumerate(saved["parts"])]


def _write(cfg: Config, unit: DocumentTable, units, files, key, spec, vocab, root) -> Manifest:
    started = time.time()
    plan = unit.plan
    tmp = root / f".tmp-{plan.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    out = write_unit(unit, units, tmp, cfg.data.shard_tokens)
    steps, pii, bad, read = step_table(unit)
    counts = out["counts"]
    kept = counts["train"] + counts["eval"]
    warnings, empty = _guard(cfg, plan, tmp, steps, counts["train"], read)
    manifest = Manifest(
        name=plan.name, role=plan.role, fingerprint=key, content_hash=out["content_hash"],
        inputs=[str(f) for f in files] or [plan.source.dataset.path],
        pipeline=[s.to_json() for s in plan.specs],
        documents={"read": read, "kept": kept, "dropped": read - kept, **counts},
        steps=steps, pii=pii, bad_input=bad.to_json(),
        tokens={**out["tokens"], "total": out["tokens"]["train"] + out["tokens"]["eval"]},
        text_bytes=out["text_bytes"], dtype=unit.dtype, vocab_size=vocab, start_id=spec.start_id,
        eos_id=spec.eos_id, shards=out["shards"], wall_s=round(time.time() - started, 3),
        warnings=[w.to_json() for w in warnings], empty_error=empty,
        rules_off=[r.to_json() for r in rules_off(plan.specs, plan.source.language)],
    )
    manifest.write(tmp)
    fsync_tree(tmp)
    crash_point(f"prepare:write:{plan.name}")
    final = root / plan.name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(root)
    log.info(
        "%s: %s documents read, %s kept (%s train, %s held out), %s tokens, %s bad input records",
        plan.name, f"{read:,}", f"{kept:,}", f"{counts['train']:,}", f"{counts['eval']:,}",
        f"{manifest.tokens['total']:,}", f"{bad.total:,}",
    )
    return manifest
