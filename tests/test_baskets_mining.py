"""Frequent itemsets on Spark are exact: equal to brute-force counting and to mlxtend, for both engines.

References: a brute-force subset count written in this file (tiny baskets) and mlxtend's fpgrowth +
association_rules (synthetic Zipf baskets and the shared Complete Journey sample). Itemsets and their
counts must be identical; rule metrics equal within 1e-9.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cpbi_spark.analytics.baskets.frequent import MiningSpec, mine_itemsets
from cpbi_spark.analytics.baskets.guard import Limits
from cpbi_spark.analytics.baskets.rules import generate_rules
from cpbi_spark.errors import AnalysisError

TOL = 1e-9
pytestmark = pytest.mark.filterwarnings("ignore:Allowing arbitrary scalar fill_value:FutureWarning")
CJ = Path(__file__).resolve().parents[2] / "shared" / "data" / "completejourney"
METRICS = (("support", "support"), ("confidence", "confidence"), ("lift", "lift"), ("leverage", "leverage"),
           ("conviction", "conviction"), ("zhang", "zhangs_metric"), ("jaccard", "jaccard"),
           ("antecedent_support", "antecedent support"), ("consequent_support", "consequent support"))


def _tx(spark, rows: list[tuple[str, str, str]]):
    return spark.createDataFrame(rows, "scope string, basket string, item string")


def _brute_force(baskets: list[list[str]], min_count: int, max_len: int) -> dict[frozenset, int]:
    counts: dict[frozenset, int] = {}
    for b in baskets:
        items = sorted(set(b))
        for k in range(1, min(len(items), max_len) + 1):
            for sub in itertools.combinations(items, k):
                counts[frozenset(sub)] = counts.get(frozenset(sub), 0) + 1
    return {s: c for s, c in counts.items() if c >= min_count}


def _ours(res, scope: str) -> dict[frozenset, int]:
    frame = res.to_frame()
    frame = frame[frame["scope"] == scope]
    return {frozenset(i): int(c) for i, c in zip(frame["items"], frame["count"], strict=True)}


def _mlxtend(baskets: list[list[str]], min_support: float, max_len: int | None):
    from mlxtend.frequent_patterns import association_rules, fpgrowth
    from mlxtend.preprocessing import TransactionEncoder

    te = TransactionEncoder()
    onehot = pd.DataFrame.sparse.from_spmatrix(te.fit(baskets).transform(baskets, sparse=True), columns=te.columns_)
    fi = fpgrowth(onehot, min_support=min_support, use_colnames=True, max_len=max_len)
    n = len(baskets)
    sets = {frozenset(s): round(sup * n) for s, sup in zip(fi["itemsets"], fi["support"], strict=True)}
    rules = association_rules(fi, num_itemsets=n, metric="confidence", min_threshold=0.0) if len(fi) else None
    return sets, rules


def _assert_rules_equal(ours: pd.DataFrame, ref: pd.DataFrame | None) -> None:
    ref_rows = {} if ref is None else {
        (frozenset(a), frozenset(c)): row for a, c, row in
        zip(ref["antecedents"], ref["consequents"], ref.to_dict("records"), strict=True)}
    our_rows = {(frozenset(a), frozenset(c)): row for a, c, row in
                zip(ours["antecedent"], ours["consequent"], ours.to_dict("records"), strict=True)}
    assert set(our_rows) == set(ref_rows)
    for key, row in our_rows.items():
        for ours_col, ref_col in METRICS:
            expected = ref_rows[key][ref_col]
            if math.isinf(expected):
                assert math.isinf(row[ours_col]), (key, ours_col)
            else:
                assert row[ours_col] == pytest.approx(expected, abs=TOL, rel=TOL), (key, ours_col)


def _exact_threshold(min_support: float, n: int) -> None:
    # mlxtend compares floats; keep test thresholds away from the boundaries where float and exact differ.
    assert math.ceil(min_support * n) == math.ceil(round(min_support * n, 9))


@pytest.mark.parametrize("algorithm", ["levelwise", "fpgrowth"])
def test_tiny_baskets_equal_brute_force_per_scope(spark, algorithm):
    s1 = [["a", "b", "c"], ["a", "b"], ["a", "c", "a"], ["b", "c", "d"], ["a"], ["a", "b", "c", "d"]]
    s2 = [["a", "x"], ["x"], ["a", "x"]]           # same item name in another scope: counted apart
    rows = [("s1", f"b{i}", it) for i, b in enumerate(s1) for it in b] + \
           [("s2", f"b{i}", it) for i, b in enumerate(s2) for it in b]
    res = mine_itemsets(_tx(spark, rows), MiningSpec(min_support=0.3, max_len=3, algorithm=algorithm))
    # s1: 6 baskets -> min count ceil(1.8) = 2; s2: 3 baskets -> 1 (ceil(0.9))
    assert res.scopes["s1"].min_count == 2 and res.scopes["s2"].min_count == 1
    assert res.scopes["s1"].n_baskets == 6 and res.scopes["s2"].n_baskets == 3
    assert _ours(res, "s1") == _brute_force(s1, 2, 3)
    assert _ours(res, "s2") == _brute_force(s2, 1, 3)
    assert _ours(res, "s1")[frozenset("abc")] == 2       # by hand: baskets 0 and 5


def _zipf_baskets(rng: np.random.Generator, n: int, n_items: int, mean: float, s: float, prefix: str):
    w = 1 / np.arange(1, n_items + 1) ** s
    w /= w.sum()
    sizes = 1 + rng.poisson(mean - 1, n)
    return [[f"{prefix}{i:03d}" for i in rng.choice(n_items, size=k, p=w)] for k in sizes]


@pytest.mark.parametrize("algorithm,max_len", [("levelwise", 3), ("levelwise", 10), ("fpgrowth", 4)])
def test_synthetic_scopes_equal_mlxtend(spark, algorithm, max_len):
    rng = np.random.default_rng(11)
    scopes = {"zipf|all|all": _zipf_baskets(rng, 3000, 120, 5, 1.0, "P"),
              "zipf|channel|web": _zipf_baskets(rng, 900, 60, 4, 0.8, "P")}
    min_support = 0.012
    rows = [(sc, f"{sc}-{i}", it) for sc, bs in scopes.items() for i, b in enumerate(bs) for it in b]
    res = mine_itemsets(_tx(spark, rows), MiningSpec(min_support=min_support, max_len=max_len, algorithm=algorithm))
    rules = generate_rules(res)
    for scope, baskets in scopes.items():
        tx = [sorted(set(b)) for b in baskets]
        _exact_threshold(min_support, len(tx))
        ref_sets, ref_rules = _mlxtend(tx, min_support, max_len)
        ours = _ours(res, scope)
        assert ours == ref_sets, scope
        assert max(map(len, ours)) >= 3          # the test reaches triples
        _assert_rules_equal(rules[rules["scope"] == scope], ref_rules)


@pytest.fixture(scope="module")
def cj_lines(spark):
    """Complete Journey sample lines with the product's category (read with Spark, as a job would)."""
    from pyspark.sql import functions as F

    if not (CJ / "transactions_sample.csv").exists():
        pytest.skip(f"shared Complete Journey sample not found under {CJ}")
    tx = spark.read.csv(str(CJ / "transactions_sample.csv"), header=True).select("basket_id", "product_id")
    products = (spark.read.csv(str(CJ / "products.csv"), header=True)
                .select("product_id", F.col("product_category").alias("category")))
    return tx.join(products, "product_id", "left").cache()


