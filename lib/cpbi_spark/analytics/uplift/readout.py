"""Experiment readout statistics: per-arm summaries, differences vs control with 95% intervals.

Everything here works on small per-arm summaries (n, mean, sample variance per metric), which Spark
computes with one ``groupBy`` (:func:`summarize_spark`) whatever the number of customers; the same
summary can come from pandas (:func:`summarize`) in tests and on the driver.

* means (revenue per customer, net revenue per customer): Welch's unequal-variance t-test and interval;
* rates (conversion): Newcombe's hybrid score interval (method 10, from two Wilson intervals) and the
  pooled two-proportion z-test for the p-value;
* p-values adjusted across the arms of a promotion (statsmodels ``multipletests``, Holm by default);
* sample-ratio mismatch: chi-square goodness of fit of the arm counts against the planned allocation;
* pre-period balance: standardised mean difference ``(m_t - m_c) / sqrt((s_t^2 + s_c^2) / 2)``.

Example:
    >>> r = welch_test(1.2, 1.0, 50, 1.0, 2.0, 60)
    >>> round(r.difference, 3), round(r.df, 1), r.p_value > 0.3
    (0.2, 105.4, True)
    >>> low, high = newcombe_interval(30, 100, 20, 100)
    >>> round(low, 4), round(high, 4)
    (-0.0202, 0.2167)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

# readout metric -> (unit column, kind). Conversion is a rate; the others are means per customer.
METRICS: dict[str, tuple[str, str]] = {
    "conversion": ("converted", "rate"),
    "revenue_per_customer": ("revenue", "mean"),
    "net_revenue_per_customer": ("net_revenue", "mean"),
}
ALL_SEGMENTS = "all"


@dataclass(frozen=True)
class Comparison:
    """Treatment minus control for one metric, with its interval and test."""

    difference: float
    ci_low: float
    ci_high: float
    statistic: float
    p_value: float
    method: str
    df: float = math.nan
    se: float = math.nan


def welch_test(mean_t: float, var_t: float, n_t: int, mean_c: float, var_c: float, n_c: int,
               alpha: float = 0.05) -> Comparison:
    """Welch's t-test and interval for ``mean_t - mean_c`` from sample means and (ddof=1) variances.

    >>> r = welch_test(5.0, 0.0, 10, 5.0, 0.0, 10)
    >>> r.difference, r.p_value, (r.ci_low, r.ci_high)
    (0.0, 1.0, (0.0, 0.0))
    """
    from scipy import stats

    diff = float(mean_t - mean_c)
    a, b = var_t / n_t, var_c / n_c
    se = math.sqrt(max(a + b, 0.0))
    if se == 0.0 or n_t < 2 or n_c < 2:
        # No spread: the difference is exact (or undefined with one unit per arm).
        p = 1.0 if diff == 0.0 else 0.0
        return Comparison(diff, diff, diff, math.inf if diff else 0.0, p, "welch_t", math.nan, se)
    df = (a + b) ** 2 / (a * a / (n_t - 1) + b * b / (n_c - 1)) if a + b > 0 else float(n_t + n_c - 2)
    t = diff / se
    p = float(2.0 * stats.t.sf(abs(t), df))
    q = float(stats.t.ppf(1.0 - alpha / 2.0, df))
    return Comparison(diff, diff - q * se, diff + q * se, t, p, "welch_t", df, se)


def wilson_interval(x: float, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval for a proportion ``x / n``.

    >>> tuple(round(v, 4) for v in wilson_interval(30, 100))
    (0.2189, 0.3958)
    """
    from scipy import stats

    if n <= 0:
        return (math.nan, math.nan)
    z = float(stats.norm.ppf(1.0 - alpha / 2.0))
    p = x / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def newcombe_interval(x_t: float, n_t: int, x_c: float, n_c: int, alpha: float = 0.05) -> tuple[float, float]:
    """Newcombe's hybrid score interval (his method 10) for ``x_t/n_t - x_c/n_c``."""
    p_t, p_c = x_t / n_t, x_c / n_c
    l_t, u_t = wilson_interval(x_t, n_t, alpha)
    l_c, u_c = wilson_interval(x_c, n_c, alpha)
    d = p_t - p_c
    return (d - math.sqrt((p_t - l_t) ** 2 + (u_c - p_c) ** 2), d + math.sqrt((u_t - p_t) ** 2 + (p_c - l_c) ** 2))


