"""Cohort x period tables: retention, orders, revenue and returns (two attributions), cumulative value.

Ages are counted in periods since each customer's own first-purchase period (age 0 = that period). A
customer contributes to age ``k`` only when period ``acq_period + k`` is observed (not after the last
observed period), so late cohorts and late ages are never diluted by customers who could not be seen.

Returns are attributed two ways (see docs/cohorts.md):

* ``sale_period``: a refund reduces the revenue of the period of the sale it refunds (what the period's
  sales were finally worth; history is restated as returns arrive);
* ``return_period``: a refund reduces the revenue of the period in which it was refunded (cash view;
  history is never restated).

Example:
    >>> long = cohort_table(people, sales, returns, cfg, last_period=24301)   # doctest: +SKIP
    >>> wide = cohort_wide(long, n_periods=53)                               # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cpbi_spark.analytics.cohorts.population import period_number, period_start

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from cpbi_spark.analytics.cohorts.config import CohortsConfig

# Metrics of the wide table, in the order a BI tool should list them.
WIDE_METRICS: tuple[str, ...] = (
    "retention_rate", "active_customers", "orders", "gross_revenue", "net_revenue_sale_period",
    "net_revenue_return_period", "cum_net_revenue_per_customer_sale_period",
    "cum_net_revenue_per_customer_return_period",
)


def customer_periods(people: DataFrame, sales: DataFrame, returns: DataFrame, cfg: CohortsConfig,
                     last_period: int) -> DataFrame:
    """One row per customer and observed age 0..min(max_age, last observed): activity and money.

    Columns: customer_id, cohort_key, acq_period, age, orders, gross, returns_sale_period,
    returns_return_period, net_sale_period, net_return_period, active, cum_net_sale_period,
    cum_net_return_period.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    grain = cfg.period_grain
    acq = people.select("customer_id", "acq_period")
    bought = (sales.join(acq, "customer_id")
              .withColumn("age", period_number("posted_ts", grain) - F.col("acq_period"))
              .groupBy("customer_id", "age")
              .agg(F.countDistinct("basket_id").alias("orders"), F.sum("amount").alias("gross")))
    by_sale = (returns.join(acq, "customer_id")
               .withColumn("age", period_number("sale_ts", grain) - F.col("acq_period"))
               .groupBy("customer_id", "age").agg(F.sum("amount").alias("returns_sale_period")))
    by_return = (returns.join(acq, "customer_id")
                 .withColumn("age", period_number("returned_ts", grain) - F.col("acq_period"))
                 .groupBy("customer_id", "age").agg(F.sum("amount").alias("returns_return_period")))
    last_age = F.least(F.lit(cfg.max_age), F.lit(last_period) - F.col("acq_period"))
    grid = (people.filter(last_age >= 0)
            .select("customer_id", "cohort_key", "acq_period",
                    F.explode(F.sequence(F.lit(0), last_age)).alias("age")))
    zero = F.lit(0).cast("decimal(18,2)")
    rows = (grid.join(bought, ["customer_id", "age"], "left")
            .join(by_sale, ["customer_id", "age"], "left").join(by_return, ["customer_id", "age"], "left")
            .select("customer_id", "cohort_key", "acq_period", "age",
                    F.coalesce("orders", F.lit(0)).cast("bigint").alias("orders"),
                    F.coalesce("gross", zero).alias("gross"),
                    F.coalesce("returns_sale_period", zero).alias("returns_sale_period"),
                    F.coalesce("returns_return_period", zero).alias("returns_return_period")))
    rows = (rows.withColumn("net_sale_period", F.col("gross") - F.col("returns_sale_period"))
            .withColumn("net_return_period", F.col("gross") - F.col("returns_return_period")))
    active = F.col("orders") >= cfg.activity.min_orders
    if cfg.activity.measure == "net_purchase":
        active = active & (F.col("net_sale_period") > 0)
    upto = Window.partitionBy("customer_id").orderBy("age").rowsBetween(Window.unboundedPreceding, 0)
    return (rows.withColumn("active", active)
            .withColumn("cum_net_sale_period", F.sum("net_sale_period").over(upto))
            .withColumn("cum_net_return_period", F.sum("net_return_period").over(upto)))


