"""Association rules and their metrics, from the (bounded) frequent itemsets on the driver.

Every frequent itemset ``I`` of two items or more gives one rule ``A -> C`` per non-empty proper
subset ``A`` of ``I`` (``C = I \\ A``), as in mlxtend's ``association_rules``. By downward closure
``A`` and ``C`` are frequent too, so every count a metric needs is known exactly.

With ``n`` baskets in the scope and ``n_A``, ``n_C``, ``n_AC`` the baskets holding A, C, both
(``s_X = n_X / n``):

====================  =======================================================================
support               ``s_AC``  (and ``support_count = n_AC``)
confidence            ``n_AC / n_A``
lift                  ``confidence / s_C``
leverage              ``s_AC - s_A * s_C``
conviction            ``(1 - s_C) / (1 - confidence)``; ``inf`` when confidence = 1
zhang                 ``leverage / max(s_AC * (1 - s_A), s_A * (s_C - s_AC))``; 0 when that is 0
jaccard               ``s_AC / (s_A + s_C - s_AC)``
====================  =======================================================================

Example:
    >>> m = rule_metrics(pd.DataFrame({"n_baskets": [10], "antecedent_count": [4], "consequent_count": [5],
    ...                                "support_count": [3]}))
    >>> [round(float(m.loc[0, c]), 4) for c in ("confidence", "lift", "leverage", "conviction", "zhang", "jaccard")]
    [0.75, 1.5, 0.1, 2.0, 0.5556, 0.5]
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from cpbi_spark.analytics.baskets.frequent import FrequentItemsets

RULE_COUNT_COLUMNS = ["scope", "antecedent", "consequent", "n_baskets", "antecedent_count", "consequent_count",
                      "support_count"]
METRIC_COLUMNS = ["support", "antecedent_support", "consequent_support", "confidence", "lift", "leverage",
                  "conviction", "zhang", "jaccard"]


def rule_metrics(rules: pd.DataFrame) -> pd.DataFrame:
    """Add the metric columns (see module doc) to a frame of counts; returns a new frame."""
    out = rules.copy()
    n = out["n_baskets"].to_numpy(dtype=np.float64)
    n_a = out["antecedent_count"].to_numpy(dtype=np.float64)
    n_c = out["consequent_count"].to_numpy(dtype=np.float64)
    n_ac = out["support_count"].to_numpy(dtype=np.float64)
    s_ac, s_a, s_c = n_ac / n, n_a / n, n_c / n
    conf = n_ac / n_a
    leverage = s_ac - s_a * s_c
    with np.errstate(divide="ignore", invalid="ignore"):
        conviction = np.where(conf < 1.0, (1.0 - s_c) / (1.0 - conf), np.inf)
        denom = np.maximum(s_ac * (1 - s_a), s_a * (s_c - s_ac))
        zhang = np.where(denom == 0, 0.0, leverage / denom)
    out["support"] = s_ac
    out["antecedent_support"] = s_a
    out["consequent_support"] = s_c
    out["confidence"] = conf
    out["lift"] = conf / s_c
    out["leverage"] = leverage
    out["conviction"] = conviction
    out["zhang"] = zhang
    out["jaccard"] = s_ac / (s_a + s_c - s_ac)
    return out


def _count_lookup(fi: FrequentItemsets, j: int) -> tuple[pd.MultiIndex | None, np.ndarray]:
    ids, counts = fi.levels[j]
    if j == 1:
        return None, np.asarray(fi.item_count, dtype=np.int64)
    return pd.MultiIndex.from_arrays([ids[:, c] for c in range(j)]), counts


def rule_counts(fi: FrequentItemsets) -> pd.DataFrame:
    """Every rule of every scope with its four counts (columns :data:`RULE_COUNT_COLUMNS`).

    Antecedent and consequent are tuples of item names in name order.
    """
    lookups = {j: _count_lookup(fi, j) for j in fi.levels}
    n_of = {s: info.n_baskets for s, info in fi.scopes.items()}
    parts = []
    for k in sorted(fi.levels):
        if k < 2:
            continue
        ids, n_ac = fi.levels[k]
        if not len(n_ac):
            continue
        for j in range(1, k):
            for ante_cols in itertools.combinations(range(k), j):
                cons_cols = tuple(c for c in range(k) if c not in ante_cols)
                ante, cons = ids[:, list(ante_cols)], ids[:, list(cons_cols)]
                parts.append(pd.DataFrame({
                    "scope": fi.item_scope[ids[:, 0]],
                    "antecedent_ids": list(map(tuple, ante.tolist())),
                    "consequent_ids": list(map(tuple, cons.tolist())),
                    "antecedent_count": _counts_of(lookups, ante),
                    "consequent_count": _counts_of(lookups, cons),
                    "support_count": n_ac,
                }))
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=object if c in ("scope", "antecedent", "consequent") else np.int64)
                             for c in RULE_COUNT_COLUMNS})
    out = pd.concat(parts, ignore_index=True)
    names = fi.item_name
    out["antecedent"] = [tuple(names[list(t)]) for t in out["antecedent_ids"]]
    out["consequent"] = [tuple(names[list(t)]) for t in out["consequent_ids"]]
    out["n_baskets"] = out["scope"].map(n_of).astype(np.int64)
    return out[[*RULE_COUNT_COLUMNS, "antecedent_ids", "consequent_ids"]]


def _counts_of(lookups: dict, sub: np.ndarray) -> np.ndarray:
    index, counts = lookups[sub.shape[1]]
    if index is None:
        return counts[sub[:, 0]]
    pos = index.get_indexer(pd.MultiIndex.from_arrays([sub[:, c] for c in range(sub.shape[1])]))
    if (pos < 0).any():     # cannot happen for exact frequent itemsets (downward closure)
        raise ValueError("a rule's antecedent or consequent is missing from the frequent itemsets")
    return counts[pos]


def generate_rules(fi: FrequentItemsets, *, min_confidence: float = 0.0, min_lift: float = 0.0) -> pd.DataFrame:
    """Rules with counts and metrics, kept when confidence >= ``min_confidence`` and lift >= ``min_lift``."""
    rules = rule_metrics(rule_counts(fi))
    keep = (rules["confidence"] >= min_confidence) & (rules["lift"] >= min_lift)
    return rules[keep].reset_index(drop=True)
