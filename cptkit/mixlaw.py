"""The D-CPT Law (Que et al. 2024) at a fixed model size: fit, held-out check, recommendation.

The published law predicts the validation loss of one corpus after continued pre-training of a
model with N parameters on D tokens, of which a share r comes from that corpus:

    L(N, D, r) = E + A / N^alpha + B * r^eta / D^beta + C / (r + epsilon)^gamma

It is fitted separately for the domain loss (r = domain share = 1 - replay ratio) and for the
general loss (r = general share = the replay ratio). Here N is one model, so A / N^alpha is a
constant folded into E, leaving seven parameters:

    L(D, r) = E + B * r^eta / D^beta + C / (r + epsilon)^gamma

epsilon keeps the loss finite at r = 0 (no replay: the general loss of a run that saw no general
text). All parameters are >= 0 (epsilon > 0). The fit is least squares in loss (nats), from a
fixed grid of starting points for the exponents (E, B, C at each start come from non-negative
linear least squares, the model being linear in them), keeping the lowest residual: the same
data always give the same fit.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass

import numpy as np

PARAMS = ("E", "B", "beta", "eta", "C", "gamma", "epsilon")
N_PARAMS = len(PARAMS)
# Bounds keep the exponents in the range scaling laws live in and the fit away from overflow.
LOWER = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1e-4])
UPPER = np.array([50.0, 1e12, 2.0, 5.0, 1e3, 5.0, 10.0])
STARTS = {"beta": (0.1, 0.5), "eta": (0.5, 1.5), "gamma": (0.3, 1.0), "epsilon": (0.02, 0.3)}


@dataclass(frozen=True)
class Law:
    E: float
    B: float
    beta: float
    eta: float
    C: float
    gamma: float
    epsilon: float

    def __call__(self, tokens, share):
        d, r = np.asarray(tokens, dtype=np.float64), np.asarray(share, dtype=np.float64)
        return self.E + self.B * r**self.eta / d**self.beta + self.C / (r + self.epsilon) ** self.gamma

    def to_json(self) -> dict:
        return {k: float(v) for k, v in asdict(self).items()}


def _basis(d: np.ndarray, r: np.ndarray, beta: float, eta: float, gamma: float, eps: float) -> np.ndarray:
    """Columns multiplying E, B, C at fixed exponents."""
    return np.stack([np.ones_like(d), r**eta / d**beta, 1.0 / (r + eps) ** gamma], axis=1)


def fit(tokens, share, loss) -> tuple[Law, float]:
    """The least-squares law through the points, and its root-mean-square residual."""
    from scipy.optimize import least_squares, nnls

    d, r, y = (np.asarray(x, dtype=np.float64) for x in (tokens, share, loss))
    if len(y) == 0:
        raise ValueError("no points to fit")

    def residual(p: np.ndarray) -> np.ndarray:
        return Law(*p)(d, r) - y

    best, best_cost = None, math.inf
    for beta, eta, gamma, eps in itertools.product(*STARTS.values()):
        (e, b, c), _ = nnls(_basis(d, r, beta, eta, gamma, eps), y)
        start = np.clip([e, b, beta, eta, c, gamma, eps], LOWER, UPPER)
        # Nudge starts that sit on a bound inside it: least_squares needs a strictly feasible start.
        start = np.minimum(np.maximum(start, LOWER + 1e-9 * (UPPER - LOWER)), UPPER - 1e-9 * (UPPER - LOWER))
        sol = least_squares(residual, start, bounds=(LOWER, UPPER), method="trf", x_scale="jac",
                            ftol=1e-12, xtol=1e-12, gtol=1e-12, max_nfev=500)
        if sol.cost < best_cost - 1e-18:
            best, best_cost = sol.x, sol.cost
    law = Law(*(float(v) for v in best))
    return law, math.sqrt(2 * best_cost / len(y))


def at_bounds(law: Law, rel: float = 1e-5) -> list[str]:
    """Parameters the fit pushed onto a bound (within rel x max(1, |bound|)): a sign that the
    law's form does not match the data, or that a term is not needed (B or C at 0)."""
    values = np.array([getattr(law, k) for k in PARAMS])
    near_low = values - LOWER <= rel * np.maximum(1.0, np.abs(LOWER))
    near_high = UPPER - values <= rel * np.maximum(1.0, np.abs(UPPER))
    return [k for k, h in zip(PARAMS, near_low | near_high) if h]


def r_squared(actual, predicted) -> float | None:
    a, p = np.asarray(actual, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    ss_tot = float(((a - a.mean()) ** 2).sum())
    if len(a) < 2 or ss_tot == 0:
        return None
    return 1.0 - float(((a - p) ** 2).sum()) / ss_tot


def held_out_ratios(tokens, share, loss) -> dict:
    """Leave one ratio out: fit on every other ratio's points, predict the held-out ratio's.

    Every ratio is held out in turn (the end ratios are extrapolations, the others
    interpolations); R^2 pools all held-out predictions. Needs 3 ratios or more, and more points
    in each fit than the law has parameters; otherwise R^2 is None and the reason is given.
    """
    d, r, y = (np.asarray(x, dtype=np.float64) for x in (tokens, share, loss))
    ratios = sorted(set(r.tolist()))
    if len(ratios) < 3:
        return {"r2": None, "why": f"{len(ratios)} ratio(s); holding one out needs at least 3", "folds": []}
    folds, actual, predicted = [], [], []
    for held in ratios:
        train = r != held
        if int(train.sum()) <= N_PARAMS:
            return {"r2": None, "why": f"a fit without one ratio has {int(train.sum())} points for "
                    f"{N_PARAMS} parameters", "folds": []}
        law, _ = fit(d[train], r[train], y[train])
        pred = law(d[~train], r[~train])
        folds.append({"share": held, "tokens": d[~train].tolist(), "actual": y[~train].tolist(),
                      "predicted": pred.tolist()})
        actual += y[~train].tolist()
        predicted += pred.tolist()
    return {"r2": r_squared(actual, predicted), "why": None, "folds": folds}


def recommend(domain: Law, general: Law, tokens: float, base_domain: float, base_general: float,
              budget: float, candidates) -> dict:
    """The replay ratio with the lowest predicted domain loss (the largest domain gain) whose
    predicted general perplexity rise exp(L_general - base_general) - 1 stays <= budget.

    Domain loss uses share 1 - replay, general loss share replay. `candidates` are the replay
    ratios considered (keep them inside the swept range: the law is fitted there).
    """
    rows = []
    for rho in candidates:
        ld, lg = float(domain(tokens, 1.0 - rho)), float(general(tokens, rho))
        rows.append({"replay": float(rho), "domain_loss": ld, "general_loss": lg,
                     "domain_gain": base_domain - ld, "general_rise": math.exp(lg - base_general) - 1.0})
    inside = [row for row in rows if row["general_rise"] <= budget]
    choice = min(inside, key=lambda row: (row["domain_loss"], row["replay"])) if inside else None
    return {"tokens": float(tokens), "budget": budget, "choice": choice,
            "least_rise": min(rows, key=lambda row: (row["general_rise"], row["replay"])) if rows else None,
            "candidates": len(rows)}
