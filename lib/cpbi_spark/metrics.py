"""One definition per business metric, shared by the report, the dashboard, the notebooks and BI users.

Every number cpbi shows is either computed here from a gold table (the sales KPIs, with the same filters
everywhere) or read from the insight column that :data:`METRICS` names, which the analysis that owns it
computes (e.g. ``repeat_rate`` in ``repeat_purchase_rates``, by
:func:`cpbi_spark.analytics.cohorts.repeat.repeat_rates`). ``docs/metrics.md`` is generated from
:data:`METRICS` (``python scripts/gen_table_docs.py``), so the written definition and the code cannot drift.

Example:
    >>> lines = lake.read("fact_basket_lines")                                # doctest: +SKIP
    >>> kpis = sales_kpis(filter_lines(lines, start="2024-01-01", channels=["online"]))  # doctest: +SKIP
    >>> METRICS["net_revenue"].format(kpis.first()["net_revenue"])            # doctest: +SKIP
    '$1,234,567'
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame


@dataclass(frozen=True)
class Metric:
    """A named metric: how it is defined, in which unit, and where its values live."""

    name: str
    label: str
    unit: str  # currency | share | count | days | points | ratio
    definition: str  # plain words, for the report's glossary and docs/metrics.md
    source: str  # table.column (or table) holding the values; "fact_basket_lines" for the sales KPIs
    computed_by: str  # the function that computes it

    def format(self, value: float | int | None, currency: str = "$") -> str:
        """Human format of a value in this metric's unit (``None`` -> ``"n/a"``)."""
        if value is None:
            return "n/a"
        v = float(value)
        if self.unit == "currency":
            return f"-{currency}{-v:,.0f}" if v < 0 else f"{currency}{v:,.0f}"
        if self.unit == "share":
            return f"{100 * v:.1f}%"
        if self.unit == "points":
            return f"{100 * v:+.1f} pp"
        if self.unit == "count":
            return f"{v:,.0f}"
        if self.unit == "days":
            return f"{v:,.1f} days"
        return f"{v:,.2f}"


def currency_symbol(code: str) -> str:
    """How amounts in the reporting currency ``code`` are prefixed: ``$`` for USD, else the ISO code.

    >>> currency_symbol("USD"), currency_symbol("EUR")
    ('$', 'EUR ')
    """
    return "$" if code == "USD" else f"{code} "


def format_metric(metric: str, value: float | int | None, currency_code: str) -> str:
    """``METRICS[metric].format`` of ``value`` (NaN or None -> ``"n/a"``) in the reporting currency.

    The one formatter of the report, the dashboard and the notebooks.

    >>> format_metric("net_revenue", 1234.5, "EUR"), format_metric("repeat_rate", float("nan"), "USD")
    ('EUR 1,234', 'n/a')
    """
    return METRICS[metric].format(None if value is None or value != value else value,
                                  currency=currency_symbol(currency_code))


