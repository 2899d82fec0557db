"""Held-out evaluation of uplift scores: Qini curve and coefficient, uplift curve and AUUC, uplift@k.

Input: held-out units of one treatment arm and the control arm, with a score (predicted effect of the
arm), ``treated`` (1 = the arm, 0 = control) and the outcome ``y``. Units are ranked by descending score.

Ties: units with equal scores form one *tie group*; curves have a point only at the end of each tie
group (the order inside a group is never used) and are straight lines in between, and ``uplift@k``
counts a tie group that straddles the cut-off pro rata (each of its units with weight
``(k - units before the group) / group size``). So the results never depend on the row order.
On the Spark path the groups are score quantile bins (``spark_ml.qini_bins``) instead of exact ties.

With ``N`` held-out units, ``N_T`` of them treated, and ``N_t(k), N_c(k), Y_t(k), Y_c(k)`` the treated and
control counts and outcome sums among the top ``k``:

* Qini curve: ``q(k/N) = (Y_t(k) - Y_c(k) N_t(k) / N_c(k)) / N_T`` (0 while ``N_c(k) = 0``). Normalised by
  ``N_T`` it ends at the average treatment effect: ``q(1) = ATE``. Random targeting: ``q(x) = x ATE``.
* Qini coefficient: area between the Qini curve and the random line, ``int_0^1 q(x) dx - ATE / 2``
  (trapezoids). ``qini_normalized`` divides it by the coefficient of the *perfect* ranking (treated
  responders first, control responders last: score ``y`` for treated and ``-y`` for control units).
* Uplift curve: ``u(k/N) = (Y_t(k)/N_t(k) - Y_c(k)/N_c(k)) k / N`` (0 while a count is 0); AUUC is its area,
  the random baseline's area is ``ATE / 2``.
* ``uplift@k``: treated minus control mean outcome among the top share ``k``; random baseline: the ATE.

Example:
    >>> import numpy as np
    >>> g = tie_groups(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 0]), np.array([1.0, 0.0, 0.0, 0.0]))
    >>> r = evaluate_groups(g, [0.5])
    >>> r["ate"], r["uplift_at"][0.5]
    (0.5, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

GROUP_COLUMNS = ["score", "n_t", "y_t", "n_c", "y_c"]


def tie_groups(score: np.ndarray, treated: np.ndarray, y: np.ndarray) -> pd.DataFrame:
    """Per distinct score, descending: ``n_t, y_t`` (treated count, outcome sum) and ``n_c, y_c``."""
    score = np.asarray(score, dtype=float)
    treated = np.asarray(treated).astype(bool)
    y = np.asarray(y, dtype=float)
    df = pd.DataFrame({"score": score, "n_t": treated.astype(float), "y_t": np.where(treated, y, 0.0),
                       "n_c": (~treated).astype(float), "y_c": np.where(treated, 0.0, y)})
    g = df.groupby("score", sort=True).sum().iloc[::-1].reset_index()
    return g[GROUP_COLUMNS]


def spark_groups(df: DataFrame, score: str, treated: str, y: str, bins: int = 1000) -> pd.DataFrame:
    """Tie groups from Spark: score quantile bins (at most ``bins``), aggregated before leaving Spark."""
    from pyspark.ml.feature import Bucketizer
    from pyspark.sql import functions as F

    probs = [i / bins for i in range(1, bins)]
    edges = sorted(set(df.approxQuantile(score, probs, 1.0 / (10 * bins))))
    splits = [-float("inf"), *edges, float("inf")]
    bucketed = Bucketizer(splits=splits, inputCol=score, outputCol="_bin", handleInvalid="skip").transform(
        df.select(F.col(score).cast("double").alias(score), F.col(treated).cast("boolean").alias("_t"),
                  F.col(y).cast("double").alias("_y")))
    pdf = bucketed.groupBy("_bin").agg(
        F.max(score).alias("score"), F.sum(F.col("_t").cast("double")).alias("n_t"),
        F.sum(F.when(F.col("_t"), F.col("_y")).otherwise(0.0)).alias("y_t"),
        F.sum((~F.col("_t")).cast("double")).alias("n_c"),
        F.sum(F.when(F.col("_t"), 0.0).otherwise(F.col("_y"))).alias("y_c"),
    ).toPandas()
    return pdf.sort_values("_bin", ascending=False)[GROUP_COLUMNS].reset_index(drop=True)


def _cumulative(groups: pd.DataFrame) -> pd.DataFrame:
    """Cumulative counts at the end of each group, with a leading zero point."""
    cum = groups[["n_t", "y_t", "n_c", "y_c"]].astype(float).cumsum()
    zero = pd.DataFrame([[0.0, 0.0, 0.0, 0.0]], columns=cum.columns)
    cum = pd.concat([zero, cum], ignore_index=True)
    cum["k"] = cum["n_t"] + cum["n_c"]
    return cum


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), 0.0)


def curves(groups: pd.DataFrame) -> pd.DataFrame:
    """Curve points: ``share`` (k/N), ``qini``, ``uplift``, ``random_qini`` and ``random_uplift``."""
    cum = _cumulative(groups)
    n = cum["k"].iloc[-1]
    n_t_total = cum["n_t"].iloc[-1]
    ate = float(_ratio(cum["y_t"].iloc[-1:].to_numpy(), cum["n_t"].iloc[-1:].to_numpy())[0]
                - _ratio(cum["y_c"].iloc[-1:].to_numpy(), cum["n_c"].iloc[-1:].to_numpy())[0])
    share = cum["k"].to_numpy() / n if n else np.zeros(len(cum))
    qini = (cum["y_t"].to_numpy() - cum["y_c"].to_numpy() * _ratio(cum["n_t"].to_numpy(), cum["n_c"].to_numpy()))
    qini = np.where(cum["n_c"].to_numpy() > 0, qini, 0.0) / (n_t_total if n_t_total else 1.0)
    rate_diff = _ratio(cum["y_t"].to_numpy(), cum["n_t"].to_numpy()) - _ratio(cum["y_c"].to_numpy(),
                                                                              cum["n_c"].to_numpy())
    both = (cum["n_t"].to_numpy() > 0) & (cum["n_c"].to_numpy() > 0)
    uplift = np.where(both, rate_diff, 0.0) * share
    return pd.DataFrame({"share": share, "qini": qini, "uplift": uplift, "random_qini": share * ate,
                         "random_uplift": share * ate})


def _area(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def uplift_at(groups: pd.DataFrame, share: float) -> float:
    """Treated minus control mean outcome among the top ``share`` of units (straddling ties pro rata)."""
    n = float(groups["n_t"].sum() + groups["n_c"].sum())
    target = share * n
    acc = np.zeros(4)
    before = 0.0
    for row in groups[["n_t", "y_t", "n_c", "y_c"]].itertuples(index=False):
        size = row.n_t + row.n_c
        if before + size <= target + 1e-9:
            acc += np.array(row, dtype=float)
            before += size
            continue
        weight = (target - before) / size if size else 0.0
        acc += weight * np.array(row, dtype=float)
        break
    n_t, y_t, n_c, y_c = acc
    if n_t <= 0 or n_c <= 0:
        return float("nan")
    return float(y_t / n_t - y_c / n_c)


def perfect_groups(treated: np.ndarray, y: np.ndarray) -> pd.DataFrame:
    """Tie groups of the perfect ranking: score ``y`` for treated units and ``-y`` for control units."""
    treated = np.asarray(treated).astype(bool)
    y = np.asarray(y, dtype=float)
    return tie_groups(np.where(treated, y, -y), treated, y)


def evaluate_groups(groups: pd.DataFrame, shares: Sequence[float],
                    perfect: pd.DataFrame | None = None) -> dict[str, Any]:
    """Every metric from tie groups: ``ate, qini_coefficient, qini_normalized, auuc, auuc_random,
    uplift_at`` (dict share -> value), ``n``, ``n_treated``, ``n_control`` and the ``curve`` frame."""
    c = curves(groups)
    x = c["share"].to_numpy()
    ate = float(c["random_qini"].iloc[-1]) if len(c) else float("nan")
    qini_area = _area(x, c["qini"].to_numpy())
    coefficient = qini_area - ate / 2.0
    normalized = float("nan")
    if perfect is not None:
        pc = curves(perfect)
        best = _area(pc["share"].to_numpy(), pc["qini"].to_numpy()) - ate / 2.0
        normalized = coefficient / best if best > 0 else float("nan")
    return {
        "n": float(groups["n_t"].sum() + groups["n_c"].sum()), "n_treated": float(groups["n_t"].sum()),
        "n_control": float(groups["n_c"].sum()), "ate": ate, "qini_coefficient": coefficient,
        "qini_normalized": normalized, "auuc": _area(x, c["uplift"].to_numpy()), "auuc_random": ate / 2.0,
        "uplift_at": {float(s): uplift_at(groups, s) for s in shares}, "curve": c,
    }


def evaluate_scores(score: np.ndarray, treated: np.ndarray, y: np.ndarray, shares: Sequence[float]) -> dict[str, Any]:
    """:func:`evaluate_groups` on unit-level arrays (exact ties, with the perfect-ranking normalisation)."""
    return evaluate_groups(tie_groups(score, treated, y), shares, perfect_groups(treated, y))


def resample_curve(curve: pd.DataFrame, points: int = 101) -> pd.DataFrame:
    """The curve on an even grid of shares (linear interpolation between tie-group points), for tables/plots."""
    grid = np.linspace(0.0, 1.0, points)
    out = {"share": grid}
    for col in ("qini", "uplift", "random_qini", "random_uplift"):
        out[col] = np.interp(grid, curve["share"].to_numpy(), curve[col].to_numpy())
    return pd.DataFrame(out)
