"""Spark transforms that turn gold facts into one row per study unit (a customer in a promotion).

A *unit* is a customer exposed to a promotion (its first exposure to that promotion) or, for a
non-randomised promotion, an eligible customer who was not exposed (the comparison group, anchored
at the promotion's first exposure). Everything per transaction line stays in Spark; what leaves
Spark is one row per unit: outcomes in the response window, pre-period features and the segment.

Definitions (also in ``docs/uplift.md``):

* response window of a unit: ``[exposed_ts, exposed_ts + response_window_days)``, half-open, UTC;
* ``converted``: at least one SALE line of the customer in the window (any basket);
* ``revenue``: sum of the SALE lines' ``amount_reporting`` in the window (USD, after price discounts);
* ``returned``: the refunds (positive) of RETURN lines whose original sale line is in the window,
  whenever the return was posted (returns arrive up to ~4 weeks later: right-censored at the data's end);
* ``net_revenue = revenue - returned``;
* pre-period: ``[exposed_ts - pre_period_days, exposed_ts)``; RFM, category (department) mix of spend,
  channel mix of baskets, return rate, tenure, previous promotion exposures and responses.

Example:
    >>> units = study_units(exposures, promotions, default_window_days=14)           # doctest: +SKIP
    >>> frame = build_study_frame(units, sales, returns, lines, customers,           # doctest: +SKIP
    ...                           departments=["Grocery", "Home"], channels=["store", "online"],
    ...                           segments=["bronze", "silver"], pre_period_days=365)
    >>> frame.columns[:4]                                                             # doctest: +SKIP
    ['unit_id', 'promotion_id', 'customer_id', 'arm']
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

DAY_MICROS = 86_400 * 1_000_000
UNIT_COLUMNS = ["unit_id", "promotion_id", "customer_id", "arm", "is_control", "is_exposed", "is_randomized",
                "exposed_ts", "window_days"]
OUTCOMES = ["converted", "baskets", "revenue", "returned", "net_revenue"]
COMPARISON_ARM = "not_exposed"
# Numeric pre-period features always present (department, channel, segment columns are added per data).
BASE_FEATURES = ["recency_days", "frequency", "monetary", "avg_basket_value", "return_rate", "tenure_days",
                 "has_pre_purchase", "prev_exposures", "prev_treated", "prev_treated_conversions",
                 "prev_treated_response_rate"]


def slug(value: str) -> str:
    """A column-safe lower-case name for a category value.

    >>> slug("Home & Garden"), slug("app_push"), slug("")
    ('home_garden', 'app_push', 'blank')
    """
    out = re.sub(r"[^a-z0-9]+", "_", str(value).lower()).strip("_")
    return out or "blank"


def dept_col(name: str) -> str:
    return f"dept_share__{slug(name)}"


def channel_col(name: str) -> str:
    return f"channel_share__{slug(name)}"


def segment_col(name: str) -> str:
    return f"segment__{slug(name)}"


def _micros(col: str | Column) -> Column:
    from pyspark.sql import functions as F

    return F.unix_micros(F.col(col) if isinstance(col, str) else col)


def study_units(exposures: DataFrame, promotions: DataFrame, default_window_days: int) -> DataFrame:
    """Exposed units: the first exposure of each customer to each promotion, with its response window.

    ``is_randomized`` comes from ``dim_promotion`` (the exposure row's flag when the promotion is missing);
    ``window_days`` is ``dim_promotion.response_window_days``, else ``default_window_days``.
    A customer exposed twice to one promotion keeps the earliest exposure (the unit of randomisation is
    the customer; a second contact is part of the treatment, not a new unit).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    promo = promotions.select("promotion_id", F.col("is_randomized").alias("_promo_randomized"),
                              F.col("response_window_days").alias("_window"))
    first = Window.partitionBy("promotion_id", "customer_id").orderBy("exposed_ts", "exposure_id")
    return (
        exposures.filter(F.col("customer_id").isNotNull() & F.col("exposed_ts").isNotNull())
        .withColumn("_rank", F.row_number().over(first)).filter("_rank = 1")
        .join(promo, "promotion_id", "left")
        .select(
            F.col("exposure_id").alias("unit_id"), "promotion_id", "customer_id", "arm",
            F.coalesce("is_control", F.lit(False)).alias("is_control"), F.lit(True).alias("is_exposed"),
            F.coalesce("_promo_randomized", "is_randomized", F.lit(False)).alias("is_randomized"),
            "exposed_ts",
            F.coalesce(F.col("_window").cast("int"), F.lit(int(default_window_days))).alias("window_days"),
        )
    )


def comparison_units(units: DataFrame, sales: DataFrame, promotion_ids: Sequence[str], *, seed: int,
                     max_per_promotion: int) -> DataFrame:
    """Comparison group of non-randomised promotions: eligible customers who were not exposed.

    Eligible = at least one SALE before the promotion's first exposure (the anchor, used as their
    ``exposed_ts``); customers exposed to the promotion are excluded. When a promotion has more
    candidates than ``max_per_promotion``, a seeded hash sample keeps that many (on average).
    """
    from pyspark.sql import functions as F

    if not promotion_ids:
        return units.limit(0)
    exposed = units.filter(F.col("promotion_id").isin(list(promotion_ids)))
    anchors = exposed.groupBy("promotion_id").agg(
        F.min("exposed_ts").alias("exposed_ts"), F.first("window_days").alias("window_days"),
        F.count("*").alias("_n_exposed"))
    first_sale = sales.groupBy("customer_id").agg(F.min("posted_ts").alias("_first_sale"))
    candidates = (
        first_sale.crossJoin(F.broadcast(anchors)).filter(F.col("_first_sale") < F.col("exposed_ts"))
        .join(exposed.select("promotion_id", "customer_id"), ["promotion_id", "customer_id"], "left_anti")
    )
    counts = candidates.groupBy("promotion_id").agg(F.count("*").alias("_n_candidates"))
    # xxhash64 of (seed, promotion, customer) is a reproducible uniform draw, independent of partitioning.
    draw = (F.abs(F.xxhash64(F.lit(seed), "promotion_id", "customer_id")) % 1_000_000) / 1_000_000.0
    return (
        candidates.join(F.broadcast(counts), "promotion_id")
        .filter(draw < F.lit(float(max_per_promotion)) / F.col("_n_candidates"))
        .select(
            F.concat(F.lit("cmp:"), "promotion_id", F.lit(":"), "customer_id").alias("unit_id"),
            "promotion_id", "customer_id", F.lit(COMPARISON_ARM).alias("arm"), F.lit(True).alias("is_control"),
            F.lit(False).alias("is_exposed"), F.lit(False).alias("is_randomized"), "exposed_ts",
            F.col("window_days").cast("int").alias("window_days"),
        )
    )


def unit_outcomes(units: DataFrame, sales: DataFrame, returns: DataFrame) -> DataFrame:
    """Per unit: ``converted`` (0/1), ``baskets``, ``revenue``, ``returned``, ``net_revenue`` in its window.

    ``sales``: SALE lines (``transaction_id, customer_id, basket_id, posted_ts, amount_reporting``);
    ``returns``: RETURN lines (``original_transaction_id, amount_reporting`` negative). Units without a
    purchase get zeros.
    """
    from pyspark.sql import functions as F

    t0 = _micros("exposed_ts")
    in_window = (
        units.select("unit_id", "customer_id", "exposed_ts", "window_days")
        .join(sales.select("customer_id", "transaction_id", "basket_id", "posted_ts",
                           F.col("amount_reporting").cast("double").alias("_amount")), "customer_id")
        .filter((_micros("posted_ts") >= t0)
                & (_micros("posted_ts") < t0 + F.col("window_days").cast("long") * F.lit(DAY_MICROS)))
    )
    refunds = returns.groupBy(F.col("original_transaction_id").alias("transaction_id")).agg(
        (-F.sum(F.col("amount_reporting").cast("double"))).alias("_refund"))
    per_unit = (
        in_window.join(refunds, "transaction_id", "left")
        .groupBy("unit_id")
        .agg(F.countDistinct("basket_id").alias("baskets"), F.sum("_amount").alias("revenue"),
             F.sum(F.coalesce("_refund", F.lit(0.0))).alias("returned"))
    )
    return (
        units.select("unit_id").join(per_unit, "unit_id", "left")
        .select("unit_id",
                (F.coalesce("baskets", F.lit(0)) > 0).cast("int").alias("converted"),
                F.coalesce("baskets", F.lit(0)).cast("long").alias("baskets"),
                F.coalesce("revenue", F.lit(0.0)).alias("revenue"),
                F.coalesce("returned", F.lit(0.0)).alias("returned"),
                (F.coalesce("revenue", F.lit(0.0)) - F.coalesce("returned", F.lit(0.0))).alias("net_revenue"))
    )


def segment_asof(units: DataFrame, customers: DataFrame, column: str = "loyalty_tier") -> DataFrame:
    """``unit_id, segment, signup_date``: the customer version valid at ``exposed_ts`` (SCD2 as-of).

    A unit whose customer has no version valid then (exposure before the first version) takes the
    earliest version; a customer missing from the dimension gets ``unknown``.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    versions = customers.select("customer_id", F.col(column).alias("_segment"), "signup_date",
                                "valid_from", "valid_to")
    valid = ((F.col("valid_from") <= F.col("exposed_ts"))
             & (F.col("valid_to").isNull() | (F.col("exposed_ts") < F.col("valid_to"))))
    pick = Window.partitionBy("unit_id").orderBy(F.when(valid, 0).otherwise(1), F.col("valid_from").asc())
    return (
        units.select("unit_id", "customer_id", "exposed_ts").join(versions, "customer_id", "left")
        .withColumn("_rank", F.row_number().over(pick)).filter("_rank = 1")
        .select("unit_id", F.coalesce("_segment", F.lit("unknown")).alias("segment"), "signup_date")
    )


def baskets_of(sales: DataFrame) -> DataFrame:
    """One row per SALE basket: ``basket_id, customer_id, basket_ts, channel, amount`` (USD)."""
    from pyspark.sql import functions as F

    return sales.groupBy("basket_id", "customer_id").agg(
        F.min("posted_ts").alias("basket_ts"), F.first("channel", ignorenulls=True).alias("channel"),
        F.sum(F.col("amount_reporting").cast("double")).alias("amount"))


def pre_period_features(units: DataFrame, sales: DataFrame, returns: DataFrame, lines: DataFrame, *,
                        departments: Sequence[str], channels: Sequence[str], pre_period_days: int) -> DataFrame:
    """RFM, return rate, tenure, department mix (share of spend) and channel mix (share of baskets).

    Only activity strictly before ``exposed_ts`` is used, so no feature can see the outcome.
    ``lines`` is ``fact_basket_lines`` (department per basket line).
    """
    from pyspark.sql import functions as F

    t0 = _micros("exposed_ts")
    start = t0 - F.lit(int(pre_period_days) * DAY_MICROS)
    u = units.select("unit_id", "customer_id", "exposed_ts")
    history = u.join(baskets_of(sales), "customer_id").filter(_micros("basket_ts") < t0)
    first_seen = history.groupBy("unit_id").agg(F.min("basket_ts").alias("_first_ts"))
    pre = history.filter(_micros("basket_ts") >= start)
    channel_aggs = [F.sum((F.col("channel") == c).cast("int")).alias(channel_col(c)) for c in channels]
    rfm = pre.groupBy("unit_id").agg(
        F.count("*").alias("frequency"), F.sum("amount").alias("monetary"), F.max("basket_ts").alias("_last_ts"),
        *channel_aggs)
    pre_returns = (
        u.join(returns.select("customer_id", "posted_ts", F.col("amount_reporting").cast("double").alias("_r")),
               "customer_id")
        .filter((_micros("posted_ts") < t0) & (_micros("posted_ts") >= start))
        .groupBy("unit_id").agg((-F.sum("_r")).alias("_returned"))
    )
    dept = (
        u.join(lines.select("customer_id", "basket_ts", "department",
                            F.col("amount_reporting").cast("double").alias("_amount")), "customer_id")
        .filter((_micros("basket_ts") < t0) & (_micros("basket_ts") >= start))
        .groupBy("unit_id").agg(
            F.sum("_amount").alias("_dept_total"),
            *[F.sum(F.when(F.col("department") == d, F.col("_amount")).otherwise(0.0)).alias(dept_col(d))
              for d in departments])
    )
    frame = (u.join(rfm, "unit_id", "left").join(first_seen, "unit_id", "left")
             .join(pre_returns, "unit_id", "left").join(dept, "unit_id", "left"))
    freq = F.coalesce("frequency", F.lit(0))
    monetary = F.coalesce("monetary", F.lit(0.0))
    days = lambda a, b: (_micros(a) - _micros(b)) / F.lit(float(DAY_MICROS))  # noqa: E731
    return frame.select(
        "unit_id",
        F.coalesce(days("exposed_ts", "_last_ts"), F.lit(float(pre_period_days))).alias("recency_days"),
        freq.cast("double").alias("frequency"),
        monetary.alias("monetary"),
        F.when(freq > 0, monetary / freq).otherwise(0.0).alias("avg_basket_value"),
        F.when(monetary > 0, F.coalesce("_returned", F.lit(0.0)) / monetary).otherwise(0.0).alias("return_rate"),
        F.coalesce(days("exposed_ts", "_first_ts"), F.lit(0.0)).alias("_tenure_purchases"),
        (freq > 0).cast("double").alias("has_pre_purchase"),
        *[F.when(freq > 0, F.coalesce(channel_col(c), F.lit(0)) / freq).otherwise(0.0).alias(channel_col(c))
          for c in channels],
        *[F.when(F.col("_dept_total") > 0, F.col(dept_col(d)) / F.col("_dept_total")).otherwise(0.0)
          .alias(dept_col(d)) for d in departments],
    )


def previous_promotion_response(units: DataFrame, exposed: DataFrame) -> DataFrame:
    """Earlier exposures of the same customer whose response window closed before this unit's ``exposed_ts``.

    ``exposed``: exposed units with their outcome (``customer_id, exposed_ts, window_days, is_control,
    converted``). Columns: ``prev_exposures``, ``prev_treated``, ``prev_treated_conversions``,
    ``prev_treated_response_rate`` (0 when never treated).
    """
    from pyspark.sql import functions as F

    prev = exposed.select(
        "customer_id", F.col("exposed_ts").alias("_prev_ts"), F.col("window_days").alias("_prev_window"),
        F.col("is_control").alias("_prev_control"), F.col("converted").alias("_prev_converted"))
    closed = (_micros("_prev_ts") + F.col("_prev_window").cast("long") * F.lit(DAY_MICROS)) <= _micros("exposed_ts")
    agg = (
        units.select("unit_id", "customer_id", "exposed_ts").join(prev, "customer_id").filter(closed)
        .groupBy("unit_id").agg(
            F.count("*").alias("prev_exposures"),
            F.sum((~F.col("_prev_control")).cast("int")).alias("prev_treated"),
            F.sum(((~F.col("_prev_control")) & (F.col("_prev_converted") == 1)).cast("int"))
            .alias("prev_treated_conversions"))
    )
    treated = F.coalesce("prev_treated", F.lit(0))
    return units.select("unit_id").join(agg, "unit_id", "left").select(
        "unit_id",
        F.coalesce("prev_exposures", F.lit(0)).cast("double").alias("prev_exposures"),
        treated.cast("double").alias("prev_treated"),
        F.coalesce("prev_treated_conversions", F.lit(0)).cast("double").alias("prev_treated_conversions"),
        F.when(treated > 0, F.col("prev_treated_conversions") / treated).otherwise(0.0)
        .alias("prev_treated_response_rate"),
    )


def top_values(df: DataFrame, column: str, weight: str | None, k: int) -> list[str]:
    """The ``k`` most frequent (or heaviest by ``weight``) non-null values of ``column``, ties by value."""
    from pyspark.sql import functions as F

    measure = F.sum(F.col(weight).cast("double")) if weight else F.count("*")
    rows = (df.filter(F.col(column).isNotNull()).groupBy(column).agg(measure.alias("_w"))
            .orderBy(F.col("_w").desc(), F.col(column)).limit(k).collect())
    return [str(r[column]) for r in rows]


def build_study_frame(units: DataFrame, sales: DataFrame, returns: DataFrame, lines: DataFrame,
                      customers: DataFrame, *, departments: Sequence[str], channels: Sequence[str],
                      segments: Sequence[str], pre_period_days: int, segment_column: str = "loyalty_tier",
                      outcomes: DataFrame | None = None, exposed_outcomes: DataFrame | None = None) -> DataFrame:
    """One row per unit: unit columns, outcomes, segment (+ one-hot), pre-period and promotion features.

    ``outcomes`` (from :func:`unit_outcomes`) may be passed when already computed (e.g. persisted).
    ``exposed_outcomes`` (exposed units with ``converted``) feeds the previous-response features; by
    default the outcomes of ``units`` themselves are used (their exposed rows).
    """
    from pyspark.sql import functions as F

    if outcomes is None:
        outcomes = unit_outcomes(units, sales, returns)
    if exposed_outcomes is None:
        exposed_outcomes = units.filter("is_exposed").join(outcomes, "unit_id")
    seg = segment_asof(units, customers, segment_column)
    pre = pre_period_features(units, sales, returns, lines, departments=departments, channels=channels,
                              pre_period_days=pre_period_days)
    prev = previous_promotion_response(units, exposed_outcomes)
    frame = (units.select(*UNIT_COLUMNS).join(outcomes, "unit_id").join(seg, "unit_id", "left")
             .join(pre, "unit_id").join(prev, "unit_id"))
    signup_days = (_micros("exposed_ts") - _micros(F.col("signup_date").cast("timestamp"))) / F.lit(float(DAY_MICROS))
    return frame.select(
        *UNIT_COLUMNS, *OUTCOMES, F.coalesce("segment", F.lit("unknown")).alias("segment"),
        *[c for c in BASE_FEATURES if c != "tenure_days"],
        # tenure: since the earliest of signup and first purchase (a customer may buy before signing up)
        F.greatest(F.coalesce(signup_days, F.lit(0.0)), F.col("_tenure_purchases")).alias("tenure_days"),
        *[channel_col(c) for c in channels], *[dept_col(d) for d in departments],
        *[(F.coalesce("segment", F.lit("unknown")) == s).cast("double").alias(segment_col(s)) for s in segments],
    )


def feature_columns(columns: Sequence[str]) -> list[str]:
    """The model features among ``columns``: base features, then channel, department, segment, attribute columns."""
    extra = [c for c in columns if c.startswith(("channel_share__", "dept_share__", "segment__", ATTR_PREFIX))]
    return [c for c in BASE_FEATURES if c in columns] + extra


def sale_and_return_lines(transactions: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Split ``fact_transactions`` into SALE lines and RETURN lines (signed amounts kept)."""
    from pyspark.sql import functions as F

    sales = transactions.filter(F.col("txn_type") == "SALE").select(
        "transaction_id", "customer_id", "basket_id", "posted_ts", "amount_reporting", "channel")
    returns = transactions.filter(F.col("txn_type") == "RETURN").select(
        "transaction_id", "customer_id", "original_transaction_id", "posted_ts", "amount_reporting")
    return sales, returns


# --------------------------------------------------------------------------- campaign test exports
ATTR_PREFIX = "attr__"


def _attribute_map(col: str = "attributes") -> Column:
    from pyspark.sql import functions as F
    from pyspark.sql.types import MapType, StringType

    return F.from_json(F.col(col), MapType(StringType(), StringType()))


def attribute_profile(outcomes: DataFrame, max_categories: int) -> tuple[list[str], dict[str, list[str]]]:
    """The attribute keys of ``fact_campaign_outcomes``: numeric keys, and text keys with their top values.

    A key is numeric when every non-blank value parses as a number; text keys keep their
    ``max_categories`` most frequent values (ties by value).
    """
    from pyspark.sql import functions as F

    kv = (outcomes.select(F.explode(_attribute_map()).alias("key", "value"))
          .withColumn("value", F.trim("value")).filter(F.col("value").isNotNull() & (F.col("value") != "")))
    kinds = kv.groupBy("key").agg(F.count("*").alias("n"),
                                  F.count(F.col("value").try_cast("double")).alias("n_numeric")).collect()
    numeric = sorted(r["key"] for r in kinds if r["n"] == r["n_numeric"])
    text = sorted(r["key"] for r in kinds if r["n"] != r["n_numeric"])
    categories: dict[str, list[str]] = {k: [] for k in text}
    if text:
        rows = kv.filter(F.col("key").isin(text)).groupBy("key", "value").count().collect()
        for r in sorted(rows, key=lambda r: (r["key"], -r["count"], r["value"])):
            if len(categories[r["key"]]) < max_categories:
                categories[r["key"]].append(r["value"])
    return numeric, categories


def attr_col(key: str, value: str | None = None) -> str:
    return f"{ATTR_PREFIX}{slug(key)}" + (f"__{slug(value)}" if value is not None else "")


def campaign_study_frame(outcomes: DataFrame, promotions: DataFrame, default_window_days: int, *,
                         numeric: Sequence[str], categories: dict[str, list[str]],
                         segment_attribute: str | None) -> DataFrame:
    """One row per customer of a campaign test export, in the columns of :func:`build_study_frame`.

    The export already holds the outcome of the test's response window: ``converted`` (else ``spend > 0``),
    ``revenue = net_revenue = spend`` (returns are not in such exports), ``baskets`` = ``converted``.
    There is no exposure time (``exposed_ts`` null); ``is_randomized`` and the window come from
    ``dim_promotion``. Pre-period features are the export's attributes (see :func:`attribute_profile`).
    """
    from pyspark.sql import functions as F

    promo = promotions.select("promotion_id", F.col("is_randomized").alias("_promo_randomized"),
                              F.col("response_window_days").alias("_window"))
    attrs = _attribute_map()
    value = lambda k: F.trim(F.col("_attrs").getItem(k))  # noqa: E731
    converted = F.coalesce(F.col("converted"), F.col("spend") > 0, F.lit(False)).cast("int")
    revenue = F.coalesce(F.col("spend"), F.lit(0.0)).cast("double")
    segment = F.coalesce(value(segment_attribute), F.lit("unknown")) if segment_attribute else F.lit("unknown")
    return (
        outcomes.filter(F.col("customer_id").isNotNull() & F.col("arm").isNotNull())
        .join(promo, "promotion_id", "left").withColumn("_attrs", attrs)
        .select(
            F.concat_ws(":", "promotion_id", "customer_id").alias("unit_id"), "promotion_id", "customer_id",
            F.lower(F.trim("arm")).alias("arm"), F.coalesce("is_control", F.lit(False)).alias("is_control"),
            F.lit(True).alias("is_exposed"),
            # an export whose promotion row is missing is not assumed to be randomised
            F.coalesce("_promo_randomized", F.lit(False)).alias("is_randomized"),
            F.lit(None).cast("timestamp").alias("exposed_ts"),
            F.coalesce(F.col("_window").cast("int"), F.lit(int(default_window_days))).alias("window_days"),
            converted.alias("converted"), converted.cast("long").alias("baskets"), revenue.alias("revenue"),
            F.lit(0.0).alias("returned"), revenue.alias("net_revenue"), segment.alias("segment"),
            *[F.coalesce(value(k).try_cast("double"), F.lit(0.0)).alias(attr_col(k)) for k in numeric],
            *[F.coalesce((value(k) == v).cast("double"), F.lit(0.0)).alias(attr_col(k, v))
              for k, values in sorted(categories.items()) for v in values],
        )
    )
