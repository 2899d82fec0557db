"""Which gold rows a silver change affects, and the scoped MERGE that rewrites only those rows.

Incremental gold starts from the silver row images that changed since the versions gold last
consumed (:meth:`cpbi_spark.lakehouse.Lakehouse.changes`) and derives, with pure DataFrame
functions, the scope of every gold table:

- the fact lines to recompute: changed sales and returns, returns whose sale changed, the lines
  of a customer or product from the point in time where its SCD2 versions changed (a late update
  re-points the lines after it; see :func:`dimension_change_points`), every line of a store whose
  row changed, and the lines of a currency and day whose daily rate changed;
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

from cpbi_spark.lakehouse.merge_spec import MatchedClause, MergeSpec, NotMatchedClause, changed_condition

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

DELETE_FLAG = "_cpbi_delete"
# A scope frame (keys of changed rows, days, baskets) of at most this many rows is broadcast to the
# joins that select a table's rows by it: the large side is then read once and never shuffled. Left
# to itself the planner shuffles both sides (a frozen scope's size estimate is that of the tables it
# came from), which cost most of an incremental run's seconds. 1M short keys are tens of MB.
BROADCAST_MAX_ROWS = 1_000_000


def small_side(df: DataFrame, rows: int) -> DataFrame:
    """``df`` (``rows`` rows) hinted for broadcast joins when it is small enough, else as it is.

    Example:
        >>> ids = small_side(frozen_ids, frozen_ids.count())     # doctest: +SKIP
    """
    from pyspark.sql import functions as F

    return F.broadcast(df) if rows <= BROADCAST_MAX_ROWS else df


@dataclass(frozen=True)
class SilverChanges:
    """What changed in silver since gold's last run.

    ``sales`` and ``returns`` are changed row images of ``stg_transactions`` / ``stg_returns`` (old
    and new images both, so a deleted or re-keyed line is found too); the others are the keys whose
    dimension rows changed and the (currency, day) pairs whose daily rate changed.
    """

    sales: DataFrame
    returns: DataFrame
    customers: DataFrame      # customer_id, since (see dimension_change_points)
    products: DataFrame       # product_id, since
    merchants: DataFrame      # merchant_id
    rate_days: DataFrame      # currency, rate_date


def _union_distinct(parts: list[DataFrame]) -> DataFrame:
    """The distinct rows of frames with the same columns."""
    from functools import reduce

    return reduce(lambda a, b: a.unionByName(b), parts).distinct()


def changed_keys(changes: DataFrame, key: str, alias: str | None = None) -> DataFrame:
    """The distinct non-null ``key`` values of changed row images (``alias`` renames the column)."""
    from pyspark.sql import functions as F

    return changes.select(F.col(key).alias(alias or key)).where(F.col(alias or key).isNotNull()).distinct()


def dimension_change_points(changes: DataFrame, dim: DataFrame, key: str, sk: str) -> DataFrame:
    """Per key of an SCD2 dimension, from when on its facts may point elsewhere: ``key, since``.

    ``changes`` are the dimension's changed row images (``_change``), ``dim`` its current rows. A
    version that appeared, vanished or changed its attributes changes the facts from its
    ``valid_from`` on; a version whose end alone moved (closed by a later or a late update),
    from the earlier of its two ends. ``since`` is NULL when the first version is affected: lines
    before it take the first version, so every line of the key may change.

    Example:
        >>> dimension_change_points(changes, dim_customer, "customer_id", "customer_sk")  # doctest: +SKIP
    """
    from pyspark.sql import functions as F

    from cpbi_spark.lakehouse.engine import CHANGE_COLUMN

    boundary = {sk, key, "valid_from", "valid_to", "is_current", CHANGE_COLUMN}
    content = F.sha2(F.to_json(F.struct(*[F.col(c) for c in changes.columns if c not in boundary])), 256)

    def side(kind: str, p: str) -> DataFrame:
        return changes.filter(F.col(CHANGE_COLUMN) == kind).select(
            sk, F.col(key).alias(f"{p}key"), F.col("valid_from").alias(f"{p}from"),
            F.col("valid_to").alias(f"{p}to"), content.alias(f"{p}content"))

    pairs = side("delete", "o_").join(side("insert", "n_"), sk, "full_outer")
    only_end_moved = (F.col("o_key").isNotNull() & F.col("n_key").isNotNull()
                      & F.col("o_content").eqNullSafe(F.col("n_content")) & F.col("o_from").eqNullSafe(F.col("n_from")))
    start = F.when(only_end_moved, F.least("o_to", "n_to")).otherwise(F.least("o_from", "n_from"))
    points = pairs.select(F.coalesce("o_key", "n_key").alias(key), start.alias("_start"),
                          F.least("o_from", "n_from").alias("_from"))
    first = dim.select(key, F.col("valid_from").alias("_from")).unionByName(points.select(key, "_from"))
    first = first.groupBy(key).agg(F.min("_from").alias("_first"))
    per_key = points.groupBy(key).agg(F.min("_start").alias("_start"),
                                      F.max(F.col("_start").isNull().cast("int")).alias("_unknown"))
    return per_key.join(first, key, "left").select(
        key, F.when((F.col("_unknown") == 0) & (F.col("_start") > F.col("_first")), F.col("_start")).alias("since"))


def _since(df: DataFrame, points: DataFrame, key: str, ts: str) -> DataFrame:
    """Rows of ``df`` whose ``key`` has a change point at or before ``ts`` (NULL point: every row)."""
    from pyspark.sql import functions as F

    p = points.select(F.col(key).alias("_k"), "since")
    return (df.join(p, df[key] == p["_k"], "inner")
            .filter(F.col("since").isNull() | (F.col(ts) >= F.col("since"))).drop("_k", "since"))


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
                       "posted_ts", F.to_date("posted_ts").alias("rate_date"))
    parts = [changed_keys(ch.sales, "txn_id"),
             _since(ids, ch.customers, "customer_id", "posted_ts").select("txn_id"),
             _since(ids, ch.products, "product_id", "posted_ts").select("txn_id"),
             ids.join(ch.merchants, "merchant_id", "left_semi").select("txn_id"),
             ids.join(ch.rate_days, ["currency", "rate_date"], "left_semi").select("txn_id")]
    return _union_distinct(parts)


def affected_returns(returns: DataFrame, sale_ids: DataFrame, ch: SilverChanges) -> DataFrame:
    """``return_id`` of every return whose fact or mart rows may change.

    A return line takes its basket, account, price and (without its own store) store from the sale
    it returns, so a return of an affected sale is affected too.
    """
    from pyspark.sql import functions as F

    ids = returns.select("return_id", "original_txn_id", "customer_id", "product_id",
                         F.col("store_id").alias("merchant_id"), "currency", "returned_ts",
                         F.to_date("returned_ts").alias("rate_date"))
    parts = [changed_keys(ch.returns, "return_id"),
             ids.join(sale_ids.select(F.col("txn_id").alias("original_txn_id")), "original_txn_id",
                      "left_semi").select("return_id"),
             _since(ids, ch.customers, "customer_id", "returned_ts").select("return_id"),
             _since(ids, ch.products, "product_id", "returned_ts").select("return_id"),
             ids.join(ch.merchants, "merchant_id", "left_semi").select("return_id"),
             ids.join(ch.rate_days, ["currency", "rate_date"], "left_semi").select("return_id")]
    return _union_distinct(parts)


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
    return _union_distinct(parts).where(F.col("business_date").isNotNull())


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
    assign = {c: f"s.`{c}`" for c in columns}
    others = [c for c in columns if c not in keys]
    changed = changed_condition(others) if others else "false"
    return MergeSpec(
        predicate=MergeSpec.key_predicate(keys),
        when_matched=(MatchedClause("delete", condition=f"s.{DELETE_FLAG}"),
                      MatchedClause("update", condition=changed, set=assign)),
        when_not_matched=(NotMatchedClause(condition=f"NOT s.{DELETE_FLAG}", values=assign),),
    )
