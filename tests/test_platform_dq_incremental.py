"""Data-quality suites validated on appended rows only, after a clean validation (``ctl_dq_watermarks``).

Each incremental result is compared with a full validation of the same table version (a new GE run
over every row) and with the counts planted in the appended rows.
"""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from pyspark.sql import functions as F

from cpbi_spark.config.platform import ExpectationSuiteConfig
from cpbi_spark.platform import quality
from cpbi_spark.platform.store import PlatformStore
from cpbi_spark.runtime import RunContext

SUITE = ExpectationSuiteConfig.model_validate({"checks": [
    {"check": "id_unique", "expect": "unique", "columns": ["txn_id"]},
    {"check": "id_present", "expect": "not_null", "column": "txn_id"},
    {"check": "pair_unique", "expect": "unique", "columns": ["txn_id", "product_id"]},
    {"check": "sales_only", "expect": "in_set", "column": "txn_type", "values": ["SALE"]},
    {"check": "quantity_ok", "expect": "between", "column": "quantity", "min": 0, "severity": "warning"},
    {"check": "known_product", "expect": "references", "column": "product_id", "table": "dim_product",
     "table_column": "product_id", "severity": "warning"},
    # two transactions per product: a count from another table, checked against this table's rows
    {"check": "two_per_product", "expect": "row_count", "sql": "SELECT 2 * count(*) FROM {dim_product}"},
    {"check": "some_rows", "expect": "row_count", "min": 3, "max": 50},
]})
KEY = {"run_id": "r", "stage": "silver", "attempt": 1}
# GE's pandas engine runs every check but the references one (an SQL anti-join, Spark only).
LOCAL_SUITE = ExpectationSuiteConfig.model_validate(
    {"checks": [c for c in SUITE.model_dump()["checks"] if c["expect"] != "references"]})


@pytest.fixture
def store(spark, tmp_path):
    ctx = RunContext.create(env="ci", spark=spark, overrides={
        "storage.root": str(tmp_path / "lake"), "storage.landing": str(tmp_path / "landing"),
        "storage.outputs": str(tmp_path / "out"), "platform.enabled": False})
    return PlatformStore(ctx)


def _products(store, ids):
    rows = [{"product_id": p, "product_name": "n", "brand": "b", "category": "c", "department": "d", "unit_cost": 1,
             "list_price": 2, "product_sk": f"sk-{p}", "valid_from": datetime(2024, 1, 1), "valid_to": None,
             "is_current": True, "row_hash": "h"} for p in ids]
    store.lake.append("dim_product", store.frame("dim_product", rows))


def _sales(store, rows):
    store.lake.append("stg_transactions", store.frame("stg_transactions", [
        {"txn_id": t, "product_id": p, "txn_type": kind, "quantity": q} for t, p, kind, q in rows]))


def _validate(store, watermarks, monkeypatch, engine="spark"):
    monkeypatch.setattr(quality, "_RESULTS", {})  # a new process: nothing validated yet
    suite, local_max = (SUITE, 0) if engine == "spark" else (LOCAL_SUITE, 1000)
    results = quality.validate_table(store, "stg_transactions", suite, watermarks, incremental_min_rows=0,
                                     local_max_rows=local_max)
    assert {r["validation_engine"] for r in results} == {engine}
    return {r["check_name"]: r for r in results}


def _outcome(results):
    return {k: (r["check_status"], r["unexpected_count"]) for k, r in results.items()}


def _watermarks(results):
    return quality.watermark_rows(KEY, [{**r, "dataset_id": "stg_transactions"} for r in results.values()],
                                  datetime(2026, 1, 1))


@pytest.mark.parametrize("engine", ["spark", "pandas"])
def test_appended_rows_alone_decide_the_whole_tables_results(store, monkeypatch, engine):
    _products(store, ["P1", "P2"])
    _sales(store, [("T1", "P1", "SALE", 1), ("T2", "P1", "SALE", 2), ("T3", "P2", "SALE", 1),
                   ("T4", "P2", "SALE", 5)])
    first = _validate(store, [], monkeypatch, engine)
    assert quality.clean(list(first.values())) and {r["validation_mode"] for r in first.values()} == {"full"}
    marks = _watermarks(first)
    assert [w["dataset_version"] for w in marks] == [store.lake.version("stg_transactions")]

    # Clean appends (and two more products, so the row count still reconciles): only they are validated.
    _products(store, ["P3", "P4"])
    _sales(store, [("T5", "P3", "SALE", 1), ("T6", "P3", "SALE", 1), ("T7", "P4", "SALE", 1),
                   ("T8", "P4", "SALE", 1)])
    clean_inc = _validate(store, marks, monkeypatch, engine)
    since = f"incremental since version {marks[0]['dataset_version']}"
    assert {r["validation_mode"] for r in clean_inc.values()} == {since}
    assert {r["validated_rows"] for r in clean_inc.values()} == {4}
    assert quality.clean(list(clean_inc.values()))
    assert clean_inc["two_per_product"]["observed_value"] == "8"  # the table's rows, not the 4 validated
    assert _outcome(clean_inc) == _outcome(_validate(store, [], monkeypatch, engine))
    marks = _watermarks(clean_inc)

    # Planted faults in the next batch: T2 again (2 rows not unique: the old one and the new one), a null id,
    # a return, a negative quantity and an unknown product; with 12 rows and 4 products the count is off.
    _sales(store, [("T2", "P1", "SALE", 1), (None, "P1", "SALE", 1), ("T9", "P1", "RETURN", 1),
                   ("T10", "P9", "SALE", -3)])
    incremental = _validate(store, marks, monkeypatch, engine)
    full = _validate(store, [], monkeypatch, engine)
    assert {r["validation_mode"] for r in full.values()} == {"full"}
    assert incremental["id_unique"]["validation_mode"].startswith("incremental")
    # the 4 appended rows and the one earlier row sharing a unique key value with them (T2)
    assert incremental["id_unique"]["validated_rows"] == 5
    planted = {"id_unique": ("failed", 2), "id_present": ("failed", 1), "pair_unique": ("failed", 2),
               "sales_only": ("failed", 1), "quantity_ok": ("failed", 1), "known_product": ("failed", 1),
               "two_per_product": ("failed", None), "some_rows": ("passed", None)}
    if engine == "pandas":
        del planted["known_product"]
    assert _outcome(incremental) == _outcome(full) == planted
    assert incremental["id_present"]["sample"] == full["id_present"]["sample"] == [None]
    assert incremental["two_per_product"]["observed_value"] == full["two_per_product"]["observed_value"] == "12"
    assert not quality.clean(list(incremental.values()))
    assert quality.watermark_rows(KEY, [{**r, "dataset_id": "t"} for r in incremental.values()], None) == []


