"""Guard rails: bound the itemset explosion from item supports before anything is mined.

Counting frequent itemsets can blow up (a few long baskets at a low support have more subsets
than memory holds). Before mining, cpbi bounds what the run will produce from two cheap inputs
per run scope: the support count of every item and the histogram of basket sizes (counting only
the items that are frequent on their own):

- occurrences of k-subsets  ``O_k = sum over baskets of C(s_b, k)`` (exact work of level k);
- frequent k-itemsets       ``U_k = min(C(F, k), floor(O_k / min_count))`` — a frequent itemset
  needs ``min_count`` occurrences, so there cannot be more than that (``F`` = frequent items);
  ``U_k = 0`` when fewer than ``min_count`` baskets hold k frequent items;
- rules                      ``R = sum_k U_k * (2^k - 2)``.

When a bound passes a limit of ``guard`` in conf, the run stops with :class:`AnalysisError` naming
the support that would fit, instead of an out-of-memory failure in the middle of the run.

Example:
    >>> est = estimate({2: 100, 3: 50}, n_frequent=10, min_count=5, max_len=3)
    >>> est.occurrences[2], est.itemsets[2], est.itemsets[3]       # 100*1 + 50*3 pairs; min(45, 250//5)
    (250, 45, 10)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# Multipliers of min_support tried when a run does not fit (the first one that fits is suggested).
SUGGESTION_GRID: tuple[float, ...] = (1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 50.0,
                                      75.0, 100.0, 200.0, 500.0)


@dataclass(frozen=True)
class Estimate:
    """Upper bounds of one run (one scope, or the sum over scopes), by itemset length."""

    occurrences: dict[int, int] = field(default_factory=dict)   # k -> sum_b C(s_b, k)
    itemsets: dict[int, int] = field(default_factory=dict)      # k -> bound on frequent k-itemsets

    @property
    def itemsets_bound(self) -> int:
        return sum(self.itemsets.values())

    @property
    def rules_bound(self) -> int:
        return sum(n * (2 ** k - 2) for k, n in self.itemsets.items() if k >= 2)

    @property
    def combinations(self) -> int:
        """k-subsets (k >= 2) the level-wise counter enumerates at most."""
        return sum(n for k, n in self.occurrences.items() if k >= 2)

    def __add__(self, other: Estimate) -> Estimate:
        occ = set(self.occurrences) | set(other.occurrences)
        sets = set(self.itemsets) | set(other.itemsets)
        return Estimate({k: self.occurrences.get(k, 0) + other.occurrences.get(k, 0) for k in sorted(occ)},
                        {k: self.itemsets.get(k, 0) + other.itemsets.get(k, 0) for k in sorted(sets)})


def estimate(size_histogram: Mapping[int, int], *, n_frequent: int, min_count: int, max_len: int) -> Estimate:
    """Bounds for one scope from ``{basket size: number of baskets}`` (sizes over frequent items).

    >>> estimate({4: 10}, n_frequent=4, min_count=1, max_len=4).itemsets    # all 15 subsets of 4 items
    {1: 4, 2: 6, 3: 4, 4: 1}
    """
    occ: dict[int, int] = {}
    sets: dict[int, int] = {}
    longest = max((s for s, n in size_histogram.items() if n > 0), default=0)
    for k in range(1, min(max_len, longest) + 1):
        o = sum(n * math.comb(s, k) for s, n in size_histogram.items() if s >= k)
        occ[k] = o
        # A frequent k-itemset lies in min_count baskets of at least k items: too few such baskets, none.
        if sum(n for s, n in size_histogram.items() if s >= k) < min_count:
            sets[k] = 0
            continue
        sets[k] = min(math.comb(n_frequent, k), o // max(min_count, 1))
    return Estimate(occ, sets)


@dataclass(frozen=True)
class Limits:
    max_itemsets: int
    max_combinations: int
    max_rules: int

    def violations(self, est: Estimate, *, count_combinations: bool = True) -> list[str]:
        """What exceeds a limit, in words (empty when the run fits)."""
        out = []
        if est.itemsets_bound > self.max_itemsets:
            out.append(f"up to {est.itemsets_bound:,} frequent itemsets (guard.max_itemsets = {self.max_itemsets:,})")
        if est.rules_bound > self.max_rules:
            out.append(f"up to {est.rules_bound:,} rules (guard.max_rules = {self.max_rules:,})")
        if count_combinations and est.combinations > self.max_combinations:
            out.append(f"{est.combinations:,} item combinations to count "
                       f"(guard.max_combinations = {self.max_combinations:,})")
        return out


def explosion_message(problems: Sequence[str], *, min_support: float, max_len: int, n_scopes: int,
                      suggested: float | None) -> str:
    """The text of the AnalysisError raised when a run does not fit."""
    head = (f"basket analysis stopped before mining: at min_support {min_support:g} and max_len {max_len} "
            f"over {n_scopes} run scope(s) it could produce " + "; ".join(problems) + ".")
    if suggested is not None:
        tail = (f" Suggested: min_support: {suggested:.6g} in analyses.baskets (estimated to fit), "
                "or a smaller max_len, fewer levels/segments or a shorter window.")
    else:
        tail = (" No support up to 500x the current one fits: lower max_len, analyse fewer levels/segments, "
                "narrow the window, or raise the guard limits if the machine can hold the result.")
    return head + tail