_KPI = "cpbi_spark.metrics.sales_kpis"
METRICS: dict[str, Metric] = {m.name: m for m in [
    Metric("gross_revenue", "Gross revenue", "currency",
           "Sum of sale line amounts in the reporting currency (after line discounts, before returns).",
           "fact_basket_lines.amount_reporting", _KPI),
    Metric("refunds", "Refunds", "currency",
           "Amount refunded for returned items of those sales, in the reporting currency.",
           "fact_basket_lines.returned_amount_reporting", _KPI),
    Metric("net_revenue", "Net revenue", "currency",
           "Gross revenue minus refunds: what the retailer keeps after returns.", "fact_basket_lines", _KPI),
    Metric("orders", "Orders", "count", "Number of distinct sale baskets.", "fact_basket_lines.basket_id", _KPI),
    Metric("customers", "Customers", "count", "Number of distinct identified customers who bought.",
           "fact_basket_lines.customer_id", _KPI),
    Metric("average_order_value", "Average order value", "currency", "Net revenue divided by orders.",
           "fact_basket_lines", _KPI),
    Metric("return_rate", "Return rate (value)", "share",
           "Refunds divided by gross revenue: the share of sold value that came back.", "fact_basket_lines", _KPI),
    Metric("orders_per_customer", "Orders per customer", "ratio",
           "Orders of identified customers divided by customers (baskets without a customer are left out).",
           "fact_basket_lines", _KPI),
    Metric("repeat_customer_share", "Repeat customers", "share",
           "Share of the period's customers with two or more orders in the period (no window, no censoring:"
           " a description of the filtered period, not the cohort repeat rate).", "fact_basket_lines", _KPI),
    Metric("repeat_rate", "Repeat-purchase rate", "share",
           "Of the customers whose first purchase is at least w days before the end of data, the share who "
           "bought again within w days of it (repeaters / eligible customers), per cohort and window.",
           "repeat_purchase_rates.repeat_rate", "cpbi_spark.analytics.cohorts.repeat.repeat_rates"),
    Metric("retention_rate", "Retention", "share",
           "Share of a cohort (customers by month of first purchase) who bought in the k-th period after it.",
           "cohort_retention.retention_rate", "cpbi_spark.analytics.cohorts.cohorts.cohort_table"),
    Metric("category_return_rate", "Category return rate", "share",
           "Returned value divided by sold value per category (returns linked to their sale).",
           "return_rates.amount_return_rate", "cpbi_spark.analytics.cohorts.returns.return_rates"),
    Metric("lift", "Lift", "ratio",
           "P(consequent | antecedent) / P(consequent): how much more often the items are bought together than "
           "if they were independent (1 = independent).", "basket_rules.lift",
           "cpbi_spark.analytics.baskets.rules"),
    Metric("confidence", "Confidence", "share", "Share of baskets with the antecedent that also hold the consequent.",
           "basket_rules.confidence", "cpbi_spark.analytics.baskets.rules"),
    Metric("uplift", "Uplift", "points",
           "Conversion of the treated arm minus conversion of the control arm in the response window "
           "(randomised promotions; observational ones are labelled as such).", "uplift_readout.difference",
           "cpbi_spark.analytics.uplift.readout"),
    Metric("net_revenue_uplift", "Net revenue uplift per customer", "currency",
           "Net revenue after returns per treated customer minus the same per control customer.",
           "uplift_readout.difference", "cpbi_spark.analytics.uplift.readout"),
    Metric("expected_value", "Expected incremental value", "currency",
           "Incremental profit an intervention is expected to add over its horizon: the margin on the incremental"
           " net revenue after returns, minus the action's direct cost (its 95% interval in the same row).",
           "recommended_interventions.expected_value", "cpbi_spark.analytics.interventions"),
]}


def filter_lines(lines: DataFrame, start: str | dt.date | None = None, end: str | dt.date | None = None,
                 channels: Sequence[str] | None = None, categories: Sequence[str] | None = None,
                 customers: DataFrame | None = None) -> DataFrame:
    """``fact_basket_lines`` restricted by basket date (inclusive), channel, category and customer set.

    ``customers`` (a frame with ``customer_id``, e.g. one segment) keeps only their lines. Empty or
    ``None`` filters keep everything, so every caller applies the same filters the same way.
    """
    from pyspark.sql import functions as F

    day = F.to_date("basket_ts")
    if start:
        lines = lines.filter(day >= F.lit(str(start)).cast("date"))
    if end:
        lines = lines.filter(day <= F.lit(str(end)).cast("date"))
    if channels:
        lines = lines.filter(F.col("channel").isin(list(channels)))
    if categories:
        lines = lines.filter(F.col("category").isin(list(categories)))
    if customers is not None:
        lines = lines.join(customers.select("customer_id").distinct(), "customer_id", "left_semi")
    return lines


