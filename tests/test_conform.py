"""Gold conforming: dense daily rates, as-of dimension lookup, the conformed transactions fact."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from chispa import assert_df_equality

from cpbi_spark.gold.conform import as_of, conform_transactions, daily_rates

RATES = "currency string, rate_date date, rate_to_reporting double"


def d(text: str) -> date:
    return date.fromisoformat(text)


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_daily_rates_fill_forward_and_backward(spark):
    rates = spark.createDataFrame([("GBP", d("2024-01-02"), 1.25), ("GBP", d("2024-01-04"), 1.30),
                                   ("EUR", d("2023-12-30"), 1.10)], RATES)
    out = daily_rates(rates, "2024-01-01", "2024-01-05")
    expected = spark.createDataFrame([
        ("GBP", d("2024-01-01"), 1.25),  # before the first rate: the first rate
        ("GBP", d("2024-01-02"), 1.25),
        ("GBP", d("2024-01-03"), 1.25),  # no rate published: the last earlier one
        ("GBP", d("2024-01-04"), 1.30),
        ("GBP", d("2024-01-05"), 1.30),
        ("EUR", d("2023-12-30"), 1.10),  # a rate before start widens the range
        ("EUR", d("2023-12-31"), 1.10),
        ("EUR", d("2024-01-01"), 1.10),
        ("EUR", d("2024-01-02"), 1.10),
        ("EUR", d("2024-01-03"), 1.10),
        ("EUR", d("2024-01-04"), 1.10),
        ("EUR", d("2024-01-05"), 1.10),
    ], RATES)
    assert_df_equality(out.select(*expected.columns), expected, ignore_row_order=True, ignore_nullable=True)


def test_as_of_boundaries_and_facts_before_the_first_version(spark):
    dim = spark.createDataFrame([("C1", "c1-a", ts("2024-01-10 00:00:00"), ts("2024-02-01 00:00:00")),
                                 ("C1", "c1-b", ts("2024-02-01 00:00:00"), None),
                                 ("C2", "c2-a", ts("2024-01-01 00:00:00"), None)],
                                "customer_id string, customer_sk string, valid_from timestamp, valid_to timestamp")
    facts = spark.createDataFrame([
        ("f1", "C1", ts("2024-01-05 00:00:00")),  # before the first version: the first version
        ("f2", "C1", ts("2024-01-10 00:00:00")),  # valid_from is inclusive
        ("f3", "C1", ts("2024-01-31 23:59:59")),
        ("f4", "C1", ts("2024-02-01 00:00:00")),  # valid_to is exclusive
        ("f5", "C1", ts("2024-06-01 00:00:00")),
        ("f6", "C2", ts("2023-06-01 00:00:00")),
        ("f7", "C9", ts("2024-01-05 00:00:00")),  # unknown customer: no version
    ], "fact_id string, customer_id string, posted_ts timestamp")
    out = as_of(facts, dim, key="customer_id", ts="posted_ts", sk="customer_sk")
    expected = spark.createDataFrame([
        ("f1", "C1", ts("2024-01-05 00:00:00"), "c1-a"), ("f2", "C1", ts("2024-01-10 00:00:00"), "c1-a"),
        ("f3", "C1", ts("2024-01-31 23:59:59"), "c1-a"), ("f4", "C1", ts("2024-02-01 00:00:00"), "c1-b"),
        ("f5", "C1", ts("2024-06-01 00:00:00"), "c1-b"), ("f6", "C2", ts("2023-06-01 00:00:00"), "c2-a"),
        ("f7", "C9", ts("2024-01-05 00:00:00"), None),
    ], "fact_id string, customer_id string, posted_ts timestamp, customer_sk string")
    assert_df_equality(out.select(*expected.columns), expected, ignore_row_order=True, ignore_nullable=True)


def test_conform_transactions_signs_returns_and_converts_with_the_rate_of_the_utc_date(spark):
    dec = Decimal
    sales = spark.createDataFrame([
        ("T1", "B1", "A1", "C1", "P1", "S1", 2.0, dec("2.5000"), dec("5.00"), "GBP", ts("2024-01-05 23:30:00")),
        ("T2", "B2", "A2", "C2", "P1", "S2", 1.0, dec("10.0000"), dec("10.00"), "USD", ts("2024-01-06 08:00:00")),
    ], "txn_id string, basket_id string, account_id string, customer_id string, product_id string, store_id string, "
       "quantity double, unit_price decimal(18,4), amount decimal(18,2), currency string, posted_ts timestamp")
    returns = spark.createDataFrame([
        # a return of T1 without a store: basket, account, price and store come from the sale
        ("R1", "T1", "C1", "P1", None, 1.0, dec("2.50"), "GBP", ts("2024-01-06 00:30:00")),
        # an unlinked return: no basket, account or price to borrow
        ("R2", "T404", "C2", "P1", "S2", 1.0, dec("4.00"), "USD", ts("2024-01-06 09:00:00")),
    ], "return_id string, original_txn_id string, customer_id string, product_id string, store_id string, "
       "quantity double, amount decimal(18,2), currency string, returned_ts timestamp")
    customers = spark.createDataFrame([
        ("C1", "c1-a", ts("2024-01-01 00:00:00"), ts("2024-01-06 00:00:00")),
        ("C1", "c1-b", ts("2024-01-06 00:00:00"), None),
        ("C2", "c2-a", ts("2024-01-01 00:00:00"), None)],
        "customer_id string, customer_sk string, valid_from timestamp, valid_to timestamp")
    products = spark.createDataFrame([("P1", "p1-a", ts("2024-02-01 00:00:00"), None)],  # after every fact
                                     "product_id string, product_sk string, valid_from timestamp, valid_to timestamp")
    merchants = spark.createDataFrame([("S1", "store"), ("S2", "online")], "merchant_id string, channel string")
    rates = spark.createDataFrame([("GBP", d("2024-01-05"), 1.25), ("GBP", d("2024-01-06"), 1.30),
                                   ("USD", d("2024-01-05"), 1.0), ("USD", d("2024-01-06"), 1.0)], RATES)
    out = conform_transactions(sales, returns, customers, products, merchants, rates, "USD")
    expected = spark.createDataFrame([
        ("T1", "A1", "C1", "P1", dec("5.00"), "GBP", "SALE", ts("2024-01-05 23:30:00"), "B1", 2.0, dec("2.5000"),
         dec("6.25"), "USD", 1.25, "c1-a", "p1-a", "S1", "store", 20240105, None),
        ("T2", "A2", "C2", "P1", dec("10.00"), "USD", "SALE", ts("2024-01-06 08:00:00"), "B2", 1.0, dec("10.0000"),
         dec("10.00"), "USD", 1.0, "c2-a", "p1-a", "S2", "online", 20240106, None),
        # 2.50 GBP at the 2024-01-06 rate (1.30): -3.25
        ("R1", "A1", "C1", "P1", dec("-2.50"), "GBP", "RETURN", ts("2024-01-06 00:30:00"), "B1", -1.0,
         dec("2.5000"), dec("-3.25"), "USD", 1.30, "c1-b", "p1-a", "S1", "store", 20240106, "T1"),
        ("R2", None, "C2", "P1", dec("-4.00"), "USD", "RETURN", ts("2024-01-06 09:00:00"), None, -1.0, None,
         dec("-4.00"), "USD", 1.0, "c2-a", "p1-a", "S2", "online", 20240106, "T404"),
    ], "transaction_id string, account_id string, customer_id string, product_id string, amount decimal(18,2), "
       "currency string, txn_type string, posted_ts timestamp, basket_id string, quantity double, "
       "unit_price decimal(18,4), amount_reporting decimal(18,2), reporting_currency string, exchange_rate double, "
       "customer_sk string, product_sk string, merchant_id string, channel string, date_key int, "
       "original_transaction_id string")
    assert_df_equality(out.select(*expected.columns), expected, ignore_row_order=True, ignore_nullable=True)
