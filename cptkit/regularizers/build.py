"""Build the run's regularizer from `regularizer.*` (see the package docstring)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from cptkit.regularizers.ewc import AnchorPenalty
from cptkit.regularizers.kl import KLToReference

if TYPE_CHECKING:
    from cptkit.config import Config
    from cptkit.distributed import Dist

log = logging.getLogger("cptkit")

FISHER_FILE = "fisher.safetensors"


@dataclass
class Regularizer:
    kind: str = "none"
    kl: KLToReference | None = None
    anchor: AnchorPenalty | None = None
    weight: float = 0.0
    fisher: dict[str, torch.Tensor] | None = None  # ewc, until anchor_to

    def logged_term(self, penalty: float | None, kl_mean: float | None) -> float | None:
        """The regularizer's term as added to the objective this step (None: not computed)."""
        if self.anchor is not None:
            return penalty
        if self.kl is not None:
            return None if kl_mean is None else self.kl.weight * kl_mean
        return 0.0

    def anchor_to(self, lm: torch.nn.Module) -> None:
        """Take the anchors from `lm`'s parameters as they will be trained (after wrapping)."""
        if self.kind in ("ewc", "l2sp"):
            self.anchor = AnchorPenalty(dict(lm.named_parameters()), self.weight, self.fisher)
            self.fisher = None


def build_regularizer(cfg: Config, lm: torch.nn.Module, dist: Dist, run_dir: Path, general_windows: list,
                      resuming: bool, chunk: int | None, peft_model=None) -> Regularizer:
    """The run's regularizer (cfg: cptkit.config.Config); `lm` is the unwrapped student on its device.

    EWC and L2-SP get their anchors later, from `Regularizer.anchor_to` on the wrapped model. Under
    an adapter method (`peft_model`) the KL reference is the training model with its adapters off,
    not a second copy, and the Fisher covers the trainable parameters only."""
    r = cfg.regularizer
    if r.kind == "kl":
        from cptkit.modeling import DTYPES, load_model
        from cptkit.train.attention import install_document_mask, uses_document_mask

        if peft_model is not None:
            from cptkit.peft.training import kl_reference

            reference = kl_reference(peft_model, cfg, dist)  # the same model, adapters off: its hooks too
        else:
            reference = load_model(cfg.model, master_dtype=DTYPES[r.reference_dtype]).to(dist.device)
            if uses_document_mask(lm):  # the student needs cptkit's per-document mask: so does its reference
                install_document_mask(reference)
        kl = KLToReference(reference, r.weight, r.kl_on, r.kl_every, reverse=r.kl_direction == "reverse")
        kl.chunked = bool(chunk)
        log.info("regularizer kl: frozen %s reference (%s), %s KL, weight %g", r.reference_dtype,
                 cfg.model.name_or_path, "reverse" if kl.reverse else "forward", r.weight)
        return Regularizer("kl", kl=kl)
    if r.kind == "l2sp":
        return Regularizer("l2sp", weight=r.weight)
    if r.kind == "ewc":
        fisher = _fisher(cfg, lm, dist, run_dir, general_windows, resuming, chunk, trainable_only=peft_model is not None)
        return Regularizer("ewc", weight=r.weight, fisher=fisher)
    return Regularizer()


def _fisher(cfg: Config, lm: torch.nn.Module, dist: Dist, run_dir: Path, general_windows: list, resuming: bool,
            chunk: int | None, trainable_only: bool = False) -> dict:
    from cptkit.regularizers.fisher import estimate_fisher, load_fisher, save_fisher

    r = cfg.regularizer
    own = run_dir / FISHER_FILE
    path = Path(r.fisher_path).expanduser() if r.fisher_path else (own if resuming and own.is_file() else None)
    if path is not None:
        fisher, meta = load_fisher(path, lm)
        log.info("regularizer ewc: Fisher from %s (%s)", path, meta)
        return fisher
    fisher, meta = estimate_fisher(lm, general_windows, r.fisher_tokens, r.fisher_kind, cfg.train.seed,
                                   dist, dist.autocast, chunk, trainable_only=trainable_only)
    meta = {**meta, "model": cfg.model.name_or_path}
    if meta["tokens"] < r.fisher_tokens:
        log.info("regularizer ewc: data.general holds %s training tokens, fewer than fisher_tokens %s; "
                 "the Fisher is normalised by the %s seen", f"{meta['tokens']:,}", f"{r.fisher_tokens:,}",
                 f"{meta['tokens']:,}")
    if dist.is_main:
        save_fisher(own, fisher, meta)
    log.info("regularizer ewc: %s Fisher from %s tokens in %s sequences, saved to %s", r.fisher_kind,
             f"{meta['tokens']:,}", meta["sequences"], own)
    return fisher  # AnchorPenalty keeps the entries of trainable weights only

