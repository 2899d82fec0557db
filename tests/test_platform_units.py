"""Platform sources A–D: the pure rules (positions, error codes, pricing, allocation, lineage, access,
config checks) and the two measuring parts on a real session (Spark's status store, Great Expectations).

The pipeline-level behaviour (a run fills A–D, rerun, fault, blocked promotion) is in
``tests/test_platform_pipeline.py``.
"""

from __future__ import annotations

import textwrap
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from cpbi_spark.config import load_config
from cpbi_spark.config.platform import ChargebackRule, ErrorCodeConfig, PlatformConfig
from cpbi_spark.errors import ConfigError, IngestError, PipelineError, QualityError, TableNotFound

REPO_CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.fixture(scope="module")
def config():
    return load_config(REPO_CONF, env="ci")


# ------------------------------------------------------------------------------------------------ conf
def test_repository_platform_conf_is_consistent(config):
    from cpbi_spark.platform.settings import check_platform, platform_source_of

    check_platform(config)
    sources = config.platform.sources
    assert sorted(sources) == ["A", "B", "C", "D"]
    assert all(len(spec.tables) == 20 for spec in sources.values())
    membership = platform_source_of(config)
    # every platform-layer table belongs to a source (conformed tables are one table in several sources),
    # except the pipeline's own state: the watermarks of what incremental gold consumed and of what data
    # quality validated clean and of what the platform scans found, not recorded sources
    assert [t for t, c in config.tables.items() if c.layer == "platform" and t not in membership] == [
        "ctl_stage_inputs", "ctl_dq_watermarks", "ctl_scan_memo"]
    assert (membership["dim_status"], membership["audit_recon"], membership["dim_region"]) == ("A,B", "C,D", "C,D")
    assert config.tables["dim_status"].layer == "silver"  # reused, not duplicated


def test_broken_platform_conf_reports_every_problem(tmp_path):
    overlay = tmp_path / "broken.yaml"
    overlay.write_text(textwrap.dedent("""
        expectations:
          stg_transactions:
            checks:
              - {check: a, expect: not_null, column: no_such_column}
              - {check: a, expect: between, column: quantity}
              - {check: b, expect: references, column: product_id, table: no_such_table, table_column: x}
              - {check: c, expect: row_count, sql: "SELECT count(*) FROM {nowhere}"}
        platform:
          chargeback:
            - {rule: only_half, stage: bronze, cost_center: data_platform, share: 0.5}
    """))
    from cpbi_spark.platform.settings import check_platform

    with pytest.raises(ConfigError) as exc:
        check_platform(load_config(REPO_CONF, env="ci", extra_files=[overlay]))
    text = str(exc.value)
    for needle in ("no_such_column", "used twice", "needs min and/or max", "unknown table 'no_such_table'",
                   "{nowhere}", "add up to 0.5"):
        assert needle in text, needle
    # and the run refuses to start with it
    from cpbi_spark.platform import default_observers

    with pytest.raises(ConfigError):
        default_observers(load_config(REPO_CONF, env="ci", extra_files=[overlay]))


def test_platform_switch(config):
    from cpbi_spark.platform import default_observers

    assert [type(o).__name__ for o in default_observers(config)] == ["PlatformObserver"]
    off = load_config(REPO_CONF, env="ci", overrides={"platform.enabled": False})
    assert default_observers(off) == []
    assert PlatformConfig().enabled is False  # a conf without the section records nothing


# ------------------------------------------------------------------------------------------------ A
def test_positions_of_rejected_records_in_a_csv_file():
    from cpbi_spark.platform.ingest_audit import locate_records
    from landing_fixture import TRANSACTIONS

    # line 12 is malformed (found by its text); T1 repeats on line 6 (2nd occurrence of key T1)
    wanted = [("m", None, "T10,B8,A1,C1,P1,S1,1,2.50", 1), ("dup", ("T1",), None, 2), ("t7", ("T7",), None, 1),
              ("missing", ("T404",), None, 1)]
    got = locate_records(TRANSACTIONS, "csv", ["txn_id"], wanted)
    assert got == {"m": (12, 11), "dup": (6, 5), "t7": (9, 8)}


