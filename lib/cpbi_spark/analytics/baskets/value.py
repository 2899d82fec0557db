"""Returns-aware value of a rule: what the cross-sell of its consequent is worth once returns are priced.

Per scope and item, :func:`cpbi_spark.analytics.baskets.encode.item_value_profile` gives the mean
amount, margin and return cost of one unit (one item of one basket) and the share of units returned.
For a rule ``A -> C`` (C may hold several items; their values add up):

==========================  ================================================================
consequent_return_rate      returned units of C's items / units of C's items
consequent_margin           sum over C of mean margin per unit (amount - quantity * unit cost)
consequent_return_cost      sum over C of mean return cost per unit (refund - recovered cost
                            + handling cost, zero for units kept)
consequent_net_value        consequent_margin - consequent_return_cost
expected_net_value          confidence * consequent_net_value: the value one basket holding A is
                            expected to add by buying C (and keeping it, or not)
kept_confidence             confidence * (1 - consequent_return_rate)
kept_lift                   lift * (1 - consequent_return_rate)
high_return_flag            consequent_return_rate > returns.flag_rate
==========================  ================================================================

A rule whose consequent comes back often has a lower kept lift and net value, so it ranks lower
(:func:`rank_rules`).

Example:
    >>> rules = pd.DataFrame({"scope": ["s"], "consequent": [("x",)], "confidence": [0.5], "lift": [2.0],
    ...                       "is_significant": [True], "support_count": [10], "antecedent": [("y",)]})
    >>> prof = pd.DataFrame({"scope": ["s"], "item": ["x"], "units": [10], "returned_units": [2],
    ...                      "mean_amount": [20.0], "mean_margin": [8.0], "mean_return_cost": [3.0]})
    >>> out = attach_value(rules, prof, flag_rate=0.15)
    >>> [float(out.loc[0, c]) for c in ("consequent_return_rate", "expected_net_value", "kept_lift")]
    [0.2, 2.5, 1.6]
"""

from __future__ import annotations

import numpy as np
import pandas as pd

VALUE_COLUMNS = ["consequent_return_rate", "consequent_amount", "consequent_margin", "consequent_return_cost",
                 "consequent_net_value", "expected_net_value", "kept_confidence", "kept_lift", "high_return_flag"]


def attach_value(rules: pd.DataFrame, profile: pd.DataFrame, *, flag_rate: float) -> pd.DataFrame:
    """Add :data:`VALUE_COLUMNS` to ``rules`` from the item ``profile`` (columns as in the module doc)."""
    out = rules.reset_index(drop=True).copy()
    if out.empty:
        for c in VALUE_COLUMNS:
            out[c] = pd.Series(dtype=bool if c == "high_return_flag" else np.float64)
        return out
    exploded = (out[["scope", "consequent"]].reset_index().rename(columns={"index": "_rule"})
                .explode("consequent").rename(columns={"consequent": "item"}))
    prof = profile[["scope", "item", "units", "returned_units", "mean_amount", "mean_margin", "mean_return_cost"]]
    merged = exploded.merge(prof, on=["scope", "item"], how="left")
    grouped = merged.groupby("_rule")
    agg = grouped[["units", "returned_units", "mean_amount", "mean_margin", "mean_return_cost"]].sum()
    # A consequent with any item of unknown value has an unknown value (not a partial sum).
    known = grouped[["mean_amount", "mean_margin", "mean_return_cost"]].count()
    size = grouped.size()
    agg = agg.rename(columns={"returned_units": "returned", "mean_amount": "amount", "mean_margin": "margin",
                              "mean_return_cost": "return_cost"})
    for col, src in (("amount", "mean_amount"), ("margin", "mean_margin"), ("return_cost", "mean_return_cost")):
        agg.loc[known[src] < size, col] = np.nan
    agg = agg.reindex(range(len(out)))
    units = agg["units"].to_numpy(dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(units > 0, agg["returned"].to_numpy(dtype=np.float64) / units, np.nan)
    out["consequent_return_rate"] = rate
    out["consequent_amount"] = agg["amount"].to_numpy(dtype=np.float64)
    out["consequent_margin"] = agg["margin"].to_numpy(dtype=np.float64)
    out["consequent_return_cost"] = agg["return_cost"].to_numpy(dtype=np.float64)
    out["consequent_net_value"] = out["consequent_margin"] - out["consequent_return_cost"]
    out["expected_net_value"] = out["confidence"] * out["consequent_net_value"]
    kept = 1.0 - np.nan_to_num(rate, nan=0.0)
    out["kept_confidence"] = out["confidence"] * kept
    out["kept_lift"] = out["lift"] * kept
    out["high_return_flag"] = np.nan_to_num(rate, nan=0.0) > flag_rate
    return out


def rank_rules(rules: pd.DataFrame, by: str) -> pd.DataFrame:
    """Add ``rule_rank`` (1 = best) within each scope: significant rules first, then ``by`` descending,
    then support count, then antecedent and consequent names (a stable, reproducible order).

    >>> r = pd.DataFrame({"scope": ["s", "s"], "is_significant": [False, True], "lift": [9.0, 2.0],
    ...                   "support_count": [5, 5], "antecedent": [("a",), ("b",)], "consequent": [("c",), ("c",)]})
    >>> rank_rules(r, "lift")["rule_rank"].tolist()
    [2, 1]
    """
    out = rules.copy()
    if out.empty:
        out["rule_rank"] = pd.Series(dtype=np.int64)
        return out
    key = out.assign(_sig=~out["is_significant"].astype(bool), _by=-out[by].fillna(-np.inf),
                     _sup=-out["support_count"], _a=out["antecedent"].map("|".join),
                     _c=out["consequent"].map("|".join))
    order = key.sort_values(["scope", "_sig", "_by", "_sup", "_a", "_c"], kind="stable").index
    out.loc[order, "rule_rank"] = out.loc[order].groupby("scope").cumcount().to_numpy() + 1
    out["rule_rank"] = out["rule_rank"].astype(np.int64)
    return out
