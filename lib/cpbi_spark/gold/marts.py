"""Pure builders of the gold marts from the conformed fact and the dimensions.

Example:
    >>> lines = basket_lines(facts, products)        # one row per basket and product
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


def returns_fact(facts: DataFrame, returns: DataFrame, products: DataFrame) -> DataFrame:
    """Each return with its sale: basket, category at sale time, days from sale to return."""
    from pyspark.sql import functions as F

    sale = facts.filter(F.col("txn_type") == "SALE").select(
        F.col("transaction_id").alias("original_txn_id"), "basket_id", "merchant_id", "channel",
        F.col("posted_ts").alias("sale_ts"), "product_sk")
    ret = facts.filter(F.col("txn_type") == "RETURN").select(
        F.col("transaction_id").alias("return_id"), (-F.col("amount_reporting")).alias("amount_reporting"))
    prod = products.select("product_sk", "category", "department")
    return (returns.join(ret, "return_id", "inner").join(sale, "original_txn_id", "left")
            .join(prod, "product_sk", "left")
            .select("return_id", "original_txn_id", "basket_id", "customer_id", "product_id", "category",
                    "department", F.coalesce("store_id", "merchant_id").alias("merchant_id"), "channel", "sale_ts",
                    "returned_ts", F.datediff(F.to_date("returned_ts"), F.to_date("sale_ts")).alias("days_to_return"),
                    "quantity", F.col("amount_reporting").cast("decimal(18,2)").alias("amount_reporting"), "reason",
                    F.col("sale_ts").isNotNull().alias("is_linked")))


def basket_lines(facts: DataFrame, products: DataFrame) -> DataFrame:
    """Sales collapsed to basket x product, with the returned part of each line attached."""
    from pyspark.sql import functions as F

    prod = products.select("product_sk", "category", "department")
    sales = (facts.filter((F.col("txn_type") == "SALE") & F.col("basket_id").isNotNull())
             .join(prod, "product_sk", "left")
             .groupBy("basket_id", "product_id").agg(
                 F.first("customer_id", ignorenulls=True).alias("customer_id"), F.min("posted_ts").alias("basket_ts"),
                 F.first("merchant_id", ignorenulls=True).alias("merchant_id"),
                 F.first("channel", ignorenulls=True).alias("channel"),
                 F.first("category", ignorenulls=True).alias("category"),
                 F.first("department", ignorenulls=True).alias("department"),
                 F.sum("quantity").alias("quantity"), F.sum("amount_reporting").alias("amount_reporting")))
    returned = (facts.filter((F.col("txn_type") == "RETURN") & F.col("basket_id").isNotNull())
                .groupBy("basket_id", "product_id").agg(
                    (-F.sum("quantity")).alias("returned_quantity"),
                    (-F.sum("amount_reporting")).alias("returned_amount_reporting")))
    return (sales.join(returned, ["basket_id", "product_id"], "left")
            .withColumn("returned_quantity", F.coalesce("returned_quantity", F.lit(0.0)))
            .withColumn("returned_amount_reporting",
                        F.coalesce("returned_amount_reporting", F.lit(0)).cast("decimal(18,2)"))
            .withColumn("amount_reporting", F.col("amount_reporting").cast("decimal(18,2)"))
            .withColumn("is_returned", F.col("returned_quantity") > 0))


def adjustments(returns: DataFrame) -> DataFrame:
    """Refunds as adjustments to the sale line they return, in the original currency."""
    from pyspark.sql import functions as F

    return returns.select(F.col("return_id").alias("adjustment_id"), F.col("original_txn_id").alias("txn_id"),
                          F.lit("REFUND").alias("adjustment_type"), (-F.col("amount")).cast("decimal(18,2)").alias(
                              "amount"), "currency", F.col("returned_ts").alias("adjusted_ts"))


def settlements(sales: DataFrame, returns: DataFrame, fees: DataFrame) -> DataFrame:
    """Per store, business date and payment method: gross, refunds, fees and net to settle."""
    from pyspark.sql import functions as F

    pay = sales.select(F.col("txn_id").alias("original_txn_id"), F.col("payment_method").alias("_pm"),
                       F.col("store_id").alias("_store"))
    sale_part = sales.select(F.col("store_id").alias("merchant_id"), F.col("posted_date").alias("business_date"),
                             "payment_method", "currency", F.col("amount").alias("gross"),
                             F.lit(0).cast("decimal(18,2)").alias("refund"), F.lit(1).alias("is_sale"))
    ret_part = returns.join(pay, "original_txn_id", "left").select(
        F.coalesce("store_id", "_store").alias("merchant_id"), F.to_date("returned_ts").alias("business_date"),
        F.coalesce("_pm", F.lit("unknown")).alias("payment_method"), "currency",
        F.lit(0).cast("decimal(18,2)").alias("gross"), F.col("amount").alias("refund"), F.lit(0).alias("is_sale"))
    both = sale_part.unionByName(ret_part).filter(F.col("merchant_id").isNotNull())
    agg = both.groupBy("merchant_id", "business_date", "payment_method").agg(
        F.first("currency").alias("currency"), F.sum("is_sale").cast("bigint").alias("n_sales"),
        F.sum(1 - F.col("is_sale")).cast("bigint").alias("n_refunds"),
        F.sum("gross").cast("decimal(18,2)").alias("gross_sales"),
        F.sum("refund").cast("decimal(18,2)").alias("refunds"))
    f = fees.select("payment_method", "fee_pct", "fee_fixed")
    return (agg.join(f, "payment_method", "left")
            .withColumn("fees", F.round(F.col("gross_sales") * F.coalesce("fee_pct", F.lit(0.0))
                                        + F.col("n_sales") * F.coalesce("fee_fixed", F.lit(0.0)), 2)
                        .cast("decimal(18,2)"))
            .withColumn("net_amount", (F.col("gross_sales") - F.col("refunds") - F.col("fees")).cast("decimal(18,2)"))
            .select("merchant_id", "business_date", "payment_method", "currency", "n_sales", "n_refunds",
                    "gross_sales", "refunds", "fees", "net_amount"))


def settlements_reporting(stage: DataFrame, rates: DataFrame, fees: DataFrame, reporting_currency: str) -> DataFrame:
    from pyspark.sql import functions as F

    r = rates.select("currency", F.col("rate_date").alias("business_date"), "rate_to_reporting")
    lag = fees.select("payment_method", "settlement_lag_days")

    def conv(c: str) -> object:
        return F.round(F.col(c) * F.col("rate_to_reporting"), 2).cast("decimal(18,2)")

    return (stage.join(r, ["currency", "business_date"], "left").join(lag, "payment_method", "left")
            .select("merchant_id", "business_date", "payment_method",
                    F.date_add("business_date", F.coalesce("settlement_lag_days", F.lit(0))).alias("settlement_date"),
                    conv("gross_sales").alias("gross_sales_reporting"), conv("refunds").alias("refunds_reporting"),
                    conv("fees").alias("fees_reporting"), conv("net_amount").alias("net_reporting"),
                    F.lit(reporting_currency).alias("reporting_currency")))


def balance_snapshots(facts: DataFrame, limits: Mapping[str, float]) -> DataFrame:
    """Month-end state of every account from its first active month to the last month of data."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    points_rate = float(limits.get("points_per_currency_unit", 1.0))
    lines = facts.filter(F.col("account_id").isNotNull()).withColumn("month", F.trunc("posted_ts", "month"))
    monthly = lines.groupBy("account_id", "month").agg(
        F.countDistinct(F.when(F.col("txn_type") == "SALE", F.col("basket_id"))).alias("orders_in_month"),
        F.sum("amount_reporting").alias("net_spend_month"))
    last_month = lines.agg(F.max("month")).first()[0]
    if last_month is None:
        return monthly.select("account_id", F.col("month").alias("snapshot_date"), "orders_in_month",
                              "net_spend_month", F.col("net_spend_month").alias("cumulative_net_spend"),
                              F.lit(0).cast("bigint").alias("points_balance")).limit(0)
    first = monthly.groupBy("account_id").agg(F.min("month").alias("first"))
    grid = first.select("account_id", F.explode(F.sequence("first", F.lit(last_month).cast("date"),
                                                             F.expr("INTERVAL 1 MONTH"))).alias("month"))
    full = grid.join(monthly, ["account_id", "month"], "left").fillna({"orders_in_month": 0})
    w = Window.partitionBy("account_id").orderBy("month").rowsBetween(Window.unboundedPreceding, 0)
    return full.select(
        "account_id", F.last_day("month").alias("snapshot_date"), F.col("orders_in_month").cast("bigint"),
        F.coalesce("net_spend_month", F.lit(0)).cast("decimal(18,2)").alias("net_spend_month"),
        F.sum(F.coalesce("net_spend_month", F.lit(0))).over(w).cast("decimal(20,2)").alias("cumulative_net_spend"),
    ).withColumn("points_balance", F.greatest(F.floor(F.col("cumulative_net_spend") * points_rate),
                                              F.lit(0)).cast("bigint"))


