"""Gold marts on hand-made conformed facts: basket lines, returns, settlements, balances, calendar."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest
from chispa import assert_df_equality

from cpbi_spark.gold.marts import (
    balance_snapshots,
    balance_snapshots_since,
    basket_lines,
    calendar,
    returns_fact,
    settlements,
)

FACTS = ("transaction_id string, account_id string, customer_id string, product_id string, txn_type string, "
         "posted_ts timestamp, basket_id string, quantity double, amount_reporting decimal(18,2), "
         "product_sk string, merchant_id string, channel string")
dec = Decimal


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.fixture(scope="module")
def facts(spark):
    return spark.createDataFrame([
        ("T1", "A1", "C1", "P1", "SALE", ts("2024-01-05 23:00:00"), "B1", 2.0, dec("5.00"), "p1", "S1", "store"),
        ("T2", "A1", "C1", "P1", "SALE", ts("2024-01-05 23:05:00"), "B1", 1.0, dec("2.50"), "p1", "S1", "store"),
        ("T3", "A1", "C1", "P2", "SALE", ts("2024-01-05 23:05:00"), "B1", 1.0, dec("8.00"), "p2", "S1", "store"),
        ("T4", "A2", "C2", "P1", "SALE", ts("2024-01-07 10:00:00"), "B2", 4.0, dec("10.00"), "p1", "S2", "online"),
        ("R1", "A1", "C1", "P1", "RETURN", ts("2024-01-09 01:00:00"), "B1", -1.0, dec("-2.50"), "p1", "S1", "store"),
        ("R2", None, "C2", "P2", "RETURN", ts("2024-01-08 12:00:00"), None, -1.0, dec("-8.00"), "p2", "S2", "online"),
    ], FACTS)


@pytest.fixture(scope="module")
def products(spark):
    return spark.createDataFrame([("p1", "drinks", "grocery"), ("p2", "kitchen", "home")],
                                 "product_sk string, category string, department string")


def test_basket_lines_collapse_quantities_and_attach_returns(spark, facts, products):
    out = basket_lines(facts, products)
    t = ts("2024-01-05 23:00:00")
    expected = spark.createDataFrame([
        # T1 + T2 (same basket and product): 3 units, 7.50; R1 returned one of them for 2.50
        ("B1", "P1", "C1", t, "S1", "store", "drinks", "grocery", 3.0, dec("7.50"), 1.0, dec("2.50"), True),
        ("B1", "P2", "C1", ts("2024-01-05 23:05:00"), "S1", "store", "kitchen", "home", 1.0, dec("8.00"), 0.0,
         dec("0.00"), False),
        ("B2", "P1", "C2", ts("2024-01-07 10:00:00"), "S2", "online", "drinks", "grocery", 4.0, dec("10.00"), 0.0,
         dec("0.00"), False),
    ], "basket_id string, product_id string, customer_id string, basket_ts timestamp, merchant_id string, "
       "channel string, category string, department string, quantity double, amount_reporting decimal(18,2), "
       "returned_quantity double, returned_amount_reporting decimal(18,2), is_returned boolean")
    assert_df_equality(out.select(*expected.columns), expected, ignore_row_order=True, ignore_nullable=True)


def test_returns_fact_links_the_sale_and_counts_days_to_return(spark, facts, products):
    returns = spark.createDataFrame([
        ("R1", "T1", "C1", "P1", None, 1.0, ts("2024-01-09 01:00:00"), "damaged"),
        ("R2", "T404", "C2", "P2", "S2", 1.0, ts("2024-01-08 12:00:00"), None),  # no sale: unlinked
        ("R3", "T4", "C2", "P1", "S2", 1.0, ts("2024-01-08 12:00:00"), None),    # not in the facts: dropped
    ], "return_id string, original_txn_id string, customer_id string, product_id string, store_id string, "
       "quantity double, returned_ts timestamp, reason string")
    out = returns_fact(facts, returns, products)
    expected = spark.createDataFrame([
        # sold 2024-01-05 23:00, returned 2024-01-09 01:00: 4 calendar days
        ("R1", "T1", "B1", "C1", "P1", "drinks", "grocery", "S1", "store", ts("2024-01-05 23:00:00"),
         ts("2024-01-09 01:00:00"), 4, 1.0, dec("2.50"), "damaged", True),
        ("R2", "T404", None, "C2", "P2", None, None, "S2", None, None, ts("2024-01-08 12:00:00"), None, 1.0,
         dec("8.00"), None, False),
    ], "return_id string, original_txn_id string, basket_id string, customer_id string, product_id string, "
       "category string, department string, merchant_id string, channel string, sale_ts timestamp, "
       "returned_ts timestamp, days_to_return int, quantity double, amount_reporting decimal(18,2), reason string, "
       "is_linked boolean")
    assert_df_equality(out.select(*expected.columns), expected, ignore_row_order=True, ignore_nullable=True)


def test_settlements_gross_refunds_and_fees(spark):
    d = date.fromisoformat
    sales = spark.createDataFrame([
        ("T1", "S1", d("2024-01-05"), "card", "USD", dec("100.00")),
        ("T2", "S1", d("2024-01-05"), "card", "USD", dec("23.45")),
        ("T3", "S1", d("2024-01-05"), "cash", "USD", dec("10.00")),
        ("T4", "S2", d("2024-01-05"), "wallet", "GBP", dec("33.33")),  # no fee schedule row: no fee
    ], "txn_id string, store_id string, posted_date date, payment_method string, currency string, "
       "amount decimal(18,2)")
    returns = spark.createDataFrame([
        ("R1", "T1", None, ts("2024-01-05 18:00:00"), "USD", dec("20.00")),    # same day, store of the sale
        ("R2", "T2", "S1", ts("2024-01-06 09:00:00"), "USD", dec("5.00")),     # a later day: a refund-only row
        ("R3", "T404", "S2", ts("2024-01-07 09:00:00"), "GBP", dec("1.00")),   # unknown sale: unknown method
    ], "return_id string, original_txn_id string, store_id string, returned_ts timestamp, currency string, "
       "amount decimal(18,2)")
    fees = spark.createDataFrame([("card", 0.029, 0.30, 2), ("cash", 0.0, 0.0, 0)],
                                 "payment_method string, fee_pct double, fee_fixed double, settlement_lag_days int")
    out = settlements(sales, returns, fees)
    expected = spark.createDataFrame([
        # fees = 123.45 * 0.029 + 2 * 0.30 = 4.18005 -> 4.18; net = 123.45 - 20.00 - 4.18
        ("S1", d("2024-01-05"), "card", "USD", 2, 1, dec("123.45"), dec("20.00"), dec("4.18"), dec("99.27")),
        ("S1", d("2024-01-05"), "cash", "USD", 1, 0, dec("10.00"), dec("0.00"), dec("0.00"), dec("10.00")),
        ("S2", d("2024-01-05"), "wallet", "GBP", 1, 0, dec("33.33"), dec("0.00"), dec("0.00"), dec("33.33")),
        ("S1", d("2024-01-06"), "card", "USD", 0, 1, dec("0.00"), dec("5.00"), dec("0.00"), dec("-5.00")),
        ("S2", d("2024-01-07"), "unknown", "GBP", 0, 1, dec("0.00"), dec("1.00"), dec("0.00"), dec("-1.00")),
    ], "merchant_id string, business_date date, payment_method string, currency string, n_sales bigint, "
       "n_refunds bigint, gross_sales decimal(18,2), refunds decimal(18,2), fees decimal(18,2), "
       "net_amount decimal(18,2)")
    assert_df_equality(out.select(*expected.columns), expected, ignore_row_order=True, ignore_nullable=True)


def test_balance_snapshots_dense_months_cumulative_spend_and_points(spark):
    facts = spark.createDataFrame([
        ("A1", "SALE", ts("2024-01-10 10:00:00"), "B1", dec("10.50")),
        ("A1", "SALE", ts("2024-01-10 10:00:00"), "B1", dec("5.25")),    # same basket: one order
        ("A1", "SALE", ts("2024-01-20 10:00:00"), "B2", dec("4.00")),
        ("A1", "RETURN", ts("2024-03-05 10:00:00"), "B1", dec("-30.00")),  # a return is not an order
        ("A2", "SALE", ts("2024-02-15 10:00:00"), "B3", dec("7.99")),
        (None, "SALE", ts("2024-04-01 10:00:00"), "B9", dec("100.00")),   # no account: ignored
    ], "account_id string, txn_type string, posted_ts timestamp, basket_id string, amount_reporting decimal(18,2)")
    out = balance_snapshots(facts, {"points_per_currency_unit": 2.0})
    d = date.fromisoformat
    expected = spark.createDataFrame([
        ("A1", d("2024-01-31"), 2, dec("19.75"), dec("19.75"), 39),    # floor(39.5)
        ("A1", d("2024-02-29"), 0, dec("0.00"), dec("19.75"), 39),     # a month without activity is kept
        ("A1", d("2024-03-31"), 0, dec("-30.00"), dec("-10.25"), 0),   # negative balance: no negative points
        ("A2", d("2024-02-29"), 1, dec("7.99"), dec("7.99"), 15),      # floor(15.98); starts at its first month
        ("A2", d("2024-03-31"), 0, dec("0.00"), dec("7.99"), 15),
    ], "account_id string, snapshot_date date, orders_in_month bigint, net_spend_month decimal(18,2), "
       "cumulative_net_spend decimal(20,2), points_balance bigint")
    assert_df_equality(out.select(*expected.columns), expected, ignore_row_order=True, ignore_nullable=True)


def test_balance_snapshots_since_continues_the_earlier_snapshots(spark):
    schema = "account_id string, txn_type string, posted_ts timestamp, basket_id string, amount_reporting decimal(18,2)"
    old = [("A1", "SALE", ts("2024-01-10 10:00:00"), "B1", dec("10.00")),
           ("A1", "SALE", ts("2024-02-10 10:00:00"), "B2", dec("5.00")),
           ("A2", "SALE", ts("2024-01-15 10:00:00"), "B3", dec("7.00")),
           ("A3", "SALE", ts("2024-02-01 10:00:00"), "B4", dec("1.00"))]
    new = [("A1", "RETURN", ts("2024-02-20 10:00:00"), "B1", dec("-4.00")),   # late line in February
           ("A1", "SALE", ts("2024-04-02 10:00:00"), "B5", dec("8.00")),      # data now reaches April
           ("A4", "SALE", ts("2024-03-03 10:00:00"), "B6", dec("2.50"))]      # a new account
    limits = {"points_per_currency_unit": 1.0}
    before = balance_snapshots(spark.createDataFrame(old, schema), limits)
    facts = spark.createDataFrame(old + new, schema)
    d = date.fromisoformat
    # A1 from its changed month; A2 and A3 from the first new month; A4 from its first line.
    starts = spark.createDataFrame([("A1", d("2024-02-01")), ("A2", d("2024-03-01")), ("A3", d("2024-03-01")),
                                    ("A4", d("2024-03-01"))], "account_id string, start date")
    bases = (before.join(starts, "account_id")
             .filter("trunc(snapshot_date, 'month') = add_months(start, -1)")
             .select("account_id", "cumulative_net_spend"))
    got = balance_snapshots_since(facts, starts, bases, d("2024-04-01"), limits)
    want = balance_snapshots(facts, limits).join(starts, "account_id").filter(
        "trunc(snapshot_date, 'month') >= start").select(*got.columns)
    assert want.count() == 9  # A1 Feb-Apr; A2, A3 and A4 Mar-Apr
    assert_df_equality(got, want, ignore_row_order=True, ignore_nullable=True)
    a1 = {r["snapshot_date"]: r["cumulative_net_spend"] for r in got.filter("account_id = 'A1'").collect()}
    assert a1 == {d("2024-02-29"): dec("11.00"), d("2024-03-31"): dec("11.00"), d("2024-04-30"): dec("19.00")}


def test_calendar_iso_weekdays_and_weekends(spark):
    out = calendar("2023-12-30", "2024-01-01")
    d = date.fromisoformat
    expected = spark.createDataFrame([
        (20231230, d("2023-12-30"), 2023, 4, 12, "December", 52, 6, "Saturday", True, d("2023-12-01")),
        (20231231, d("2023-12-31"), 2023, 4, 12, "December", 52, 7, "Sunday", True, d("2023-12-01")),
        (20240101, d("2024-01-01"), 2024, 1, 1, "January", 1, 1, "Monday", False, d("2024-01-01")),
    ], "date_key int, date date, year int, quarter int, month int, month_name string, week_of_year int, "
       "day_of_week int, day_name string, is_weekend boolean, month_start date")
    assert_df_equality(out.select(*expected.columns), expected, ignore_row_order=True, ignore_nullable=True)