def test_positions_in_jsonl_skip_blank_lines_and_find_bad_json():
    from cpbi_spark.platform.ingest_audit import locate_records

    text = '{"id": "a"}\n\n{"id": 7}\nnot json\n{"id": "a"}\n'
    got = locate_records(text, "jsonl", ["id"], [("x", ("a",), None, 2), ("y", ("7",), None, 1),
                                                  ("z", None, "not json", 1)])
    assert got == {"x": (5, 4), "y": (3, 2), "z": (4, 3)}


def test_positions_are_read_from_a_file_stream_with_crlf_bom_and_a_quoted_multiline_record(tmp_path):
    import io

    from pyarrow import fs as pafs

    from cpbi_spark.platform.ingest_audit import locate_records

    # header on line 1; records: A,x (line 2), B (lines 3-4, a quoted line break), A,y (5), broken (6), A,z (7)
    path = tmp_path / "t.csv"
    path.write_bytes("\ufeffid,note\r\nA,x\r\nB,\"two\r\nlines\"\r\nA,y\r\nbroken\r\nA,z\r\n".encode())
    wanted = [("a3", ("A",), None, 3), ("b", ("B",), None, 1), ("bad", None, "broken", 1),
              ("a9", ("A",), None, 9)]
    with pafs.LocalFileSystem().open_input_stream(str(path)) as fh, \
            io.TextIOWrapper(fh, encoding="utf-8", errors="replace", newline="") as lines:
        got = locate_records(lines, "csv", ["id"], wanted)
    assert got == {"a3": (7, 5), "b": (3, 2), "bad": (6, 4)}


def test_ledger_volumes_and_batch():
    from cpbi_spark.platform.ingest_audit import volume_rows

    at = datetime(2026, 1, 1)
    ledger = [
        {"source": "t", "status": "landed", "rows_landed": 10, "bytes": 100, "corrupt_rows": 1, "ingested_at": at},
        {"source": "t", "status": "rejected", "rows_landed": 0, "bytes": 50, "corrupt_rows": 0, "ingested_at": at},
        {"source": "c", "status": "duplicate_file", "rows_landed": 0, "bytes": 5, "corrupt_rows": 0, "ingested_at": at},
    ]
    volumes, batch = volume_rows(ledger, "b1")
    assert {(v["source"], v["files"], v["rows"], v["bytes"], v["rejected_files"]) for v in volumes} == {
        ("t", 1, 10, 100, 1), ("c", 0, 0, 0, 0)}
    assert batch[0]["files_landed"] == 1 and batch[0]["files_rejected"] == 1 and batch[0]["files_duplicate"] == 1


# ------------------------------------------------------------------------------------------------ B
def test_error_codes_first_matching_rule_wins(config):
    from cpbi_spark.platform.ops_logs import classify_error

    rules = config.platform.error_codes
    assert classify_error(QualityError("x"), rules).code == "DQ-BLOCKING"
    assert classify_error(IngestError("2 landing file(s) rejected"), rules).code == "ING-FILE-REJECTED"
    assert classify_error(PipelineError("reconciliation failed (1 check(s))"), rules).code == "REC-UNBALANCED"
    assert classify_error(PipelineError("gold needs silver table; run the silver stage first"),
                          rules).code == "PIPE-UPSTREAM-MISSING"
    assert classify_error(TableNotFound("t"), rules).code == "TBL-NOT-FOUND"
    assert classify_error(OSError("disk full"), rules).code == "SYS-IO"
    assert classify_error(ZeroDivisionError("bug"), rules).code == "UNCLASSIFIED"
    assert classify_error(ValueError("x"), [ErrorCodeConfig(code="V", exception="ValueError", match="^y")]).code \
        == "UNCLASSIFIED"


