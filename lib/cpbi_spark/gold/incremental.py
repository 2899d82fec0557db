"""Which gold rows a silver change affects, and the scoped MERGE that rewrites only those rows.

Incremental gold starts from the silver row images that changed since the versions gold last
consumed (:meth:`cpbi_spark.lakehouse.Lakehouse.changes`) and derives, with pure DataFrame
functions, the scope of every gold table:

- the fact lines to recompute: changed sales and returns, returns whose sale changed, and every
  line of a customer, product or store whose dimension rows changed or of a currency and day whose
  daily rate changed (a late SCD2 update re-points all lines of that customer);
- baskets, returns and settlement days touched by those lines, and per account the first month
  from which its month-end snapshots change (every account when a new month appears).

Each gold table is then merged with :func:`scoped_merge_source` / :func:`scoped_merge_spec`: the
recomputed rows of the scope are upserted, rows of the scope that are no longer produced are
deleted, and nothing outside the scope is read into the source or deleted.

Example:
    >>> sales_ids = affected_sales(sales, changes)                    # doctest: +SKIP
    >>> source = scoped_merge_source(new_rows, in_scope, ["basket_id", "product_id"])  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cpbi_spark.lakehouse.merge_spec import MatchedClause, MergeSpec, NotMatchedClause

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

DELETE_FLAG = "_cpbi_delete"


@dataclass(frozen=True)
class SilverChanges:
    """What changed in silver since gold's last run.

    ``sales`` and ``returns`` are changed row images of ``stg_transactions`` / ``stg_returns`` (old
    and new images both, so a deleted or re-keyed line is found too); the others are the keys whose
    dimension rows changed and the (currency, day) pairs whose daily rate changed.
    """

    sales: DataFrame
    returns: DataFrame
    customers: DataFrame      # customer_id
    products: DataFrame       # product_id
    merchants: DataFrame      # merchant_id
    rate_days: DataFrame      # currency, rate_date


def changed_keys(changes: DataFrame, key: str, alias: str | None = None) -> DataFrame:
    """The distinct non-null ``key`` values of changed row images (``alias`` renames the column)."""
    from pyspark.sql import functions as F

    return changes.select(F.col(key).alias(alias or key)).where(F.col(alias or key).isNotNull()).distinct()


def changed_rate_days(old_daily: DataFrame, new_daily: DataFrame) -> DataFrame:
    """(currency, rate_date) pairs whose daily rate differs between two :func:`daily_rates` frames."""
    from pyspark.sql import functions as F

    o = old_daily.select("currency", "rate_date", F.col("rate_to_reporting").alias("_old"))
    n = new_daily.select("currency", "rate_date", F.col("rate_to_reporting").alias("_new"))
    return (o.join(n, ["currency", "rate_date"], "full_outer").where(~F.col("_old").eqNullSafe(F.col("_new")))
            .select("currency", "rate_date"))


def affected_sales(sales: DataFrame, ch: SilverChanges) -> DataFrame:
    """``txn_id`` of every sale line whose fact row may change (one column, distinct)."""
    from pyspark.sql import functions as F

    ids = sales.select("txn_id", "customer_id", "product_id", F.col("store_id").alias("merchant_id"), "currency",
                       F.to_date("posted_ts").alias("rate_date"))
    parts = [changed_keys(ch.sales, "txn_id"),
             ids.join(ch.customers, "customer_id", "left_semi").select("txn_id"),
             ids.join(ch.products, "product_id", "left_semi").select("txn_id"),
             ids.join(ch.merchants, "merchant_id", "left_semi").select("txn_id"),
             ids.join(ch.rate_days, ["currency", "rate_date"], "left_semi").select("txn_id")]
    out = parts[0]
    for p in parts[1:]:
        out = out.unionByName(p)
    return out.distinct()


def affected_returns(returns: DataFrame, sale_ids: DataFrame, ch: SilverChanges) -> DataFrame:
    """``return_id`` of every return whose fact or mart rows may change.

    A return line takes its basket, account, price and (without its own store) store from the sale
    it returns, so a return of an affected sale is affected too.
    """
    from pyspark.sql import functions as F

    ids = returns.select("return_id", "original_txn_id", "customer_id", "product_id",
                         F.col("store_id").alias("merchant_id"), "currency",
                         F.to_date("returned_ts").alias("rate_date"))
    parts = [changed_keys(ch.returns, "return_id"),
             ids.join(sale_ids.select(F.col("txn_id").alias("original_txn_id")), "original_txn_id",
                      "left_semi").select("return_id"),
             ids.join(ch.customers, "customer_id", "left_semi").select("return_id"),
             ids.join(ch.products, "product_id", "left_semi").select("return_id"),
             ids.join(ch.merchants, "merchant_id", "left_semi").select("return_id"),
             ids.join(ch.rate_days, ["currency", "rate_date"], "left_semi").select("return_id")]
    out = parts[0]
    for p in parts[1:]:
        out = out.unionByName(p)
    return out.distinct()


def affected_business_dates(returns: DataFrame, ch: SilverChanges) -> DataFrame:
    """``business_date`` of every settlement day whose rows may change.

    Days of changed sales and returns (both images), days of returns whose sale changed (they take
    its payment method and store), and days whose exchange rate changed (the reporting amounts).
    """
    from pyspark.sql import functions as F

    changed_sale_ids = changed_keys(ch.sales, "txn_id", "original_txn_id")
    parts = [ch.sales.select(F.col("posted_date").alias("business_date")),
             ch.returns.select(F.to_date("returned_ts").alias("business_date")),
             returns.join(changed_sale_ids, "original_txn_id", "left_semi").select(
                 F.to_date("returned_ts").alias("business_date")),
             ch.rate_days.select(F.col("rate_date").alias("business_date"))]
    out = parts[0]
    for p in parts[1:]:
        out = out.unionByName(p)
    return out.where(F.col("business_date").isNotNull()).distinct()


def account_months(facts: DataFrame) -> DataFrame:
    """(account_id, month) of fact lines: the months whose snapshots those lines feed."""
    from pyspark.sql import functions as F

    return (facts.where(F.col("account_id").isNotNull())
            .select("account_id", F.trunc("posted_ts", "month").alias("month")).distinct())


def snapshot_starts(changed: DataFrame, snapshot_accounts: DataFrame, new_month) -> DataFrame:
    """Per account, the first month whose snapshot changes: ``account_id, start``.

    ``changed`` holds (account_id, month) of the affected lines' old and new images. When the data
    reaches a month it did not reach before (``new_month``, None otherwise), every account with
    snapshots (``snapshot_accounts``) gets a row for it, so its start is at most that month.
    """
    from pyspark.sql import functions as F

    starts = changed.select("account_id", F.col("month").alias("start"))
    if new_month is not None:
        starts = starts.unionByName(snapshot_accounts.select("account_id").distinct()
                                    .withColumn("start", F.lit(new_month).cast("date")))
    return starts.groupBy("account_id").agg(F.min("start").alias("start"))


def scoped_merge_source(new_rows: DataFrame, in_scope: DataFrame, keys: Sequence[str]) -> DataFrame:
    """The rows to MERGE: ``new_rows`` plus a delete marker for each key of ``in_scope`` not in them.

    ``in_scope`` holds the keys of the target rows inside the recomputed scope (read before the
    MERGE); a key the recomputation no longer produces is deleted, a key outside the scope is never
    touched. Keys compare null-safely, as the MERGE predicate does.
    """
    from functools import reduce

    from pyspark.sql import functions as F

    left = in_scope.select(*keys).distinct().alias("o")
    right = new_rows.select(*keys).alias("n")
    on = reduce(lambda a, b: a & b, [F.col(f"o.{k}").eqNullSafe(F.col(f"n.{k}")) for k in keys])
    gone = left.join(right, on, "left_anti")
    types = dict(new_rows.dtypes)
    deletes = gone.select(*[F.col(c) if c in keys else F.lit(None).cast(types[c]).alias(c) for c in new_rows.columns])
    return (new_rows.withColumn(DELETE_FLAG, F.lit(False))
            .unionByName(deletes.withColumn(DELETE_FLAG, F.lit(True))))


def scoped_merge_spec(keys: Sequence[str], columns: Sequence[str]) -> MergeSpec:
    """Delete flagged rows, update rows whose values changed, insert new rows (see :func:`scoped_merge_source`).

    Assignments are explicit (not ``SET *``) because the source carries the extra delete flag.
    """
    from cpbi_spark.silver.stage import changed_condition

    assign = {c: f"s.`{c}`" for c in columns}
    others = [c for c in columns if c not in keys]
    changed = changed_condition(others) if others else "false"
    return MergeSpec(
        predicate=MergeSpec.key_predicate(keys),
        when_matched=(MatchedClause("delete", condition=f"s.{DELETE_FLAG}"),
                      MatchedClause("update", condition=changed, set=assign)),
        when_not_matched=(NotMatchedClause(condition=f"NOT s.{DELETE_FLAG}", values=assign),),
    )