def test_complete_journey_sample_equals_mlxtend(spark, cj_lines):
    from pyspark.sql import functions as F

    min_support = 3e-5      # 2 of 47,243 baskets (product level), 2 of 47,082 (category level)
    tx = (cj_lines.select(F.lit("product|all|all").alias("scope"), F.col("basket_id").alias("basket"),
                          F.col("product_id").alias("item"))
          .unionByName(cj_lines.filter(F.col("category").isNotNull())
                       .select(F.lit("category|all|all").alias("scope"), F.col("basket_id").alias("basket"),
                               F.col("category").alias("item"))))
    res = mine_itemsets(tx, MiningSpec(min_support=min_support, max_len=3))
    rules = generate_rules(res)
    pdf = pd.read_csv(CJ / "transactions_sample.csv", dtype=str).merge(
        pd.read_csv(CJ / "products.csv", dtype=str)[["product_id", "product_category"]], on="product_id", how="left")
    for scope, col in (("product|all|all", "product_id"), ("category|all|all", "product_category")):
        baskets = pdf.dropna(subset=[col]).groupby("basket_id")[col].apply(lambda s: sorted(set(s))).tolist()
        _exact_threshold(min_support, len(baskets))
        assert res.scopes[scope].n_baskets == len(baskets)
        ref_sets, ref_rules = _mlxtend(baskets, min_support, 3)
        ours = _ours(res, scope)
        assert ours == ref_sets, scope
        assert sum(len(s) == 2 for s in ours) > 100      # real pairs were found and compared
        _assert_rules_equal(rules[rules["scope"] == scope], ref_rules)