def test_incident_metrics_and_alerts():
    from cpbi_spark.platform.ops_logs import incident_metrics
    from cpbi_spark.platform.rollups import alert_rows

    t0 = datetime(2026, 3, 1, 10)
    incidents = [
        {"incident_id": "r1:silver:1", "run_id": "r1", "stage": "silver", "error_code": "SYS-IO", "severity": "high",
         "status": "resolved", "opened_ts": t0, "resolved_ts": datetime(2026, 3, 1, 10, 30), "message": "m"},
        {"incident_id": "r2:silver:1", "run_id": "r2", "stage": "silver", "error_code": "SYS-IO", "severity": "high",
         "status": "open", "opened_ts": datetime(2026, 3, 1, 12), "resolved_ts": None, "message": "m"},
    ]
    (row,) = incident_metrics(incidents)
    assert (row["opened"], row["resolved"], row["still_open"], row["mean_seconds_to_resolve"]) == (2, 1, 1, 1800.0)
    alerts = alert_rows(incidents, [], [{"run_id": "r3", "stage": "gold", "attempt": 1, "seconds": 99.0,
                                         "max_seconds": 10.0, "breached": True}], [], [], t0)
    assert sorted(a["kind"] for a in alerts) == ["incident", "sla"]


# ------------------------------------------------------------------------------------------------ C
def test_lineage_edges_skip_self_and_bronze_to_bronze():
    from cpbi_spark.platform.governance import lineage_edges

    layers = {"raw_transactions": "bronze", "raw_returns": "bronze", "audit_ingest": "platform"}
    edges = lineage_edges(["raw_transactions", "raw_returns"], ["raw_transactions", "audit_ingest"], layers,
                          {"transactions": "raw_transactions"})
    assert edges == {("raw_transactions", "table", "audit_ingest"), ("raw_returns", "table", "audit_ingest"),
                     ("landing:transactions", "landing", "raw_transactions")}


def test_access_decisions(config):
    from cpbi_spark.platform.access import decide

    assert decide(config, "analyst", "raw_customers", ["email"]).decision == "denied"
    assert "no grant on layer bronze" in decide(config, "analyst", "raw_customers", ["email"]).reason
    masked = decide(config, "engineer", "dim_customer", list(config.table("dim_customer").columns))
    assert masked.decision == "masked"
    assert set(masked.masked_columns) == {"first_name", "last_name", "email", "phone", "street_address"}
    assert decide(config, "auditor", "dim_customer", ["email"]).decision == "granted"
    assert decide(config, "finance", "fact_cost_usage", []).decision == "granted"  # a table grant
    assert decide(config, "finance", "fact_logs", []).decision == "denied"
    assert decide(config, "nobody", "fact_logs", []).decision == "denied"


def test_catalog_covers_every_table(config):
    from cpbi_spark.platform.governance import column_rows, dataset_rows
    from cpbi_spark.platform.settings import platform_source_of

    datasets = {r["dataset_id"]: r for r in dataset_rows(config, platform_source_of(config))}
    assert set(datasets) == set(config.tables)
    assert datasets["raw_customers"]["classification"] == "restricted"
    assert datasets["dim_customer"]["classification"] == "confidential" and datasets["dim_customer"]["has_pii"]
    assert datasets["fact_logs"]["platform_source"] == "B"
    columns = column_rows(config)
    assert sum(len(c.columns) for c in config.tables.values()) == len(columns)


def test_trust_follows_the_last_validation():
    from cpbi_spark.platform.governance import trust_rows

    def r(run, status, severity="blocking", when=1):
        return {"dataset_id": "t", "run_id": run, "stage": "silver", "checked_ts": datetime(2026, 1, when),
                "check_status": status, "severity": severity, "dataset_version": when}

    rows = trust_rows([r("a", "failed", when=1), r("b", "passed", when=2), r("b", "failed", "warning", when=2)])
    assert rows == [{"dataset_id": "t", "last_run_id": "b", "dataset_version": 2,
                     "last_checked_ts": datetime(2026, 1, 2), "checks": 2, "passed": 1, "failed_blocking": 0,
                     "failed_warning": 1, "pass_rate": 0.5, "trusted": True}]