def balance_snapshots_since(facts: DataFrame, starts: DataFrame, bases: DataFrame, last_month,
                            limits: Mapping[str, float]) -> DataFrame:
    """The month-end snapshots of some accounts from a start month on, continuing earlier snapshots.

    ``starts`` has ``account_id, start`` (first month to recompute); ``facts`` must hold every line of
    those accounts from their start month on; ``bases`` has ``account_id, cumulative_net_spend`` of
    the snapshot just before the start (accounts without one begin at their first line, from 0).
    The rows equal those :func:`balance_snapshots` gives for the same accounts and months.

    Example:
        >>> balance_snapshots_since(lines, starts, bases, date(2025, 2, 1), {})   # doctest: +SKIP
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    points_rate = float(limits.get("points_per_currency_unit", 1.0))
    lines = (facts.filter(F.col("account_id").isNotNull()).withColumn("month", F.trunc("posted_ts", "month"))
             .join(starts, "account_id").filter(F.col("month") >= F.col("start")))
    monthly = lines.groupBy("account_id", "month").agg(
        F.countDistinct(F.when(F.col("txn_type") == "SALE", F.col("basket_id"))).alias("orders_in_month"),
        F.sum("amount_reporting").alias("net_spend_month"))
    first = monthly.groupBy("account_id").agg(F.min("month").alias("first_line"))
    base = bases.select("account_id", F.col("cumulative_net_spend").alias("_base"))
    # With an earlier snapshot the grid continues from the start month; without one it begins at
    # the account's first line (there is none before the start: those months are unchanged).
    begin = (starts.join(base, "account_id", "left").join(first, "account_id", "left")
             .select("account_id", "_base", F.when(F.col("_base").isNotNull(), F.col("start"))
                     .otherwise(F.col("first_line")).alias("begin"))
             .filter(F.col("begin").isNotNull() & (F.col("begin") <= F.lit(last_month).cast("date"))))
    grid = begin.select("account_id", "_base", F.explode(F.sequence(
        "begin", F.lit(last_month).cast("date"), F.expr("INTERVAL 1 MONTH"))).alias("month"))
    full = grid.join(monthly, ["account_id", "month"], "left").fillna({"orders_in_month": 0})
    w = Window.partitionBy("account_id").orderBy("month").rowsBetween(Window.unboundedPreceding, 0)
    return full.select(
        "account_id", F.last_day("month").alias("snapshot_date"), F.col("orders_in_month").cast("bigint"),
        F.coalesce("net_spend_month", F.lit(0)).cast("decimal(18,2)").alias("net_spend_month"),
        (F.coalesce("_base", F.lit(0)) + F.sum(F.coalesce("net_spend_month", F.lit(0))).over(w))
        .cast("decimal(20,2)").alias("cumulative_net_spend"),
    ).withColumn("points_balance", F.greatest(F.floor(F.col("cumulative_net_spend") * points_rate),
                                              F.lit(0)).cast("bigint"))


def calendar(start, end) -> DataFrame:
    """The date dimension from ``start`` to ``end`` (inclusive)."""
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    spark = SparkSession.getActiveSession()
    days = spark.range(1).select(
        F.explode(F.sequence(F.lit(start).cast("date"), F.lit(end).cast("date"))).alias("date"))
    return days.select(
        F.date_format("date", "yyyyMMdd").cast("int").alias("date_key"), "date", F.year("date").alias("year"),
        F.quarter("date").alias("quarter"), F.month("date").alias("month"),
        F.date_format("date", "MMMM").alias("month_name"), F.weekofyear("date").alias("week_of_year"),
        # ISO day of week: Monday = 1 ... Sunday = 7
        ((F.dayofweek("date") + 5) % 7 + 1).alias("day_of_week"), F.date_format("date", "EEEE").alias("day_name"),
        F.dayofweek("date").isin(1, 7).alias("is_weekend"), F.trunc("date", "month").alias("month_start"))