def test_guard_stops_an_explosion_with_a_suggested_support(spark):
    # 40 baskets of the same 16 items plus noise: at min count 2 every subset of up to 3 of 16 items is
    # frequent (16 + 120 + 560 = 696 itemsets), more than the 300 allowed.
    rng = np.random.default_rng(3)
    core = [f"c{i:02d}" for i in range(16)]
    baskets = [core for _ in range(40)] + [[f"n{i}"] for i in rng.integers(0, 50, 4000)]
    rows = [("s", f"b{i}", it) for i, b in enumerate(baskets) for it in b]
    limits = Limits(max_itemsets=300, max_combinations=10**9, max_rules=10**9)
    spec = MiningSpec(min_support=0.0004, max_len=3, limits=limits)
    with pytest.raises(AnalysisError, match=r"guard.max_itemsets = 300.*Suggested: min_support: ") as err:
        mine_itemsets(_tx(spark, rows), spec)
    suggested = float(str(err.value).split("Suggested: min_support: ")[1].split(" ")[0])
    assert suggested > spec.min_support
    # The suggestion is a support at which the run fits (here: above the 40 core baskets' share).
    res = mine_itemsets(_tx(spark, rows), MiningSpec(min_support=suggested, max_len=3, limits=limits))
    assert res.n_itemsets <= 300


def test_guard_checks_longer_levels_from_what_was_found(spark):
    # 30 identical baskets of 9 items: lengths 1..3 fit (9 + 36 + 84 = 129), length 4 would add 126 more.
    baskets = [[f"i{j}" for j in range(9)] for _ in range(30)] + [["z"]] * 30
    rows = [("s", f"b{i}", it) for i, b in enumerate(baskets) for it in b]
    limits = Limits(max_itemsets=200, max_combinations=10**9, max_rules=10**9)
    with pytest.raises(AnalysisError, match=r"guard.max_itemsets = 200"):
        mine_itemsets(_tx(spark, rows), MiningSpec(min_support=0.1, max_len=4, limits=limits))
    res = mine_itemsets(_tx(spark, rows), MiningSpec(min_support=0.1, max_len=3, limits=limits))
    assert res.n_itemsets == 9 + 36 + 84 + 1     # + the singleton z


def test_guard_counts_work_over_candidate_items_only(spark):
    # 200 baskets of 3 core items plus 20 items seen once each: the up-front bound over every item
    # (C(23, 3) = 1,771 triples a basket) is far over the limit, the work over frequent items is not
    # (one triple a basket). The run must go on and stay exact.
    core = ["a", "b", "c"]
    baskets = [core + [f"n{i}-{j}" for j in range(20)] for i in range(200)]
    rows = [("s", f"b{i}", it) for i, b in enumerate(baskets) for it in b]
    limits = Limits(max_itemsets=100, max_combinations=10_000, max_rules=10**6)
    res = mine_itemsets(_tx(spark, rows), MiningSpec(min_support=0.1, max_len=3, limits=limits))
    assert _ours(res, "s") == {frozenset("a"): 200, frozenset("b"): 200, frozenset("c"): 200,
                               frozenset("ab"): 200, frozenset("ac"): 200, frozenset("bc"): 200,
                               frozenset("abc"): 200}
