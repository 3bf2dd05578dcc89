"""Config rules of regularizer.* (kept light: config validation imports this without torch)."""

from __future__ import annotations


def check_regularizer(cfg) -> list[str]:
    """Problems of regularizer.* (cfg: cptkit.config.Config), each with its dotted path."""
    p: list[str] = []
    r = cfg.regularizer
    if r.kl_every < 1:
        p.append(f"regularizer.kl_every: must be >= 1, got {r.kl_every}")
    if r.fisher_tokens <= 0:
        p.append(f"regularizer.fisher_tokens: must be > 0, got {r.fisher_tokens}")
    kl_options = r.kl_on != "all" or r.kl_every != 1 or r.kl_direction != "forward" or r.reference_dtype != "float32"
    if r.kind != "kl" and kl_options:
        p.append(
            "regularizer.kl_on / kl_every / kl_direction / reference_dtype: only used with "
            f"regularizer.kind kl, not {r.kind!r}"
        )
    if r.kind != "ewc" and r.fisher_path is not None:
        p.append(f"regularizer.fisher_path: only used with regularizer.kind ewc, not {r.kind!r}")
    if r.kind == "kl" and r.kl_on == "replay" and not cfg.replay_in_use:
        p.append("regularizer.kl_on: replay needs replayed data.general rows (mix.replay_ratio > 0 or a curriculum)")
    if r.kind == "ewc" and r.fisher_path is None and not cfg.general_sources:
        p.append("regularizer.kind: ewc estimates its Fisher on data.general; give data.general or regularizer.fisher_path")
    return p