def test_anything_but_appends_since_the_watermark_validates_every_row(store, monkeypatch):
    suite = ExpectationSuiteConfig.model_validate(
        {"checks": [c for c in SUITE.model_dump()["checks"] if c["check"] != "two_per_product"]})
    _products(store, ["P1", "P2", "P3"])
    _sales(store, [("T1", "P1", "SALE", 1), ("T2", "P1", "SALE", 1), ("T3", "P2", "SALE", 1)])

    def validated(watermarks, checks=suite):
        monkeypatch.setattr(quality, "_RESULTS", {})
        return quality.validate_table(store, "stg_transactions", checks, watermarks, incremental_min_rows=0)

    def modes(watermarks, checks=suite):
        return {r["validation_mode"] for r in validated(watermarks, checks)}

    marks = _watermarks({r["check_name"]: r for r in validated([])})
    since = f"incremental since version {marks[0]['dataset_version']}"
    _sales(store, [("T5", "P1", "SALE", 1)])
    assert modes(marks) == {since}
    monkeypatch.setattr(quality, "_RESULTS", {})  # the default leaves tables this small to a full validation
    assert {r["validation_mode"] for r in quality.validate_table(store, "stg_transactions", suite, marks)} == {"full"}
    # another suite than the watermark's
    assert modes(marks, ExpectationSuiteConfig.model_validate({"checks": suite.model_dump()["checks"][:2]})) == {"full"}
    # a row count the validated rows cannot meet (the table is over the maximum): checked on every row
    over = ExpectationSuiteConfig.model_validate({"checks": [{"check": "few", "expect": "row_count", "max": 2}]})
    (few,) = validated([{**w, "suite_fingerprint": quality.suite_fingerprint("stg_transactions", over)}
                        for w in marks], over)
    assert (few["validation_mode"], few["check_status"], few["observed_value"]) == ("full", "failed", "4")
    # a referenced table changed in place but still holding every key (an SCD2 dimension closing a version)
    store.lake.overwrite("dim_product", store.lake.read("dim_product").where("product_id = 'P2'")
                         .withColumn("is_current", F.lit(False)), predicate="product_id = 'P2'")
    (_, product_version) = json.loads(marks[0]["ref_versions"])["dim_product"]
    assert store.lake.appended_since("dim_product", product_version) is None  # not appends only: keys looked up
    assert modes(marks) == {since}
    # a referenced table that lost rows (P3, which no sale names): earlier rows might point at nothing now
    store.lake.delete("dim_product", "product_id = 'P3'")
    assert modes(marks) == {"full"}
    marks = _watermarks({r["check_name"]: r for r in validated([])})
    assert marks  # clean again, at the new versions
    # a row of the validated version deleted
    store.lake.delete("stg_transactions", "txn_id = 'T5'")
    assert modes(marks) == {"full"}
    # another table at the same path (created again): its versions say nothing of the validated one
    marks = _watermarks({r["check_name"]: r for r in validated([])})
    _sales(store, [("T6", "P2", "SALE", 1)])
    assert modes(marks) == {f"incremental since version {marks[0]['dataset_version']}"}
    assert modes([{**w, "table_id": "another-table"} for w in marks]) == {"full"}


def test_a_version_that_added_no_rows_reports_the_whole_tables_zero_counts(store, monkeypatch):
    from deltalake import DeltaTable

    _products(store, ["P1", "P2"])
    _sales(store, [("T1", "P1", "SALE", 1), ("T2", "P1", "SALE", 2), ("T3", "P2", "SALE", 1),
                   ("T4", "P2", "SALE", 5)])
    marks = _watermarks(_validate(store, [], monkeypatch))
    # A commit that changes only a table property: a new version, no file added or removed.
    DeltaTable(store.lake.path("stg_transactions")).alter.set_table_properties(
        {"cpbi.note": "upkeep"}, raise_if_not_exists=False)
    incremental = _validate(store, marks, monkeypatch)
    assert {r["validation_mode"] for r in incremental.values()} == {"incremental since version 1"}
    assert {r["validated_rows"] for r in incremental.values()} == {0}
    whole = _validate(store, [], monkeypatch)
    assert _outcome(incremental) == _outcome(whole)
    # GE reports no count for a column check over no rows; none of the table's rows is unexpected.
    assert all(incremental[c]["unexpected_count"] == 0
               for c in ("id_present", "sales_only", "quantity_ok", "known_product"))
