"""Cost-aware targeting policy and its evaluation on randomised held-out units.

Choice (per unit, from held-out predictions): the expected incremental profit of arm ``k`` is
``margin_rate * tau_k(x) - cost_k``, with ``tau_k`` the predicted uplift of net revenue per customer
(after discounts and returns) and ``cost_k`` the cost per contact; the unit gets the arm with the highest
expected profit if it exceeds ``min_profit`` (default 0), else no contact (the control arm).

Evaluation: the units were randomised, so within the group ``G_g`` of units the policy sends to arm ``g``,
the units that happened to receive arm ``g`` and those that received control are comparable. With
``N_g`` units in the group and ``ybar_{a,g}`` the mean net revenue of its units that received arm ``a``:

* incremental revenue of the policy vs contacting nobody: ``sum_g N_g (ybar_{g,g} - ybar_{0,g})``;
* incremental revenue vs treating everyone with arm ``b``: ``sum_g N_g (ybar_{g,g} - ybar_{b,g})``;
* cost: ``sum_g N_g cost_g`` (known); profit: ``margin_rate * revenue - cost``.

Groups are disjoint, so the variance is ``sum_g N_g^2 (s^2_{g,g}/n_{g,g} + s^2_{b,g}/n_{b,g})`` and the
interval is normal (``z_{1-alpha/2}``); the cost is known and the margin is a constant. A group without
units in a needed arm makes the estimate NaN (reported, never imputed). Totals refer to the evaluated
units; ``per_customer`` values divide by their number.

Example:
    >>> import pandas as pd
    >>> stats = pd.DataFrame({"group": ["treatment", "treatment"], "arm": ["control", "treatment"],
    ...                       "n": [100, 100], "mean": [10.0, 12.0], "var": [4.0, 4.0]})
    >>> r = strategy_value(stats, "policy", ["control", "treatment"], {"treatment": 0.5}, 0.3)
    >>> round(r["incremental_revenue"], 1), round(r["incremental_profit"], 1), r["treated"]
    (400.0, 20.0, 200)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

NO_CONTACT = "no_contact"


def expected_profit(tau_revenue: np.ndarray, costs: Sequence[float], margin_rate: float) -> np.ndarray:
    """``(n, K)`` expected incremental profit of each treatment arm per unit."""
    return margin_rate * np.asarray(tau_revenue, dtype=float) - np.asarray(costs, dtype=float)[None, :]


def choose_arms(profit: np.ndarray, min_profit: float = 0.0) -> np.ndarray:
    """Index of the chosen arm per unit: ``0`` = no contact (control), ``k`` = treatment arm ``k``.

    Ties between arms go to the lower index (the cheaper-listed arm), so the choice is deterministic.

    >>> choose_arms(np.array([[1.0, 2.0], [-1.0, -0.5], [0.2, 0.2]])).tolist()
    [2, 0, 1]
    """
    profit = np.asarray(profit, dtype=float)
    best = np.nanargmax(np.where(np.isnan(profit), -np.inf, profit), axis=1)
    value = profit[np.arange(len(profit)), best]
    return np.where(value > min_profit, best + 1, 0)


def group_stats(group: Sequence[str], arm: Sequence[str], y: np.ndarray) -> pd.DataFrame:
    """``group, arm, n, mean, var`` (ddof=1) of the outcome by recommended group and received arm."""
    df = pd.DataFrame({"group": list(group), "arm": list(arm), "y": np.asarray(y, dtype=float)})
    g = df.groupby(["group", "arm"], sort=True)["y"]
    return pd.DataFrame({"n": g.size(), "mean": g.mean(), "var": g.var(ddof=1)}).reset_index()


def _difference(stats: pd.DataFrame, group: str, a: str, b: str) -> tuple[float, float, int]:
    """``N_g (ybar_a - ybar_b)`` in group ``group``, its variance and ``N_g``."""
    rows = stats[stats["group"] == group].set_index("arm")
    n_group = int(rows["n"].sum())
    if a == b:
        return 0.0, 0.0, n_group
    if a not in rows.index or b not in rows.index:
        return math.nan, math.nan, n_group
    ra, rb = rows.loc[a], rows.loc[b]
    var = 0.0
    for r in (ra, rb):
        v = 0.0 if pd.isna(r["var"]) else float(r["var"])
        var += v / float(r["n"])
    return n_group * (float(ra["mean"]) - float(rb["mean"])), n_group ** 2 * var, n_group


def strategy_value(stats: pd.DataFrame, name: str, arms: Sequence[str], costs: Mapping[str, float],
                   margin_rate: float, *, baseline: str | None = None, alpha: float = 0.05) -> dict[str, Any]:
    """Incremental revenue, cost and profit (with intervals) of a strategy given by ``stats``' groups.

    ``stats`` (from :func:`group_stats`) groups units by the arm the strategy sends them to (``arms[0]``,
    the control arm, means no contact). ``baseline``: compare with treating everyone with that arm instead
    of with contacting nobody (``None``).
    """
    from scipy import stats as st

    control = arms[0]
    reference = baseline or control
    z = float(st.norm.ppf(1 - alpha / 2))
    revenue, var, cost, treated, units = 0.0, 0.0, 0.0, 0, 0
    for g in sorted(stats["group"].unique()):
        d, v, n_g = _difference(stats, g, g, reference)
        units += n_g
        revenue += d
        var += v
        if g != control:
            treated += n_g
            cost += n_g * float(costs.get(g, 0.0))
    if baseline is not None:
        # Treating everyone with the baseline arm costs its contact price for every unit.
        cost -= units * float(costs.get(baseline, 0.0))
    se = math.sqrt(var) if var == var else math.nan
    profit = margin_rate * revenue - cost
    return {
        "strategy": name, "compared_with": f"treat_all_{baseline}" if baseline else "treat_none",
        "units": units, "treated": treated, "share_treated": treated / units if units else math.nan,
        "incremental_revenue": revenue, "revenue_ci_low": revenue - z * se, "revenue_ci_high": revenue + z * se,
        "cost": cost, "incremental_profit": profit,
        "profit_ci_low": profit - z * margin_rate * se, "profit_ci_high": profit + z * margin_rate * se,
        "per_customer_profit": profit / units if units else math.nan,
    }


def evaluate_strategies(assigned: Mapping[str, Sequence[str]], received: Sequence[str], y: np.ndarray,
                        arms: Sequence[str], costs: Mapping[str, float], margin_rate: float,
                        alpha: float = 0.05) -> pd.DataFrame:
    """Every strategy vs contacting nobody, and vs each treat-all strategy (paired on the same units).

    ``assigned``: strategy name -> arm per unit (``arms[0]`` = no contact). Typically ``policy``,
    ``treat_none`` and ``treat_all_<arm>`` per treatment arm.
    """
    rows = []
    for name, groups in assigned.items():
        stats = group_stats(groups, received, y)
        rows.append(strategy_value(stats, name, arms, costs, margin_rate, alpha=alpha))
        for b in arms[1:]:
            rows.append(strategy_value(stats, name, arms, costs, margin_rate, baseline=b, alpha=alpha))
    return pd.DataFrame(rows)


def standard_strategies(chosen: Sequence[str], arms: Sequence[str]) -> dict[str, list[str]]:
    """``policy`` (the chosen arms), ``treat_none`` and ``treat_all_<arm>`` for every treatment arm."""
    n = len(chosen)
    out = {"policy": list(chosen), "treat_none": [arms[0]] * n}
    for a in arms[1:]:
        out[f"treat_all_{a}"] = [a] * n
    return out
