"""Gold basket lines -> the units and transactions the basket analysis mines (pure transforms).

A *run scope* is one (level, segment key, segment value): ``product|all|all`` is every basket at
product level, ``category|channel|online`` the online baskets at category level. The scope string
is ``level|segment_key|segment_value`` (the value is last, so it may itself contain ``|``).

A *unit* is one item of one basket in one scope (the lines of a basket collapsed to the item of the
level: at category level, two shirts and a tie make one unit "Tops" and one "Accessories"), with its
value and returns summed over the lines. The returns policy decides which units enter the baskets
(``kept``); the value profile of an item uses every unit, returned or not.

Example:
    >>> units = (lines.transform(filter_lines(cfg, start, end))                      # doctest: +SKIP
    ...          .transform(with_segments(customers, ["channel"]))
    ...          .transform(with_unit_cost(products, None))
    ...          .transform(scoped_units(["product"], ["channel"], "keep_and_flag", cfg.returns)))
    >>> units.transform(transactions).columns                                          # doctest: +SKIP
    ['scope', 'basket', 'item']
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from cpbi_spark.analytics.baskets.config import BasketsConfig, ReturnsConfig

Transform = Callable[["DataFrame"], "DataFrame"]
ALL = "all"
LEVEL_COLUMN = {"product": "product_id", "category": "category", "department": "department"}


def scope_name(level: str, segment_key: str = ALL, segment_value: str = ALL) -> str:
    """``product|all|all``-style name of a run scope.

    >>> scope_name("category", "channel", "online")
    'category|channel|online'
    """
    return f"{level}|{segment_key}|{segment_value}"


def parse_scope(scope: str) -> tuple[str, str, str]:
    """Inverse of :func:`scope_name`.

    >>> parse_scope("product|region|North|East")
    ('product', 'region', 'North|East')
    """
    level, key, value = scope.split("|", 2)
    return level, key, value


def window_bounds(cfg: BasketsConfig, last_ts: dt.datetime | None) -> tuple[dt.datetime | None, dt.datetime | None]:
    """[start, end) timestamps of the analysed window (None = open); ``last_ts`` is the data's last basket.

    >>> from cpbi_spark.analytics.baskets.config import BasketsConfig
    >>> window_bounds(BasketsConfig(window={"last_days": 7}), dt.datetime(2025, 2, 28, 13))
    (datetime.datetime(2025, 2, 22, 0, 0), datetime.datetime(2025, 3, 1, 0, 0))
    """
    w = cfg.window
    if w.last_days is not None:
        if last_ts is None:
            return None, None
        end = dt.datetime.combine(last_ts.date() + dt.timedelta(days=1), dt.time())
        return end - dt.timedelta(days=w.last_days), end
    start = dt.datetime.combine(w.start, dt.time()) if w.start else None
    end = dt.datetime.combine(w.end + dt.timedelta(days=1), dt.time()) if w.end else None
    return start, end


def filter_lines(cfg: BasketsConfig, start: dt.datetime | None, end: dt.datetime | None) -> Transform:
    """Keep lines inside [start, end) that are not excluded (bags, postage, ...) and have a basket."""
    from pyspark.sql import functions as F

    def run(lines: DataFrame) -> DataFrame:
        cond = F.col("basket_id").isNotNull() & F.col("product_id").isNotNull()
        if start is not None:
            cond &= F.col("basket_ts") >= F.lit(start)
        if end is not None:
            cond &= F.col("basket_ts") < F.lit(end)
        ex = cfg.exclude
        for column, values in (("product_id", ex.products), ("category", ex.categories),
                               ("department", ex.departments)):
            if values:
                # A null category is not "excluded": it is simply missing at that level.
                cond &= ~F.coalesce(F.col(column).isin(list(values)), F.lit(False))
        return lines.filter(cond)

    return run


def with_segments(customers: DataFrame | None, segments: Sequence[str]) -> Transform:
    """Add ``region`` and ``loyalty_tier`` from the customer version valid at the basket's time.

    ``customers`` is the SCD2 ``dim_customer``; a basket before the customer's first version takes
    that first version; no customer record gives ``unknown``. ``channel`` is on the line already.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    wanted = [s for s in ("region", "loyalty_tier") if s in segments]

    def run(lines: DataFrame) -> DataFrame:
        out = lines
        if not wanted or customers is None:
            for col in wanted:
                out = out.withColumn(col, F.lit("unknown"))
            return out
        versions = customers.select("customer_id", *wanted, "valid_from", "valid_to")
        first = (versions.withColumn("_rn", F.row_number().over(
                     Window.partitionBy("customer_id").orderBy("valid_from")))
                 .filter("_rn = 1").select("customer_id", *[F.col(c).alias(f"_first_{c}") for c in wanted]))
        v = versions.alias("v")
        keyed = out.withColumn("_line", F.monotonically_increasing_id()).alias("l")
        asof = keyed.join(v, (F.col("l.customer_id") == F.col("v.customer_id"))
                          & (F.col("v.valid_from") <= F.col("l.basket_ts"))
                          & (F.col("l.basket_ts") < F.coalesce(F.col("v.valid_to"),
                                                               F.lit(dt.datetime(9999, 1, 1)))), "left")
        asof = asof.select("l.*", *[F.col(f"v.{c}").alias(f"_asof_{c}") for c in wanted])
        # Overlapping versions (not expected in SCD2) would duplicate a line: keep one.
        asof = asof.dropDuplicates(["_line"])
        joined = asof.join(first, "customer_id", "left")
        for c in wanted:
            joined = joined.withColumn(c, F.coalesce(F.col(f"_asof_{c}"), F.col(f"_first_{c}"), F.lit("unknown")))
        return joined.drop("_line", *[f"_asof_{c}" for c in wanted], *[f"_first_{c}" for c in wanted])

    return run