def two_proportion_test(x_t: float, n_t: int, x_c: float, n_c: int, alpha: float = 0.05) -> Comparison:
    """Difference of two rates: Newcombe interval, pooled two-proportion z-test p-value."""
    from scipy import stats

    p_t, p_c = x_t / n_t, x_c / n_c
    pooled = (x_t + x_c) / (n_t + n_c)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / n_t + 1 / n_c))
    diff = p_t - p_c
    if se0 == 0.0:
        z, p = (0.0, 1.0) if diff == 0 else (math.inf, 0.0)
    else:
        z = diff / se0
        p = float(2.0 * stats.norm.sf(abs(z)))
    low, high = newcombe_interval(x_t, n_t, x_c, n_c, alpha)
    se = math.sqrt(p_t * (1 - p_t) / n_t + p_c * (1 - p_c) / n_c)
    return Comparison(diff, low, high, z, p, "newcombe_hybrid_score", math.nan, se)


def srm_test(observed: Mapping[str, int], planned: Mapping[str, float]) -> tuple[float, int, float]:
    """Chi-square goodness of fit of arm counts to planned shares: ``(chi2, df, p_value)``.

    Arms missing from ``planned`` count as planned share 0 (a sure mismatch when they have units).

    >>> chi2, df, p = srm_test({"control": 500, "treatment": 500}, {"control": 0.5, "treatment": 0.5})
    >>> (chi2, df, p)
    (0.0, 1, 1.0)
    """
    from scipy import stats

    arms = sorted(set(observed) | set(planned))
    obs = np.array([observed.get(a, 0) for a in arms], dtype=float)
    share = np.array([planned.get(a, 0.0) for a in arms], dtype=float)
    share = share / share.sum()
    exp = obs.sum() * share
    if np.any((exp == 0) & (obs > 0)):
        return (math.inf, len(arms) - 1, 0.0)
    keep = exp > 0
    chi2, p = stats.chisquare(obs[keep], exp[keep])
    return (float(chi2), int(keep.sum() - 1), float(p))


def smd(mean_t: float, var_t: float, mean_c: float, var_c: float) -> float:
    """Standardised mean difference with the average of the two variances (Austin 2009).

    >>> round(smd(1.0, 1.0, 0.0, 1.0), 3), smd(2.0, 0.0, 2.0, 0.0)
    (1.0, 0.0)
    """
    pooled = math.sqrt(max((var_t + var_c) / 2.0, 0.0))
    if pooled == 0.0:
        return 0.0 if mean_t == mean_c else math.copysign(math.inf, mean_t - mean_c)
    return (mean_t - mean_c) / pooled


