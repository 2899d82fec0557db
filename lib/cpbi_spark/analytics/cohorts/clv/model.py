"""CLV study: per-customer summary in Spark, fit on a calibration window, check on the holdout, score.

A *purchase occasion* is a UTC day with at least one order (several baskets on one day count once, as
in the BG/NBD literature). Per customer, measured in ``time_unit_days`` from the first purchase:
``x`` = repeat occasions, ``t_x`` = time of the last one, ``T`` = time to the end of the window,
``m_x`` = mean net value (after returns) of the repeat occasions, and ``holdout`` = occasions in the
holdout window. Only this one row per customer leaves Spark.

Example:
    >>> cal = clv_summary(orders, people, cal_end, end, 7).toPandas()          # doctest: +SKIP
    >>> bg = fit_bgnbd(cal.x, cal.t_x, cal.T)                                  # doctest: +SKIP
    >>> check = holdout_check(cal, bg, holdout_units=13, deciles=10)           # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cpbi_spark.analytics.cohorts.clv.bgnbd import BgNbdFit, expected_purchases, p_alive
from cpbi_spark.analytics.cohorts.clv.gamma_gamma import GammaGammaFit, conditional_expected_value, fit_gamma_gamma

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame


def clv_summary(orders: DataFrame, people: DataFrame, calibration_end: dt.datetime, end: dt.datetime,
                unit_days: int) -> DataFrame:
    """One row per customer first seen before ``calibration_end``: x, t_x, T, m_x, holdout (see module doc)."""
    from pyspark.sql import functions as F

    days = (orders.join(people.select("customer_id"), "customer_id")
            .filter(F.col("order_ts") < F.lit(end))
            .groupBy("customer_id", F.to_date("order_ts").alias("day")).agg(F.sum("net").alias("net")))
    cal_day = F.lit(calibration_end.date())
    in_cal = F.col("day") < cal_day
    per = days.groupBy("customer_id").agg(
        F.min(F.when(in_cal, F.col("day"))).alias("first_day"),
        F.max(F.when(in_cal, F.col("day"))).alias("last_day"),
        F.sum(in_cal.cast("int")).alias("n_cal"),
        F.sum((~in_cal).cast("int")).alias("holdout"),
        F.collect_list(F.when(in_cal, F.struct("day", "net"))).alias("_days"))
    repeat_net = F.filter("_days", lambda d: d["day"] > F.col("first_day"))
    return (per.filter(F.col("first_day").isNotNull())
            .select("customer_id",
                    (F.col("n_cal") - 1).cast("double").alias("x"),
                    (F.datediff("last_day", "first_day") / unit_days).alias("t_x"),
                    (F.datediff(cal_day, "first_day") / unit_days).alias("T"),
                    F.when(F.size(repeat_net) > 0,
                           F.aggregate(repeat_net, F.lit(0.0), lambda acc, d: acc + d["net"]) / F.size(repeat_net)
                           ).alias("m_x"),
                    F.col("holdout").cast("double").alias("holdout")))


@dataclass(frozen=True)
class HoldoutCheck:
    """Predicted vs actual purchase occasions in the holdout window, over the calibration customers."""

    customers: int
    predicted: float
    actual: float
    holdout_units: float
    by_decile: Any  # pandas DataFrame: decile, customers, predicted, actual, error

    @property
    def error(self) -> float:
        """Relative error of the aggregate: (predicted - actual) / actual."""
        return (self.predicted - self.actual) / self.actual if self.actual else float("inf")


def holdout_check(cal: pd.DataFrame, fit: BgNbdFit, holdout_units: float, deciles: int = 10) -> HoldoutCheck:
    """Compare E[purchases in the holdout | calibration history] with what happened, overall and by decile.

    Decile 1 holds the customers with the highest predicted purchases.
    """
    import pandas as pd

    pred = expected_purchases(fit.params, holdout_units, cal["x"], cal["t_x"], cal["T"])
    frame = pd.DataFrame({"predicted": pred, "actual": cal["holdout"].to_numpy(dtype=float)})
    rank = frame["predicted"].rank(method="first", ascending=False)
    frame["decile"] = np.ceil(rank * deciles / len(frame)).astype(int).clip(1, deciles)
    by = frame.groupby("decile").agg(customers=("predicted", "size"), predicted=("predicted", "sum"),
                                     actual=("actual", "sum")).reset_index()
    by["error"] = (by["predicted"] - by["actual"]) / by["actual"].where(by["actual"] > 0)
    return HoldoutCheck(len(frame), float(frame["predicted"].sum()), float(frame["actual"].sum()),
                        float(holdout_units), by)


def fit_spend(summary: pd.DataFrame) -> GammaGammaFit | None:
    """Gamma-Gamma on customers with repeat occasions of positive mean net value (None if too few)."""
    keep = (summary["x"] >= 1) & (summary["m_x"].fillna(0) > 0)
    if keep.sum() < 10:
        return None
    return fit_gamma_gamma(summary.loc[keep, "x"], summary.loc[keep, "m_x"])


def score_customers(summary: pd.DataFrame, bg: BgNbdFit, gg: GammaGammaFit | None, *, horizon_days: int,
                    unit_days: int, annual_discount_rate: float, margin: float) -> pd.DataFrame:
    """Per customer: p_alive, expected occasions over the horizon, expected value per occasion, CLV.

    CLV = margin * E[value] * sum_k (E[Y(k)] - E[Y(k-1)]) / (1 + d)^k over time units k = 1..K covering
    the horizon, with d the per-unit rate equivalent to the annual discount rate.
    """
    x, t_x, T = summary["x"], summary["t_x"], summary["T"]
    steps = max(1, math.ceil(horizon_days / unit_days))
    per_unit = (1 + annual_discount_rate) ** (unit_days / 365.0) - 1
    cumulative = [np.zeros(len(summary))] + [expected_purchases(bg.params, k, x, t_x, T) for k in range(1, steps + 1)]
    discounted = sum((cumulative[k] - cumulative[k - 1]) / (1 + per_unit) ** k for k in range(1, steps + 1))
    m_x = summary["m_x"].fillna(0.0).clip(lower=0.0)
    x_spend = np.where(m_x > 0, x, 0.0)
    if gg is not None:
        value = conditional_expected_value(gg.params, x_spend, m_x)
    else:  # no spend model: the customer's own mean, else the population's
        fallback = float(m_x[m_x > 0].mean()) if (m_x > 0).any() else 0.0
        value = np.where(m_x > 0, m_x, fallback)
    out = summary[["customer_id", "x", "t_x", "T", "m_x"]].copy()
    out["p_alive"] = p_alive(bg.params, x, t_x, T)
    out["expected_purchases"] = cumulative[-1]
    out["expected_value_per_purchase"] = value
    out["clv"] = margin * value * discounted
    return out


def clv_deciles(scored: pd.DataFrame, deciles: int = 10) -> tuple[pd.DataFrame, pd.Series]:
    """Customers ranked by CLV (decile 1 = highest): the per-decile summary and each customer's decile.

    The summary has customers, mean/total/min/max CLV, share and cumulative share of the total CLV.
    """
    frame = scored.copy()
    rank = frame["clv"].rank(method="first", ascending=False)
    frame["clv_decile"] = np.ceil(rank * deciles / max(len(frame), 1)).astype(int).clip(1, deciles)
    by = frame.groupby("clv_decile").agg(
        customers=("clv", "size"), clv_mean=("clv", "mean"), clv_total=("clv", "sum"), clv_min=("clv", "min"),
        clv_max=("clv", "max"), p_alive_mean=("p_alive", "mean"),
        expected_purchases_mean=("expected_purchases", "mean"),
        expected_value_per_purchase_mean=("expected_value_per_purchase", "mean"),
        repeat_purchases_mean=("x", "mean")).reset_index()
    total = by["clv_total"].sum()
    by["clv_share"] = by["clv_total"] / total if total else 0.0
    by["cumulative_clv_share"] = by["clv_share"].cumsum()
    return by, frame["clv_decile"]
