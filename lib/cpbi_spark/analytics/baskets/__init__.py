"""Basket analysis and cross-sell: frequent itemsets, rules with metrics and significance, returns-aware
value, recommendations evaluated on a time split (see docs/baskets.md).

Modules: :mod:`.config` (parameters), :mod:`.encode` (gold lines -> scoped transactions),
:mod:`.frequent` (exact mining on Spark), :mod:`.guard` (explosion bounds), :mod:`.rules` (rules and
metrics), :mod:`.significance` (tests and corrections), :mod:`.value` (returns-aware value),
:mod:`.recommend` (top-k cross-sell), :mod:`.evaluate` (ranking metrics on a time split),
:mod:`.artifacts` (CSV and plot), :mod:`.job` (``cpbi run baskets``).
"""
