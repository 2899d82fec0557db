"""Returns analysis on tiny inline frames: rates on mature lines, serial returners, revenue at risk."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from cohorts_helpers import RETURNS_SCHEMA, SALES_SCHEMA, sale, ts
from cpbi_spark.analytics.cohorts.returns import (
    customer_returns,
    delay_cdf,
    line_returns,
    return_rates,
    revenue_at_risk,
)

END = dt.datetime(2024, 7, 1)  # as_of 2024-06-30; with 28 maturity days, lines up to June 3 00:00 are mature

SALES = [
    # Category Dresses, mature: 4 lines of 40, one returned for 10 two days later.
    sale("T1", "A", "B1", "2024-05-01 10:00:00", "40.00", category="Dresses"),
    sale("T2", "A", "B1", "2024-05-01 10:00:00", "40.00", category="Dresses"),
    sale("T3", "B", "B2", "2024-05-02 10:00:00", "40.00", category="Dresses", channel="online"),
    sale("T4", "B", "B2", "2024-05-02 10:00:00", "40.00", category="Dresses", channel="online"),
    # Dresses, window still open: one line returned already (excluded from rates), one not (at risk).
    sale("T5", "C", "B3", "2024-06-25 10:00:00", "50.00", category="Dresses"),
    sale("T6", "C", "B3", "2024-06-29 10:00:00", "100.00", category="Dresses"),
    # Serial returner D: 3 of 4 mature lines returned in full.
    sale("T7", "D", "B4", "2024-04-01 10:00:00", "10.00", category="Tops"),
    sale("T8", "D", "B4", "2024-04-01 10:00:00", "10.00", category="Tops"),
    sale("T9", "D", "B4", "2024-04-01 10:00:00", "10.00", category="Tops"),
    sale("T10", "D", "B4", "2024-04-01 10:00:00", "10.00", category="Tops"),
]
RETURNS = [
    ("R1", "T1", "A", ts("2024-05-01 10:00:00"), ts("2024-05-03 10:00:00"), 2, Decimal("10.00")),
    ("R2", "T5", "C", ts("2024-06-25 10:00:00"), ts("2024-06-27 10:00:00"), 2, Decimal("50.00")),
    ("R3", "T7", "D", ts("2024-04-01 10:00:00"), ts("2024-04-03 10:00:00"), 2, Decimal("10.00")),
    ("R4", "T8", "D", ts("2024-04-01 10:00:00"), ts("2024-04-03 10:00:00"), 2, Decimal("10.00")),
    ("R5", "T9", "D", ts("2024-04-01 10:00:00"), ts("2024-04-03 10:00:00"), 2, Decimal("10.00")),
]


@pytest.fixture(scope="module")
def lines(spark):
    s = spark.createDataFrame(SALES, SALES_SCHEMA)
    r = spark.createDataFrame(RETURNS, RETURNS_SCHEMA)
    return line_returns(s, r, END, maturity_days=28).cache()


def test_return_rates_use_mature_lines_only(lines):
    rates = {(r["dimension"], r["dimension_value"]): r for r in return_rates(lines).collect()}
    dresses = rates["category", "Dresses"]
    assert (dresses["sale_lines"], dresses["returned_lines"]) == (4, 1)
    assert dresses["line_return_rate"] == pytest.approx(0.25)
    assert dresses["amount_return_rate"] == pytest.approx(10 / 160)
    assert rates["category", "Tops"]["line_return_rate"] == pytest.approx(0.75)
    assert rates["all", "ALL"]["sale_lines"] == 8 and rates["all", "ALL"]["returned_lines"] == 4
    assert rates["channel", "online"]["line_return_rate"] == 0.0
    assert rates["all", "ALL"]["median_days_to_return"] == pytest.approx(2.0)
    assert ("product_id", "P1") in rates


def test_serial_returners(lines):
    got = {r["customer_id"]: r for r in customer_returns(lines, min_returns=3, min_amount_rate=0.3).collect()}
    assert got["D"]["is_serial_returner"] is True
    assert got["D"]["returned_lines"] == 3 and got["D"]["amount_return_rate"] == pytest.approx(0.75)
    assert got["A"]["is_serial_returner"] is False  # one return
    # C returned everything it bought but only one line: not serial under min_returns = 3.
    assert got["C"]["is_serial_returner"] is False
    got = {r["customer_id"]: r for r in customer_returns(lines, min_returns=1, min_amount_rate=0.3).collect()}
    assert got["C"]["is_serial_returner"] is True  # one return, refunds 50 of 150 bought >= 0.3
    assert got["C"]["amount_return_rate"] == pytest.approx(50 / 150)


def test_revenue_at_risk_by_hand(lines):
    cdf = delay_cdf(lines, max_days=10)
    assert cdf[:3] == [0.0, 0.0, 1.0]  # every mature return came 2 days after its sale
    risk = {r["category"]: r for r in revenue_at_risk(lines, cdf).collect()}
    dresses = risk["Dresses"]
    # Open lines: T5 (returned already) and T6 (100, 1 day old, not returned).
    # p = 1/4, refund share of a returned line = 10/40, F(1) = 0 -> h = 1/4; 100 * 1/4 * 1/4 = 6.25.
    assert dresses["open_lines"] == 2 and dresses["open_amount"] == pytest.approx(150.0)
    assert dresses["refunded_so_far"] == pytest.approx(50.0)
    assert dresses["expected_refunds"] == pytest.approx(6.25)
    assert risk["ALL"]["expected_refunds"] == pytest.approx(6.25)
