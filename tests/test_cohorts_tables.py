"""Cohort x period tables on tiny inline frames with answers worked out by hand."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from cohorts_helpers import RETURNS_SCHEMA, SALES_SCHEMA, sale, ts
from cpbi_spark.analytics.cohorts.cohorts import cohort_table, cohort_wide
from cpbi_spark.analytics.cohorts.config import CohortsConfig
from cpbi_spark.analytics.cohorts.population import (
    first_purchases,
    last_observed_period,
    period_number,
    period_number_of,
    period_start_of,
    study_population,
)


def build(spark, sales: list[tuple], returns: list[tuple], cfg: CohortsConfig, as_of: dt.date):
    s = spark.createDataFrame(sales, SALES_SCHEMA)
    r = spark.createDataFrame(returns, RETURNS_SCHEMA)
    people = study_population(first_purchases(s), cfg)
    last = last_observed_period(as_of, cfg.period_grain, cfg.include_partial_period)
    return cohort_table(people, s, r, cfg, last), people


# A: active in months 0, 2 and 5 (Jan, Mar, Jun 2024); the March sale (100) is partly returned in May (40).
# B: same cohort, two baskets in January only.
SALES = [
    sale("T1", "A", "B1", "2024-01-10 10:00:00", "50.00"),
    sale("T2", "A", "B2", "2024-03-05 10:00:00", "100.00"),
    sale("T3", "A", "B3", "2024-06-20 10:00:00", "30.00"),
    sale("T4", "B", "B4", "2024-01-20 10:00:00", "20.00"),
    sale("T5", "B", "B5", "2024-01-25 10:00:00", "10.00"),
]
RETURNS = [("R1", "T2", "A", ts("2024-03-05 10:00:00"), ts("2024-05-02 09:00:00"), 58, Decimal("40.00"))]


@pytest.fixture(scope="module")
def monthly(spark):
    cfg = CohortsConfig(max_age=12)
    long, _ = build(spark, SALES, RETURNS, cfg, dt.date(2024, 6, 30))
    return {r["period_index"]: r for r in long.collect()}


def test_customer_active_in_months_0_2_and_5(monthly):
    # June is observed (as_of = its last day), so ages 0..5 exist and nothing after.
    assert sorted(monthly) == [0, 1, 2, 3, 4, 5]
    assert {k: r["active_customers"] for k, r in monthly.items()} == {0: 2, 1: 0, 2: 1, 3: 0, 4: 0, 5: 1}
    assert {k: r["retention_rate"] for k, r in monthly.items()} == {0: 1.0, 1: 0.0, 2: 0.5, 3: 0.0, 4: 0.0, 5: 0.5}
    assert all(r["cohort_size"] == 2 and r["customers_observable"] == 2 for r in monthly.values())
    assert all(r["cohort_key"] == "2024-01" and r["cohort_start"] == dt.date(2024, 1, 1) for r in monthly.values())
    assert monthly[5]["period_start"] == dt.date(2024, 6, 1)
    assert monthly[0]["orders"] == 3 and monthly[0]["gross_revenue"] == Decimal("80.00")


def test_return_in_a_later_month_is_attributed_both_ways(monthly):
    # By sale period: the refund of the March sale lowers March (age 2).
    assert monthly[2]["returns_sale_period"] == Decimal("40.00")
    assert monthly[4]["returns_sale_period"] == Decimal("0.00")
    assert monthly[2]["net_revenue_sale_period"] == Decimal("60.00")
    # By return period: it lowers May (age 4), where nothing was bought.
    assert monthly[2]["returns_return_period"] == Decimal("0.00")
    assert monthly[4]["returns_return_period"] == Decimal("40.00")
    assert monthly[2]["net_revenue_return_period"] == Decimal("100.00")
    assert monthly[4]["net_revenue_return_period"] == Decimal("-40.00")


def test_cumulative_net_revenue_per_customer(monthly):
    # Sale attribution: 80 (Jan) + 60 (Mar, net) = 140 -> 70 per customer; + 30 (Jun) -> 85.
    assert monthly[0]["cum_net_revenue_per_customer_sale_period"] == pytest.approx(40.0)
    assert monthly[2]["cum_net_revenue_per_customer_sale_period"] == pytest.approx(70.0)
    assert monthly[5]["cum_net_revenue_per_customer_sale_period"] == pytest.approx(85.0)
    # Return attribution: 180 by March, -40 in May -> 140, +30 in June -> 170; same end point.
    assert monthly[2]["cum_net_revenue_per_customer_return_period"] == pytest.approx(90.0)
    assert monthly[4]["cum_net_revenue_per_customer_return_period"] == pytest.approx(70.0)
    assert monthly[5]["cum_net_revenue_per_customer_return_period"] == pytest.approx(85.0)


def test_incomplete_last_month_is_left_out_unless_asked(spark):
    cfg = CohortsConfig(max_age=12)
    long, _ = build(spark, SALES, RETURNS, cfg, dt.date(2024, 6, 20))
    assert max(r["period_index"] for r in long.collect()) == 4  # June is not complete on the 20th
    cfg = CohortsConfig(max_age=12, include_partial_period=True)
    long, _ = build(spark, SALES, RETURNS, cfg, dt.date(2024, 6, 20))
    assert max(r["period_index"] for r in long.collect()) == 5


def test_max_age_caps_the_periods(spark):
    long, _ = build(spark, SALES, RETURNS, CohortsConfig(max_age=3), dt.date(2024, 6, 30))
    assert sorted(r["period_index"] for r in long.collect()) == [0, 1, 2, 3]


def test_attribute_cohorts_count_only_customers_whose_age_is_observed(spark):
    sales = [sale("T1", "C", "B1", "2024-01-10 10:00:00", "10.00", channel="online"),
             sale("T2", "C", "B2", "2024-02-10 10:00:00", "10.00", channel="store"),
             sale("T3", "D", "B3", "2024-05-10 10:00:00", "10.00", channel="online"),
             sale("T4", "D", "B4", "2024-06-10 10:00:00", "10.00", channel="online"),
             sale("T5", "E", "B5", "2024-03-10 10:00:00", "10.00", channel="store")]
    long, _ = build(spark, sales, [], CohortsConfig(cohort_by="first_channel", max_age=12), dt.date(2024, 6, 30))
    online = {r["period_index"]: r for r in long.collect() if r["cohort_key"] == "online"}
    assert online[1]["customers_observable"] == 2 and online[1]["active_customers"] == 2
    # Age 2 of D (July) is not observed yet: only C counts, and C was not active in March.
    assert online[2]["customers_observable"] == 1 and online[2]["retention_rate"] == 0.0
    assert online[5]["customers_observable"] == 1 and online[1]["cohort_size"] == 2
    # Members' age 1 falls in different months: no single period start.
    assert online[1]["period_start"] is None and online[1]["cohort_start"] is None
    store = {r["period_index"]: r for r in long.collect() if r["cohort_key"] == "store"}
    assert store[0]["cohort_size"] == 1  # C's second (store) basket does not change its first channel


def test_segment_filter_keeps_only_listed_customers(spark):
    sales = [sale("T1", "C", "B1", "2024-01-10 10:00:00", "10.00", channel="online"),
             sale("T2", "E", "B2", "2024-01-11 10:00:00", "10.00", channel="store")]
    cfg = CohortsConfig(segment_filters={"first_channel": ["online"]})
    _, people = build(spark, sales, [], cfg, dt.date(2024, 1, 31))
    assert [r["customer_id"] for r in people.collect()] == ["C"]


def test_net_purchase_activity_ignores_a_fully_returned_period(spark):
    sales = [sale("T1", "A", "B1", "2024-01-10 10:00:00", "50.00"),
             sale("T2", "A", "B2", "2024-02-10 10:00:00", "20.00")]
    returns = [("R1", "T2", "A", ts("2024-02-10 10:00:00"), ts("2024-02-12 10:00:00"), 2, Decimal("20.00"))]
    cfg = CohortsConfig(activity={"measure": "net_purchase"})
    long, _ = build(spark, sales, returns, cfg, dt.date(2024, 2, 29))
    assert {r["period_index"]: r["active_customers"] for r in long.collect()} == {0: 1, 1: 0}
    long, _ = build(spark, sales, returns, CohortsConfig(), dt.date(2024, 2, 29))
    assert {r["period_index"]: r["active_customers"] for r in long.collect()} == {0: 1, 1: 1}


def test_weekly_cohorts_start_on_monday(spark):
    sales = [sale("T1", "A", "B1", "2024-01-01 08:00:00", "10.00"),   # Monday
             sale("T2", "B", "B2", "2024-01-07 23:00:00", "10.00"),   # Sunday, same ISO week
             sale("T3", "A", "B3", "2024-01-08 00:30:00", "10.00")]   # next Monday: age 1
    cfg = CohortsConfig(cohort_by="first_purchase_week", period_grain="week", max_age=4)
    long, _ = build(spark, sales, [], cfg, dt.date(2024, 1, 14))
    rows = {r["period_index"]: r for r in long.collect()}
    assert set(rows) == {0, 1}
    assert rows[0]["cohort_key"] == "2024-01-01" and rows[0]["cohort_size"] == 2
    assert rows[1]["active_customers"] == 1 and rows[1]["period_start"] == dt.date(2024, 1, 8)


def test_wide_form_has_one_column_per_period(spark, monthly):
    long, _ = build(spark, SALES, RETURNS, CohortsConfig(max_age=12), dt.date(2024, 6, 30))
    wide = cohort_wide(long, n_periods=8)
    assert wide.columns[-8:] == [f"p{k:02d}" for k in range(8)]
    rows = {r["metric"]: r for r in wide.collect()}
    assert [rows["retention_rate"][f"p{k:02d}"] for k in range(8)] == [1.0, 0.0, 0.5, 0.0, 0.0, 0.5, None, None]
    assert rows["net_revenue_return_period"]["p04"] == -40.0
    assert rows["active_customers"]["cohort_size"] == 2
    assert len(rows) == wide.count()  # one row per cohort and metric


@pytest.mark.parametrize("grain", ["month", "week"])
def test_period_numbers_agree_between_python_and_spark(spark, grain):
    from pyspark.sql import functions as F

    days = [dt.date(2023, 12, 31) + dt.timedelta(days=d) for d in range(0, 800, 3)]
    df = spark.createDataFrame([(d,) for d in days], "d date")
    got = [r[0] for r in df.select(period_number("d", grain)).collect()]
    assert got == [period_number_of(d, grain) for d in days]
    assert all(period_start_of(period_number_of(d, grain), grain) <= d for d in days)
    assert df.select(F.lit(1)).count() == len(days)


def test_period_arithmetic_by_hand():
    assert period_number_of(dt.date(2025, 2, 1), "month") - period_number_of(dt.date(2024, 1, 31), "month") == 13
    assert period_start_of(period_number_of(dt.date(2024, 1, 10), "week"), "week") == dt.date(2024, 1, 8)