# ------------------------------------------------------------------------------------------------ D
def test_pricing_and_exact_allocation(config):
    from cpbi_spark.platform.cost import allocate, cost_rows, rate_rows

    plat = config.platform
    rates = {r["meter"]: r for r in rate_rows(plat)}
    assert rates["core_hours"]["unit_price"] == Decimal("0.04320000")  # 0.048 less 10 %
    usage = {"wall_seconds": 1800.0, "cores": 2, "executor_cpu_seconds": 36.0, "bytes_read": 2 * 10**9,
             "bytes_written": 10**9, "shuffle_read_bytes": 0, "shuffle_write_bytes": 5 * 10**8}
    rows = {r["meter"]: r for r in cost_rows({"run_id": "r"}, usage, plat, date(2026, 1, 1))}
    assert rows["core_hours"]["cost"] == Decimal("0.04320000")  # 1 core-hour
    assert rows["cpu_hours"]["cost"] == Decimal("0.00020000")  # 0.01 cpu-hour x 0.02
    assert rows["gb_read"]["cost"] == Decimal("0.00800000") and rows["gb_written"]["cost"] == Decimal("0.01000000")
    assert rows["gb_shuffled"]["cost"] == Decimal("0.00100000")
    total = sum(r["cost"] for r in rows.values())
    silver = allocate({"run_id": "r"}, "silver", total, plat.chargeback, date(2026, 1, 1), "USD")
    assert [a["cost_center"] for a in silver] == ["data_platform", "analytics"]
    assert sum(a["allocated_cost"] for a in silver) == total
    odd = allocate({}, "x", Decimal("0.00000001"), [ChargebackRule(rule="a", stage="*", cost_center="a", share=0.5),
                                                    ChargebackRule(rule="b", stage="*", cost_center="b", share=0.5)],
                   date(2026, 1, 1), "USD")
    assert sum(a["allocated_cost"] for a in odd) == Decimal("0.00000001")
    assert [a["cost_center"] for a in allocate({}, "rfm", total, plat.chargeback, date(2026, 1, 1), "USD")] == \
        ["analytics"]


def test_budget_forecast_invoice_and_anomalies(config):
    from cpbi_spark.platform.cost import anomaly_rows, budget_rows

    plat = config.platform
    allocations = [{"usage_date": date(2026, 2, 10), "cost_center": "finance", "allocated_cost": Decimal("9")},
                   {"usage_date": date(2026, 3, 1), "cost_center": "analytics", "allocated_cost": Decimal("1")}]
    budgets, forecasts, invoices = budget_rows(allocations, plat, today=date(2026, 3, 10))
    status = {(b["month"], b["cost_center"]): b["status"] for b in budgets}
    assert status == {(date(2026, 2, 1), "finance"): "warning", (date(2026, 3, 1), "analytics"): "ok"}
    march = next(f for f in forecasts if f["cost_center"] == "analytics")
    assert march["days_elapsed"] == 10 and march["forecast"] == Decimal("3.10000000")
    assert {i["invoice_id"]: i["status"] for i in invoices} == {"INV-202602-finance": "final",
                                                                "INV-202603-analytics": "draft"}
    costs = [{"run_id": f"r{i}", "stage": "gold", "attempt": 1, "started_ts": datetime(2026, 1, i + 1),
              "cost": Decimal(c)} for i, c in enumerate(["1", "1", "5"])]
    assert [a["is_anomaly"] for a in anomaly_rows(costs, 3.0)] == [False, True]


def test_spark_meter_reads_the_status_store_without_the_ui(spark, tmp_path):
    from cpbi_spark.platform.cost import SparkMeter

    assert spark.sparkContext.getConf().get("spark.ui.enabled") == "false"
    meter = SparkMeter(spark)
    mark = meter.mark()
    spark.range(200_000).selectExpr("id", "id % 7 AS k").write.parquet(str(tmp_path / "out"))
    used = meter.since(mark)
    written = sum(f.stat().st_size for f in (tmp_path / "out").glob("*.parquet"))
    assert used["spark_stages"] >= 1 and used["tasks"] >= 1
    assert used["bytes_written"] == written  # parquet bytes, as the executors reported them
    assert used["executor_cpu_seconds"] > 0
    assert meter.since(meter.mark())["spark_stages"] == 0


