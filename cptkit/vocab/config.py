"""Settings of `cptkit vocab`, declared like every config section (a `vocab:` section once it joins
the run config; until then the command line sets them, with these defaults and ranges)."""

from __future__ import annotations

from dataclasses import dataclass

from cptkit.schema import option


@dataclass
class VocabConfig:
    pad_to_multiple_of: int = option(
        64, ge=1,
        help="Embedding rows are rounded up to a multiple of this (tensor-core friendly shapes); the "
        "rows past the new tokens are never produced by the tokenizer.",
    )
    candidates: int | None = option(
        None, ge=1,
        help="Tokens in the domain tokenizer that proposes the candidates (trained on the domain "
        "sample). Default: 3 times the tokens asked for, at least 8,000.",
    )
    min_count: int = option(
        3, ge=1, help="A new token must save at least this many tokens on the domain sample."
    )
    max_general_ratio: float = option(
        0.25, ge=0,
        help="Refuse a token whose uses per byte of general text exceed this times its uses per byte of "
        "domain text (new tokens should be rare in general text, so general text keeps its tokens). "
        "Without general text nothing is refused.",
    )
    sample_bytes: int = option(
        32 * 2**20, ge=1,
        help="At most about this many bytes of each role's curated training text are read to learn "
        "and rank the new tokens (a hash of the document id chooses them).",
    )
    rescale_norm: bool = option(
        False,
        help="Scale each new embedding row to the mean L2 norm of the existing rows (a mean of pieces "
        "is shorter than they are).",
    )

    def domain_tokenizer_size(self, add: int) -> int:
        return self.candidates or max(3 * add, 8000)