def adjust_pvalues(p_values: Sequence[float], method: str = "holm") -> list[float]:
    """Multiple-testing adjusted p-values (statsmodels); NaNs stay NaN and are not counted."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method=method)[1]
    return out.tolist()


# --------------------------------------------------------------------------- summaries
def summarize(units: pd.DataFrame, by: Sequence[str], columns: Sequence[str]) -> pd.DataFrame:
    """``n`` and, per column, ``mean__c`` and ``var__c`` (ddof=1) by the ``by`` columns (pandas)."""
    g = units.groupby(list(by), dropna=False, sort=True)
    out = g.size().rename("n").to_frame()
    for c in columns:
        out[f"mean__{c}"] = g[c].mean()
        out[f"var__{c}"] = g[c].var(ddof=1)
    return out.reset_index()


def summarize_spark(units: DataFrame, by: Sequence[str], columns: Sequence[str]) -> pd.DataFrame:
    """Same as :func:`summarize`, aggregated by Spark; only the summary rows reach the driver."""
    from pyspark.sql import functions as F

    aggs = [F.count(F.lit(1)).alias("n")]
    for c in columns:
        aggs += [F.avg(F.col(c).cast("double")).alias(f"mean__{c}"),
                 F.var_samp(F.col(c).cast("double")).alias(f"var__{c}")]
    pdf = units.groupBy(*by).agg(*aggs).toPandas()
    return pdf.sort_values(list(by)).reset_index(drop=True)


# --------------------------------------------------------------------------- readout
def compare_to_control(summary: pd.DataFrame, *, group: Sequence[str], alpha: float = 0.05,
                       metrics: Mapping[str, tuple[str, str]] = METRICS) -> pd.DataFrame:
    """Each non-control arm vs the control arm of its group, for every metric.

    ``summary`` has ``group`` columns, ``arm``, ``is_control``, ``n`` and ``mean__/var__`` per metric
    column. Groups without a control row are skipped. Returns one row per group, arm and metric with
    ``n, value, control_n, control_value, difference, relative_lift, ci_low, ci_high, ci_method,
    statistic, df, p_value``.
    """
    rows = []
    for key, t, c in _arms_vs_control(summary, group):
        for metric, (col, kind) in metrics.items():
            m_t, m_c = float(t[f"mean__{col}"]), float(c[f"mean__{col}"])
            n_t, n_c = int(t["n"]), int(c["n"])
            if kind == "rate":
                r = two_proportion_test(round(m_t * n_t), n_t, round(m_c * n_c), n_c, alpha)
            else:
                v_t, v_c = float(t[f"var__{col}"]), float(c[f"var__{col}"])
                r = welch_test(m_t, 0.0 if math.isnan(v_t) else v_t, n_t, m_c,
                               0.0 if math.isnan(v_c) else v_c, n_c, alpha)
            rows.append({**dict(zip(group, key, strict=True)), "arm": t["arm"], "control_arm": c["arm"],
                         "metric": metric, "n": n_t, "value": m_t, "control_n": n_c, "control_value": m_c,
                         "difference": r.difference,
                         "relative_lift": r.difference / m_c if m_c else math.nan,
                         "ci_low": r.ci_low, "ci_high": r.ci_high, "ci_method": r.method,
                         "statistic": r.statistic, "df": r.df, "se": r.se, "p_value": r.p_value})
    return pd.DataFrame(rows)


def add_adjusted_pvalues(readout: pd.DataFrame, family: Sequence[str], method: str = "holm",
                         alpha: float = 0.05) -> pd.DataFrame:
    """``p_adjusted`` and ``significant`` with the correction applied within each ``family`` of rows.

    The job uses the family (promotion, metric, level): the overall readout corrects across the
    treatment arms, the per-segment readout across arms x segments.
    """
    out = readout.copy()
    out["p_adjusted"] = np.nan
    if out.empty:
        out["significant"] = pd.Series(dtype=bool)
        return out
    for _, idx in out.groupby(list(family), dropna=False).groups.items():
        out.loc[idx, "p_adjusted"] = adjust_pvalues(out.loc[idx, "p_value"].tolist(), method)
    out["significant"] = out["p_adjusted"] < alpha
    return out


def balance(summary: pd.DataFrame, covariates: Sequence[str], *, group: Sequence[str],
            threshold: float = 0.1) -> pd.DataFrame:
    """Standardised mean differences of pre-period covariates, each non-control arm vs control."""
    rows = []
    for key, t, c in _arms_vs_control(summary, group):
        for cov in covariates:
            v_t, v_c = t[f"var__{cov}"], c[f"var__{cov}"]
            d = smd(float(t[f"mean__{cov}"]), 0.0 if pd.isna(v_t) else float(v_t),
                    float(c[f"mean__{cov}"]), 0.0 if pd.isna(v_c) else float(v_c))
            rows.append({**dict(zip(group, key, strict=True)), "arm": t["arm"], "covariate": cov,
                         "mean_arm": float(t[f"mean__{cov}"]), "mean_control": float(c[f"mean__{cov}"]),
                         "smd": d, "flagged": bool(abs(d) > threshold)})
    return pd.DataFrame(rows)


def describe(row: Mapping[str, object], causal: bool, alpha: float = 0.05) -> str:
    """One sentence for a readout row; the wording says whether the difference is a causal effect."""
    metric = str(row["metric"])
    rate = METRICS.get(metric, ("", "mean"))[1] == "rate"
    scale, unit = (100.0, " pp") if rate else (1.0, " USD")
    d, lo, hi = (float(row[k]) * scale for k in ("difference", "ci_low", "ci_high"))
    level = round((1 - alpha) * 100)
    text = (f"{row['arm']} vs {row['control_arm']}: {d:+.2f}{unit} ({level}% CI {lo:+.2f} to {hi:+.2f}")
    p_adj = row.get("p_adjusted")
    text += f", adjusted p = {float(p_adj):.3g})" if p_adj is not None and not pd.isna(p_adj) else ")"
    if causal:
        verdict = "a causal effect of the promotion (randomised assignment)"
        if not bool(row.get("significant", False)):
            verdict += "; not distinguishable from zero"
        return f"{text}: {verdict}"
    return f"{text}: an observed difference, NOT a causal effect (no randomised control group)"


def _arms_vs_control(summary: pd.DataFrame, group: Sequence[str]):
    """``(group key, treated arm row, control row)`` for every non-control arm of every group with a control.

    One control arm per promotion is the design; with several, the largest is the reference.
    """
    for key, g in summary.groupby(list(group), dropna=False, sort=True):
        controls = g[g["is_control"].astype(bool)]
        if controls.empty:
            continue
        c = controls.sort_values("n", ascending=False).iloc[0]
        for _, t in g[~g["is_control"].astype(bool)].iterrows():
            yield (key if isinstance(key, tuple) else (key,)), t, c
