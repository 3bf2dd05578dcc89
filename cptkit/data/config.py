"""The `data` section of the run config: sources (files or Hugging Face datasets), how they are
read, curated and packed. Part of `cptkit.config.Config`, which re-exports these classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from cptkit.schema import derived, option


@dataclass
class DatasetConfig:
    path: str = option(
        help="A folder written by Hugging Face datasets' save_to_disk (memory-mapped), or what "
        "load_dataset takes: a hub name or a local folder of data files."
    )
    name: str | None = option(None, help="The dataset's configuration name (load_dataset's `name`).")
    data_dir: str | None = option(None, help="A sub-folder of the dataset to read (load_dataset's `data_dir`).")
    split: str = option("train", help="The split to read.")
    streaming: bool = option(True, help="Stream a load_dataset source instead of downloading and converting it first.")
    revision: str | None = option(None, help="Hub revision; pin one, since a hub dataset's content can change.")


@dataclass
class SourceConfig:
    paths: list[str] | str = option(
        default_factory=list,
        help="Files, folders (read recursively) or globs. Formats by extension: .jsonl .json "
        ".parquet .csv .txt/.md, each optionally .gz or .zst. Give paths or dataset, not both.",
    )
    dataset: DatasetConfig | None = option(None, help="A Hugging Face dataset instead of files.")
    text_field: str = option("text", help="The field that holds the document text (JSONL/JSON/Parquet/CSV/dataset).")
    id_field: str | None = option(
        None, help="A field that holds a document id; default: 'file:line' of the document."
    )
    format: Literal["auto", "jsonl", "json", "parquet", "csv", "text"] = option(
        "auto", help="Input format; auto decides by file extension (.txt and unknown: one document per file)."
    )
    pipeline: str | list[Any] = option(
        "none",
        help="Curation before tokenizing: a recipe (none, web, medical, code) or a list of steps, each a "
        "name or {name: {parameters}} (see cptkit/data/pipelines.py).",
    )
    name: str | None = option(None, help="A name for this source in logs and the manifest.")
    language: list[str] | str = option(
        default_factory=lambda: ["en"],
        help="ISO 639-1 code of the source's language (ISO 639-3 where a language has none), or a list "
        "for a mixed source. Every language-dependent curation step reads it (language id, word "
        "segmentation, stop words and thresholds, PII patterns), as does `cptkit vocab`; a step's own "
        "parameters still win.",
    )

    # Filled by the config normalisation (cptkit.config.normalise); not YAML keys.
    where: str = derived("The source's dotted path in the config, for messages.", default_factory=str)
    steps: list = derived("The pipeline parsed once: a list of cptkit.data.pipelines.StepSpec.")


@dataclass
class MinHashConfig:
    ngram: int = option(5, gt=0, help="Words per shingle.")
    bands: int = option(14, gt=0, help="LSH bands; documents sharing one band's rows are near duplicates.")
    rows: int = option(8, gt=0, help="Signature rows per band (bands x rows permutations; 14 x 8: about 0.72 Jaccard).")
    seed: int = option(1, help="Seed of the hash permutations (signatures of different seeds never match).")


@dataclass
class DataConfig:
    domain: list[SourceConfig] | SourceConfig = option(
        help="The domain corpus to continue pre-training on: one source or a list of sources."
    )
    general: list[SourceConfig] | SourceConfig | None = option(
        default_factory=list, help="General text replayed against forgetting (see mix.replay_ratio); also evaluated."
    )
    eval: dict[str, SourceConfig] = option(
        default_factory=dict,
        help="Named held-out eval sets, e.g. {domain: {...}, general: {...}}. A role (domain, "
        "general) without one gets a held-out slice of its own data (data.heldout_fraction).",
    )
    seq_len: int = option(2048, gt=0, help="Tokens per training sequence (documents are packed, never padded).")
    heldout_fraction: float = option(
        0.01, ge=0, lt=1, help="Share of each role's documents set aside (never trained on) when data.eval lacks that role."
    )
    heldout_max_docs: int = option(1000, ge=0, help="At most this many held-out documents per role.")
    prepared_dir: str | None = option(
        None, help="Where tokenized shards go; default OUTPUT_DIR/data. Shards are reused while inputs are unchanged."
    )
    num_workers: int = option(0, ge=0, help="Tokenizer worker processes; 0 means one per CPU core (at most 16).")
    shard_tokens: int = option(2**28, gt=0, help="Tokens per shard file before a new one starts.")
    minhash: MinHashConfig = option(
        default_factory=MinHashConfig, help="MinHash LSH shape for dedup and decontaminate steps (one for the run)."
    )
    part_bytes: int = option(
        64 * 2**20, gt=0, help="Uncompressed JSONL and Parquet files larger than this are split into parts processed "
        "in parallel; a part is also the unit that a resumed prepare skips when finished."
    )
    max_document_bytes: int = option(
        16 * 2**20, gt=0, help="Longer records (a line, a file, a field) are counted as bad input "
        "(document_too_large) without being held in memory."
    )
    warn_drop_fraction: float = option(
        0.5, ge=0, le=1, help="Warn when a curation step drops more than this share of the documents that "
        "reach it (the warning names the step, its top reasons and sample ids; the manifest and the report "
        "record it). A training source left with no document stops prepare with exit status 2.",
    )
    executor: Literal["local", "ray"] = option(
        "local", help="local: worker processes on this machine. ray: tasks on a Ray cluster (pip install "
        "cptkit[ray]); every node must see prepared_dir and the inputs at the same paths."
    )
    ray_address: str | None = option(None, help="Ray cluster address for executor ray; default: start a local Ray.")
