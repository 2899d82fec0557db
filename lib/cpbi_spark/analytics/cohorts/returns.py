"""Returns analysis: return rates by dimension, time to return, serial returners, revenue at risk.

A sale line is *returned* when at least one return refunds it. Rates use only *mature* lines, posted at
least ``maturity_days`` before the end of data, so that their whole return window is observed (a recent
line that will be returned next week would otherwise count as kept). Rates:

* ``line_return_rate`` = returned mature lines / mature lines (the probability that a line is returned);
* ``amount_return_rate`` = refunded amount / sold amount of the mature lines.

Revenue at risk = the refunds still expected on lines whose window is open. For an open line of age ``a``
days in category ``c``: ``amount * refund_share_c * h_c(a)`` with
``h_c(a) = p_c (1 - F(a)) / (1 - p_c F(a))`` the probability of a return after age ``a`` given none so far
(``p_c`` the category's line return rate, ``F`` the delay distribution of mature returns, and
``refund_share_c`` the refunded share of a returned line's amount).

Example:
    >>> lines = line_returns(sales, returns, end, maturity_days=28)      # doctest: +SKIP
    >>> rates = return_rates(lines, top_products=200)                    # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

ALL = "ALL"
DIMENSIONS: tuple[str, ...] = ("all", "category", "department", "channel", "loyalty_tier", "region", "product_id")


def line_returns(sales: DataFrame, returns: DataFrame, end: dt.datetime, maturity_days: int) -> DataFrame:
    """Sale lines with ``returned``, ``returned_amount``, ``days_to_return`` (first return), ``age_days``, ``mature``.

    ``age_days`` = whole UTC days from the sale to ``as_of``; ``mature`` = posted at least ``maturity_days``
    before the end of data.
    """
    from pyspark.sql import functions as F

    per_line = returns.groupBy("transaction_id").agg(
        F.sum("amount").alias("returned_amount"), F.min("days_to_return").alias("days_to_return"),
        F.count("*").alias("n_returns"))
    # Whole UTC days from the sale to the last day of data (as_of).
    age = F.datediff(F.lit(end.date() - dt.timedelta(days=1)), F.to_date("posted_ts"))
    return (sales.join(per_line, "transaction_id", "left")
            .withColumn("returned", F.col("n_returns").isNotNull())
            .withColumn("returned_amount", F.coalesce("returned_amount", F.lit(0)).cast("double"))
            .withColumn("amount", F.col("amount").cast("double"))
            .withColumn("age_days", age)
            .withColumn("mature", F.col("posted_ts") <= F.lit(end - dt.timedelta(days=maturity_days))))


def return_rates(lines: DataFrame, top_products: int = 200) -> DataFrame:
    """One row per dimension and value (mature lines only); products limited to the most sold ones.

    Columns: dimension, dimension_value, sale_lines, returned_lines, line_return_rate, sold_amount,
    returned_amount, amount_return_rate, mean_days_to_return, median_days_to_return, p90_days_to_return.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    # One pass: each mature line is repeated once per dimension, then a single aggregation.
    pairs = F.array(*[F.struct(F.lit(dim).alias("dimension"),
                               (F.lit(ALL) if dim == "all" else F.coalesce(F.col(dim).cast("string"), F.lit("unknown"))
                                ).alias("dimension_value")) for dim in DIMENSIONS])
    agg = (lines.filter("mature").select("*", F.explode(pairs).alias("_d")).select("_d.*", "returned", "amount",
                                                                                    "returned_amount", "days_to_return")
           .groupBy("dimension", "dimension_value").agg(
               F.count("*").cast("bigint").alias("sale_lines"),
               F.sum(F.col("returned").cast("int")).cast("bigint").alias("returned_lines"),
               F.sum("amount").alias("sold_amount"), F.sum("returned_amount").alias("returned_amount"),
               F.avg("days_to_return").alias("mean_days_to_return"),
               F.percentile("days_to_return", 0.5).alias("median_days_to_return"),
               F.percentile("days_to_return", 0.9).alias("p90_days_to_return")))
    rank = F.row_number().over(Window.partitionBy("dimension").orderBy(F.col("sale_lines").desc(), "dimension_value"))
    agg = agg.withColumn("_rank", rank).filter((F.col("dimension") != "product_id") | (F.col("_rank") <= top_products))
    return agg.select("dimension", "dimension_value", "sale_lines", "returned_lines",
                      (F.col("returned_lines") / F.col("sale_lines")).alias("line_return_rate"),
                      "sold_amount", "returned_amount",
                      (F.col("returned_amount") / F.col("sold_amount")).alias("amount_return_rate"),
                      "mean_days_to_return", "median_days_to_return", "p90_days_to_return")


