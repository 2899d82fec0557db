"""RFM scores with documented quantile rules, and named segments.

For each measure a customer's score is ``1 + floor(bins * percent_rank)``, capped at ``bins``, where
``percent_rank = (rank - 1) / (n - 1)`` over all customers of the study ordered so that *better is
higher* (recency: fewer days since the last order is better; frequency: more orders; monetary: more
net revenue after returns). Ties share the lowest rank of their group, so equal values always get
equal scores (e.g. every one-order customer gets F = 1). With one customer every score is ``bins``.

Segments (for the default 5 bins; ``hi`` = score >= bins - 1, ``lo`` = score <= 2), first match wins:
champions (R hi, F hi), loyal (F hi), new_customers (R hi, F = 1), potential_loyalists (R hi),
at_risk (R lo, F >= 3), hibernating (R lo), needs_attention (the rest).

Example:
    >>> scored = rfm_scores(profile, bins=5)            # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

SEGMENTS: tuple[str, ...] = ("champions", "loyal", "new_customers", "potential_loyalists", "at_risk",
                             "hibernating", "needs_attention")


def _score(order: Column, bins: int) -> Column:
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    # One global ordering: fine for one row per customer; Spark moves it to one partition.
    rank = F.percent_rank().over(Window.orderBy(order))
    return F.least(F.lit(bins), (F.floor(rank * bins) + 1)).cast("int")


def segment_of(r: Column, f: Column, bins: int) -> Column:
    """The named segment from the R and F scores (rules in the module docstring)."""
    from pyspark.sql import functions as F

    hi, lo = bins - 1, 2
    return (F.when((r >= hi) & (f >= hi), "champions").when(f >= hi, "loyal")
            .when((r >= hi) & (f == 1), "new_customers").when(r >= hi, "potential_loyalists")
            .when((r <= lo) & (f >= 3), "at_risk").when(r <= lo, "hibernating").otherwise("needs_attention"))


def rfm_scores(profile: DataFrame, bins: int = 5) -> DataFrame:
    """Add r_score, f_score, m_score (1..bins), rfm_cell ("545") and rfm_segment to a customer profile.

    Needs recency_days, orders and net_revenue (see :func:`repeat.repeat_profile`).
    """
    from pyspark.sql import functions as F

    scored = (profile.withColumn("r_score", _score(F.col("recency_days").desc(), bins))
              .withColumn("f_score", _score(F.col("orders").asc(), bins))
              .withColumn("m_score", _score(F.col("net_revenue").asc(), bins)))
    return (scored.withColumn("rfm_cell", F.concat_ws("", "r_score", "f_score", "m_score"))
            .withColumn("rfm_segment", segment_of(F.col("r_score"), F.col("f_score"), bins)))


def rfm_summary(scored: DataFrame) -> DataFrame:
    """One row per segment: customers, share, mean recency/frequency/monetary, total net revenue."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    out = scored.groupBy("rfm_segment").agg(
        F.count("*").cast("bigint").alias("customers"), F.avg("recency_days").alias("mean_recency_days"),
        F.avg("orders").alias("mean_orders"), F.avg("net_revenue").alias("mean_net_revenue"),
        F.sum("net_revenue").alias("total_net_revenue"))
    return out.withColumn("customer_share", F.col("customers") / F.sum("customers").over(Window.partitionBy()))
