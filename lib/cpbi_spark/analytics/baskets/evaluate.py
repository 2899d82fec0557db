"""Judge recommendations on a time split: rules mined before a cut-off, checked against what came after.

Two scenarios (``evaluation.scenarios``):

``basket`` (open-basket completion)
    Every basket after the cut-off with at least two products is a user. Its products are put in a
    seeded random order; the first ``max(1, floor(n * reveal_share))`` are revealed (the context),
    the rest are hidden (the truth): can the rules complete the basket?
``customer`` (next purchases)
    Every customer with a basket in the ``context_days`` before the cut-off and one in the
    ``test_days`` after it is a user. The context is what they bought in the ``context_days`` before
    the cut-off; the truth is what they bought after it that was not already in the context.

Metrics at k (per user, then averaged over users; a user without recommendations scores 0):

- precision@k = hits / k;  recall@k = hits / |truth|;  hit rate = share of users with a hit;
- AP@k = (sum over ranks r <= k holding a hit of hits-up-to-r / r) / min(|truth|, k);  MAP@k = mean AP@k.

The baseline recommends the k most popular products (share of training baskets) not in the context.

Example:
    >>> m = ranking_metrics(recs, truth, [5, 10], by=["model"])       # doctest: +SKIP
    >>> list(m.columns)                                                # doctest: +SKIP
    ['model', 'k', 'n_users', 'precision', 'recall', 'map', 'hit_rate', 'rule_coverage']
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


def ranking_metrics(recs: DataFrame, truth: DataFrame, ks: Sequence[int], *, by: Sequence[str] = ()
                    ) -> pd.DataFrame:
    """precision@k, recall@k, MAP@k, hit rate and rule coverage over the users of ``truth``, in one Spark job.

    ``recs``: the ``by`` columns (e.g. ``scenario``, ``model``), ``user``, ``rank`` (1 = best), ``item`` and
    optionally ``source``; ``truth``: those ``by`` columns it shares with ``recs`` (e.g. ``scenario``),
    ``user``, ``item``. Every user of ``truth`` is scored in every group of ``recs`` with the same shared
    columns (no recommendation = no hit). Returns one row per group and k with ``n_users``, ``precision``,
    ``recall``, ``map``, ``hit_rate`` and ``rule_coverage`` (share of users with a rule-based item).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    by = list(by)
    shared = [c for c in by if c in truth.columns]
    # Both inputs are read several times below: cache them for the one job.
    t = truth.select(*shared, F.col("user").cast("string"), F.col("item").cast("string")).distinct().cache()
    source = F.col("source") if "source" in recs.columns else F.lit(None).cast("string")
    r = recs.select(*by, F.col("user").cast("string"), "rank", F.col("item").cast("string"),
                    source.alias("source")).cache()
    n_rel = t.groupBy(*shared, "user").agg(F.count("*").alias("n_rel"))
    if by:
        groups = F.broadcast(r.select(*by).distinct())
        users = n_rel.join(groups, shared) if shared else n_rel.crossJoin(groups)
    else:
        users = n_rel
    flagged = r.join(t.withColumn("_rel", F.lit(1)), [*shared, "user", "item"], "left")
    cum = Window.partitionBy(*by, "user").orderBy("rank").rowsBetween(Window.unboundedPreceding, Window.currentRow)
    flagged = flagged.withColumn("_cum", F.sum(F.coalesce("_rel", F.lit(0))).over(cum))
    hit = F.col("_rel") == 1
    aggs = [F.max((F.col("source") == "rule").cast("double")).alias("_covered")]
    for k in ks:
        in_k = hit & (F.col("rank") <= k)
        aggs += [F.sum(F.when(in_k, 1).otherwise(0)).alias(f"hits_{k}"),
                 F.sum(F.when(in_k, F.col("_cum") / F.col("rank")).otherwise(0.0)).alias(f"prec_{k}")]
    per_user = flagged.groupBy(*by, "user").agg(*aggs)
    joined = users.join(per_user, [*by, "user"], "left")
    out = []
    for k in ks:
        hits_k = F.coalesce(F.col(f"hits_{k}"), F.lit(0))
        prec_k = F.coalesce(F.col(f"prec_{k}"), F.lit(0.0))
        out += [F.avg(hits_k / F.lit(k)).alias(f"precision_{k}"),
                F.avg(hits_k / F.col("n_rel")).alias(f"recall_{k}"),
                F.avg(prec_k / F.least(F.col("n_rel"), F.lit(k))).alias(f"map_{k}"),
                F.avg((hits_k > 0).cast("double")).alias(f"hit_rate_{k}")]
    agg = (joined.groupBy(*by) if by else joined.groupBy()).agg(
        F.count("*").alias("n_users"), F.avg(F.coalesce(F.col("_covered"), F.lit(0.0))).alias("rule_coverage"), *out)
    collected = agg.collect()
    t.unpersist()
    r.unpersist()
    rows = []
    for row in collected:
        for k in ks:
            rows.append({**{c: row[c] for c in by}, "k": k, "n_users": int(row["n_users"]),
                         **{m: float(row[f"{m}_{k}"] or 0.0) for m in ("precision", "recall", "map", "hit_rate")},
                         "rule_coverage": float(row["rule_coverage"] or 0.0)})
    if not rows:   # no user to evaluate
        rows = [{**{c: None for c in by}, "k": k, "n_users": 0, "precision": 0.0, "recall": 0.0, "map": 0.0,
                 "hit_rate": 0.0, "rule_coverage": 0.0} for k in ks]
    return pd.DataFrame(rows)


def basket_completion(test_units: DataFrame, *, reveal_share: float, seed: int) -> tuple[DataFrame, DataFrame]:
    """(context, truth) of the open-basket scenario from ``(basket, item)`` rows of the test baskets."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    items = test_units.select(F.col("basket").cast("string").alias("user"), F.col("item").cast("string")).distinct()
    per = Window.partitionBy("user")
    ordered = (items.withColumn("_n", F.count("*").over(per))
               .filter(F.col("_n") >= 2)
               .withColumn("_pos", F.row_number().over(per.orderBy(F.xxhash64(F.lit(seed), "user", "item"), "item")))
               .withColumn("_reveal", F.greatest(F.lit(1), F.floor(F.col("_n") * F.lit(reveal_share)))))
    context = ordered.filter(F.col("_pos") <= F.col("_reveal")).select("user", "item")
    truth = ordered.filter(F.col("_pos") > F.col("_reveal")).select("user", "item")
    return context, truth


def customer_next_purchases(units: DataFrame, *, cutoff: dt.datetime, context_days: int, test_days: int
                            ) -> tuple[DataFrame, DataFrame]:
    """(context, truth) of the customer scenario from ``(customer_id, basket_ts, item)`` rows."""
    from pyspark.sql import functions as F

    rows = units.filter(F.col("customer_id").isNotNull()).select(
        F.col("customer_id").cast("string").alias("user"), F.col("item").cast("string"), "basket_ts")
    start = cutoff - dt.timedelta(days=context_days)
    end = cutoff + dt.timedelta(days=test_days)
    context = (rows.filter((F.col("basket_ts") >= F.lit(start)) & (F.col("basket_ts") < F.lit(cutoff)))
               .select("user", "item").distinct())
    after = (rows.filter((F.col("basket_ts") >= F.lit(cutoff)) & (F.col("basket_ts") < F.lit(end)))
             .select("user", "item").distinct())
    truth = after.join(context, ["user", "item"], "left_anti").join(context.select("user").distinct(), "user")
    return context.join(truth.select("user").distinct(), "user"), truth
