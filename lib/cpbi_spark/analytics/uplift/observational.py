"""Readouts of promotions without a randomised control group: observational, never called causal.

Why not causal: when exposure was targeted (``is_randomized = false``, or no control arm), the exposed
customers were chosen *because of* who they are (e.g. the top spenders), so comparing them with anyone
else mixes the promotion's effect with pre-existing differences (selection bias). The readout reports:

* the **naive difference**: exposed vs the comparison group (eligible customers who were not exposed,
  anchored at the promotion's first exposure) with the same tests as an experiment, labelled
  ``OBSERVATIONAL`` and ``causal = false``;
* optionally an **adjusted** estimate: inverse-propensity weighting for the effect on the exposed (ATT)
  with a logistic propensity model on the pre-period features; comparison units get the weight
  ``e / (1 - e)`` (``e`` clipped to ``propensity_clip``). Its interval is a percentile bootstrap that refits
  the propensity model. It is still observational (valid only if no unmeasured confounder exists) and
  is labelled ``ADJUSTED``;
* **overlap diagnostics**: propensity quantiles per group, the share of exposed units above the upper
  overlap bound (no comparable unexposed customers), the share of comparison units below the lower
  bound, the effective sample size of the weighted comparison group, and the largest absolute
  standardised mean difference before and after weighting. Overlap is ``adequate`` when at most 10% of
  exposed units are outside the bounds and the weighted SMDs are all below the balance threshold;
  otherwise the adjusted estimate is flagged as extrapolating.

Example:
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(1)
    >>> x = rng.normal(size=4000); exposed = rng.random(4000) < 1 / (1 + np.exp(-x))
    >>> y = (rng.random(4000) < 0.2 + 0.1 * (x > 0) + 0.05 * exposed).astype(float)
    >>> r = ipw_att(pd.DataFrame({"x": x}), exposed, {"y": y}, bootstrap=50, seed=1)
    >>> bool(abs(r["estimates"]["y"]["att"] - 0.05) < 0.04), r["overlap"]["status"]
    (True, 'adequate')
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

REASON_NOT_RANDOMISED = (
    "exposure was not randomised (dim_promotion.is_randomized = false): the exposed customers were selected, "
    "so the difference to unexposed customers mixes the promotion's effect with pre-existing differences "
    "between the groups; it is an association, not a causal effect")
REASON_NO_CONTROL = (
    "the promotion has no control arm: there is no randomised counterfactual, so the difference to unexposed "
    "customers is an association, not a causal effect")
ADJUSTED_CAVEAT = (
    "propensity-weighted (ATT) on pre-period features: removes the measured differences only; still "
    "observational, not proof of a causal effect")


def _propensity(X: np.ndarray, exposed: np.ndarray, clip: tuple[float, float]) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    e = model.fit(X, exposed.astype(int)).predict_proba(X)[:, 1]
    return np.clip(e, clip[0], clip[1])


def _weighted_mean_var(x: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    m = float(np.average(x, weights=w))
    return m, float(np.average((x - m) ** 2, weights=w))


def weighted_smd(X: pd.DataFrame, exposed: np.ndarray, w: np.ndarray | None = None) -> pd.Series:
    """SMD per column, exposed vs comparison, the comparison weighted by ``w`` (unweighted if ``None``)."""
    out = {}
    wc = np.ones((~exposed).sum()) if w is None else w[~exposed]
    for col in X.columns:
        x = X[col].to_numpy(dtype=float)
        mt, vt = float(x[exposed].mean()), float(x[exposed].var())
        mc, vc = _weighted_mean_var(x[~exposed], wc)
        pooled = math.sqrt((vt + vc) / 2.0)
        out[col] = 0.0 if pooled == 0 else (mt - mc) / pooled
    return pd.Series(out, dtype=float)


def ipw_att(X: pd.DataFrame, exposed: np.ndarray, outcomes: Mapping[str, np.ndarray], *,
            clip: tuple[float, float] = (0.01, 0.99), bounds: tuple[float, float] = (0.05, 0.95),
            bootstrap: int = 200, seed: int = 0, alpha: float = 0.05, smd_threshold: float = 0.1) -> dict[str, Any]:
    """Inverse-propensity-weighted effects on the exposed for several outcomes (one propensity model per
    bootstrap replicate, shared by the outcomes), with percentile intervals and overlap diagnostics.

    Returns ``estimates`` (outcome -> ``att, ci_low, ci_high, se, p_value, control_value``), ``overlap``,
    ``smd_before``, ``smd_after`` and the clipped ``propensity`` of every unit.
    """
    from scipy import stats

    exposed = np.asarray(exposed).astype(bool)
    names = list(outcomes)
    Y = np.column_stack([np.asarray(outcomes[n], dtype=float) for n in names])
    Xv = X.to_numpy(dtype=float)

    def att(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        e = _propensity(Xv[idx], exposed[idx], clip)
        t = exposed[idx]
        w = e[~t] / (1.0 - e[~t])
        weighted = (w[:, None] * Y[idx][~t]).sum(axis=0) / w.sum()
        return Y[idx][t].mean(axis=0) - weighted, weighted, e

    estimate, control_value, e = att(np.arange(len(exposed)))
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(exposed), np.flatnonzero(~exposed)]
    # Resample within each group so every replicate has both (their sizes are fixed by design).
    draws = np.array([att(np.concatenate([rng.choice(g, size=len(g), replace=True) for g in groups]))[0]
                      for _ in range(bootstrap)]).reshape(bootstrap, len(names))
    estimates = {}
    for j, name in enumerate(names):
        if bootstrap >= 20:
            low, high = np.quantile(draws[:, j], [alpha / 2, 1 - alpha / 2])
            se = float(draws[:, j].std(ddof=1))
        else:
            low = high = se = math.nan
        p = float(2 * stats.norm.sf(abs(estimate[j] / se))) if se == se and se > 0 else math.nan
        estimates[name] = {"att": float(estimate[j]), "ci_low": float(low), "ci_high": float(high), "se": se,
                           "p_value": p, "control_value": float(control_value[j])}
    w = np.ones(len(exposed))
    w[~exposed] = e[~exposed] / (1 - e[~exposed])
    before = weighted_smd(X, exposed)
    after = weighted_smd(X, exposed, w)
    wc = w[~exposed]
    ess = float(wc.sum() ** 2 / (wc ** 2).sum()) if wc.sum() > 0 else 0.0
    share_exposed_out = float(np.mean(e[exposed] > bounds[1]))
    share_comparison_out = float(np.mean(e[~exposed] < bounds[0]))
    max_after = float(after.abs().max()) if len(after) else 0.0
    status = "adequate" if share_exposed_out <= 0.10 and max_after <= smd_threshold else "poor"
    quant = [0.0, 0.05, 0.5, 0.95, 1.0]
    labels = ["min", "p05", "p50", "p95", "max"]
    return {
        "estimates": estimates,
        "overlap": {
            "status": status, "bounds": list(bounds),
            "exposed_propensity_quantiles": dict(zip(labels, np.quantile(e[exposed], quant).round(4).tolist(),
                                                     strict=True)),
            "comparison_propensity_quantiles": dict(zip(labels, np.quantile(e[~exposed], quant).round(4).tolist(),
                                                        strict=True)),
            "share_exposed_outside": share_exposed_out, "share_comparison_outside": share_comparison_out,
            "ess_comparison": ess, "n_comparison": int((~exposed).sum()), "n_exposed": int(exposed.sum()),
            "max_abs_smd_before": float(before.abs().max()) if len(before) else 0.0,
            "max_abs_smd_after": max_after,
        },
        "smd_before": before, "smd_after": after, "propensity": e,
    }


def adjusted_label(overlap_status: str) -> str:
    """Label of the adjusted estimate, with the overlap verdict."""
    if overlap_status == "adequate":
        return f"ADJUSTED: {ADJUSTED_CAVEAT}"
    return (f"ADJUSTED (unreliable: poor overlap, the weights extrapolate to exposed customers without "
            f"comparable unexposed ones): {ADJUSTED_CAVEAT}")


def observational_reason(is_randomized: bool, has_control: bool, control_n: int = 0, min_arm: int = 0) -> str:
    """Why a promotion's readout is observational (empty when it is a proper experiment)."""
    if not is_randomized:
        return REASON_NOT_RANDOMISED
    if not has_control:
        return REASON_NO_CONTROL
    if control_n < min_arm:
        return (f"the control arm has {control_n} customers (< {min_arm}): too few for a randomised comparison; "
                "reported as observational")
    return ""


def covariates_for_propensity(columns: Sequence[str], frame: pd.DataFrame) -> list[str]:
    """Features with variation in ``frame`` (constant columns carry no information and break scaling)."""
    return [c for c in columns if c in frame.columns and frame[c].nunique(dropna=True) > 1]
