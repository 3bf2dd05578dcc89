"""`cptkit sweep`: proxy runs over replay ratios x token counts, the D-CPT law fitted to them,
and the replay ratio to use under a forgetting budget.

Each proxy is a real `cptkit train` run (in this process, one after another) of the user's
config with `mix.replay_ratio` and `train.max_tokens` set, in its own folder under the sweep
folder; all of them share one prepared-data folder (the shards do not depend on the mix), so the
corpus is tokenized once. A run whose folder holds summary.json is finished and is read, not run
again; one with checkpoints but no summary is resumed. Each run's final `domain_loss` and
`general_loss` (ln perplexity) and its step-0 (base model) losses feed the fits in mixlaw.py.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cptkit import mixlaw
from cptkit.config import load_config, parse_overrides, set_dotted
from cptkit.durable import write_json
from cptkit.errors import UserError

log = logging.getLogger("cptkit")

# Below this held-out R^2 a fit does not predict unseen ratios well enough to choose one by it.
RELIABLE_R2 = 0.9


@dataclass
class SweepOptions:
    replay: list[float]  # replay ratios to run
    tokens: list[int]  # training tokens per run
    budget: float  # largest allowed relative rise of general perplexity
    out: Path  # the sweep folder


def parse_numbers(text: str, option: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{option}: expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise UserError(f"{option}: give at least one number")
    return values


def check_options(o: SweepOptions, has_general: bool) -> None:
    problems = []
    bad = [r for r in o.replay if not 0 <= r < 1]
    if bad:
        problems.append(f"--replay: ratios must lie in [0, 1), got {bad}")
    if len(set(o.replay)) < 2:
        problems.append("--replay: give at least two different ratios")
    if any(t <= 0 for t in o.tokens) or len(set(o.tokens)) != len(o.tokens):
        problems.append(f"--tokens: positive and different token counts, got {o.tokens}")
    if not o.budget >= 0:
        problems.append(f"--budget: must be >= 0, got {o.budget}")
    if not has_general:
        problems.append("data.general: the sweep varies replay of general text, so the config needs data.general")
    if problems:
        raise UserError("sweep: bad options:", problems)


def run_name(replay: float, tokens: int) -> str:
    return f"replay-{replay:g}_tokens-{tokens}"


def proxy_config(raw: dict, overrides: list[str], folder: Path, shared_data: Path | None, replay: float, tokens: int):
    """The user's config (with its --set overrides) turned into one proxy run's."""
    data = _with(raw, overrides)
    set_dotted(data, "mix.replay_ratio", replay)
    set_dotted(data, "mix.curriculum", None)
    set_dotted(data, "train.max_tokens", tokens)
    set_dotted(data, "train.max_steps", None)
    set_dotted(data, "output_dir", str(folder))
    if shared_data is not None:
        set_dotted(data, "data.prepared_dir", str(shared_data))
    return load_config(None, raw=data)


def run_proxies(raw: dict, overrides: list[str], o: SweepOptions) -> list[dict]:
    """Run (or read) every proxy; one record per run."""
    from cptkit.train.loop import train

    base = load_config(None, raw=_with(raw, overrides))
    shared = None if base.data.prepared_dir else o.out / "data"
    records = []
    for tokens in sorted(o.tokens):
        for replay in sorted(set(o.replay)):
            folder = o.out / run_name(replay, tokens)
            summary_path = folder / "summary.json"
            if summary_path.is_file():
                log.info("sweep: %s finished earlier; reading its summary", folder.name)
                summary, reused = json.loads(summary_path.read_text()), True
            else:
                cfg = proxy_config(raw, overrides, folder, shared, replay, tokens)
                resume = (folder / "checkpoints").is_dir() and any((folder / "checkpoints").iterdir())
                log.info("sweep: running %s%s", folder.name, " (resuming)" if resume else "")
                summary, reused = train(cfg, resume=resume), False
            records.append(_record(summary, replay, tokens, folder, reused))
    return records


def _with(raw: dict, overrides: list[str]) -> dict:
    """A copy of the raw config with the --set overrides applied."""
    data = copy.deepcopy(raw)
    for key, value in parse_overrides(overrides):
        set_dotted(data, key, value)
    return data


def _record(summary: dict, replay: float, tokens: int, folder: Path, reused: bool) -> dict:
    for key in ("domain_loss", "general_loss"):
        if not isinstance(summary.get("final", {}).get(key), (int, float)):
            raise UserError(f"{folder / 'summary.json'}: no final {key}; the run has no domain and general eval sets")
    return {"run": folder.name, "replay": replay, "tokens": tokens,
            "tokens_trained": summary.get("tokens_trained", tokens), "reused": reused,
            "base": {k: summary["base"][k] for k in ("domain_loss", "general_loss")},
            "final": {k: summary["final"][k] for k in ("domain_loss", "general_loss")}}


def fit_losses(records: list[dict]) -> dict:
    """Both fits (domain with share 1 - replay, general with share replay) and their checks."""
    d = np.array([r["tokens_trained"] for r in records], dtype=np.float64)
    replay = np.array([r["replay"] for r in records])
    out = {}
    for name, share in (("domain", 1.0 - replay), ("general", replay)):
        y = np.array([r["final"][f"{name}_loss"] for r in records])
        if len(y) <= mixlaw.N_PARAMS:
            out[name] = {"law": None, "why": f"{len(y)} runs for {mixlaw.N_PARAMS} parameters: the fit is "
                         "underdetermined; run more ratios or token counts"}
            continue
        law, rmse = mixlaw.fit(d, share, y)
        out[name] = {"law": law, "params": law.to_json(), "rmse": rmse, "at_bounds": mixlaw.at_bounds(law),
                     "r2_fit": mixlaw.r_squared(y, law(d, share)),
                     "held_out": mixlaw.held_out_ratios(d, share, y)}
    return out


def measured_choice(records: list[dict], base: dict, budget: float) -> dict | None:
    """Among the runs with the most tokens: the lowest domain loss whose general rise is in budget."""
    top = max(r["tokens"] for r in records)
    rows = []
    for r in (r for r in records if r["tokens"] == top):
        rise = math.exp(r["final"]["general_loss"] - base["general_loss"]) - 1.0
        rows.append({"replay": r["replay"], "domain_loss": r["final"]["domain_loss"],
                     "general_loss": r["final"]["general_loss"], "general_rise": rise,
                     "domain_gain": base["domain_loss"] - r["final"]["domain_loss"]})
    inside = [row for row in rows if row["general_rise"] <= budget]
    return min(inside, key=lambda row: (row["domain_loss"], row["replay"])) if inside else None


def sweep(raw: dict, o: SweepOptions, overrides: list[str] | None = None, config_path: str | None = None) -> dict:
    overrides = list(overrides or [])
    check_options(o, bool(load_config(None, raw=_with(raw, overrides)).general_sources))
    t0 = time.perf_counter()
    o.out.mkdir(parents=True, exist_ok=True)
    records = run_proxies(raw, overrides, o)
    base = records[0]["base"]
    spread = max(abs(r["base"][k] - base[k]) for r in records for k in base)
    fits = fit_losses(records)
    top = float(max(r["tokens_trained"] for r in records if r["tokens"] == max(o.tokens)))
    predicted = None
    if fits["domain"]["law"] is not None and fits["general"]["law"] is not None:
        lo, hi = min(o.replay), max(o.replay)
        grid = sorted(set(np.round(np.linspace(lo, hi, int(round((hi - lo) / 0.005)) + 1), 6).tolist()) | set(o.replay))
        predicted = mixlaw.recommend(fits["domain"]["law"], fits["general"]["law"], top,
                                     base["domain_loss"], base["general_loss"], o.budget, grid)
        weak = [k for k in ("domain", "general")
                if (fits[k]["held_out"]["r2"] is None or fits[k]["held_out"]["r2"] < RELIABLE_R2)]
        predicted["weak_fits"] = weak
    result = {
        "config": config_path, "replay": sorted(set(o.replay)), "tokens": sorted(o.tokens), "budget": o.budget,
        "base": base, "base_spread": spread, "runs": records,
        "law": "L(D, r) = E + B * r^eta / D^beta + C / (r + epsilon)^gamma; domain: r = 1 - replay, "
               "general: r = replay; D = tokens trained",
        "fits": {k: {kk: vv for kk, vv in v.items() if kk != "law"} for k, v in fits.items()},
        "recommendation": {"predicted": predicted, "measured": measured_choice(records, base, o.budget)},
        "wall_s": round(time.perf_counter() - t0, 2),
    }
    write_json(o.out / "sweep.json", result)
    return result


def table(result: dict) -> str:
    """Runs, fits and the recommendation as plain text."""
    base = result["base"]
    lines = [f"base model: domain loss {base['domain_loss']:.4f} (ppl {math.exp(base['domain_loss']):.2f}), "
             f"general loss {base['general_loss']:.4f} (ppl {math.exp(base['general_loss']):.2f})",
             f"{'replay':>7} {'tokens':>10} {'domain loss':>12} {'general loss':>13} {'general ppl rise':>17}  run"]
    for r in result["runs"]:
        rise = math.exp(r["final"]["general_loss"] - base["general_loss"]) - 1.0
        lines.append(f"{r['replay']:>7g} {r['tokens_trained']:>10,} {r['final']['domain_loss']:>12.4f} "
                     f"{r['final']['general_loss']:>13.4f} {rise:>+17.2%}  {r['run']}{' (reused)' if r['reused'] else ''}")
    lines.append(f"law: {result['law']}")
    for name, f in result["fits"].items():
        if "params" not in f:
            lines.append(f"{name} fit: none ({f['why']})")
            continue
        p = ", ".join(f"{k}={v:.4g}" for k, v in f["params"].items())
        held = f["held_out"]
        r2 = f"{held['r2']:.4f}" if held["r2"] is not None else f"n/a ({held['why']})"
        lines.append(f"{name} fit: {p}; rmse {f['rmse']:.4g}, R² (fit) {f['r2_fit']:.4f}, "
                     f"R² (each ratio held out in turn) {r2}")
        if f["at_bounds"]:
            lines.append(f"  {name} fit: {', '.join(f['at_bounds'])} at a bound of the fit")
    rec, budget = result["recommendation"], result["budget"]
    pred, meas = rec["predicted"], rec["measured"]
    if pred is None:
        lines.append("predicted recommendation: none (no fit)")
    elif pred["choice"] is None:
        least = pred["least_rise"]
        lines.append(f"predicted recommendation: no replay ratio in the swept range keeps the general rise within "
                     f"{budget:.1%} (least: replay {least['replay']:g}, rise {least['general_rise']:+.2%})")
    else:
        c = pred["choice"]
        lines.append(f"predicted recommendation at {pred['tokens']:,.0f} tokens: replay {c['replay']:g} "
                     f"(domain loss {c['domain_loss']:.4f}, gain {c['domain_gain']:+.4f} nats; general ppl rise "
                     f"{c['general_rise']:+.2%} <= {budget:.1%})")
    if pred is not None and pred["weak_fits"]:
        lines.append(f"  warning: the {' and '.join(pred['weak_fits'])} fit predicts held-out ratios poorly "
                     f"(R² < {RELIABLE_R2} or not measured); prefer the measured choice, or sweep more ratios")
    if meas is None:
        lines.append(f"measured: no run with the most tokens stays within {budget:.1%}")
    else:
        lines.append(f"measured best within budget: replay {meas['replay']:g} (domain loss {meas['domain_loss']:.4f}, "
                     f"general ppl rise {meas['general_rise']:+.2%})")
    return "\n".join(lines)
