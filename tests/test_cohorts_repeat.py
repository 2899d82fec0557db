"""Repeat purchase, censoring, Kaplan-Meier and RFM on tiny inline frames with hand-worked answers."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pandas as pd
import pytest

from cohorts_helpers import RETURNS_SCHEMA, SALES_SCHEMA, sale, ts
from cpbi_spark.analytics.cohorts.config import CohortsConfig
from cpbi_spark.analytics.cohorts.population import first_purchases, study_population
from cpbi_spark.analytics.cohorts.repeat import customer_orders, repeat_profile, repeat_rates
from cpbi_spark.analytics.cohorts.rfm import rfm_scores
from cpbi_spark.analytics.cohorts.survival import km_curve, km_repeat_rates

END = dt.datetime(2024, 7, 1)  # as_of 2024-06-30

SALES = [
    # E: orders on Jan 1, Jan 11 (+10 days) and Jan 31 (+20 days); the second order is two lines.
    sale("T1", "E", "B1", "2024-01-01 10:00:00", "30.00"),
    sale("T2", "E", "B2", "2024-01-11 10:00:00", "20.00"),
    sale("T3", "E", "B2", "2024-01-11 10:05:00", "5.00"),
    sale("T4", "E", "B3", "2024-01-31 10:00:00", "40.00"),
    # F: one order on June 1, nothing after: censored 30 days later, at the end of data.
    sale("T5", "F", "B4", "2024-06-01 00:00:00", "15.00"),
    # G: two baskets at the very same time on March 1 and nothing later: not a repeat purchase.
    sale("T6", "G", "B5", "2024-03-01 12:00:00", "10.00"),
    sale("T7", "G", "B6", "2024-03-01 12:00:00", "10.00"),
]
RETURNS = [("R1", "T4", "E", ts("2024-01-31 10:00:00"), ts("2024-02-03 10:00:00"), 3, Decimal("40.00"))]


@pytest.fixture(scope="module")
def profile(spark):
    s = spark.createDataFrame(SALES, SALES_SCHEMA)
    r = spark.createDataFrame(RETURNS, RETURNS_SCHEMA)
    people = study_population(first_purchases(s), CohortsConfig())
    prof = repeat_profile(customer_orders(s, r), people, END).cache()
    return prof


def test_second_purchase_and_interpurchase_time(profile):
    e = {r["customer_id"]: r for r in profile.collect()}["E"]
    assert e["repeated"] is True and e["orders"] == 3
    assert e["days_to_second_purchase"] == pytest.approx(10.0)
    assert e["survival_duration_days"] == pytest.approx(10.0)
    assert e["mean_interpurchase_days"] == pytest.approx(15.0)
    assert e["median_interpurchase_days"] == pytest.approx(15.0)
    assert e["net_revenue"] == pytest.approx(55.0)  # 95 bought, the 40 order returned
    assert e["recency_days"] == pytest.approx(151 + 14 / 24)  # Jan 31 10:00 -> Jul 1 00:00


def test_customer_without_second_purchase_is_censored_not_dropped(profile):
    rows = {r["customer_id"]: r for r in profile.collect()}
    assert set(rows) == {"E", "F", "G"}
    f = rows["F"]
    assert f["repeated"] is False and f["days_to_second_purchase"] is None
    assert f["survival_duration_days"] == pytest.approx(30.0)
    g = rows["G"]
    assert g["repeated"] is False and g["orders"] == 2 and g["mean_interpurchase_days"] == pytest.approx(0.0)


def test_repeat_rates_count_only_customers_whose_window_is_observed(profile):
    rates = {(r["cohort_key"], r["window_days"]): r for r in repeat_rates(profile, [7, 15, 45], END).collect()}
    assert (rates["ALL", 7]["eligible_customers"], rates["ALL", 7]["repeaters"]) == (3, 0)
    assert (rates["ALL", 15]["eligible_customers"], rates["ALL", 15]["repeaters"]) == (3, 1)
    # F has been observed for 30 days only: not eligible for the 45-day window.
    assert (rates["ALL", 45]["eligible_customers"], rates["ALL", 45]["repeaters"]) == (2, 1)
    assert rates["ALL", 45]["repeat_rate"] == pytest.approx(0.5)
    assert rates["2024-01", 15]["repeat_rate"] == 1.0 and rates["2024-06", 15]["repeat_rate"] == 0.0


KM_INPUT = pd.DataFrame({
    "customer_id": ["A", "B", "C"], "cohort_key": ["x", "x", "y"], "first_channel": ["store", "online", "store"],
    "survival_duration_days": [10.0, 5.0, 20.0], "repeated": [True, False, True]})


def test_kaplan_meier_by_hand():
    # Day 5: B is censored (leaves the risk set, no event). Day 10: 1 event of 2 at risk -> S = 1/2.
    # Day 20: 1 event of 1 at risk -> S = 0. A naive rate at 15 days would say 1/3.
    rates = km_repeat_rates(KM_INPUT, [4, 15, 25])
    overall = rates[rates["cohort_key"] == "ALL"].set_index("window_days")
    assert overall.loc[4, "km_repeat_rate"] == pytest.approx(0.0)
    assert overall.loc[15, "km_repeat_rate"] == pytest.approx(0.5)
    assert overall.loc[25, "km_repeat_rate"] == pytest.approx(1.0)
    assert overall.loc[15, "km_ci_lower"] < 0.5 < overall.loc[15, "km_ci_upper"]
    assert overall.loc[15, "median_days_to_second"] == pytest.approx(10.0)
    by_cohort = rates[rates["cohort_key"] == "x"].set_index("window_days")
    assert by_cohort.loc[15, "km_repeat_rate"] == pytest.approx(1.0)  # A repeats, B censored before


def test_kaplan_meier_curve_keeps_censored_customers_at_risk():
    curve = km_curve(KM_INPUT, max_days=21, group="first_channel")
    overall = curve[curve["segment"] == "ALL"].set_index("day")
    assert overall.loc[0, "at_risk"] == 3 and overall.loc[5, "at_risk"] == 3 and overall.loc[6, "at_risk"] == 2
    assert overall.loc[5, "censored"] == 1 and overall.loc[5, "events"] == 0
    assert overall.loc[10, "events"] == 1 and overall.loc[20, "events"] == 1
    assert list(overall.loc[[9, 10, 19, 20], "survival"]) == pytest.approx([1.0, 0.5, 0.5, 0.0])
    assert set(curve["segment"]) == {"ALL", "store", "online"}
    assert len(overall) == 22


def test_rfm_quantile_rules(spark):
    rows = [("c1", 100.0, 1, 10.0), ("c2", 50.0, 1, 20.0), ("c3", 20.0, 2, 30.0), ("c4", 10.0, 3, 40.0),
            ("c5", 1.0, 9, 50.0)]
    df = spark.createDataFrame(rows, "customer_id string, recency_days double, orders bigint, net_revenue double")
    got = {r["customer_id"]: r for r in rfm_scores(df, bins=5).collect()}
    # percent_rank 0, .25, .5, .75, 1 -> 1 + floor(5 * rank) capped at 5; fewer days = more recent = better.
    assert [got[c]["r_score"] for c in ("c1", "c2", "c3", "c4", "c5")] == [1, 2, 3, 4, 5]
    assert [got[c]["m_score"] for c in ("c1", "c2", "c3", "c4", "c5")] == [1, 2, 3, 4, 5]
    # Tied one-order customers share the lowest rank: F = 1 for both.
    assert [got[c]["f_score"] for c in ("c1", "c2", "c3", "c4", "c5")] == [1, 1, 3, 4, 5]
    assert got["c5"]["rfm_cell"] == "555" and got["c5"]["rfm_segment"] == "champions"
    assert got["c4"]["rfm_segment"] == "champions"  # R 4, F 4
    assert got["c3"]["rfm_segment"] == "needs_attention"  # R 3, F 3
    assert got["c1"]["rfm_segment"] == "hibernating"  # R 1, F 1
    assert got["c2"]["rfm_segment"] == "hibernating"
