"""Cross-sell recommendations and their evaluation metrics on tiny inline frames (expected values by hand)."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from cpbi_spark.analytics.baskets.evaluate import basket_completion, customer_next_purchases, ranking_metrics
from cpbi_spark.analytics.baskets.recommend import RULES_SCHEMA, popularity_scores, recommend, rules_frame

RULES = [(1, ["a"], ["x"], 0.5), (2, ["a", "b"], ["y"], 0.9), (3, ["c"], ["a"], 0.7), (4, ["a"], ["y"], 0.2),
         (5, ["d"], ["w"], 0.01)]
POPULAR = [("a", 0.6), ("x", 0.3), ("z", 0.2), ("y", 0.1), ("w", 0.05)]
CONTEXT = [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u3", "d")]


def _recs(spark, merge: str, k: int = 3) -> dict[str, list[tuple[str, str, int | None]]]:
    rules = spark.createDataFrame(RULES, RULES_SCHEMA)
    pop = spark.createDataFrame(POPULAR, "item string, score double")
    ctx = spark.createDataFrame(CONTEXT, "user string, item string")
    rows = recommend(ctx, rules, pop, k, merge=merge).orderBy("user", "rank").collect()
    ranks: dict[str, list[int]] = {}
    for r in rows:
        ranks.setdefault(r["user"], []).append(r["rank"])
    assert all(v == list(range(1, len(v) + 1)) for v in ranks.values())     # ranks 1..n, no gaps
    out: dict[str, list[tuple[str, str, int | None]]] = {}
    for r in rows:
        out.setdefault(r["user"], []).append((r["item"], r["source"], r["rule_id"]))
    return out


def test_recommend_merges_rules_and_popularity_by_score(spark):
    recs = _recs(spark, "score")
    # u1 {a, b}: y from rule 2 (0.9 beats rule 4's 0.2), x from rule 1 (0.5); a is bought; then popular z (0.2)
    assert recs["u1"] == [("y", "rule", 2), ("x", "rule", 1), ("z", "popularity", None)]
    # u2 {a}: rule 2 needs b too; x (0.5, rule 1), y (0.2, rule 4) ties popular z (0.2): the rule wins the tie
    assert recs["u2"] == [("x", "rule", 1), ("y", "rule", 4), ("z", "popularity", None)]
    # u3 {d}: rule 5 scores w at 0.01, below every popular item
    assert recs["u3"] == [("a", "popularity", None), ("x", "popularity", None), ("z", "popularity", None)]


def test_recommend_rules_first_and_without_backfill(spark):
    assert _recs(spark, "rules_first")["u3"] == [("w", "rule", 5), ("a", "popularity", None),
                                                 ("x", "popularity", None)]
    rules = spark.createDataFrame(RULES, RULES_SCHEMA)
    ctx = spark.createDataFrame(CONTEXT, "user string, item string")
    only_rules = recommend(ctx, rules, None, 5).filter("user = 'u2'").orderBy("rank").collect()
    assert [r["item"] for r in only_rules] == ["x", "y"]
    with pytest.raises(ValueError, match="merge"):
        recommend(ctx, rules, None, 5, merge="best")


def test_popularity_backfill_skips_each_users_own_context(spark):
    # Ten products by popularity (p07 and p08 tie: the name decides); contexts of different sizes, the
    # larger one holding most of the top: each user still gets the k most popular items it did not buy.
    pop = spark.createDataFrame([(f"p{i:02d}", s) for i, s in enumerate(
        [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.4, 0.2, 0.1], start=1)], "item string, score double")
    ctx = spark.createDataFrame([("big", p) for p in ("p01", "p02", "p03", "p05", "p06")] + [("small", "p02")],
                                "user string, item string")
    for max_context in (None, 5):
        rows = recommend(ctx, None, pop, 3, max_context=max_context).orderBy("user", "rank").collect()
        got = {u: [r["item"] for r in rows if r["user"] == u] for u in ("big", "small")}
        assert got == {"big": ["p04", "p07", "p08"], "small": ["p01", "p03", "p04"]}, max_context


def test_rules_frame_selects_usable_rules(spark):
    rules = pd.DataFrame({"rule_id": [1, 2, 3], "antecedent": [("a",), ("b",), ("c",)],
                          "consequent": [("x",), ("y",), ("z",)], "lift": [2.0, 0.8, 3.0],
                          "is_significant": [True, True, False], "kept_confidence": [0.4, 0.3, 0.5]})
    kept = rules_frame(spark, rules, score="kept_confidence", min_lift=1.0, only_significant=True).collect()
    assert [(r["rule_id"], r["score"]) for r in kept] == [(1, 0.4)]
    assert rules_frame(spark, rules, score="kept_confidence", min_lift=1.0).count() == 2


def test_popularity_is_the_share_of_baskets(spark):
    tx = spark.createDataFrame([("b1", "x"), ("b1", "y"), ("b2", "x"), ("b2", "x"), ("b3", "z"), ("b4", "x")],
                               "basket string, item string")
    pop = {r["item"]: r["score"] for r in popularity_scores(tx).collect()}
    assert pop == pytest.approx({"x": 3 / 4, "y": 1 / 4, "z": 1 / 4})


def test_ranking_metrics_by_hand(spark):
    truth = spark.createDataFrame([("u1", "x"), ("u1", "q"), ("u2", "z"), ("u3", "m"), ("u4", "x")],
                                  "user string, item string")
    recs = spark.createDataFrame([
        ("m1", "u1", 1, "y", "rule"), ("m1", "u1", 2, "x", "rule"), ("m1", "u1", 3, "z", "rule"),
        ("m1", "u2", 1, "x", "popularity"), ("m1", "u2", 2, "y", "popularity"), ("m1", "u2", 3, "z", "popularity"),
        ("m1", "u3", 1, "a", "popularity"), ("m1", "u3", 2, "x", "popularity"), ("m1", "u3", 3, "z", "popularity"),
        ("m2", "u4", 1, "x", "rule")], "model string, user string, rank int, item string, source string")
    m = ranking_metrics(recs, truth, [1, 3], by=["model"]).set_index(["model", "k"])
    # m1, k = 3: u1 hits x at rank 2 (P 1/3, R 1/2, AP (1/2)/2); u2 hits z at 3 (P 1/3, R 1, AP 1/3);
    # u3 and u4 (no recommendation at all) score 0; averages over the 4 users of the truth.
    r = m.loc[("m1", 3)]
    assert r["n_users"] == 4
    assert r["precision"] == pytest.approx((1 / 3 + 1 / 3) / 4)
    assert r["recall"] == pytest.approx((1 / 2 + 1) / 4)
    assert r["map"] == pytest.approx((0.25 + 1 / 3) / 4)
    assert r["hit_rate"] == pytest.approx(2 / 4)
    assert r["rule_coverage"] == pytest.approx(1 / 4)                   # only u1 got rule-based items
    assert m.loc[("m1", 1)][["precision", "recall", "map", "hit_rate"]].tolist() == [0.0, 0.0, 0.0, 0.0]
    # m2: only u4 is served, hit at rank 1: P@1 = 1, R = 1, AP = 1 for u4; 0 for the other three
    r2 = m.loc[("m2", 1)]
    assert (r2["precision"], r2["recall"], r2["map"], r2["hit_rate"]) == pytest.approx((0.25, 0.25, 0.25, 0.25))
    assert m.loc[("m2", 3)]["precision"] == pytest.approx(1 / 3 / 4)


def test_basket_completion_split(spark):
    units = spark.createDataFrame([("b1", i) for i in "pqrs"] + [("b2", i) for i in "xyz"] + [("b3", "solo")],
                                  "basket string, item string")
    context, truth = basket_completion(units, reveal_share=0.5, seed=7)
    ctx = context.groupBy("user").count().collect()
    tru = truth.groupBy("user").count().collect()
    # b1: 4 items -> 2 revealed, 2 hidden; b2: 3 -> max(1, floor(1.5)) = 1 revealed, 2 hidden; b3 (1 item) left out
    assert {r["user"]: r["count"] for r in ctx} == {"b1": 2, "b2": 1}
    assert {r["user"]: r["count"] for r in tru} == {"b1": 2, "b2": 2}
    both = {(r["user"], r["item"]) for r in context.union(truth).collect()}
    assert both == {("b1", i) for i in "pqrs"} | {("b2", i) for i in "xyz"}
    again, _ = basket_completion(units, reveal_share=0.5, seed=7)
    assert sorted(map(tuple, again.collect())) == sorted(map(tuple, context.collect()))     # seeded


def test_customer_next_purchases_split(spark):
    ts = dt.datetime
    rows = [("A", ts(2024, 2, 10), "x"), ("A", ts(2024, 2, 10), "y"), ("A", ts(2024, 3, 5), "y"),
            ("A", ts(2024, 3, 5), "z"),
            ("B", ts(2024, 1, 1), "x"), ("B", ts(2024, 3, 10), "q"),      # no basket in the context window
            ("C", ts(2024, 2, 20), "x"),                                   # nothing after the cut-off
            ("D", ts(2024, 2, 25), "x"), ("D", ts(2024, 3, 2), "x"),       # only a repeat: no new item
            ("E", ts(2024, 2, 25), "x"), ("E", ts(2024, 4, 15), "v")]      # after the test window
    units = spark.createDataFrame(rows, "customer_id string, basket_ts timestamp, item string")
    context, truth = customer_next_purchases(units, cutoff=ts(2024, 3, 1), context_days=30, test_days=30)
    assert sorted(map(tuple, context.collect())) == [("A", "x"), ("A", "y")]
    assert sorted(map(tuple, truth.collect())) == [("A", "z")]