def customer_returns(lines: DataFrame, min_returns: int, min_amount_rate: float) -> DataFrame:
    """One row per customer (all lines, not only mature ones) with the serial-returner flag.

    A serial returner has at least ``min_returns`` returned lines and refunds of at least
    ``min_amount_rate`` of the amount bought.
    """
    from pyspark.sql import functions as F

    per = lines.groupBy("customer_id").agg(
        F.count("*").cast("bigint").alias("sale_lines"),
        F.sum(F.col("returned").cast("int")).cast("bigint").alias("returned_lines"),
        F.sum("amount").alias("gross_amount"), F.sum("returned_amount").alias("returned_amount"),
        F.avg("days_to_return").alias("mean_days_to_return"))
    rate = F.when(F.col("gross_amount") > 0, F.col("returned_amount") / F.col("gross_amount"))
    return (per.withColumn("line_return_rate", F.col("returned_lines") / F.col("sale_lines"))
            .withColumn("amount_return_rate", rate)
            .withColumn("is_serial_returner", (F.col("returned_lines") >= min_returns)
                        & (F.coalesce(rate, F.lit(0.0)) >= min_amount_rate)))


def delay_cdf(lines: DataFrame, max_days: int) -> list[float]:
    """F(a) for a = 0..max_days: share of mature returned lines returned within ``a`` days of the sale."""
    from pyspark.sql import functions as F

    counts = {r["d"]: r["n"] for r in lines.filter("mature AND returned")
              .groupBy(F.col("days_to_return").alias("d")).agg(F.count("*").alias("n")).collect()}
    total = sum(counts.values())
    out, running = [], 0
    for a in range(max_days + 1):
        running += counts.get(a, 0)
        out.append(running / total if total else 1.0)
    return out


def revenue_at_risk(lines: DataFrame, cdf: list[float]) -> DataFrame:
    """Expected refunds still to come on open lines, per category and ``ALL`` (formula in the module doc).

    Columns: category, open_lines, open_amount, refunded_so_far, p_return, refund_share,
    expected_refunds.
    """
    from pyspark.sql import functions as F

    spark = lines.sparkSession
    by_cat = (lines.filter("mature").groupBy(F.coalesce("category", F.lit("unknown")).alias("category")).agg(
        (F.sum(F.col("returned").cast("int")) / F.count("*")).alias("p_return"),
        (F.sum("returned_amount") / F.sum(F.when(F.col("returned"), F.col("amount")))).alias("refund_share")))
    cdf_df = spark.createDataFrame([(a, float(v)) for a, v in enumerate(cdf)], "age_days int, cdf double")
    max_age = len(cdf) - 1
    open_lines = (lines.filter(~F.col("mature"))
                  .withColumn("category", F.coalesce("category", F.lit("unknown")))
                  .withColumn("_age", F.least(F.greatest(F.col("age_days"), F.lit(0)), F.lit(max_age)))
                  .join(F.broadcast(cdf_df.withColumnRenamed("age_days", "_age")), "_age", "left")
                  .join(F.broadcast(by_cat), "category", "left"))
    p = F.coalesce("p_return", F.lit(0.0))
    hazard = p * (1 - F.col("cdf")) / (1 - p * F.col("cdf"))
    expected = F.when(~F.col("returned"), F.col("amount") * F.coalesce("refund_share", F.lit(1.0)) * hazard)
    rows = open_lines.withColumn("_expected", F.coalesce(expected, F.lit(0.0)))
    per_cat = rows.groupBy("category").agg(
        F.count("*").cast("bigint").alias("open_lines"), F.sum("amount").alias("open_amount"),
        F.sum("returned_amount").alias("refunded_so_far"), F.first("p_return").alias("p_return"),
        F.first("refund_share").alias("refund_share"), F.sum("_expected").alias("expected_refunds"))
    total = rows.agg(F.count("*").cast("bigint").alias("open_lines"), F.sum("amount").alias("open_amount"),
                     F.sum("returned_amount").alias("refunded_so_far"),
                     F.lit(None).cast("double").alias("p_return"), F.lit(None).cast("double").alias("refund_share"),
                     F.sum("_expected").alias("expected_refunds")).withColumn("category", F.lit(ALL))
    return per_cat.unionByName(total).fillna(0.0, subset=["open_amount", "refunded_so_far", "expected_refunds"])
