"""The one metric-definition module: sales KPIs on a hand-checked basket table, filters, formatting."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from cpbi_spark.metrics import METRICS, filter_lines, markdown, monthly_kpis, sales_kpis

SCHEMA = ("basket_id string, product_id string, customer_id string, basket_ts timestamp, channel string, "
          "category string, amount_reporting decimal(18,2), returned_amount_reporting decimal(18,2)")


@pytest.fixture(scope="module")
def lines(spark):
    t = dt.datetime
    rows = [
        # basket, product, customer, time, channel, category, amount, returned
        ("B1", "P1", "C1", t(2024, 1, 5), "store", "Tops", Decimal("100.00"), Decimal("0.00")),
        ("B1", "P2", "C1", t(2024, 1, 5), "store", "Shoes", Decimal("50.00"), Decimal("50.00")),
        ("B2", "P1", "C1", t(2024, 2, 1), "online", "Tops", Decimal("80.00"), Decimal("0.00")),
        ("B3", "P3", "C2", t(2024, 2, 10), "online", "Toys", Decimal("20.00"), Decimal("10.00")),
        ("B4", "P3", None, t(2024, 2, 11), "store", "Toys", Decimal("30.00"), Decimal("0.00")),
    ]
    return spark.createDataFrame(rows, SCHEMA)


def test_sales_kpis_by_hand(lines):
    k = sales_kpis(lines).first().asDict()
    assert k["gross_revenue"] == pytest.approx(280.0)
    assert k["refunds"] == pytest.approx(60.0)
    assert k["net_revenue"] == pytest.approx(220.0)
    assert (k["orders"], k["customers"]) == (4, 2)
    assert k["average_order_value"] == pytest.approx(220.0 / 4)
    assert k["return_rate"] == pytest.approx(60.0 / 280.0)
    assert k["orders_per_customer"] == pytest.approx(3 / 2)        # B4 has no customer
    assert k["repeat_customer_share"] == pytest.approx(1 / 2)      # C1 has two orders, C2 one


def test_grouped_and_monthly_kpis(lines):
    by = {r["channel"]: r.asDict() for r in sales_kpis(lines, by=["channel"]).collect()}
    assert by["store"]["net_revenue"] == pytest.approx(130.0) and by["store"]["orders"] == 2
    assert by["online"]["net_revenue"] == pytest.approx(90.0) and by["online"]["repeat_customer_share"] == 0.0
    months = {r["month"]: r["net_revenue"] for r in monthly_kpis(lines).collect()}
    assert months == {dt.date(2024, 1, 1): pytest.approx(100.0), dt.date(2024, 2, 1): pytest.approx(120.0)}


def test_filters_are_inclusive_and_combine(spark, lines):
    assert filter_lines(lines, start="2024-02-01", end="2024-02-10").count() == 2
    assert filter_lines(lines, channels=["online"], categories=["Toys"]).count() == 1
    segment = spark.createDataFrame([("C1",)], "customer_id string")
    assert {r["basket_id"] for r in filter_lines(lines, customers=segment).collect()} == {"B1", "B2"}
    assert filter_lines(lines, channels=[], categories=None).count() == 5      # empty filter keeps everything


def test_no_line_gives_zeros_and_null_ratios(lines):
    k = sales_kpis(filter_lines(lines, channels=["phone"])).collect()
    assert len(k) == 1
    row = k[0].asDict()
    assert (row["gross_revenue"], row["orders"], row["customers"]) == (0.0, 0, 0)
    assert row["average_order_value"] is None and row["return_rate"] is None


def test_formatting_and_generated_doc():
    assert METRICS["net_revenue"].format(1234567.4) == "$1,234,567"
    assert METRICS["net_revenue"].format(-5, currency="EUR ") == "-EUR 5"
    assert METRICS["return_rate"].format(0.0614) == "6.1%"
    assert METRICS["uplift"].format(0.061) == "+6.1 pp"
    assert METRICS["orders"].format(None) == "n/a"
    doc = markdown()
    for m in METRICS.values():
        assert f"| `{m.name}` | {m.label} |" in doc
