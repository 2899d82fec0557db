"""Rules, metrics, significance, returns-aware value and guard bounds on tiny inline inputs (no Spark).

Expectations are computed by hand in the comments, or come from independent implementations
(mlxtend's association_rules, scipy's fisher_exact and chi2_contingency). Float tolerance: 1e-12.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from cpbi_spark.analytics.baskets.frequent import FrequentItemsets, ScopeInfo
from cpbi_spark.analytics.baskets.guard import Estimate, Limits, estimate, explosion_message
from cpbi_spark.analytics.baskets.rules import generate_rules, rule_counts, rule_metrics
from cpbi_spark.analytics.baskets.significance import add_significance, chi2_test, correct, fisher_greater
from cpbi_spark.analytics.baskets.value import attach_value, rank_rules

TOL = 1e-12
# N = 5 baskets: n_a = 4, n_b = 3, n_c = 3, n_ab = 2, n_ac = 2, n_bc = 2, n_abc = 1
BASKETS = [["a", "b", "c"], ["a", "b"], ["a", "c"], ["b", "c"], ["a"]]


def _itemsets_by_hand(baskets: list[list[str]], min_count: int) -> FrequentItemsets:
    """Brute-force counting of every subset (independent of the Spark miner), as a FrequentItemsets."""
    names = sorted({i for b in baskets for i in b})
    counts: dict[tuple[str, ...], int] = {}
    for b in baskets:
        for k in range(1, len(b) + 1):
            for sub in itertools.combinations(sorted(b), k):
                counts[sub] = counts.get(sub, 0) + 1
    freq_items = [n for n in names if counts.get((n,), 0) >= min_count]
    gid = {n: i for i, n in enumerate(freq_items)}
    levels = {}
    for k in range(1, max(map(len, baskets)) + 1):
        rows = sorted((tuple(gid[x] for x in s), c) for s, c in counts.items()
                      if len(s) == k and c >= min_count and all(x in gid for x in s))
        if rows:
            levels[k] = (np.array([r[0] for r in rows], dtype=np.int64), np.array([r[1] for r in rows]))
    return FrequentItemsets(
        scopes={"s": ScopeInfo("s", len(baskets), min_count, len(names), len(freq_items))},
        item_scope=np.array(["s"] * len(freq_items), dtype=object), item_name=np.array(freq_items, dtype=object),
        item_count=np.array([counts[(n,)] for n in freq_items]), levels=levels, engine="hand",
        estimate=Estimate())


def test_rule_metrics_by_hand():
    rules = rule_metrics(rule_counts(_itemsets_by_hand(BASKETS, 1)))
    assert len(rules) == 3 * 2 + 6          # three pairs give 2 rules each, the triple 6
    r = rules[(rules["antecedent"] == ("a",)) & (rules["consequent"] == ("b",))].iloc[0]
    # s_ab = 0.4, s_a = 0.8, s_b = 0.6
    assert (r["support_count"], r["antecedent_count"], r["consequent_count"], r["n_baskets"]) == (2, 4, 3, 5)
    assert r["support"] == pytest.approx(0.4, abs=TOL)
    assert r["confidence"] == pytest.approx(0.5, abs=TOL)                 # 2 / 4
    assert r["lift"] == pytest.approx(0.5 / 0.6, abs=TOL)
    assert r["leverage"] == pytest.approx(0.4 - 0.8 * 0.6, abs=TOL)       # -0.08
    assert r["conviction"] == pytest.approx((1 - 0.6) / (1 - 0.5), abs=TOL)
    assert r["zhang"] == pytest.approx(-0.08 / max(0.4 * 0.2, 0.8 * 0.2), abs=TOL)   # -0.5
    assert r["jaccard"] == pytest.approx(0.4 / (0.8 + 0.6 - 0.4), abs=TOL)
    t = rules[(rules["antecedent"] == ("b", "c")) & (rules["consequent"] == ("a",))].iloc[0]
    assert (t["support_count"], t["antecedent_count"], t["consequent_count"]) == (1, 2, 4)
    assert t["confidence"] == pytest.approx(0.5, abs=TOL)


def test_conviction_is_infinite_at_full_confidence():
    baskets = [["x", "y"], ["x", "y"], ["y"], ["z"]]
    rules = rule_metrics(rule_counts(_itemsets_by_hand(baskets, 1)))
    r = rules[(rules["antecedent"] == ("x",)) & (rules["consequent"] == ("y",))].iloc[0]
    assert r["confidence"] == 1.0 and math.isinf(r["conviction"])


def test_rules_equal_mlxtend_on_tiny_baskets():
    from mlxtend.frequent_patterns import association_rules, fpgrowth
    from mlxtend.preprocessing import TransactionEncoder

    te = TransactionEncoder()
    onehot = pd.DataFrame(te.fit(BASKETS).transform(BASKETS), columns=te.columns_)
    ref = association_rules(fpgrowth(onehot, min_support=0.2, use_colnames=True), num_itemsets=len(BASKETS),
                            metric="confidence", min_threshold=0.0)
    ours = generate_rules(_itemsets_by_hand(BASKETS, 1))
    ref_key = {(tuple(sorted(a)), tuple(sorted(c))): row for a, c, row in
               zip(ref["antecedents"], ref["consequents"], ref.to_dict("records"), strict=True)}
    assert set(ref_key) == set(zip(ours["antecedent"], ours["consequent"], strict=True))
    for row in ours.to_dict("records"):
        m = ref_key[(row["antecedent"], row["consequent"])]
        for ours_col, ref_col in (("support", "support"), ("confidence", "confidence"), ("lift", "lift"),
                                  ("leverage", "leverage"), ("conviction", "conviction"), ("zhang", "zhangs_metric"),
                                  ("jaccard", "jaccard"), ("antecedent_support", "antecedent support"),
                                  ("consequent_support", "consequent support")):
            assert row[ours_col] == pytest.approx(m[ref_col], abs=TOL, rel=TOL), (row["antecedent"], ours_col)


def test_min_confidence_and_lift_filter_rules():
    rules = generate_rules(_itemsets_by_hand(BASKETS, 1), min_confidence=0.6, min_lift=0.9)
    assert len(rules) and (rules["confidence"] >= 0.6).all() and (rules["lift"] >= 0.9).all()
    # b -> a: confidence 2/3, lift (2/3)/0.8 = 0.833 < 0.9: filtered out
    assert (("b",), ("a",)) not in set(zip(rules["antecedent"], rules["consequent"], strict=True))


@pytest.mark.parametrize("n,n_a,n_c,n_ac", [(100, 10, 10, 6), (50, 20, 25, 10), (40, 5, 30, 5), (1000, 3, 4, 1),
                                            (20, 20, 10, 10)])
def test_fisher_and_chi2_equal_scipy(n, n_a, n_c, n_ac):
    from scipy.stats import chi2_contingency, fisher_exact

    table = [[n_ac, n_a - n_ac], [n_c - n_ac, n - n_a - n_c + n_ac]]
    p_ref = fisher_exact(table, alternative="greater")[1]
    p = fisher_greater(np.array([n]), np.array([n_a]), np.array([n_c]), np.array([n_ac]))[0]
    assert p == pytest.approx(p_ref, rel=1e-9, abs=1e-15)
    degenerate = min(n_a, n_c, n - n_a, n - n_c) == 0
    chi = chi2_test(np.array([n]), np.array([n_a]), np.array([n_c]), np.array([n_ac]))[0]
    if degenerate:
        assert chi == 1.0
    else:
        assert chi == pytest.approx(chi2_contingency(table, correction=False)[1], rel=1e-9)


def test_benjamini_hochberg_by_hand_and_per_scope():
    # sorted p: 0.01, 0.03, 0.04, 0.5 (m = 4); p * m / rank = 0.04, 0.06, 0.0533, 0.5; then the running
    # minimum from the top: 0.04, 0.0533, 0.0533, 0.5 -> in the input order below:
    adjusted, reject = correct(np.array([0.01, 0.04, 0.03, 0.5]), "fdr_bh", 0.05)
    assert adjusted == pytest.approx([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.5], abs=1e-12)
    assert reject.tolist() == [True, False, False, False]
    bonf, _ = correct(np.array([0.01, 0.3]), "bonferroni", 0.05)
    assert bonf == pytest.approx([0.02, 0.6])
    # Each scope is its own family: the same p-value is corrected with m = 1 in scope t, m = 2 in scope s.
    rules = pd.DataFrame({"scope": ["s", "s", "t"], "n_baskets": [100] * 3, "antecedent_count": [10] * 3,
                          "consequent_count": [10] * 3, "support_count": [4, 1, 4]})
    out = add_significance(rules, test="fisher", correction="bonferroni", alpha=0.05)
    p4 = fisher_greater(np.array([100]), np.array([10]), np.array([10]), np.array([4]))[0]
    assert out.loc[2, "p_adjusted"] == pytest.approx(p4)
    assert out.loc[0, "p_adjusted"] == pytest.approx(min(1.0, 2 * p4))


def test_low_expected_count_flag():
    rules = pd.DataFrame({"scope": ["s", "s"], "n_baskets": [100, 1000], "antecedent_count": [3, 100],
                          "consequent_count": [10, 100], "support_count": [2, 30]})
    out = add_significance(rules, min_expected_count=5)
    # expected a-cell: 3 * 10 / 100 = 0.3 (< 5: flagged); 100 * 100 / 1000 = 10, other cells larger: not flagged
    assert out["expected_count"].tolist() == pytest.approx([0.3, 10.0])
    assert out["low_expected_count"].tolist() == [True, False]


def test_returns_aware_value_and_ranking():
    rules = pd.DataFrame({
        "scope": ["s", "s", "s"], "antecedent": [("a",), ("a",), ("b",)],
        "consequent": [("x",), ("y",), ("x", "y")], "confidence": [0.5, 0.5, 0.2], "lift": [3.0, 3.0, 2.0],
        "is_significant": [True, True, False], "support_count": [50, 50, 20]})
    profile = pd.DataFrame({
        "scope": ["s", "s"], "item": ["x", "y"], "units": [100, 100], "returned_units": [5, 40],
        "mean_amount": [10.0, 30.0], "mean_margin": [4.0, 12.0], "mean_return_cost": [0.5, 9.0]})
    out = attach_value(rules, profile, flag_rate=0.15)
    # x: rate 0.05, net 4 - 0.5 = 3.5, expected 0.5 * 3.5; y: rate 0.4 (flagged), net 12 - 9 = 3
    assert out["consequent_return_rate"].tolist() == pytest.approx([0.05, 0.4, 45 / 200])
    assert out["expected_net_value"].tolist() == pytest.approx([1.75, 1.5, 0.2 * (16 - 9.5)])
    assert out["kept_lift"].tolist() == pytest.approx([3.0 * 0.95, 3.0 * 0.6, 2.0 * (1 - 45 / 200)])
    assert out["high_return_flag"].tolist() == [False, True, True]
    ranked = rank_rules(out, "kept_lift")
    # Same lift, but y comes back 40% of the time: a -> x ranks first; the non-significant rule last.
    assert ranked["rule_rank"].tolist() == [1, 2, 3]
    unknown = attach_value(rules.iloc[[0]], profile.assign(mean_margin=[np.nan, 12.0]), flag_rate=0.15)
    assert np.isnan(unknown.loc[0, "expected_net_value"])


def test_guard_bounds_by_hand():
    # 10 baskets of 4 frequent items, 5 of 2: pairs occur 10 * 6 + 5 * 1 = 65 times, triples 10 * 4 = 40,
    # quadruples 10; with min_count 5 and 6 frequent items: pairs <= min(C(6,2)=15, 65 // 5 = 13) = 13,
    # triples <= min(20, 8) = 8, quadruples <= min(15, 2) = 2 (and 10 >= 5 baskets hold 4 items).
    est = estimate({4: 10, 2: 5}, n_frequent=6, min_count=5, max_len=4)
    assert est.occurrences == {1: 50, 2: 65, 3: 40, 4: 10}
    assert est.itemsets == {1: 6, 2: 13, 3: 8, 4: 2}
    assert est.rules_bound == 13 * 2 + 8 * 6 + 2 * 14
    assert est.combinations == 65 + 40 + 10
    # Fewer than min_count baskets hold 4 items: no frequent 4-itemset can exist.
    assert estimate({4: 3, 2: 50}, n_frequent=6, min_count=5, max_len=4).itemsets[4] == 0
    limits = Limits(max_itemsets=20, max_combinations=100, max_rules=1000)
    problems = limits.violations(est)
    assert len(problems) == 2 and "29 frequent itemsets" in problems[0] and "115 item combinations" in problems[1]
    msg = explosion_message(problems, min_support=0.001, max_len=4, n_scopes=1, suggested=0.004)
    assert "min_support: 0.004" in msg


def test_estimates_add_up_by_length():
    a = Estimate({2: 10}, {1: 3, 2: 4})
    b = Estimate({}, {3: 5})
    total = a + b
    assert total.itemsets == {1: 3, 2: 4, 3: 5} and total.occurrences == {2: 10}
    assert total.itemsets_bound == 12
