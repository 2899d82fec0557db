"""Repeat behaviour per customer: second purchase, inter-purchase time, repeat rates by window.

An *order* is a sale basket (its time = its earliest line). The second purchase is the first order
strictly after the first one; a customer without one is **censored** at ``as_of`` (kept, with
``repeated = false`` and ``survival_duration_days`` = days from the first purchase to the end of data),
never dropped.

Example:
    >>> profile = repeat_profile(customer_orders(sales, returns), people, end)    # doctest: +SKIP
    >>> rates = repeat_rates(profile, [30, 60, 90, 365], end)                    # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

SECONDS_PER_DAY = 86400.0
ALL = "ALL"  # cohort_key of the rows over the whole population


def _days_between(later, earlier):
    from pyspark.sql import functions as F

    return (F.unix_micros(later) - F.unix_micros(earlier)) / (SECONDS_PER_DAY * 1e6)


def customer_orders(sales: DataFrame, returns: DataFrame) -> DataFrame:
    """One row per customer and order: order_ts, gross and net amount (returns of that order deducted)."""
    from pyspark.sql import functions as F

    refunded = (returns.join(sales.select("transaction_id", "basket_id"), "transaction_id")
                .groupBy("basket_id").agg(F.sum("amount").alias("refunds")))
    orders = sales.groupBy("customer_id", "basket_id").agg(F.min("posted_ts").alias("order_ts"),
                                                          F.sum("amount").alias("gross"))
    return (orders.join(refunded, "basket_id", "left")
            .select("customer_id", "basket_id", "order_ts", F.col("gross").cast("double").alias("gross"),
                    (F.col("gross") - F.coalesce("refunds", F.lit(0))).cast("double").alias("net")))


def repeat_profile(orders: DataFrame, people: DataFrame, end: dt.datetime) -> DataFrame:
    """One row per customer of ``people``: first/second/last order, gaps, censoring, net revenue.

    Columns: customer_id, cohort_key, first_purchase_ts, second_purchase_ts, last_purchase_ts, orders,
    net_revenue, days_to_second_purchase, repeated, survival_duration_days, mean_interpurchase_days,
    median_interpurchase_days, recency_days.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    mine = orders.join(people.select("customer_id", "cohort_key", "first_purchase_ts"), "customer_id")
    seq = Window.partitionBy("customer_id").orderBy("order_ts", "basket_id")
    gaps = mine.withColumn("_gap", _days_between(F.col("order_ts"), F.lag("order_ts").over(seq)))
    per = gaps.groupBy("customer_id", "cohort_key", "first_purchase_ts").agg(
        F.min(F.when(F.col("order_ts") > F.col("first_purchase_ts"), F.col("order_ts"))).alias("second_purchase_ts"),
        F.max("order_ts").alias("last_purchase_ts"),
        F.count("*").cast("bigint").alias("orders"),
        F.sum("net").alias("net_revenue"),
        F.avg("_gap").alias("mean_interpurchase_days"),
        F.percentile("_gap", 0.5).alias("median_interpurchase_days"))
    end_col = F.lit(end)
    to_second = _days_between(F.col("second_purchase_ts"), F.col("first_purchase_ts"))
    return per.select(
        "customer_id", "cohort_key", "first_purchase_ts", "second_purchase_ts", "last_purchase_ts", "orders",
        "net_revenue", to_second.alias("days_to_second_purchase"),
        F.col("second_purchase_ts").isNotNull().alias("repeated"),
        F.coalesce(to_second, _days_between(end_col, F.col("first_purchase_ts"))).alias("survival_duration_days"),
        "mean_interpurchase_days", "median_interpurchase_days",
        _days_between(end_col, F.col("last_purchase_ts")).alias("recency_days"))


def repeat_rates(profile: DataFrame, windows_days: Sequence[int], end: dt.datetime) -> DataFrame:
    """Repeat-purchase rate within each window, per cohort and over all customers (``cohort_key = 'ALL'``).

    Only customers whose whole window is observed count (first purchase at least ``w`` days before the
    end of data): ``repeat_rate = repeaters / eligible_customers``. The censoring-aware Kaplan-Meier
    estimate is added by the job (:func:`cpbi_spark.analytics.cohorts.survival.km_repeat_rates`).
    """
    from pyspark.sql import functions as F

    spark = profile.sparkSession
    windows = spark.createDataFrame([(int(w),) for w in windows_days], "window_days int")
    observed = _days_between(F.lit(end), F.col("first_purchase_ts"))
    rows = profile.crossJoin(F.broadcast(windows)).filter(observed >= F.col("window_days"))
    within = (F.col("days_to_second_purchase") <= F.col("window_days")).cast("int")
    per_cohort = rows.groupBy("cohort_key", "window_days").agg(
        F.count("*").cast("bigint").alias("eligible_customers"),
        F.coalesce(F.sum(within), F.lit(0)).cast("bigint").alias("repeaters"))
    overall = rows.groupBy("window_days").agg(
        F.count("*").cast("bigint").alias("eligible_customers"),
        F.coalesce(F.sum(within), F.lit(0)).cast("bigint").alias("repeaters")).withColumn("cohort_key", F.lit(ALL))
    both = per_cohort.unionByName(overall)
    return both.withColumn("repeat_rate", F.col("repeaters") / F.col("eligible_customers"))