# ------------------------------------------------------------------------------------------------ GE
def test_ge_context_built_in_the_background_is_built_once_and_used(monkeypatch, spark):
    from cpbi_spark.platform import quality

    monkeypatch.setattr(quality, "_GX", {})  # as in a new process (the earlier one is restored after)
    builds = []
    real_build = quality._build_context
    monkeypatch.setattr(quality, "_build_context", lambda: (builds.append(1), real_build()))
    thread = quality.warm_up()
    assert thread is not None
    gx = quality._context()  # the first validation: waits for the background build, or builds first
    thread.join()
    assert len(builds) == 1 and gx["context"] is quality._context()["context"]
    assert quality.warm_up() is None  # built: nothing more to start


@pytest.mark.parametrize("engine", ["spark", "pandas"])
def test_suite_is_validated_as_a_whole_with_great_expectations(spark, tmp_path, engine):
    from cpbi_spark.config.platform import ExpectationSuiteConfig
    from cpbi_spark.platform.quality import validate_table
    from cpbi_spark.platform.store import PlatformStore
    from cpbi_spark.runtime import RunContext

    ctx = RunContext.create(env="ci", spark=spark, overrides={
        "storage.root": str(tmp_path / "lake"), "storage.landing": str(tmp_path / "landing"),
        "storage.outputs": str(tmp_path / "out"), "platform.enabled": False})
    store = PlatformStore(ctx)
    rows = [{"product_id": p, "product_name": "n", "brand": "b", "category": "c", "department": "d",
             "unit_cost": 1, "list_price": price, "product_sk": sk, "valid_from": datetime(2024, 1, 1),
             "valid_to": None, "is_current": True, "row_hash": "h"}
            for p, price, sk in [("P1", 2, "s1"), ("P2", -1, "s2"), ("P3", 3, "s2")]]
    store.lake.append("dim_product", store.frame("dim_product", rows))
    store.lake.append("stg_transactions", store.frame("stg_transactions", [
        {"txn_id": "T1", "product_id": "P1", "txn_type": "SALE", "quantity": 1},
        {"txn_id": "T2", "product_id": "P9", "txn_type": "SALE", "quantity": 1},
        {"txn_id": "T3", "product_id": "P1", "txn_type": "SALE", "quantity": None}]))
    suite = ExpectationSuiteConfig.model_validate({"checks": [
        {"check": "sk_unique", "expect": "unique", "columns": ["product_sk"]},
        {"check": "price_ok", "expect": "between", "column": "list_price", "min": 0, "severity": "warning"},
        {"check": "ids_present", "expect": "not_null", "column": "product_id"},
        {"check": "known_dept", "expect": "in_set", "column": "department", "values": ["d"]},
        {"check": "rows", "expect": "row_count", "sql": "SELECT count(*) FROM {stg_transactions}"},
        {"check": "pair_unique", "expect": "unique", "columns": ["product_id", "product_sk"]},
    ]})
    local_max = 0 if engine == "spark" else 10
    results = {r["check_name"]: r for r in validate_table(store, "dim_product", suite, local_max_rows=local_max)}
    assert {r["validation_engine"] for r in results.values()} == {engine}
    assert {k: r["check_status"] for k, r in results.items()} == {
        "sk_unique": "failed", "price_ok": "failed", "ids_present": "passed", "known_dept": "passed",
        "rows": "passed", "pair_unique": "passed"}
    assert results["sk_unique"]["unexpected_count"] == 2 and results["price_ok"]["unexpected_count"] == 1
    assert results["sk_unique"]["sample"] == ["s2", "s2"] and results["price_ok"]["sample"] == [-1]
    assert results["rows"]["observed_value"] == "3"
    refs = {"checks": [{"check": "known_product", "expect": "references", "column": "product_id",
                        "table": "dim_product", "table_column": "product_id"}]}
    (ref,) = validate_table(store, "stg_transactions", ExpectationSuiteConfig.model_validate(refs),
                            local_max_rows=local_max)
    assert ref["check_status"] == "failed" and ref["unexpected_count"] == 1  # P9 is not a product
    assert ref["validation_engine"] == "spark"  # an SQL anti-join: Spark whatever the size
    # A missing number is a null sample value on both engines (pandas holds it as NaN).
    (qty,) = validate_table(store, "stg_transactions", ExpectationSuiteConfig.model_validate(
        {"checks": [{"check": "qty", "expect": "not_null", "column": "quantity"}]}), local_max_rows=local_max)
    assert (qty["validation_engine"], qty["unexpected_count"], qty["sample"]) == (engine, 1, [None])
    # A suite that reads no column (a row count alone) still counts every row.
    (count,) = validate_table(store, "dim_product", ExpectationSuiteConfig.model_validate(
        {"checks": [{"check": "n", "expect": "row_count", "min": 3, "max": 3}]}), local_max_rows=local_max)
    assert count["check_status"] == "passed" and count["observed_value"] == "3"
    # More rows than the bound: Spark.
    (big,) = validate_table(store, "dim_product", ExpectationSuiteConfig.model_validate(
        {"checks": [{"check": "n2", "expect": "row_count", "min": 1}]}), local_max_rows=2)
    assert big["validation_engine"] == "spark" and big["observed_value"] == "3"


