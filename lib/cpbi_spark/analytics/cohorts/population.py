"""The study population: sale and return lines up to ``as_of``, each customer's first purchase and cohort.

Pure ``DataFrame -> DataFrame`` functions over the gold tables. A *period* is a calendar month or an
ISO week (Monday start) in UTC, numbered absolutely (months since year 0, weeks since 1970-01-05) so
that "age" is a plain difference of two period numbers.

Example:
    >>> sales = sale_lines(facts, products, customers, as_of_end)             # doctest: +SKIP
    >>> people = study_population(first_purchases(sales), cfg)               # doctest: +SKIP
    >>> period_number_of(dt.date(2024, 3, 15), "month") - period_number_of(dt.date(2024, 1, 1), "month")
    2
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

    from cpbi_spark.analytics.cohorts.config import CohortsConfig

WEEK_ZERO = dt.date(1970, 1, 5)  # a Monday: week numbers count whole weeks from it


# ---------------------------------------------------------------------------------------------- periods
def period_number_of(day: dt.date, grain: str) -> int:
    """Absolute period number of a date (Python twin of :func:`period_number`).

    >>> period_number_of(dt.date(2024, 1, 31), "month") == period_number_of(dt.date(2024, 1, 1), "month")
    True
    >>> period_number_of(dt.date(1970, 1, 11), "week"), period_number_of(dt.date(1970, 1, 12), "week")
    (0, 1)
    """
    if grain == "month":
        return day.year * 12 + day.month - 1
    return (day - WEEK_ZERO).days // 7


def period_start_of(number: int, grain: str) -> dt.date:
    """First day of an absolute period number.

    >>> period_start_of(period_number_of(dt.date(2024, 2, 29), "month"), "month")
    datetime.date(2024, 2, 1)
    """
    if grain == "month":
        return dt.date(number // 12, number % 12 + 1, 1)
    return WEEK_ZERO + dt.timedelta(days=7 * number)


def period_number(ts: Column | str, grain: str) -> Column:
    """Absolute period number of a timestamp/date column (UTC session time zone)."""
    from pyspark.sql import functions as F

    col = F.col(ts) if isinstance(ts, str) else ts
    if grain == "month":
        return (F.year(col) * 12 + F.month(col) - 1).cast("int")
    return F.floor(F.datediff(F.to_date(col), F.lit(WEEK_ZERO)) / 7).cast("int")


def period_start(number: Column, grain: str) -> Column:
    """First day (date) of an absolute period number column."""
    from pyspark.sql import functions as F

    if grain == "month":
        return F.make_date(F.floor(number / 12).cast("int"), (number % 12 + 1).cast("int"), F.lit(1))
    return F.date_add(F.lit(WEEK_ZERO), (number * 7).cast("int"))


def last_observed_period(as_of: dt.date, grain: str, include_partial: bool) -> int:
    """The last period counted: the one holding ``as_of`` only if it is complete (or partial ones are wanted).

    >>> last_observed_period(dt.date(2025, 2, 28), "month", False) == period_number_of(dt.date(2025, 2, 1), "month")
    True
    >>> last_observed_period(dt.date(2025, 2, 27), "month", False) == period_number_of(dt.date(2025, 1, 1), "month")
    True
    """
    if include_partial:
        return period_number_of(as_of, grain)
    return period_number_of(as_of + dt.timedelta(days=1), grain) - 1


def as_of_end(as_of: dt.date) -> dt.datetime:
    """Exclusive upper bound of the data: midnight UTC after ``as_of``."""
    return dt.datetime.combine(as_of + dt.timedelta(days=1), dt.time())


# ---------------------------------------------------------------------------------------------- lines
def sale_lines(facts: DataFrame, products: DataFrame, customers: DataFrame, end: dt.datetime) -> DataFrame:
    """Sale lines before ``end`` with the product and customer versions valid at the sale.

    Columns: transaction_id, customer_id, basket_id, posted_ts, amount (reporting currency), channel,
    product_id, category, department, region, country, loyalty_tier.
    """
    from pyspark.sql import functions as F

    prod = products.select("product_sk", "category", "department")
    cust = customers.select("customer_sk", "region", "country", "loyalty_tier")
    return (facts.filter((F.col("txn_type") == "SALE") & F.col("customer_id").isNotNull()
                         & F.col("basket_id").isNotNull() & (F.col("posted_ts") < F.lit(end)))
            .join(prod, "product_sk", "left").join(cust, "customer_sk", "left")
            .select("transaction_id", "customer_id", "basket_id", "posted_ts",
                    F.col("amount_reporting").alias("amount"), "channel", "product_id", "category", "department",
                    "region", "country", "loyalty_tier"))


def return_lines(returns: DataFrame, end: dt.datetime) -> DataFrame:
    """Returns linked to their sale, refunded before ``end``; ``amount`` is positive (reporting currency)."""
    from pyspark.sql import functions as F

    return (returns.filter(F.col("sale_ts").isNotNull() & F.col("customer_id").isNotNull()
                           & (F.col("returned_ts") < F.lit(end)))
            .select("return_id", F.col("original_txn_id").alias("transaction_id"), "customer_id", "sale_ts",
                    "returned_ts", "days_to_return", F.col("amount_reporting").alias("amount")))


# ---------------------------------------------------------------------------------------------- customers
def first_purchases(sales: DataFrame) -> DataFrame:
    """One row per customer: first purchase time and the attributes fixed at it.

    The first basket is the earliest (ties: smallest basket id); ``first_category`` is the category of
    its largest line by amount (ties: smallest product id); region/country/tier are the customer's
    version valid at that sale.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    by_basket = Window.partitionBy("basket_id")
    lines = sales.withColumn("basket_ts", F.min("posted_ts").over(by_basket))
    order = Window.partitionBy("customer_id").orderBy(
        "basket_ts", "basket_id", F.col("amount").desc(), "product_id")
    return (lines.withColumn("_rank", F.row_number().over(order)).filter(F.col("_rank") == 1)
            .select("customer_id", F.col("basket_ts").alias("first_purchase_ts"),
                    F.col("basket_id").alias("first_basket_id"), F.col("channel").alias("first_channel"),
                    F.col("category").alias("first_category"), "region", "country", "loyalty_tier"))


def study_population(firsts: DataFrame, cfg: CohortsConfig) -> DataFrame:
    """Customers kept by the segment filters, with ``cohort_key``, ``cohort_start`` and ``acq_period``.

    ``acq_period`` is the period number of the first purchase at the configured grain; a customer's age in
    a later period is that period's number minus ``acq_period``. ``cohort_start`` is the first day of the
    cohort for month/week cohorts and null for attribute cohorts (channel, category, region).
    """
    from pyspark.sql import functions as F

    out = firsts
    for key, values in cfg.segment_filters.items():
        out = out.filter(F.col(key).isin(list(values)))
    if cfg.cohort_by == "first_purchase_month":
        start = F.trunc("first_purchase_ts", "month")
        key_col = F.date_format("first_purchase_ts", "yyyy-MM")
    elif cfg.cohort_by == "first_purchase_week":
        start = F.date_trunc("week", "first_purchase_ts").cast("date")
        key_col = F.date_format(start, "yyyy-MM-dd")
    else:
        start = F.lit(None).cast("date")
        key_col = F.coalesce(F.col(cfg.cohort_by).cast("string"), F.lit("unknown"))
    return out.select("*", key_col.alias("cohort_key"), start.alias("cohort_start"),
                      period_number("first_purchase_ts", cfg.period_grain).alias("acq_period"))