def cohort_table(people: DataFrame, sales: DataFrame, returns: DataFrame, cfg: CohortsConfig,
                 last_period: int) -> DataFrame:
    """The long cohort table: one row per cohort and age (columns of ``cohort_retention``, without as_of)."""
    from pyspark.sql import functions as F

    grid = customer_periods(people, sales, returns, cfg, last_period)
    sizes = people.groupBy("cohort_key").agg(F.count("*").cast("bigint").alias("cohort_size"),
                                             F.min("cohort_start").alias("cohort_start"))
    money = "decimal(18,2)"
    start_of = period_start(F.col("acq_period") + F.col("age"), cfg.period_grain)
    agg = grid.groupBy("cohort_key", "age").agg(
        F.count("*").cast("bigint").alias("customers_observable"),
        F.sum(F.col("active").cast("int")).cast("bigint").alias("active_customers"),
        F.sum("orders").cast("bigint").alias("orders"),
        F.sum("gross").cast(money).alias("gross_revenue"),
        F.sum("returns_sale_period").cast(money).alias("returns_sale_period"),
        F.sum("returns_return_period").cast(money).alias("returns_return_period"),
        F.sum("net_sale_period").cast(money).alias("net_revenue_sale_period"),
        F.sum("net_return_period").cast(money).alias("net_revenue_return_period"),
        (F.sum("cum_net_sale_period") / F.count("*")).cast("double").alias("cum_net_revenue_per_customer_sale_period"),
        (F.sum("cum_net_return_period") / F.count("*")).cast("double").alias(
            "cum_net_revenue_per_customer_return_period"),
        F.min(start_of).alias("_p_min"), F.max(start_of).alias("_p_max"))
    return (agg.join(sizes, "cohort_key")
            .select(F.lit(cfg.cohort_by).alias("cohort_by"), "cohort_key", "cohort_start",
                    F.col("age").cast("int").alias("period_index"),
                    # Only meaningful when every member's period k is the same calendar period.
                    F.when(F.col("_p_min") == F.col("_p_max"), F.col("_p_min")).alias("period_start"),
                    "cohort_size", "customers_observable", "active_customers",
                    (F.col("active_customers") / F.col("customers_observable")).alias("retention_rate"),
                    "orders", "gross_revenue", "returns_sale_period", "returns_return_period",
                    "net_revenue_sale_period", "net_revenue_return_period",
                    "cum_net_revenue_per_customer_sale_period", "cum_net_revenue_per_customer_return_period"))


def cohort_wide(long: DataFrame, n_periods: int) -> DataFrame:
    """Pivot the long table: one row per cohort and metric, one column per period ``p00 .. p{n-1}``.

    Periods not observed (or beyond ``max_age``) are null, so a BI tool shows the usual triangle.
    """
    from pyspark.sql import functions as F

    stacked = long.select(
        "cohort_by", "cohort_key", "cohort_start", "cohort_size", "period_index",
        F.explode(F.array(*[F.struct(F.lit(i).alias("metric_order"), F.lit(m).alias("metric"),
                                     F.col(m).cast("double").alias("value"))
                            for i, m in enumerate(WIDE_METRICS)])).alias("_m"))
    pivoted = (stacked.select("cohort_by", "cohort_key", "cohort_start", "cohort_size", "period_index", "_m.*")
               .groupBy("cohort_by", "cohort_key", "cohort_start", "cohort_size", "metric_order", "metric")
               .pivot("period_index", list(range(n_periods))).agg(F.first("value")))
    return pivoted.select("cohort_by", "cohort_key", "cohort_start", "cohort_size", "metric_order", "metric",
                          *[F.col(str(k)).alias(f"p{k:02d}") for k in range(n_periods)])
