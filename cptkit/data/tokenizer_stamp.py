"""The tokenizer folder a prepare saved, reused while nothing that made it has changed.

`prepare` saves the model's tokenizer (loaded with transformers) into PREPARED/tokenizer for
the workers, and its fingerprint is part of every part key. Loading it costs seconds before
any document is read (importing torch and transformers, building the tokenizer), and every
`cptkit train` runs prepare to check its shards. So a stamp, PREPARED/.work/tokenizer.stamp.json,
records what the folder was made from and what it gave: for a local model folder, the path, revision and
trust_remote_code setting, the name, size and modification time of every file in it except
weights, and the transformers and tokenizers versions; then the worker spec, fingerprint and
vocabulary size. When the stamp still describes the model folder and the saved folder's files
still hash to the recorded fingerprint, they are used as they are, without importing
transformers. A hub id is always loaded (its files live in a cache that can change under the
same name), and `prepare --force` always loads it again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from cptkit.data.tokenize import TokenizerSpec
from cptkit.durable import write_json

WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack", ".onnx")
Saved = tuple[TokenizerSpec, str, int]  # worker spec, fingerprint, vocabulary size


def folder_digest(folder: Path) -> str:
    """The fingerprint of a saved tokenizer folder: every file's name and bytes, in name order."""
    digest = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()


def source_identity(model) -> dict | None:
    """What loading the tokenizer of `model` (a ModelConfig) depends on; None for a hub id."""
    path = Path(model.name_or_path)
    if not path.is_dir():
        return None
    files = sorted([f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in path.iterdir()
                   if f.is_file() and not f.name.endswith(WEIGHTS))
    versions = {}
    for package in ("transformers", "tokenizers"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"path": str(path.resolve()), "revision": model.revision, "trust_remote_code": model.trust_remote_code,
            "files": files, "versions": versions}


def stamp_path(folder: Path) -> Path:
    """PREPARED/.work/tokenizer.stamp.json: beside the parts, out of the prepared folder's listing."""
    return folder.parent / ".work" / (folder.name + ".stamp.json")


def reuse_or_save(model, folder: Path, force: bool, save: Callable[[], Saved]) -> Saved:
    """The saved tokenizer of `model` in `folder`: the stamped one if still valid, else `save()`'s."""
    return reuse(model, folder, force) or save_stamped(model, folder, save)


def reuse(model, folder: Path, force: bool) -> Saved | None:
    """The stamped tokenizer folder of `model`, if the stamp still describes it; else None."""
    identity = source_identity(model)
    stamp = stamp_path(folder)
    if identity is None or force or not stamp.is_file() or not folder.is_dir():
        return None
    try:
        saved = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return None
    if saved and saved.get("identity") == identity and folder_digest(folder) == saved.get("digest"):
        return TokenizerSpec(str(folder), **saved["spec"]), saved["digest"], int(saved["vocab"])
    return None


def save_stamped(model, folder: Path, save: Callable[[], Saved]) -> Saved:
    """`save()` the tokenizer of `model` into `folder`, and stamp it when `model` is a local folder."""
    stamp = stamp_path(folder)
    stamp.unlink(missing_ok=True)  # the folder is about to be replaced: no stamp may outlive it
    spec, digest, vocab = save()
    identity = source_identity(model)
    if identity is not None:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        write_json(stamp, {"identity": identity, "digest": digest, "vocab": vocab,
                           "spec": {"start_id": spec.start_id, "eos_id": spec.eos_id, "use_backend": spec.use_backend}})
    return spec, digest, vocab