def segment_filter(filters: dict[str, list[str]]) -> Transform:
    """Keep baskets whose segment value is listed, for every filtered key (e.g. ``{"channel": ["online"]}``)."""
    from pyspark.sql import functions as F

    def run(lines: DataFrame) -> DataFrame:
        for key, values in filters.items():
            lines = lines.filter(F.coalesce(F.col(key), F.lit("unknown")).isin(list(values)))
        return lines

    return run


def with_unit_cost(products: DataFrame | None, default_margin_rate: float | None) -> Transform:
    """Add ``unit_cost`` from the current product version (or ``amount * (1 - rate) / quantity``)."""
    from pyspark.sql import functions as F

    def run(lines: DataFrame) -> DataFrame:
        if products is None:
            out = lines.withColumn("unit_cost", F.lit(None).cast("double"))
        else:
            cost = (products.filter(F.col("is_current"))
                    .groupBy("product_id").agg(F.max(F.col("unit_cost").cast("double")).alias("unit_cost")))
            out = lines.join(F.broadcast(cost), "product_id", "left")
        if default_margin_rate is not None:
            fallback = (F.col("amount_reporting").cast("double") * (1 - default_margin_rate)
                        / F.when(F.col("quantity") > 0, F.col("quantity")))
            out = out.withColumn("unit_cost", F.coalesce(F.col("unit_cost"), fallback))
        return out

    return run


def scoped_units(levels: Sequence[str], segments: Sequence[str], policy: str, returns: ReturnsConfig) -> Transform:
    """One row per scope, basket and item (see module doc), with value and returns summed over lines.

    Output columns: scope, basket, item, customer_id, basket_ts, kept, returned, amount, margin,
    return_cost. ``margin = amount - quantity * unit_cost``; ``return_cost = returned_amount -
    returned_quantity * unit_cost * cost_recovery_rate + handling_cost`` (per returned line).
    Lines without an item at a level (e.g. no category) are left out of that level.
    """
    from pyspark.sql import functions as F

    def run(lines: DataFrame) -> DataFrame:
        cost = F.col("unit_cost")
        qty = F.coalesce(F.col("quantity"), F.lit(0.0))
        ret_qty = F.coalesce(F.col("returned_quantity"), F.lit(0.0))
        amount = F.coalesce(F.col("amount_reporting").cast("double"), F.lit(0.0))
        ret_amount = F.coalesce(F.col("returned_amount_reporting").cast("double"), F.lit(0.0))
        is_returned = F.coalesce(F.col("is_returned"), ret_qty > 0)
        base = lines.select(
            "basket_id", "customer_id", "basket_ts", "product_id", "category", "department",
            *[F.coalesce(F.col(s).cast("string"), F.lit("unknown")).alias(f"_seg_{s}") for s in segments],
            amount.alias("_amount"),
            (amount - qty * cost).alias("_margin"),
            (ret_amount - ret_qty * cost * F.lit(returns.cost_recovery_rate)
             + F.when(is_returned, F.lit(returns.handling_cost)).otherwise(F.lit(0.0))).alias("_return_cost"),
            is_returned.alias("_returned"),
            (F.lit(True) if policy == "keep_and_flag" else ~is_returned).alias("_kept"),
        )
        pairs = [(ALL, F.lit(ALL))] + [(s, F.col(f"_seg_{s}")) for s in segments]
        # One explode instead of a union per scope: the upstream plan (as-of join, ...) runs once.
        scopes = F.array(*[
            F.struct(F.concat_ws("|", F.lit(level), F.lit(key), value).alias("scope"),
                     F.col(LEVEL_COLUMN[level]).cast("string").alias("item"))
            for level in levels for key, value in pairs])
        union = (base.select("*", F.explode(scopes).alias("_s"))
                 .select(F.col("_s.scope").alias("scope"), F.col("basket_id").alias("basket"),
                         F.col("_s.item").alias("item"), "customer_id", "basket_ts", "_amount", "_margin",
                         "_return_cost", "_returned", "_kept")
                 .filter(F.col("item").isNotNull()))
        return union.groupBy("scope", "basket", "item").agg(
            F.first("customer_id", ignorenulls=True).alias("customer_id"), F.min("basket_ts").alias("basket_ts"),
            F.max(F.col("_kept").cast("int")).cast("boolean").alias("kept"),
            F.max(F.col("_returned").cast("int")).cast("boolean").alias("returned"),
            F.sum("_amount").alias("amount"), F.sum("_margin").alias("margin"),
            F.sum("_return_cost").alias("return_cost"))

    return run


def transactions(units: DataFrame) -> DataFrame:
    """The mining input: ``(scope, basket, item)`` of the kept units."""
    return units.filter("kept").select("scope", "basket", "item")


def item_value_profile(units: DataFrame) -> DataFrame:
    """Per scope and item: units, returned units, return rate and mean amount / margin / return cost per unit.

    Uses every unit (also those the returns policy leaves out of the baskets): the return rate is a
    property of the item, not of the policy.
    """
    from pyspark.sql import functions as F

    return units.groupBy("scope", "item").agg(
        F.count("*").alias("units"), F.sum(F.col("returned").cast("long")).alias("returned_units"),
        F.avg("amount").alias("mean_amount"), F.avg("margin").alias("mean_margin"),
        F.avg("return_cost").alias("mean_return_cost"),
    ).withColumn("return_rate", F.col("returned_units") / F.col("units"))
