"""End to end on generated data: landing -> bronze -> silver -> gold, checked against the
generator's manifest (planted dirty records, SCD2 history), plus idempotent reruns.

One small generated retailer (scale 0.05: ~5k lines) runs through every stage once per
module; batch 2 (changed, late and repeated customer updates) is then landed on top.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from cpbi_spark.errors import PipelineError
from cpbi_spark.pipeline import run_stages
from cpbi_spark.runtime import RunContext
from cpbi_spark.synth import generate
from parquet_scan import string_values

pytestmark = pytest.mark.slow
SCALE, SEED = 0.05, 7


def _context(spark, root: Path, *, full_refresh: bool = False, overrides: dict[str, str] | None = None
             ) -> RunContext:
    # The platform recorder is covered by tests/test_platform_pipeline.py; off here to keep the suite short.
    return RunContext.create(env="ci", spark=spark, full_refresh=full_refresh, overrides={
        "storage.root": str(root / "lake"), "storage.landing": str(root / "landing"),
        "storage.outputs": str(root / "outputs"), "platform.enabled": "false", **(overrides or {})})


def _versions(ctx: RunContext) -> dict[str, int]:
    # Platform run records (tag "platform": logs, job runs, costs of sources A-D) grow with every run, a no-op
    # rerun included; tests/test_platform_pipeline.py checks they are never duplicated.
    return {name: ctx.lake.version(name) for name, cfg in ctx.config.tables.items()
            if "platform" not in cfg.tags and ctx.lake.exists(name)}


@pytest.fixture(scope="module")
def world(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    manifest1 = generate(root, scale=SCALE, seed=SEED, batch=1)
    ctx = _context(spark, root)
    results1 = run_stages(ctx, ["bronze", "silver", "gold"])
    state = {"root": root, "manifest1": manifest1, "results1": results1, "ctx1": ctx,
             "versions1": _versions(ctx), "counts1": {n: ctx.lake.read(n).count() for n in _versions(ctx)}}
    # Rerun on the same landing files: must change nothing.
    ctx_rerun = _context(spark, root)
    state["rerun_results"] = run_stages(ctx_rerun, ["bronze", "silver", "gold"])
    state["rerun_commits"] = [c.table for c in ctx_rerun.lake.commits]
    state["versions_rerun"] = _versions(ctx_rerun)
    # Batch 2: later months, changed / late / repeated customer updates, price changes.
    state["manifest2"] = generate(root, scale=SCALE, seed=SEED, batch=2)
    ctx2 = _context(spark, root)
    state["results2"] = run_stages(ctx2, ["bronze", "silver", "gold"])
    state["ctx2"] = ctx2
    return state


def _quarantine_counts(ctx: RunContext, source: str) -> dict[str, int]:
    rows = (ctx.lake.read("stage_quarantine").filter(F.col("source") == source)
            .groupBy("reason").count().collect())
    return {r["reason"]: r["count"] for r in rows}


def test_quarantine_counts_equal_planted_dirty_records(world):
    ctx, manifest = world["ctx1"], world["manifest1"]
    planted = dict(manifest["dirty"]["transactions"])
    duplicates = planted.pop("duplicate")
    # Batch 1 only: compare before batch 2 landed (the rerun made no new quarantine rows).
    q = (ctx.lake.read("stage_quarantine", version=world["versions1"]["stage_quarantine"])
         .filter(F.col("source") == "transactions").groupBy("reason").count().collect())
    assert {r["reason"]: r["count"] for r in q} == planted
    log = ctx.lake.read("ctl_batch_log", version=world["versions1"]["ctl_batch_log"]).filter(
        F.col("source") == "transactions").first()
    assert log["rows_duplicate"] == duplicates
    returns_q = (ctx.lake.read("stage_quarantine", version=world["versions1"]["stage_quarantine"])
                 .filter(F.col("source") == "returns").groupBy("reason").count().collect())
    assert {r["reason"]: r["count"] for r in returns_q} == manifest["dirty"]["returns"]


def test_quarantined_records_are_exactly_the_planted_ones(world):
    ctx, manifest = world["ctx1"], world["manifest1"]
    q = ctx.lake.read("stage_quarantine", version=world["versions1"]["stage_quarantine"]).filter(
        F.col("source") == "transactions").select("reason", F.get_json_object("payload", "$.txn_id").alias("txn_id"))
    got = {(r["reason"], r["txn_id"]) for r in q.collect() if r["txn_id"]}
    want = {(kind, i) for kind, ids in manifest["dirty_ids"]["transactions"].items() if kind != "duplicate"
            for i in ids}
    assert got == want
    # nothing planted as valid is missing from silver, nothing dirty reached it
    valid = manifest["row_counts"]["transactions"]["valid"]
    assert ctx.lake.read("stg_transactions", version=world["versions1"]["stg_transactions"]).count() == valid


def test_received_amounts_are_what_bronze_holds(world):
    """``amount_in`` of each transactions/returns batch = the landed amount text read as a decimal (from bronze)."""
    ctx = world["ctx2"]
    recon = ctx.lake.read("stage_reconciliations").filter(F.col("stage") == "silver")
    for name in ("transactions", "returns"):
        source = ctx.config.sources[name]
        file_col = source.columns["amount"]
        landed = (ctx.lake.read(source.bronze_table).groupBy("_batch_id")
                  .agg(F.sum(F.trim(F.col(f"`{file_col}`")).try_cast("decimal(18,2)")).alias("landed")))
        got = recon.filter(F.col("source") == name).select(F.col("batch_id").alias("_batch_id"), "amount_in")
        rows = landed.join(got, "_batch_id", "full").collect()
        assert len(rows) == 2, (name, rows)  # both batches
        for r in rows:
            assert r["landed"] is not None and r["amount_in"] == r["landed"], (name, r)


def test_every_table_key_is_unique(world):
    ctx = world["ctx2"]
    checked = 0
    for name, cfg in ctx.config.tables.items():
        if not ctx.lake.exists(name):
            continue
        df = ctx.lake.read(name)
        dupes = df.groupBy(*cfg.keys).count().filter("count > 1").limit(5).collect()
        assert dupes == [], f"{name}: duplicate keys {cfg.keys}: {dupes}"
        checked += 1
    assert checked >= 30  # every table of the flow was written


def test_reconciliation_balances(world):
    for ctx in (world["ctx1"], world["ctx2"]):
        recon = ctx.lake.read("audit_recon").collect()
        assert len(recon) >= 8
        assert all(r["status"] == "balanced" for r in recon), [r.asDict() for r in recon if r["status"] != "balanced"]
    stage = world["ctx2"].lake.read("stage_reconciliations").collect()
    assert stage and all(r["balanced"] for r in stage)
    assert all(r["rows_in"] == r["rows_accepted"] + r["rows_quarantined"] + r["rows_duplicate"] for r in stage)


def test_rerun_changes_nothing(world):
    assert world["rerun_commits"] == []
    assert world["versions_rerun"] == world["versions1"]
    assert world["rerun_results"][2].counters["mode"] == "unchanged"  # gold did not recompute
    for r in world["rerun_results"]:
        assert r.tables == {}, (r.stage, r.tables)


def test_scd2_history_after_batch2_matches_manifest(world):
    ctx, manifest = world["ctx2"], world["manifest2"]
    counts = manifest["scd2"]["counts"]
    dim = ctx.lake.read("dim_customer")
    assert counts["late_updates"] > 0 and counts["repeats"] > 0 and counts["changed_customers"] > 0
    assert dim.count() == counts["versions_expected_total"]
    assert dim.select("customer_id").distinct().count() == counts["customers_expected_total"]
    assert dim.filter("is_current").count() == counts["customers_expected_total"]
    samples = manifest["scd2"]["samples"]
    ids = sorted({s["customer_id"] for s in samples})
    got = {(r["customer_id"], r["region"], r["loyalty_tier"], r["valid_from"].strftime("%Y-%m-%dT%H:%M:%SZ"),
            r["is_current"])
           for r in dim.filter(F.col("customer_id").isin(ids)).collect()}
    want = {(s["customer_id"], s["region"], s["loyalty_tier"], s["valid_from"], s["is_current"]) for s in samples}
    assert got == want


def test_facts_point_to_the_customer_version_valid_at_posting(world):
    ctx = world["ctx2"]
    fact = ctx.lake.read("fact_transactions").filter(F.col("txn_type") == "SALE")
    dim = ctx.lake.read("dim_customer")
    joined = fact.join(dim, "customer_sk").filter(
        (F.col("posted_ts") < F.col("valid_from")) & (F.col("valid_from") > F.lit("2000-01-01"))
        | (F.col("valid_to").isNotNull() & (F.col("posted_ts") >= F.col("valid_to"))))
    # Only sales before a customer's first version may point outside (they take the first version).
    first = dim.groupBy("customer_id").agg(F.min("valid_from").alias("first_from"))
    outside = joined.join(first, "customer_id").filter(F.col("posted_ts") >= F.col("first_from")).count()
    assert outside == 0
    assert fact.filter(F.col("customer_sk").isNull()).count() == 0


def test_batch2_quarantine_adds_batch2_dirty_records(world):
    ctx, m1, m2 = world["ctx2"], world["manifest1"], world["manifest2"]
    got = _quarantine_counts(ctx, "transactions")
    want = {}
    for m in (m1, m2):
        for kind, n in m["dirty"]["transactions"].items():
            if kind != "duplicate":
                want[kind] = want.get(kind, 0) + n
    assert got == want


def test_no_clear_pii_in_silver_or_gold_files(world):
    root, ctx = world["root"], world["ctx2"]
    emails = set()
    for f in (root / "landing" / "customers").glob("*.csv"):
        import csv

        with f.open(encoding="utf-8") as fh:
            emails |= {row["email"] for row in csv.DictReader(fh) if row["email"]}
    assert len(emails) > 50
    for table, column, values in string_values(ctx.config.storage.root, ("silver", "gold")):
        assert not (values & emails), f"clear e-mail in {table}.{column}"


def test_gold_amounts_in_reporting_currency(world):
    ctx = world["ctx2"]
    fact = ctx.lake.read("fact_transactions")
    usd = fact.filter(F.col("currency") == "USD").filter(F.col("amount") != F.col("amount_reporting")).count()
    assert usd == 0
    non_usd = fact.filter(F.col("currency") != "USD").select("exchange_rate").distinct().count()
    assert non_usd > 10  # daily rates, not one constant


def test_manifest_files_are_what_was_landed(world):
    ctx, manifest = world["ctx1"], world["manifest1"]
    ledger = {r["file_name"]: r for r in ctx.lake.read("audit_ingest", version=world["versions1"]["audit_ingest"])
              .collect()}
    for rel, info in manifest["files"].items():
        name = rel.rsplit("/", 1)[-1]
        assert ledger[name]["sha256"] == info["sha256"]
        assert ledger[name]["status"] == "landed"
        assert ledger[name]["rows_landed"] == info["rows"], name


def test_stage_results_are_reported(world):
    names = [r.stage for r in world["results1"]]
    assert names == ["bronze", "silver", "gold"]
    bronze = world["results1"][0]
    assert bronze.tables["raw_transactions"] == world["manifest1"]["row_counts"]["transactions"]["rows"]
    json.dumps([r.counters for r in world["results2"]], default=str)


GOLD_TABLES = ("fact_transactions", "fact_returns", "fact_basket_lines", "stage_adjustments", "stage_settlements",
               "fact_settlements", "fact_balance_snapshots", "dim_time")


@pytest.fixture(scope="module")
def refreshed(world, spark, tmp_path_factory):
    """After batch 2: gold rerun in place (must change nothing), then a full refresh on a copy of the lake."""
    import shutil

    again = _context(spark, world["root"])
    rerun = run_stages(again, ["gold"])
    copy = tmp_path_factory.mktemp("e2e_full_refresh")
    shutil.copytree(world["root"] / "lake", copy / "lake")
    ctx = RunContext.create(env="ci", spark=spark, full_refresh=True, overrides={
        "storage.root": str(copy / "lake"), "storage.landing": str(world["root"] / "landing"),
        "storage.outputs": str(copy / "outputs"), "platform.enabled": "false"})
    full = run_stages(ctx, ["gold"])
    return {"rerun": rerun[0], "rerun_commits": [c.table for c in again.lake.commits], "ctx": ctx, "full": full[0]}


def test_batch2_gold_ran_incrementally_and_equals_a_full_refresh(world, refreshed):
    gold1, gold2 = world["results1"][2], world["results2"][2]
    assert gold1.counters["mode"] == "full" and gold2.counters["mode"] == "incremental"
    full = refreshed["full"]
    assert full.counters["mode"] == "full" and full.counters["full_reason"] == "--full-refresh"
    inc_lake, full_lake = world["ctx2"].lake, refreshed["ctx"].lake
    for table in GOLD_TABLES:
        inc, ref = inc_lake.read(table), full_lake.read(table)
        assert inc.count() == ref.count() > 0, table
        assert inc.exceptAll(ref).count() == 0, f"{table}: incremental rows missing from the full refresh"
        assert ref.exceptAll(inc).count() == 0, f"{table}: full-refresh rows missing from the incremental run"
    # The full recompute found nothing to change in what the incremental run had written.
    assert full.tables == {}, full.tables


def test_batch2_gold_touched_only_the_affected_scope(world):
    gold2, ctx = world["results2"][2], world["ctx2"]
    scope = gold2.counters["scope"]
    total = {t: ctx.lake.read(t).count() for t in scope}
    assert 0 < gold2.counters["affected_lines"] < total["fact_transactions"]
    for table, fed in scope.items():
        assert fed < total[table], (table, fed, total[table])  # never the whole table
    for commit in ctx.lake.commits:
        if commit.table in scope:  # a MERGE changes at most the rows of its scope
            m = commit.info.metrics
            assert m["num_inserted"] + m["num_updated"] + m["num_deleted"] <= scope[commit.table], commit


def test_gold_rerun_after_batch2_changes_nothing(refreshed):
    assert refreshed["rerun"].counters["mode"] == "unchanged"
    assert set(refreshed["rerun"].counters["reconciliation"].values()) == {"balanced"}
    assert refreshed["rerun_commits"] == [] and refreshed["rerun"].tables == {}


def test_reconciliation_is_redone_only_when_a_table_it_reads_changed(world, spark, tmp_path):
    """A rerun reports the recorded balance without reading the tables; a new bronze row is reconciled."""
    import shutil

    from cpbi_spark.gold.stage import RECONCILE, consumed_versions, reconcile_reads

    shutil.copytree(world["root"] / "lake", tmp_path / "lake")
    root = {"storage.root": str(tmp_path / "lake"), "storage.landing": str(world["root"] / "landing"),
            "storage.outputs": str(tmp_path / "outputs"), "platform.enabled": "false"}
    same = RunContext.create(env="ci", spark=spark, overrides=root)
    assert consumed_versions(same, RECONCILE)[0] == reconcile_reads(same)  # recorded by the last run
    rerun = run_stages(same, ["gold"])[0]
    assert rerun.counters["mode"] == "unchanged"
    assert set(rerun.counters["reconciliation"].values()) == {"balanced"}
    assert not {"fact_basket_lines", "raw_transactions"} & set(same.lake.reads)  # nothing recounted
    # One more bronze line that silver never saw: gold's inputs are unchanged, the balance is not.
    raw = same.config.sources["transactions"].bronze_table
    same.lake.append(raw, same.lake.read(raw).limit(1))
    changed = RunContext.create(env="ci", spark=spark, overrides=root)
    with pytest.raises(PipelineError, match="raw_rows = accepted"):
        run_stages(changed, ["gold"])
    assert consumed_versions(changed, RECONCILE)[0] != reconcile_reads(changed)  # an unbalanced run records nothing


def test_table_upkeep_leaves_gold_nothing_to_recompute(world, spark, tmp_path):
    """``cpbi maintain`` moves files (compaction, vacuum) but no row: gold and its reconciliation skip."""
    import shutil

    from cpbi_spark.gold.stage import INPUTS, consumed_versions, input_versions
    from cpbi_spark.lakehouse.maintenance import maintain_tables

    shutil.copytree(world["root"] / "lake", tmp_path / "lake")
    root = {"storage.root": str(tmp_path / "lake"), "storage.landing": str(world["root"] / "landing"),
            "storage.outputs": str(tmp_path / "outputs"), "platform.enabled": "false",
            "maintenance.min_small_files": "2", "maintenance.retention_hours": "0"}
    ctx = RunContext.create(env="ci", spark=spark, overrides=root)
    before = input_versions(ctx)
    assert consumed_versions(ctx)[0] == before  # the last run consumed them
    upkept = [u.table for u in maintain_tables(ctx, INPUTS) if u.compacted]
    assert upkept  # some gold input had small files to compact (and vacuum then deleted the old ones)
    after = input_versions(ctx)
    assert all(after[t] > before[t] for t in upkept)
    assert all(ctx.lake.same_rows_between(t, before[t], after[t]) for t in INPUTS if before[t] >= 0)
    outputs = {t: ctx.lake.version(t) for t in ("fact_transactions", "fact_basket_lines", "audit_recon")}

    rerun_ctx = RunContext.create(env="ci", spark=spark, overrides=root)
    rerun = run_stages(rerun_ctx, ["gold"])[0]
    assert rerun.counters["mode"] == "unchanged"
    assert set(rerun.counters["reconciliation"].values()) == {"balanced"}
    assert not {"fact_basket_lines", "raw_transactions"} & set(rerun_ctx.lake.reads)  # nothing recounted
    assert {t: rerun_ctx.lake.version(t) for t in outputs} == outputs
    assert consumed_versions(rerun_ctx)[0] == after  # recorded: the next run compares with these directly
    # A change of rows after the upkeep is a change again.
    table = upkept[0]
    rerun_ctx.lake.delete(table, "true")
    assert not rerun_ctx.lake.same_rows_between(table, after[table], rerun_ctx.lake.version(table))
    assert not rerun_ctx.lake.same_rows_between(table, before[table], rerun_ctx.lake.version(table))


def test_gold_skips_only_when_inputs_and_settings_are_unchanged(world, spark):
    from cpbi_spark.gold.stage import _unchanged_since_last_run, consumed_versions, input_versions

    root = world["root"]
    same = _context(spark, root)
    versions, last = input_versions(same), consumed_versions(same)
    assert _unchanged_since_last_run(same, versions, last)
    assert not _unchanged_since_last_run(
        same, {**versions, "stg_transactions": versions["stg_transactions"] + 1}, last)
    assert not _unchanged_since_last_run(_context(spark, root, full_refresh=True), versions, last)
    other_currency = _context(spark, root, overrides={"project.reporting_currency": "JPY"})
    assert not _unchanged_since_last_run(other_currency, input_versions(other_currency),
                                         consumed_versions(other_currency))


def test_gold_recomputes_all_when_incremental_gold_is_off(world, spark):
    """``gold.incremental: false`` (the default outside CI) takes the full path even when changes are readable."""
    from cpbi_spark.gold.stage import _full_reason, consumed_versions, input_versions

    for enabled, reason in (("true", None), ("false", "gold.incremental is off")):
        ctx = _context(spark, world["root"], overrides={"gold.incremental": enabled})
        assert _full_reason(ctx, input_versions(ctx), consumed_versions(ctx)) == reason
