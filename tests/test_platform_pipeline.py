"""Platform sources A–D filled by real runs of the pipeline on the tiny hand-written landing set.

One module-scoped world, six runs in order (every expected value below is written by hand from
``tests/landing_fixture.py`` or from what each run does):

1. clean run of batch 1;  2. rerun on the same files (changes no data);
3. batch 2 lands with schema drift: a returns file with a new field (policy evolve) and a transactions
   file with a new column (policy reject): bronze lands the rest and fails with IngestError;
4. the rejected file is removed; silver crashes mid-stage while committing ``stg_returns`` (the engine's
   commit raises after the data files were written);
5. rerun with a blocking expectation that the new return breaks: silver completes, its gate blocks gold;
6. rerun with the normal conf: silver succeeds (incidents resolved), gold runs and reconciles.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from cpbi_spark.errors import AccessDenied, IngestError, QualityError
from cpbi_spark.pipeline import run_stages
from cpbi_spark.runtime import RunContext
from landing_fixture import CUSTOMERS_1, CUSTOMERS_2, EXPECTED_TXN, write_landing
from parquet_scan import string_values

pytestmark = pytest.mark.slow
STAGES = ["bronze", "silver", "gold"]
NEW_RETURN = {"return_id": "R3", "original_txn_id": "T1", "customer_id": "C1", "product_id": "P1", "store_id": "S1",
              "quantity": 1, "amount": 2.5, "currency": "USD", "returned_ts": "2024-01-20T10:00:00Z",
              "reason": "late", "gift_wrapped": "yes"}  # gift_wrapped: a field the mapping does not know
DRIFTED_TXN = ("txn_id,basket_id,account_id,customer_id,product_id,store_id,quantity,unit_price,amount,currency,"
               "txn_type,payment_method,posted_ts,loyalty_points\n"
               "T20,B20,A1,C1,P1,S1,1,2.50,2.50,USD,SALE,card,2024-02-21T10:00:00+00:00,25\n")
BLOCKING = """
expectations:
  stg_returns:
    checks:
      - {check: return_reason_known, expect: in_set, column: reason, values: [damaged]}
