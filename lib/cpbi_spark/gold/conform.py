"""Pure transformations that conform silver rows to dimensions and currencies.

Example:
    >>> facts = conform_transactions(sales, returns, customers, products, merchants, daily_rates, "USD")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame


def daily_rates(rates: DataFrame, start: str | Column, end: str | Column) -> DataFrame:
    """One rate per currency and calendar day between ``start`` and ``end``.

    A day without a published rate takes the last earlier rate (weekends, holidays); days
    before the first published rate take the first one. A dense table keeps the join with
    the facts an equi-join instead of a range join.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    bounds = rates.groupBy("currency").agg(F.min("rate_date").alias("first"), F.max("rate_date").alias("last"))
    days = bounds.select("currency", F.explode(F.sequence(
        F.least(F.col("first"), F.to_date(F.lit(start) if isinstance(start, str) else start)),
        F.greatest(F.col("last"), F.to_date(F.lit(end) if isinstance(end, str) else end)))).alias("rate_date"))
    joined = days.join(rates.select("currency", "rate_date", "rate_to_reporting"), ["currency", "rate_date"], "left")
    back = Window.partitionBy("currency").orderBy("rate_date").rowsBetween(Window.unboundedPreceding, 0)
    fwd = Window.partitionBy("currency").orderBy("rate_date").rowsBetween(0, Window.unboundedFollowing)
    return joined.select("currency", "rate_date", F.coalesce(
        F.last("rate_to_reporting", ignorenulls=True).over(back),
        F.first("rate_to_reporting", ignorenulls=True).over(fwd)).alias("rate_to_reporting"))


def as_of(facts: DataFrame, dim: DataFrame, *, key: str, ts: str, sk: str) -> DataFrame:
    """Attach ``sk`` of the dimension version valid at ``ts``.

    Valid means ``valid_from <= ts < valid_to`` (open ``valid_to`` = current). An event before
    the first version (a sale before the first customer record was exported) takes the
    first version, so no fact loses its dimension.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    first = Window.partitionBy(key)
    versions = (dim.select(key, sk, "valid_from", "valid_to")
                .withColumn("_first_from", F.min("valid_from").over(first)))
    d = versions.alias("d")
    f = facts.alias("f")
    cond = ((F.col(f"f.{key}") == F.col(f"d.{key}"))
            & ((F.col(f"f.{ts}") >= F.col("d.valid_from")) | (F.col("d.valid_from") == F.col("d._first_from")))
            & (F.col("d.valid_to").isNull() | (F.col(f"f.{ts}") < F.col("d.valid_to"))))
    return f.join(d, cond, "left").select("f.*", F.col(f"d.{sk}").alias(sk))


def conform_transactions(sales: DataFrame, returns: DataFrame, customers: DataFrame, products: DataFrame,
                         merchants: DataFrame, rates: DataFrame, reporting_currency: str) -> DataFrame:
    """Sales and returns as one fact: signed amounts, dimension versions, reporting currency."""
    from pyspark.sql import functions as F

    sale_lines = sales.select(
        F.col("txn_id").alias("transaction_id"), "account_id", "customer_id", "product_id", "amount", "currency",
        F.lit("SALE").alias("txn_type"), "posted_ts", "basket_id", "quantity", "unit_price",
        F.col("store_id").alias("merchant_id"), F.lit(None).cast("string").alias("original_transaction_id"),
        F.col("discount_amount") if "discount_amount" in sales.columns
        else F.lit(None).cast("decimal(18,2)").alias("discount_amount"))
    origin = sales.select(F.col("txn_id").alias("original_txn_id"), F.col("basket_id").alias("_basket"),
                          F.col("account_id").alias("_account"), F.col("unit_price").alias("_price"),
                          F.col("store_id").alias("_store"))
    return_lines = returns.join(origin, "original_txn_id", "left").select(
        F.col("return_id").alias("transaction_id"), F.col("_account").alias("account_id"), "customer_id",
        "product_id", (-F.col("amount")).cast("decimal(18,2)").alias("amount"), "currency",
        F.lit("RETURN").alias("txn_type"), F.col("returned_ts").alias("posted_ts"),
        F.col("_basket").alias("basket_id"), (-F.col("quantity")).alias("quantity"),
        F.col("_price").alias("unit_price"), F.coalesce("store_id", "_store").alias("merchant_id"),
        F.col("original_txn_id").alias("original_transaction_id"), F.lit(None).cast("decimal(18,2)").alias(
            "discount_amount"))
    lines = sale_lines.unionByName(return_lines).withColumn("_date", F.to_date("posted_ts"))
    lines = as_of(lines, customers, key="customer_id", ts="posted_ts", sk="customer_sk")
    lines = as_of(lines, products, key="product_id", ts="posted_ts", sk="product_sk")
    lines = lines.join(merchants.select("merchant_id", "channel"), "merchant_id", "left")
    lines = lines.join(rates.select("currency", F.col("rate_date").alias("_date"), "rate_to_reporting"),
                       ["currency", "_date"], "left")
    return lines.select(
        "transaction_id", "account_id", "customer_id", "product_id", "amount", "currency", "txn_type", "posted_ts",
        "basket_id", "quantity", "unit_price",
        F.round(F.col("amount") * F.col("rate_to_reporting"), 2).cast("decimal(18,2)").alias("amount_reporting"),
        F.lit(reporting_currency).alias("reporting_currency"), F.col("rate_to_reporting").alias("exchange_rate"),
        "customer_sk", "product_sk", "merchant_id", "channel",
        F.date_format("_date", "yyyyMMdd").cast("int").alias("date_key"), "original_transaction_id",
        F.round(F.col("discount_amount") * F.col("rate_to_reporting"), 2).cast("decimal(18,2)").alias(
            "discount_amount_reporting"))
