"""Cross-sell recommendations: top-k products for each customer (or an open basket) from the rules.

A rule ``A -> C`` applies to a user (a customer, or an open basket) when every item of ``A`` is in
the user's context (the items of the open basket, or of the customer's recent baskets). Each item
of an applicable rule's consequent is a candidate with the rule's score (``recommend.rank_by``;
``kept_confidence`` by default: the probability that the item is bought and kept); an item keeps
its best rule. Items in the context are never recommended (already bought). Popular items not in
the context fill the list (``backfill_popularity``; rows with ``source = popularity``).

How the two sources mix (``merge``): ``score`` ranks every candidate by its score, which is right
when both scores are probabilities of the item entering the basket (a rule's confidence against the
item's base rate, its support): a rule then only moves an item up when it makes the item likelier
than the popular ones. ``rules_first`` puts every rule-based item before the backfill (for scores
that are not probabilities, such as lift or net value). The popularity baseline is the same function
without rules.

Everything is a Spark join (rules and popular items are broadcast), so it scales with the number
of customers; nothing is collected.

Example:
    >>> recs = recommend(context, rules, popularity, k=5)       # doctest: +SKIP
    >>> recs.columns                                             # doctest: +SKIP
    ['user', 'rank', 'item', 'score', 'source', 'rule_id']
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

RULES_SCHEMA = "rule_id bigint, antecedent array<string>, consequent array<string>, score double"
RECS_COLUMNS = ["user", "rank", "item", "score", "source", "rule_id"]


def rules_frame(spark: SparkSession, rules: pd.DataFrame, *, score: str, min_lift: float = 0.0,
                only_significant: bool = False) -> DataFrame:
    """The rules usable for recommendations as a small Spark frame (``RULES_SCHEMA``).

    ``rules``: one scope's rules (pandas, from :func:`cpbi_spark.analytics.baskets.rules.generate_rules`)
    with a ``rule_id`` column; rules with lift below ``min_lift`` (and non-significant ones when asked)
    are left out, as are rules without a score.
    """
    keep = rules["lift"] >= min_lift
    if only_significant:
        keep &= rules["is_significant"].astype(bool)
    keep &= rules[score].notna()
    sel = rules[keep]
    rows = [(int(r), list(a), list(c), float(s)) for r, a, c, s in
            zip(sel["rule_id"], sel["antecedent"], sel["consequent"], sel[score], strict=True)]
    return spark.createDataFrame(rows, RULES_SCHEMA)


def recommend(context: DataFrame, rules: DataFrame | None, popularity: DataFrame | None, k: int, *,
              merge: str = "score", max_context: int | None = None) -> DataFrame:
    """Top-``k`` items per user of ``context`` (columns ``user``, ``item``).

    ``rules``: ``RULES_SCHEMA``; ``popularity``: ``item``, ``score`` (higher is more popular) or None
    for no backfill; ``merge``: ``score`` or ``rules_first`` (module doc); ``max_context``: the largest
    context of a user when known (else counted). Returns ``RECS_COLUMNS``; rank 1 is the best; ties go to
    the rule, then to the item name.
    """
    if merge not in ("score", "rules_first"):
        raise ValueError(f"merge must be 'score' or 'rules_first', got {merge!r}")
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    ctx = context.select(F.col("user").cast("string"), F.col("item").cast("string")).distinct()
    parts = []
    if rules is not None:
        ante = rules.select("rule_id", F.size("antecedent").alias("n_ante"), F.explode("antecedent").alias("item"))
        matched = (ctx.join(F.broadcast(ante), "item").groupBy("user", "rule_id", "n_ante").count()
                   .filter(F.col("count") == F.col("n_ante")).select("user", "rule_id"))
        cons = rules.select("rule_id", "score", F.explode("consequent").alias("item"))
        parts.append(matched.join(F.broadcast(cons), "rule_id").join(ctx, ["user", "item"], "left_anti")
                     .select("user", "item", "score", F.lit("rule").alias("source"), "rule_id",
                             F.lit(0).alias("_priority")))
    if popularity is not None:
        # A user's top k after removing the context needs at most k + |context| popular items: each user
        # gets the first k + |own context| of the popularity order (a hash join on the rank), not as many as
        # the largest context asks, which made this part users x (k + largest context) rows.
        longest = max_context if max_context is not None else largest_context(ctx)
        bound = k + min(int(longest), 10_000)
        # At most `bound` rows in one window (a constant key: Spark warns about a window without one).
        by_popularity = Window.partitionBy(F.lit(0)).orderBy(F.col("score").desc(), F.col("item"))
        top = (popularity.select(F.col("item").cast("string"), F.col("score").cast("double"))
               .orderBy(F.col("score").desc(), F.col("item")).limit(bound)
               .withColumn("_pop_rank", F.row_number().over(by_popularity)))
        wanted = (ctx.groupBy("user").agg(F.count("*").alias("_n"))
                  .select("user", F.explode(F.sequence(F.lit(1), F.least(F.col("_n") + F.lit(k), F.lit(bound))))
                          .alias("_pop_rank")))
        parts.append(wanted.join(F.broadcast(top), "_pop_rank").join(ctx, ["user", "item"], "left_anti")
                     .select("user", "item", "score", F.lit("popularity").alias("source"),
                             F.lit(None).cast("bigint").alias("rule_id"), F.lit(1).alias("_priority")))
    if not parts:
        raise ValueError("recommend needs rules, popularity or both")
    union = parts[0]
    for p in parts[1:]:
        union = union.unionByName(p)
    # One candidate per (user, item): the best by the merge order (max of a struct compares field by field;
    # a rule beats the backfill on equal scores, a lower rule id beats a higher one).
    first = [F.col("score").alias("a"), (-F.col("_priority")).alias("b")]
    if merge == "rules_first":
        first = first[::-1]
    best = (union.groupBy("user", "item")
            .agg(F.max(F.struct(*first, (-F.coalesce("rule_id", F.lit(0))).alias("c"), "score", "source",
                                "rule_id", "_priority")).alias("_best"))
            .select("user", "item", "_best.score", "_best.source", "_best.rule_id", "_best._priority"))
    keys = [F.col("score").desc(), F.col("_priority"), F.col("item")]
    if merge == "rules_first":
        keys = [F.col("_priority"), *keys]
    order = Window.partitionBy("user").orderBy(*keys)
    return (best.withColumn("rank", F.row_number().over(order)).filter(F.col("rank") <= k)
            .select(*RECS_COLUMNS))


def popularity_scores(transactions: DataFrame) -> DataFrame:
    """Item popularity: share of baskets holding the item (``item``, ``score``) from ``(basket, item)`` rows."""
    from pyspark.sql import functions as F

    n = transactions.agg(F.countDistinct("basket").alias("_n"))
    return (transactions.groupBy("item").agg(F.countDistinct("basket").alias("n")).crossJoin(F.broadcast(n))
            .select("item", (F.col("n") / F.greatest(F.col("_n"), F.lit(1))).alias("score")))


def largest_context(context: DataFrame) -> int:
    """Items in the largest context (one Spark job): bounds the popular items a backfill may need."""
    from pyspark.sql import functions as F

    return int(context.select("user", "item").distinct().groupBy("user").count().agg(F.max("count")).first()[0] or 0)