def test_pii_policies_count_the_values_not_hashed_or_masked_per_column(spark, tmp_path):
    from cpbi_spark.platform.governance import audit_policy_rows
    from cpbi_spark.platform.scan_memo import ScanMemo
    from cpbi_spark.platform.store import PlatformStore
    from cpbi_spark.runtime import RunContext

    ctx = RunContext.create(env="ci", spark=spark, overrides={
        "storage.root": str(tmp_path / "lake"), "storage.landing": str(tmp_path / "landing"),
        "storage.outputs": str(tmp_path / "out"), "platform.enabled": False})
    store = PlatformStore(ctx)
    hashed = "sha256:" + "a" * 64
    # Planted: last_name 2 of 3 in clear, email 1 of 2 (one NULL), phone 1 of 3 not masked, first_name all masked.
    rows = [{"customer_sk": f"s{i}", "customer_id": f"C{i}", "first_name": "J***", "last_name": last,
             "email": email, "phone": phone, "street_address": hashed, "valid_from": datetime(2024, 1, 1)}
            for i, (last, email, phone) in enumerate([("Smith", hashed, "5***"), ("Jones", None, "555-0101"),
                                                      (hashed, "a@b.example", "***")])]
    store.lake.append("dim_customer", store.frame("dim_customer", rows))
    got = {r["target"]: (r["status"], r["observed"])
           for r in audit_policy_rows(ctx, store, datetime(2026, 1, 1), ScanMemo(store))
           if r["kind"] == "pii" and r["target"].startswith("dim_customer.")}
    assert got == {
        "dim_customer.first_name": ("compliant", "0 of 3 values not masked"),
        "dim_customer.last_name": ("violation", "2 of 3 values not hashed"),
        "dim_customer.email": ("violation", "1 of 2 values not hashed"),
        "dim_customer.phone": ("violation", "1 of 3 values not masked"),
        "dim_customer.street_address": ("compliant", "0 of 3 values not hashed"),
    }


def _memo_world(spark, tmp_path):
    from cpbi_spark.platform.store import PlatformStore
    from cpbi_spark.runtime import RunContext

    ctx = RunContext.create(env="ci", spark=spark, overrides={
        "storage.root": str(tmp_path / "lake"), "storage.landing": str(tmp_path / "landing"),
        "storage.outputs": str(tmp_path / "out"), "platform.enabled": False})
    return ctx, PlatformStore(ctx)


def _customers(store, rows: list[tuple[str, str]]) -> None:
    """Append ``(customer_id, last_name)`` rows to dim_customer (other PII columns hashed)."""
    hashed = "sha256:" + "b" * 64
    store.lake.append("dim_customer", store.frame("dim_customer", [
        {"customer_sk": f"s{cid}", "customer_id": cid, "first_name": "J***", "last_name": last, "email": hashed,
         "phone": "5***", "street_address": hashed, "valid_from": datetime(2024, 1, 1)} for cid, last in rows]))