"""


def _context(spark, root: Path, **extra) -> RunContext:
    # Tables this small are validated whole by default; 0 makes the scenario validate appended rows alone.
    return RunContext.create(env="ci", spark=spark, overrides={
        "storage.root": str(root / "lake"), "storage.landing": str(root / "landing"),
        "storage.outputs": str(root / "outputs"), "platform.dq_incremental_min_rows": "0"}, **extra)


def _run(ctx: RunContext, stages=STAGES) -> BaseException | None:
    try:
        run_stages(ctx, stages)
    except Exception as exc:  # the failures are part of the scenario; tests assert on them
        return exc
    return None


@pytest.fixture(scope="module")
def world(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("platform")
    landing = write_landing(root / "landing")
    state: dict = {"root": root}
    ctx1 = _context(spark, root)
    state["err1"] = _run(ctx1)
    lake = ctx1.lake
    platform_tables = [n for n, c in ctx1.config.tables.items() if "platform" in c.tags]
    state["after1"] = {n: lake.read(n).count() for n in platform_tables if lake.exists(n)}
    state["versions1"] = {n: lake.version(n) for n in platform_tables if lake.exists(n)}
    ctx2 = _context(spark, root)
    state["err2"] = _run(ctx2)
    state["rollup_versions2"] = {n: lake.version(n) for n in platform_tables if lake.exists(n)}
    ctx2.observers[0].refresh(ctx2)  # a repeated refresh of the same run must change nothing
    state["rollup_versions2b"] = {n: lake.version(n) for n in platform_tables if lake.exists(n)}

    write_landing(landing, batch=2)
    (landing / "returns" / "returns_2024-02.jsonl").write_text(json.dumps(NEW_RETURN) + "\n")
    drifted = landing / "transactions" / "transactions_2024-02.csv"
    drifted.write_text(DRIFTED_TXN)
    ctx3 = _context(spark, root)
    state["err3"] = _run(ctx3)

    drifted.unlink()  # the operator removes the file the policy rejected
    ctx4 = _context(spark, root)
    engine_cls = type(ctx4.lake.engine)
    state["stg_returns_before4"] = lake.version("stg_returns")
    state["stg_returns_rows_before4"] = lake.read("stg_returns").count()
    real_commit = engine_cls._commit

    def crashing_commit(self, dt, actions, *args, **kwargs):
        if "stg_returns" in dt.table_uri:
            raise OSError("No space left on device (while committing stg_returns)")
        return real_commit(self, dt, actions, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        assert engine_cls.__name__ == "DeltaRsEngine", "the fault is injected in the delta-rs commit"
        mp.setattr(engine_cls, "_commit", crashing_commit)
        state["err4"] = _run(ctx4)
    state["stg_returns_after4"] = lake.version("stg_returns")
    state["stg_returns_files_after4"] = sorted(p.name for p in Path(lake.path("stg_returns")).rglob("*.parquet"))

    overlay = root / "blocking.yaml"
    overlay.write_text(BLOCKING)
    ctx5 = _context(spark, root, extra_files=[overlay])
    state["err5"] = _run(ctx5)
    ctx6 = _context(spark, root)
    state["err6"] = _run(ctx6)
    state.update(ctx=[None, ctx1, ctx2, ctx3, ctx4, ctx5, ctx6], lake=lake, platform_tables=platform_tables)
    return state


def rows(world, table: str, where: str | None = None) -> list[dict]:
    df = world["lake"].read(table)
    return [r.asDict() for r in (df.where(where) if where else df).collect()]


def run_id(world, n: int) -> str:
    return world["ctx"][n].run_id


# ------------------------------------------------------------------------------------------ the scenario
def test_scenario_outcomes(world):
    assert world["err1"] is None and world["err2"] is None and world["err6"] is None
    assert isinstance(world["err3"], IngestError)
    assert "loyalty_points" in str(world["err3"]) and "on_new_columns: reject" in str(world["err3"])
    assert isinstance(world["err4"], OSError)
    assert isinstance(world["err5"], QualityError)
    assert "stg_returns.return_reason_known" in str(world["err5"]) and "promotion" in str(world["err5"])
    status = {(r["run_id"], r["stage"]): r["status"] for r in rows(world, "fact_job_runs")}
    want = {1: {"bronze": "succeeded", "silver": "succeeded", "gold": "succeeded"},
            2: {"bronze": "succeeded", "silver": "succeeded", "gold": "succeeded"},
            3: {"bronze": "failed"},
            4: {"bronze": "succeeded", "silver": "failed"},
            5: {"bronze": "succeeded", "silver": "blocked"},
            6: {"bronze": "succeeded", "silver": "succeeded", "gold": "succeeded"}}
    got = {n: {s: st for (r, s), st in status.items() if r == run_id(world, n)} for n in want}
    assert got == want


def test_every_table_of_the_four_sources_exists_after_the_first_run(world):
    ctx, lake = world["ctx"][1], world["lake"]
    named = {t for spec in ctx.config.platform.sources.values() for t in spec.tables}
    assert len(named) == 77 and all(len(spec.tables) == 20 for spec in ctx.config.platform.sources.values())
    assert set(world["after1"]) == set(world["platform_tables"])  # the 70 tables of tables_platform.yaml
    assert all(lake.exists(t) for t in named)
    empty_after_a_clean_run = {"stage_retries", "stage_incidents", "stage_dq_failures", "stage_trimmed_logs",
                               "audit_schema_drift", "audit_access", "stage_cost_anomalies", "fact_incident_metrics",
                               "stage_alerts"}
    assert {t for t, n in world["after1"].items() if n == 0} <= empty_after_a_clean_run


# ------------------------------------------------------------------------------------------ A: landing
def test_dirty_file_yields_parsing_errors_with_reason_and_position(world):
    errors = rows(world, "ref_parsing_errors", "source = 'transactions' AND stage = 'silver'")
    assert Counter(e["reason"] for e in errors) == Counter(EXPECTED_TXN["quarantined"])
    assert len(errors) == sum(EXPECTED_TXN["quarantined"].values())
    # line numbers by hand (header = line 1): T5 bad quantity, T6 no customer, T7 XXX, T8 2031, T9 -3, T10 short
    assert {e["reason"]: e["line_number"] for e in errors} == {
        "bad_type": 7, "missing_key": 8, "unknown_currency": 9, "future_date": 10, "negative_quantity": 11,
        "malformed_line": 12}
    assert all(e["file_name"] == "transactions_2024-01.csv" and e["run_id"] == run_id(world, 1) for e in errors)
    (orphan,) = rows(world, "ref_parsing_errors", "source = 'returns'")
    assert (orphan["reason"], orphan["line_number"], orphan["record_key"]) == ("orphan_return", 2, "R2")
    # every quarantined record is one parsing error, and nothing else is
    assert len(rows(world, "ref_parsing_errors", "stage = 'silver'")) == world["lake"].read("stage_quarantine").count()


def test_landed_records_and_counts(world):
    lake, run1 = world["lake"], run_id(world, 1)
    events = lake.read("fact_raw_events")
    landed = sum(r["rows_landed"] for r in rows(world, "audit_ingest", "status = 'landed'"))
    assert events.count() == landed == 26 + 3 + 1  # batch 1 (26 records), batch 2 customers (3) and returns (1)
    assert events.where(F.col("batch_id") == run1).count() == 26
    assert events.where("is_corrupt").count() == 1  # T10
    t1 = events.where("record_key = 'T1'").select("event_ts", "payload_sha256").distinct().collect()
    assert len(t1) == 1 and str(t1[0]["event_ts"]) == "2024-01-05 10:00:00"
    assert sum(r["records"] for r in rows(world, "fact_event_counts")) == landed
    dups = {(r["source"], r["record_key"]): r["kind"] for r in rows(world, "stage_duplicate_keys")}
    assert dups == {("transactions", "T1"): "exact_repeat"}
    arrivals = Counter((r["run_id"], r["action"]) for r in rows(world, "fact_file_arrivals"))
    assert arrivals[(run1, "landed")] == 8 and arrivals[(run_id(world, 2), "already_landed")] == 8
    assert arrivals[(run_id(world, 3), "rejected")] == 1 and arrivals[(run_id(world, 3), "landed")] == 2
    assert {r["source"] for r in rows(world, "dim_source_system")} == set(world["ctx"][1].config.sources)
    batches = {r["batch_id"]: r for r in rows(world, "dim_batch")}
    assert batches[run1]["rows_landed"] == 26 and batches[run_id(world, 3)]["files_rejected"] == 1
    assert len(rows(world, "fact_ingest_latency")) == 10  # every landed file once


def test_schema_drift_recorded_and_handled_by_policy(world):
    drift = {(r["source"], r["column_name"]): (r["policy"], r["action"]) for r in rows(world, "audit_schema_drift")}
    assert drift == {("returns", "gift_wrapped"): ("evolve", "kept_in_extra_columns"),
                     ("transactions", "loyalty_points"): ("reject", "file_rejected")}
    versions = {(r["source"], r["version"]): r["status"] for r in rows(world, "dim_schema_version")}
    assert versions[("returns", 1)] == "baseline" and versions[("returns", 2)] == "evolved"
    assert versions[("transactions", 1)] == "baseline" and versions[("transactions", 2)] == "rejected"
    (rejected,) = rows(world, "ref_parsing_errors", "reason = 'file_rejected'")
    assert rejected["file_name"] == "transactions_2024-02.csv" and "loyalty_points" in rejected["detail"]
    # evolve: the new field is kept with the record, not lost
    extra = world["lake"].read("raw_returns").where("return_id = 'R3'").first()["_extra_columns"]
    assert json.loads(extra) == {"gift_wrapped": "yes"}


# ------------------------------------------------------------------------------------------ B: ops
def test_structured_logs_land_in_fact_logs(world):
    root, run1 = world["root"], run_id(world, 1)
    log_file = root / "outputs" / "logs" / f"{run1}.jsonl"
    lines = [json.loads(x) for x in log_file.read_text().splitlines()]
    logs = rows(world, "fact_logs", f"instance = '{run1}'")
    assert len(logs) == len(lines) > 0
    assert {r["service"] for r in logs} == {"cpbi-bronze", "cpbi-silver", "cpbi-gold"}
    assert any("stage silver started" in r["message"] for r in logs)
    failed = rows(world, "fact_logs", f"instance = '{run_id(world, 4)}' AND level = 'ERROR'")
    assert any("No space left on device" in r["message"] for r in failed)


def test_failures_become_incidents_with_error_codes_and_are_resolved(world):
    incidents = {r["run_id"]: r for r in rows(world, "stage_incidents")}
    r3, r4, r5, r6 = (run_id(world, n) for n in (3, 4, 5, 6))
    assert set(incidents) == {r3, r4, r5}
    assert (incidents[r3]["stage"], incidents[r3]["error_code"]) == ("bronze", "ING-FILE-REJECTED")
    assert (incidents[r4]["stage"], incidents[r4]["error_code"]) == ("silver", "SYS-IO")
    assert (incidents[r5]["stage"], incidents[r5]["error_code"]) == ("silver", "DQ-BLOCKING")
    assert incidents[r3]["resolved_by_run_id"] == run_id(world, 4)  # bronze succeeded again in run 4
    assert incidents[r4]["resolved_by_run_id"] == r6 and incidents[r5]["resolved_by_run_id"] == r6
    assert all(i["status"] == "resolved" for i in incidents.values())
    codes = {r["error_code"] for r in rows(world, "ref_error_codes")}
    assert {i["error_code"] for i in incidents.values()} <= codes
    metrics = rows(world, "fact_incident_metrics")
    assert sum(m["opened"] for m in metrics) == 3 and sum(m["still_open"] for m in metrics) == 0
    retries = {(r["run_id"], r["stage"]): r for r in rows(world, "stage_retries")}
    assert set(retries) == {(run_id(world, 4), "bronze"), (r5, "silver"), (r6, "silver")}
    assert retries[(r6, "silver")]["retry_number"] == 2 and retries[(r6, "silver")]["outcome"] == "succeeded"
    assert retries[(r5, "silver")]["previous_error_code"] == "SYS-IO"


def test_fault_leaves_no_partial_version_and_the_rerun_reconciles(world):
    lake = world["lake"]
    assert world["stg_returns_after4"] == world["stg_returns_before4"]
    commits = rows(world, "fact_table_commits", f"run_id = '{run_id(world, 4)}'")
    assert "stg_returns" not in {c["table_name"] for c in commits}
    assert {"dim_customer", "dim_account"} <= {c["table_name"] for c in commits}  # committed before the crash
    # run 5 and 6 completed the stage: R3 is in silver and gold once, and everything reconciles
    assert lake.read("stg_returns").where("return_id = 'R3'").count() == 1
    assert lake.read("fact_returns").where("return_id = 'R3'").count() == 1
    recon = rows(world, "audit_recon")
    assert recon and all(r["status"] == "balanced" for r in recon), [r for r in recon if r["status"] != "balanced"]
    assert {"cost", "ingest", "transactions", "returns"} <= {r["domain"] for r in recon}


def test_rerun_does_not_duplicate_platform_rows(world):
    lake, ctx = world["lake"], world["ctx"][6]
    for name in world["platform_tables"]:
        if not lake.exists(name):
            continue
        keys = ctx.config.table(name).keys
        dupes = lake.read(name).groupBy(*keys).count().where("count > 1").limit(3).collect()
        assert dupes == [], f"{name}: duplicate keys {keys}: {dupes}"
    # the no-op rerun added its own run records, landed nothing and re-recorded nothing of run 1
    run2 = run_id(world, 2)
    assert lake.read("fact_raw_events").where(F.col("run_id") == run2).count() == 0
    assert lake.read("ref_parsing_errors").where(F.col("run_id") == run2).count() == 0
    assert lake.read("fact_job_runs").where(F.col("run_id") == run2).count() == 3
    assert lake.read("fact_logs").where(F.col("instance") == run_id(world, 1)).count() == \
        len((world["root"] / "outputs" / "logs" / f"{run_id(world, 1)}.jsonl").read_text().splitlines())
    # a repeated refresh of the same run writes no version anywhere
    assert world["rollup_versions2b"] == world["rollup_versions2"]


# ------------------------------------------------------------------------------------------ C: governance
def test_every_table_is_in_the_catalog(world):
    ctx = world["ctx"][6]
    datasets = {r["dataset_id"]: r for r in rows(world, "dim_dataset")}
    assert set(datasets) == set(ctx.config.tables)
    assert all(datasets[n]["layer"] == c.layer and datasets[n]["grain"] == c.grain
               for n, c in ctx.config.tables.items())
    assert datasets["fact_cost_usage"]["platform_source"] == "D"


def test_lineage_edges_match_the_stages_that_ran(world):
    edges = rows(world, "stage_lineage")
    by_run: dict[str, set] = {}
    for e in edges:
        by_run.setdefault(e["run_id"], set()).add((e["stage"], e["source_dataset"], e["target_dataset"]))
    run1 = by_run[run_id(world, 1)]
    assert {s for s, _, _ in run1} == {"bronze", "silver", "gold"}
    assert ("bronze", "landing:transactions", "raw_transactions") in run1
    assert ("silver", "raw_transactions", "stg_transactions") in run1
    assert ("gold", "stg_transactions", "fact_transactions") in run1
    assert not any(s == "bronze" and a.startswith("raw_") and b.startswith("raw_") for s, a, b in run1)
    assert run_id(world, 2) not in by_run  # the rerun read but wrote nothing: no edge
    assert {s for s, _, _ in by_run[run_id(world, 5)]} == {"silver"}  # blocked: gold never ran
    # every edge's stage committed its target in that run
    commits = {(c["run_id"], c["stage"], c["table_name"]) for c in rows(world, "fact_table_commits")}
    assert all((e["run_id"], e["stage"], e["target_dataset"]) in commits for e in edges)


def test_blocking_check_stops_promotion_and_is_recorded(world):
    r5 = run_id(world, 5)
    dq = {(r["dataset_id"], r["check_name"]): r for r in rows(world, "fact_data_quality", f"run_id = '{r5}'")}
    failed = dq[("stg_returns", "return_reason_known")]
    assert (failed["severity"], failed["check_status"], failed["stage"]) == ("blocking", "failed", "silver")
    assert failed["unexpected_count"] == 1  # R3, returned "late"; R1 was "damaged"
    assert not rows(world, "fact_job_runs", f"run_id = '{r5}' AND stage = 'gold'")
    (failure,) = rows(world, "stage_dq_failures", f"run_id = '{r5}'")
    assert failure["sample_values"] == "late"
    # the clean runs passed every blocking check, and the tables they checked are trusted now
    run1 = rows(world, "fact_data_quality", f"run_id = '{run_id(world, 1)}'")
    assert len(run1) >= 10
    assert all(r["check_status"] == "passed" for r in run1 if r["severity"] == "blocking")
    trust = {r["dataset_id"]: r for r in rows(world, "fact_dataset_trust")}
    assert trust["fact_transactions"]["trusted"] and trust["stg_returns"]["trusted"] is False
    alerts = {r["kind"] for r in rows(world, "stage_alerts")}
    assert "data_quality" in alerts


def test_suites_after_appends_validate_the_new_rows_with_the_whole_tables_results(world):
    lake = world["lake"]
    marks = sorted(rows(world, "ctl_dq_watermarks"), key=lambda m: (m["dataset_id"], m["dataset_version"]))
    run1 = [m for m in marks if m["run_id"] == run_id(world, 1)]
    assert {m["dataset_id"] for m in run1} >= {"raw_transactions", "stg_transactions", "fact_transactions"}
    assert {m["validation_mode"] for m in run1} == {"full"}  # nothing validated before
    incremental = [m for m in marks if m["validation_mode"] != "full"]
    # gold (incremental in ci) MERGEs batch 2's new lines into the facts: only they are validated
    assert {"fact_transactions", "fact_returns"} <= {m["dataset_id"] for m in incremental}
    for m in incremental:
        # it starts from the table's previous clean version of the same suite and table
        (before,) = [p for p in marks if p["dataset_id"] == m["dataset_id"]
                     and p["dataset_version"] == int(m["validation_mode"].rsplit(" ", 1)[1])]
        assert (before["table_id"], before["suite_fingerprint"]) == (m["table_id"], m["suite_fingerprint"])
        assert 0 < m["validated_rows"] < lake.read(m["dataset_id"], version=m["dataset_version"]).count()
    # the row count reconciled with silver is the whole table's, read here at that version
    (fact,) = [m for m in incremental if m["dataset_id"] == "fact_transactions"]
    (recon,) = rows(world, "fact_data_quality", f"run_id = '{fact['run_id']}' AND dataset_id = 'fact_transactions' "
                                                "AND check_name = 'rows_reconcile_with_silver'")
    assert recon["check_status"] == "passed"
    assert recon["observed_value"] == str(lake.read("fact_transactions", version=fact["dataset_version"]).count())


def _clear_pii() -> set[str]:
    values = set()
    for text in (CUSTOMERS_1, CUSTOMERS_2):
        for row in csv.DictReader(io.StringIO(text)):
            values |= {row[c] for c in ("first_name", "last_name", "email", "phone", "street_address")}
    return values


def test_no_clear_pii_in_silver_or_gold_files(world):
    clear = _clear_pii()
    assert {"Ann", "Lee", "ann@example.com", "555-0101", "9 Pine St"} <= clear
    root = Path(world["ctx"][6].config.storage.root)
    scanned = 0
    for table, column, values in string_values(root, ("silver", "gold")):
        found = values & clear
        assert not found, f"clear PII {found} in {table}.{column}"
        scanned += 1
    assert scanned > 100
    scan = rows(world, "fact_pii_scan", f"run_id = '{run_id(world, 6)}'")
    assert {(r["dataset_id"], r["column_name"]) for r in scan} >= {("dim_customer", "email"),
                                                                    ("dim_customer", "last_name")}
    assert all(r["status"] == "clean" and r["rows_scanned"] > 0 for r in scan)
    pii = rows(world, "audit_policies", f"run_id = '{run_id(world, 6)}' AND kind = 'pii'")
    assert pii and all(p["status"] == "compliant" for p in pii)


def test_roles_are_enforced_and_every_decision_is_audited(world):
    from cpbi_spark.platform.access import SecureReader

    ctx = world["ctx"][6]
    with pytest.raises(AccessDenied, match="no grant on layer bronze"):
        SecureReader(ctx, "analyst", user="ana").read("raw_customers")
    with pytest.raises(AccessDenied, match="silver"):
        SecureReader(ctx, "analyst", user="ana").read("dim_customer")
    engineer = SecureReader(ctx, "engineer", user="eve").read("dim_customer").collect()
    auditor = SecureReader(ctx, "auditor", user="al").read("dim_customer").collect()
    assert all(r["email"].startswith("sha256:") for r in auditor)  # PII as stored (hashed)
    assert all("***" in r["email"] and not r["email"].startswith("sha256:") for r in engineer)  # masked again
    raw = SecureReader(ctx, "engineer", user="eve").read("raw_customers").collect()
    assert not ({r["email"] for r in raw} & _clear_pii())  # bronze keeps clear PII; the role sees it masked
    audit = rows(world, "audit_access", "user_name IN ('ana', 'eve', 'al')")
    assert Counter((a["user_name"], a["dataset_id"], a["decision"]) for a in audit) == Counter({
        ("ana", "raw_customers", "denied"): 1, ("ana", "dim_customer", "denied"): 1,
        ("eve", "dim_customer", "masked"): 1, ("al", "dim_customer", "granted"): 1,
        ("eve", "raw_customers", "masked"): 1})


# ------------------------------------------------------------------------------------------ D: cost
def test_cost_rows_exist_for_each_run_and_add_up(world):
    from decimal import Decimal

    jobs = rows(world, "fact_job_runs")
    usage = rows(world, "fact_cost_usage")
    attempts = {(j["run_id"], j["stage"], j["attempt"]) for j in jobs}
    priced = Counter((u["run_id"], u["stage"], u["attempt"]) for u in usage)
    assert set(priced) == attempts and set(priced.values()) == {5}  # five meters per stage attempt
    totals = {r["run_id"]: r for r in rows(world, "fact_run_costs")}
    assert set(totals) == {run_id(world, n) for n in range(1, 7)}
    per_run: dict[str, Decimal] = {}
    for u in usage:
        per_run[u["run_id"]] = per_run.get(u["run_id"], Decimal(0)) + u["cost"]
    assert {r: t["cost"] for r, t in totals.items()} == per_run
    allocated: dict[str, Decimal] = {}
    for a in rows(world, "stage_allocations"):
        allocated[a["run_id"]] = allocated.get(a["run_id"], Decimal(0)) + a["allocated_cost"]
    assert allocated == per_run
    monthly = sum(m["cost"] for m in rows(world, "fact_monthly_costs") if m["meter"] != "gb_month")
    assert monthly == sum(per_run.values())
    resources = {(r["run_id"], r["stage"], r["attempt"]): r for r in rows(world, "fact_resource_usage")}
    bronze1 = resources[(run_id(world, 1), "bronze", 1)]
    assert bronze1["bytes_written"] > 0 and bronze1["spark_stages"] > 0 and bronze1["executor_cpu_seconds"] > 0
    for j in jobs:
        assert resources[(j["run_id"], j["stage"], j["attempt"])]["wall_seconds"] == pytest.approx(j["seconds"])
    invoices = rows(world, "fact_chargeback_invoices")
    assert {i["cost_center"] for i in invoices} == {"data_platform", "analytics", "finance"}
    assert rows(world, "fact_storage_usage") and rows(world, "fact_table_costs")


def test_status_shows_the_last_runs_on_one_screen(world):
    from cpbi_spark.platform.status import format_status, run_status

    text = format_status(run_status(world["ctx"][6], last=6))
    lines = text.splitlines()
    assert len(lines) == 6 * 5  # per run: header, stages, rows, quality, one incident line
    assert lines[0].startswith(f"run {run_id(world, 6)}") and "cost" in lines[0]
    assert "silver blocked" in text and "SYS-IO" in text and "DQ-BLOCKING" in text
    assert "quarantined 7" in text  # run 1: six dirty transaction lines and the orphan return
    assert "checks passed" in text


def test_retention_trims_old_logs(world):
    from datetime import datetime, timedelta, timezone

    from cpbi_spark.platform.ops_logs import trim
    from cpbi_spark.platform.store import PlatformStore

    ctx = world["ctx"][6]
    later = datetime.now(timezone.utc) + timedelta(days=31)  # every record is older than the 30 days kept
    logs_before = world["lake"].read("fact_logs").count()
    trimmed = {t["target"]: t for t in trim(ctx, PlatformStore(ctx), now=later)}
    assert trimmed["fact_logs"]["rows_trimmed"] == logs_before > 0
    assert trimmed["log_files"]["files_trimmed"] == 6
    assert "audit_access" not in trimmed  # kept 400 days
    assert world["lake"].read("fact_logs").count() == 0
    assert not list((world["root"] / "outputs" / "logs").glob("*.jsonl"))
    assert {r["target"] for r in rows(world, "stage_trimmed_logs")} == {"fact_logs", "log_files"}
