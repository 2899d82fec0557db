"""Validation: rules as data (classify, missing, bad_type, quarantine_frame), the transactions rules of
``prepare_transactions`` on bronze-like rows, and the duplicate outcomes of ``silver.stage._outcome_by_key``.

Every expected reason, detail and typed value is written by hand next to its input line.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from cpbi_spark.silver.entities import prepare_transactions
from cpbi_spark.silver.stage import _outcome_by_key
from cpbi_spark.silver.validate import Rule, bad_type, classify, missing, quarantine_frame

TXN_COLUMNS = ["txn_id", "basket_id", "account_id", "customer_id", "product_id", "store_id", "quantity",
               "unit_price", "amount", "currency", "txn_type", "payment_method", "posted_ts"]
LINEAGE = ["_corrupt_record", "_extra_columns", "_ingested_at", "_batch_id", "_record_id", "_record_hash"]
INGESTED = datetime(2024, 6, 1)
LIMITS = {"max_future_days": 1, "max_line_quantity": 10000}


@pytest.fixture(scope="module")
def txn_source():
    """The transactions mapping of conf/base/sources.yaml (identity mapping, UTC), built inline so the test
    does not depend on the rest of the repo configuration."""
    from cpbi_spark.config.models import SourceConfig

    return SourceConfig(format="csv", path="transactions/*.csv", bronze_table="raw_transactions",
                        columns={c: c for c in TXN_COLUMNS}, record_key=["txn_id"], timezone="UTC")


# --------------------------------------------------------------------------------- rules as data
def test_classify_first_failing_rule_wins_with_one_reason_per_row(spark):
    df = spark.createDataFrame([(1, None, -5), (2, "x", -5), (3, "x", 5), (4, "x", None)],
                               "id int, a string, b int")
    rules = [Rule("a_missing", F.col("a").isNull()),  # no detail: the reason is the detail
             Rule("b_negative", F.col("b") < 0, F.concat(F.lit("b is "), F.col("b").cast("string"))),
             Rule("always", F.col("id") == 1, F.lit("never reached for id 1"))]
    out = classify(df, rules).select("id", "_reject_reason", "_reject_detail")
    expected = spark.createDataFrame([(1, "a_missing", "a_missing"), (2, "b_negative", "b is -5"),
                                      (3, None, None), (4, None, None)],  # b NULL: the rule is not failed
                                     "id int, _reject_reason string, _reject_detail string")
    assert_df_equality(out, expected, ignore_row_order=True, ignore_nullable=True)


def test_missing_and_bad_type_name_the_first_offending_column(spark):
    df = spark.createDataFrame([(1, None, None, "1.5"), (2, "k", None, "abc"), (3, "k", "y", "  "),
                                (4, "k", "y", None), (5, "k", "y", "2"), (6, "k", "y", "x"), (7, None, "y", "x")],
                               "id int, k string, y string, q string")
    parsed = {"k": F.col("k"), "y": F.col("y"), "q": F.trim("q").try_cast("double")}
    rules = [missing(["k", "y"], parsed), bad_type({"q": F.col("q")}, parsed, {"q": "number"})]
    out = classify(df, rules).select("id", "_reject_reason", "_reject_detail")
    expected = spark.createDataFrame([
        (1, "missing_key", "k is empty"),   # both missing: the first one is named
        (2, "missing_key", "y is empty"),
        (3, None, None),                    # blank is not a bad type (it is missing, not checked here)
        (4, None, None),
        (5, None, None),
        (6, "bad_type", "q is not a number: x"),
        (7, "missing_key", "k is empty"),   # missing is checked before bad_type
    ], "id int, _reject_reason string, _reject_detail string")
    assert_df_equality(out, expected, ignore_row_order=True, ignore_nullable=True)


def test_quarantine_frame_keeps_the_record_as_received(spark):
    rejected = spark.createDataFrame(
        [("r-1", "h1", "b1", "bad_type", "qty is not a number: abc", "T5", "abc")],
        "_record_id string, _record_hash string, _batch_id string, _reject_reason string, _reject_detail string, "
        "_raw_txn_id string, _raw_qty string")
    at = datetime(2024, 6, 2, 3, 4, 5)
    out = quarantine_frame(rejected, stage="silver", source="transactions", run_id="run-9", at=at,
                           raw_columns=[F.col("_raw_txn_id").alias("txn_id"), F.col("_raw_qty").alias("Qty")])
    expected = spark.createDataFrame(
        [("silver", "transactions", "r-1", "h1", "b1", "bad_type", "qty is not a number: abc",
          '{"txn_id":"T5","Qty":"abc"}', "run-9", at)],
        "stage string, source string, record_id string, record_hash string, batch_id string, reason string, "
        "detail string, payload string, run_id string, quarantined_at timestamp")
    assert_df_equality(out, expected, ignore_nullable=True)


# --------------------------------------------------------------------------------- prepare_transactions
def bronze(spark, rows: list[dict], ingested: datetime = INGESTED):
    """Bronze-like rows: every mapped column a string (defaults: a valid sale), plus the lineage columns."""
    default = {"txn_id": "T0", "basket_id": "B1", "account_id": "A1", "customer_id": "C1", "product_id": "P1",
               "store_id": "S1", "quantity": "1", "unit_price": "2.50", "amount": "2.50", "currency": "USD",
               "txn_type": "SALE", "payment_method": "card", "posted_ts": "2024-01-05T10:00:00+00:00",
               "_corrupt_record": None}
    data = []
    for i, r in enumerate(rows):
        row = {**default, **r}
        values = [row[c] for c in [*TXN_COLUMNS, "_corrupt_record"]]
        data.append((*values, None, ingested, "batch-1", f"r{i}", f"h{i}"))
    schema = ", ".join(f"{c} string" for c in [*TXN_COLUMNS, "_corrupt_record", "_extra_columns"])
    return spark.createDataFrame(
        data, f"{schema}, _ingested_at timestamp, _batch_id string, _record_id string, _record_hash string")


DIRTY = [  # (input overrides, expected reason, expected detail)
    ({"txn_id": "T1", "quantity": "2", "unit_price": "2.50", "amount": "5.00", "payment_method": "Card"}, None, None),
    ({"txn_id": "T10", "basket_id": "B8", "account_id": "A1", "customer_id": None, "product_id": None,
      "store_id": None, "quantity": None, "unit_price": None, "amount": None, "currency": None, "txn_type": None,
      "payment_method": None, "posted_ts": None, "_corrupt_record": "T10,B8,A1"},
     "malformed_line", "the parser could not split this line: T10,B8,A1"),
    ({"txn_id": "T6", "customer_id": ""}, "missing_key", "customer_id is empty"),
    ({"txn_id": "T5", "quantity": "abc"}, "bad_type", "quantity is not a number: abc"),
    ({"txn_id": "T20", "quantity": "2", "unit_price": "1.2.3", "amount": "5.00"}, "bad_type",
     "unit_price is not a number: 1.2.3"),
    ({"txn_id": "T21", "unit_price": "12a", "amount": "12.00"}, "bad_type", "unit_price is not a number: 12a"),
    ({"txn_id": "T22", "posted_ts": "yesterday"}, "bad_type", "posted_ts is not a timestamp: yesterday"),
    ({"txn_id": "T23", "posted_ts": " "}, "missing_key", "posted_ts is empty"),
    ({"txn_id": "T24", "unit_price": "", "amount": ""}, "missing_amount", "neither amount nor unit_price is given"),
    ({"txn_id": "T7", "currency": "xxx"}, "unknown_currency", "currency not in the exchange rates: XXX"),
    ({"txn_id": "T8", "posted_ts": "2024-06-02T00:00:01Z"}, "future_date",
     "posted after ingestion: 2024-06-02 00:00:01"),
    ({"txn_id": "T25", "posted_ts": "2024-06-02T00:00:00Z"}, None, None),  # exactly 1 day later: allowed
    ({"txn_id": "T9", "quantity": "-3", "amount": "-7.50"}, "negative_quantity", "a sale with quantity -3.0"),
    ({"txn_id": "T26", "quantity": "20000", "amount": "50000.00"}, "quantity_over_limit",
     "|quantity| > 10000: 20000.0"),
    ({"txn_id": "T27", "txn_type": "void"}, "unknown_txn_type", "txn_type is VOID"),
    ({"txn_id": "T11", "quantity": "3", "unit_price": "2.50", "amount": "", "currency": "EUR"}, None, None),
    ({"txn_id": "T12", "quantity": "3", "unit_price": "", "amount": "9.00"}, None, None),
    ({"txn_id": "T13", "currency": " usd ", "payment_method": "", "posted_ts": "2024-02-29T19:03:32-05:00"},
     None, None),
    ({"txn_id": "T14", "txn_type": "return", "quantity": "-1", "amount": "-2.50"}, None, None),
]


@pytest.fixture(scope="module")
def prepared(spark, txn_source):
    df = prepare_transactions(bronze(spark, [r for r, _, _ in DIRTY]), txn_source, known_currencies=["USD", "EUR"],
                              limits=LIMITS, default_currency="USD").persist()
    yield df
    df.unpersist()


def test_prepare_transactions_gives_each_dirty_kind_its_reason(spark, prepared):
    expected = spark.createDataFrame([(r["txn_id"], reason, detail) for r, reason, detail in DIRTY],
                                     "txn_id string, _reject_reason string, _reject_detail string")
    assert_df_equality(prepared.select("txn_id", "_reject_reason", "_reject_detail"), expected,
                       ignore_row_order=True, ignore_nullable=True)


def test_prepare_transactions_types_and_completes_valid_lines(spark, prepared):
    out = prepared.filter("_reject_reason IS NULL").select(
        "txn_id", "quantity", "unit_price", "amount", "currency", "txn_type", "payment_method", "posted_ts",
        "posted_date")
    d, ts = Decimal, datetime
    expected = spark.createDataFrame([
        ("T1", 2.0, d("2.5000"), d("5.00"), "USD", "SALE", "card", ts(2024, 1, 5, 10), date(2024, 1, 5)),
        ("T25", 1.0, d("2.5000"), d("2.50"), "USD", "SALE", "card", ts(2024, 6, 2), date(2024, 6, 2)),
        ("T11", 3.0, d("2.5000"), d("7.50"), "EUR", "SALE", "card", ts(2024, 1, 5, 10), date(2024, 1, 5)),
        ("T12", 3.0, d("3.0000"), d("9.00"), "USD", "SALE", "card", ts(2024, 1, 5, 10), date(2024, 1, 5)),
        # -05:00 offset: 19:03:32 on 29 Feb is 00:03:32 UTC on 1 March
        ("T13", 1.0, d("2.5000"), d("2.50"), "USD", "SALE", "unknown", ts(2024, 3, 1, 0, 3, 32), date(2024, 3, 1)),
        ("T14", -1.0, d("2.5000"), d("-2.50"), "USD", "RETURN", "card", ts(2024, 1, 5, 10), date(2024, 1, 5)),
    ], "txn_id string, quantity double, unit_price decimal(18,4), amount decimal(18,2), currency string, "
       "txn_type string, payment_method string, posted_ts timestamp, posted_date date")
    assert_df_equality(out, expected, ignore_row_order=True, ignore_nullable=True)


def test_prepare_transactions_local_times_in_the_source_timezone(spark, txn_source):
    paris = txn_source.model_copy(update={"timezone": "Europe/Paris"})
    rows = [{"txn_id": "summer", "posted_ts": "2024-07-01 12:00:00"},        # CEST, UTC+2
            {"txn_id": "winter", "posted_ts": "2024-01-15 12:00:00"},        # CET, UTC+1
            {"txn_id": "zulu", "posted_ts": "2024-07-01T12:00:00Z"},         # an offset wins over the zone
            {"txn_id": "offset", "posted_ts": "2024-07-01T12:00:00+02:00"}]
    out = prepare_transactions(bronze(spark, rows, datetime(2024, 8, 1)), paris, known_currencies=["USD"],
                               limits=LIMITS).select("txn_id", "posted_ts", "_reject_reason")
    expected = spark.createDataFrame([("summer", datetime(2024, 7, 1, 10), None),
                                      ("winter", datetime(2024, 1, 15, 11), None),
                                      ("zulu", datetime(2024, 7, 1, 12), None),
                                      ("offset", datetime(2024, 7, 1, 10), None)],
                                     "txn_id string, posted_ts timestamp, _reject_reason string")
    assert_df_equality(out, expected, ignore_row_order=True, ignore_nullable=True)


def test_prepare_transactions_timestamp_format(spark, txn_source):
    fmt = txn_source.model_copy(update={"timezone": "Europe/Paris", "timestamp_format": "dd/MM/yyyy HH:mm"})
    rows = [{"txn_id": "ok", "posted_ts": "01/07/2024 12:00"},
            {"txn_id": "iso", "posted_ts": "2024-07-01 12:00:00"}]  # not the declared format
    out = prepare_transactions(bronze(spark, rows, datetime(2024, 8, 1)), fmt, known_currencies=["USD"],
                               limits=LIMITS).select("txn_id", "posted_ts", "_reject_reason", "_reject_detail")
    expected = spark.createDataFrame(
        [("ok", datetime(2024, 7, 1, 10), None, None),
         ("iso", None, "bad_type", "posted_ts is not a timestamp: 2024-07-01 12:00:00")],
        "txn_id string, posted_ts timestamp, _reject_reason string, _reject_detail string")
    assert_df_equality(out, expected, ignore_row_order=True, ignore_nullable=True)


# --------------------------------------------------------------------------------- duplicates by key
def test_outcome_by_key_duplicates_and_conflicts(spark):
    schema = ("txn_id string, _ingested_at timestamp, _record_id string, _record_hash string, "
              "_reject_reason string, _reject_detail string")
    t = datetime(2024, 6, 1)
    rows = [
        ("T1", t, "r1", "h1", None, None),            # first T1: accepted
        ("T1", t, "r2", "h1", None, None),            # same content again: duplicate
        ("T2", t, "r3", "h2", None, None),            # accepted
        ("T2", t, "r4", "h2-other", None, None),      # same key, other content: conflicting_duplicate
        ("T3", t, "r5", "h3", None, None),            # already in silver with the same content: duplicate
        ("T4", t, "r6", "h4", None, None),            # in silver with other content: conflicting_duplicate
        ("T5", t, "r7", "h5", "bad_type", "quantity is not a number: abc"),  # keeps its own reason
        ("T6", t, "r8", "h6-bad", "bad_type", "quantity is not a number: x"),  # quarantined first delivery ...
        ("T6", t, "r9", "h6-fixed", None, None),      # ... and its corrected resend: accepted (T6 never got in)
    ]
    existing = spark.createDataFrame([("T3", "h3"), ("T4", "h4-silver")], "txn_id string, record_hash string")
    out = _outcome_by_key(spark.createDataFrame(rows, schema), "txn_id", existing).select(
        "_record_id", "_outcome", "_reject_reason", "_reject_detail")
    conflict = "conflicting_duplicate"
    expected = spark.createDataFrame([
        ("r1", "accepted", None, None),
        ("r2", "duplicate", None, None),
        ("r3", "accepted", None, None),
        ("r4", "quarantined", conflict, "txn_id already seen with other values: T2"),
        ("r5", "duplicate", None, None),
        ("r6", "quarantined", conflict, "txn_id already seen with other values: T4"),
        ("r7", "quarantined", "bad_type", "quantity is not a number: abc"),
        ("r8", "quarantined", "bad_type", "quantity is not a number: x"),
        ("r9", "accepted", None, None),
    ], "_record_id string, _outcome string, _reject_reason string, _reject_detail string")
    assert_df_equality(out, expected, ignore_row_order=True, ignore_nullable=True)


def test_outcome_by_key_without_silver_rows(spark):
    rows = [("E1", datetime(2024, 6, 1), "r1", "h1", None, None),
            ("E1", datetime(2024, 6, 2), "r0", "h1", None, None)]  # later ingestion, lower record id
    df = spark.createDataFrame(rows, "exposure_id string, _ingested_at timestamp, _record_id string, "
                                     "_record_hash string, _reject_reason string, _reject_detail string")
    out = _outcome_by_key(df, "exposure_id", None).select("_record_id", "_outcome")
    expected = spark.createDataFrame([("r1", "accepted"), ("r0", "duplicate")], "_record_id string, _outcome string")
    assert_df_equality(out, expected, ignore_row_order=True, ignore_nullable=True)