def _last_name_policy(ctx, store, memo) -> str:
    from cpbi_spark.platform.governance import audit_policy_rows

    (found,) = [r["observed"] for r in audit_policy_rows(ctx, store, datetime(2026, 1, 1), memo)
                if r["policy_id"] == "pii:dim_customer.last_name"]
    return found


def test_a_scan_is_reused_while_its_table_is_unchanged_and_redone_when_it_changes_or_is_recreated(spark, tmp_path):
    import shutil

    from cpbi_spark.platform.scan_memo import ScanMemo

    ctx, store = _memo_world(spark, tmp_path)
    hashed = "sha256:" + "c" * 64
    _customers(store, [("C1", hashed), ("C2", "Smith")])
    memo = ScanMemo(store)
    assert _last_name_policy(ctx, store, memo) == "1 of 2 values not hashed"
    assert (memo.computed, memo.reused) == (1, 0)
    memo.save()

    # The next refresh (a new memo: what the table stored) reads nothing: dim_customer is at the same state.
    again = ScanMemo(store)
    assert _last_name_policy(ctx, store, again) == "1 of 2 values not hashed"
    assert (again.computed, again.reused) == (0, 1)

    _customers(store, [("C3", "Jones")])  # a new version: counted again, with the new row
    changed = ScanMemo(store)
    assert _last_name_policy(ctx, store, changed) == "2 of 3 values not hashed"
    assert (changed.computed, changed.reused) == (1, 0)  # not saved: the memo still holds the result at version 1

    # Dropped and written again: the same version number (1) as the first state, another table identity.
    shutil.rmtree(store.lake.path("dim_customer"))
    _customers(store, [("C4", hashed)])
    assert store.lake.version("dim_customer") == 1
    recreated = ScanMemo(store)
    assert _last_name_policy(ctx, store, recreated) == "0 of 1 values not hashed"
    assert recreated.reused == 0


def test_the_pii_scan_rescans_only_the_columns_whose_inputs_changed(spark, tmp_path):
    from cpbi_spark.platform.governance import pii_scan_rows
    from cpbi_spark.platform.scan_memo import MEMO, ScanMemo

    ctx, store = _memo_world(spark, tmp_path)
    # Landed (bronze) values of customers; silver holds one of them in clear in last_name.
    bronze = ctx.config.sources["customers"].bronze_table
    landed = [{"customer_id": "C1", "first_name": "Annabel", "last_name": "Smithers", "email": "ann@shop.example",
               "phone": "555-0101", "street_address": "9 Pine St"}]
    mapping = ctx.config.sources["customers"].columns
    store.lake.append(bronze, spark.createDataFrame([{mapping[k]: v for k, v in r.items() if k in mapping}
                                                     for r in landed]))
    hashed = "sha256:" + "d" * 64
    _customers(store, [("C1", "Smithers"), ("C2", hashed)])
    now = datetime(2026, 1, 1)

    def scan() -> tuple[dict, ScanMemo]:
        memo = ScanMemo(store)
        found = {r["column_name"]: (r["rows_scanned"], r["clear_values_found"])
                 for r in pii_scan_rows(ctx, store, now, memo) if r["dataset_id"] == "dim_customer"}
        memo.save()
        return found, memo

    first, memo = scan()
    assert first["last_name"] == (2, 1) and first["email"] == (2, 0)
    assert memo.reused == 0 and memo.computed == len(first)
    stored = {r["subject"] for r in store.rows(MEMO) if r["scan"] == "pii_scan"}
    assert {"dim_customer.last_name", "dim_customer.email"} <= stored

    second, memo = scan()
    assert second == first and memo.computed == 0 and memo.reused == len(first)

    # A clear email lands in silver: every dim_customer column is scanned again (the table changed).
    store.lake.append("dim_customer", store.frame("dim_customer", [
        {"customer_sk": "sC4", "customer_id": "C4", "first_name": "J***", "last_name": hashed,
         "email": "ann@shop.example", "phone": "5***", "street_address": hashed, "valid_from": datetime(2024, 1, 1)}]))
    third, memo = scan()
    assert third["last_name"] == (3, 1) and third["email"] == (3, 1)
    assert memo.computed == len(third)