def _ratio(num: Column, den: Column) -> Column:
    from pyspark.sql import functions as F

    return F.when(den != 0, num / den)


def _kpi_aggregates() -> list[Column]:
    from pyspark.sql import functions as F

    gross = F.coalesce(F.sum(F.col("amount_reporting").cast("double")), F.lit(0.0))
    refunds = F.coalesce(F.sum(F.col("returned_amount_reporting").cast("double")), F.lit(0.0))
    return [gross.alias("gross_revenue"), refunds.alias("refunds"),
            F.countDistinct("basket_id").alias("orders"), F.countDistinct("customer_id").alias("customers"),
            F.countDistinct(F.when(F.col("customer_id").isNotNull(), F.col("basket_id"))).alias("_known_orders")]


def _kpi_columns(frame: DataFrame, by: Sequence[str]) -> DataFrame:
    from pyspark.sql import functions as F

    return frame.select(
        *by, "gross_revenue", "refunds", (F.col("gross_revenue") - F.col("refunds")).alias("net_revenue"),
        F.col("orders").cast("bigint").alias("orders"), F.col("customers").cast("bigint").alias("customers"),
        _ratio(F.col("gross_revenue") - F.col("refunds"), F.col("orders")).alias("average_order_value"),
        _ratio(F.col("refunds"), F.col("gross_revenue")).alias("return_rate"),
        _ratio(F.col("_known_orders"), F.col("customers")).alias("orders_per_customer"),
        F.col("repeat_customer_share"))


def sales_kpis(lines: DataFrame, by: Sequence[str] = ()) -> DataFrame:
    """The sales KPIs of :data:`METRICS` from (filtered) ``fact_basket_lines``, overall or per ``by`` columns.

    One row (per group) with gross_revenue, refunds, net_revenue, orders, customers, average_order_value,
    return_rate, orders_per_customer and repeat_customer_share. Ratios are null when their denominator is 0.

    Example:
        >>> sales_kpis(lines, by=["channel"]).orderBy("channel").show()        # doctest: +SKIP
    """
    from pyspark.sql import functions as F

    by = list(by)
    totals = lines.groupBy(*by).agg(*_kpi_aggregates())
    per_customer = (lines.filter(F.col("customer_id").isNotNull())
                    .groupBy(*by, "customer_id").agg(F.countDistinct("basket_id").alias("_n")))
    repeat = per_customer.groupBy(*by).agg(
        _ratio(F.sum((F.col("_n") >= 2).cast("double")), F.count(F.lit(1)).cast("double"))
        .alias("repeat_customer_share"))
    # A global aggregate is one row even over no lines (ratios null), so the overall KPIs always exist.
    joined = totals.join(repeat, by, "left") if by else totals.crossJoin(repeat)
    return _kpi_columns(joined, by)


def monthly_kpis(lines: DataFrame, by: Sequence[str] = ()) -> DataFrame:
    """:func:`sales_kpis` per calendar month (``month`` = first day of the month) and ``by`` columns."""
    from pyspark.sql import functions as F

    return sales_kpis(lines.withColumn("month", F.trunc(F.to_date("basket_ts"), "month")), ["month", *by])


def markdown() -> str:
    """``docs/metrics.md``: every metric with its unit, definition, where its values are and what computes it."""
    out = ["# Metric definitions", "",
           "Generated from `lib/cpbi_spark/metrics.py` (`python scripts/gen_table_docs.py`): the report, the",
           "dashboard and the notebooks use these definitions, and the sales KPIs are computed by",
           "`cpbi_spark.metrics.sales_kpis` with the filters of `cpbi_spark.metrics.filter_lines`.", "",
           "| metric | label | unit | definition | values in | computed by |",
           "|---|---|---|---|---|---|"]
    for m in METRICS.values():
        out.append(f"| `{m.name}` | {m.label} | {m.unit} | {m.definition} | `{m.source}` | `{m.computed_by}` |")
    return "\n".join(out) + "\n"
