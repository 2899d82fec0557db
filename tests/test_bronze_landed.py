"""Bronze remembers which files and batches it landed: each landing commit carries its files' sha256 and its
batch id, read back from the log (silver's pending batches come from the batch ids).

The expected checksums are computed here from the landing files' bytes (hashlib), and the commit
metadata is read with the test-only Delta-log reader, not through the engine that wrote it.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest

from cpbi_spark.ingest.bronze import BATCH_TAG, LANDED_TAG, landed_checksums, run_bronze
from cpbi_spark.lakehouse.engine import TAG_PREFIX
from cpbi_spark.runtime import RunContext
from cpbi_spark.silver.stage import pending_batches, run_silver
from delta_log_reader import commit_actions
from landing_fixture import TRANSACTIONS, write_landing


def _ctx(spark, root: Path) -> RunContext:
    return RunContext.create(env="ci", spark=spark, overrides={
        "storage.root": str(root / "lake"), "storage.landing": str(root / "landing"),
        "storage.outputs": str(root / "outputs"), "platform.enabled": "false"})


def _sha(folder: Path) -> set[str]:
    return {hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def _spark_jobs_during(spark, work):
    """``work()``'s result and the ids of the Spark jobs it started."""
    sc = spark.sparkContext
    group = f"cpbi-test-{uuid.uuid4().hex}"
    sc.setJobGroup(group, "jobs of one call")
    try:
        out = work()
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
    return out, list(sc.statusTracker().getJobIdsForGroup(group))


def _bronze(ctx: RunContext) -> list[str]:
    return sorted({s.bronze_table for s in ctx.config.sources.values()})


def test_landed_checksums_are_read_from_the_commit_log_without_a_spark_job(spark, tmp_path):
    landing = write_landing(tmp_path / "landing")
    ctx = _ctx(spark, tmp_path)
    run_bronze(ctx)
    tables = _bronze(ctx)
    found, jobs = _spark_jobs_during(spark, lambda: landed_checksums(ctx, tables))
    assert jobs == []
    assert found["raw_transactions"] == _sha(landing / "transactions")
    assert found["raw_customers"] == _sha(landing / "customers")
    # What a scan of the rows gives (the answer before the tag existed).
    for table in tables:
        scanned = {r[0] for r in ctx.lake.read(table).select("_source_sha256").distinct().collect()}
        assert found[table] == scanned, table
    # The tag is in the landing commit itself, as any Delta reader sees it.
    info = next(a["commitInfo"] for a in commit_actions(ctx.lake.path("raw_transactions"), 1) if "commitInfo" in a)
    assert json.loads(info[f"{TAG_PREFIX}{LANDED_TAG}"]) == sorted(_sha(landing / "transactions"))

    # A later batch adds its files; a compaction changes no answer; a rerun lands nothing again.
    write_landing(landing, batch=2)
    assert run_bronze(ctx).tables == {"raw_customers": 3}
    assert ctx.lake.optimize("raw_customers", min_files=2).operation == "OPTIMIZE"
    assert ctx.lake.tag_values("raw_customers", LANDED_TAG) == _sha(landing / "customers")
    versions = {t: ctx.lake.version(t) for t in tables}
    again = run_bronze(_ctx(spark, tmp_path))
    assert again.tables == {} and again.counters["files_landed"] == 0
    assert {t: ctx.lake.version(t) for t in tables} == versions


def test_a_table_the_log_cannot_answer_for_is_scanned(spark, tmp_path):
    write_landing(tmp_path / "landing")
    ctx = _ctx(spark, tmp_path)
    run_bronze(ctx)
    stores = ctx.lake.read("raw_stores")
    expected = {r[0] for r in stores.select("_source_sha256").distinct().collect()} | {"f" * 64}
    # Rows appended without the tag (a lake landed before tags existed, or written by other means).
    untagged = stores.limit(1).drop("_source_sha256").selectExpr("*", "repeat('f', 64) AS _source_sha256")
    ctx.lake.append("raw_stores", untagged)
    assert ctx.lake.tag_values("raw_stores", LANDED_TAG) is None
    found, jobs = _spark_jobs_during(spark, lambda: landed_checksums(ctx, ["raw_stores", "raw_customers"]))
    assert found["raw_stores"] == expected
    assert jobs  # the scan ran
    assert found["raw_customers"] == ctx.lake.tag_values("raw_customers", LANDED_TAG)


def test_a_log_that_no_longer_reaches_version_0_cannot_answer(spark, tmp_path):
    from deltalake import DeltaTable

    write_landing(tmp_path / "landing")
    ctx = _ctx(spark, tmp_path)
    run_bronze(ctx)
    path = ctx.lake.path("raw_transactions")
    DeltaTable(path).create_checkpoint()
    (Path(path) / "_delta_log" / f"{0:020d}.json").unlink()  # log clean-up after the checkpoint
    assert ctx.lake.tag_values("raw_transactions", LANDED_TAG) is None
    # The rows still answer: nothing is landed twice.
    found = landed_checksums(ctx, ["raw_transactions"])["raw_transactions"]
    assert found == _sha(tmp_path / "landing" / "transactions")


def _scanned_batches(ctx: RunContext, table: str) -> set[str]:
    return {r[0] for r in ctx.lake.read(table).select("_batch_id").distinct().collect()}


def test_pending_batches_come_from_the_commit_log_and_a_delete_falls_back_to_the_rows(spark, tmp_path):
    landing = write_landing(tmp_path / "landing")
    first = _ctx(spark, tmp_path)
    run_bronze(first)
    run_silver(first)
    write_landing(landing, batch=2)
    second = _ctx(spark, tmp_path)
    run_bronze(second)
    names = sorted(second.config.sources)
    table = {n: second.config.sources[n].bronze_table for n in names}
    pending, jobs = _spark_jobs_during(spark, lambda: pending_batches(second, names))
    assert jobs == []
    # Only batch 2 is new, and only where it landed rows (customers); the rows say the same.
    assert pending["customers"] == [second.run_id]
    assert all(pending[n] == [] for n in names if n != "customers")
    assert _scanned_batches(second, table["customers"]) == {first.run_id, second.run_id}
    info = next(a["commitInfo"] for a in commit_actions(second.lake.path(table["customers"]),
                                                        second.lake.version(table["customers"])) if "commitInfo" in a)
    assert json.loads(info[f"{TAG_PREFIX}{BATCH_TAG}"]) == [second.run_id]

    # Batch 2's rows deleted (an erasure): the log no longer answers alone, the rows do.
    second.lake.delete(table["customers"], f"_batch_id = '{second.run_id}'")
    assert second.lake.tag_values(table["customers"], BATCH_TAG) is None
    pending, jobs = _spark_jobs_during(spark, lambda: pending_batches(second, names))
    assert jobs and pending["customers"] == []


@pytest.mark.parametrize("observed", [True, False], ids=["counted-while-written", "read-back"])
def test_the_ledger_counts_each_files_rows_and_malformed_lines(spark, tmp_path, monkeypatch, observed):
    """Per file, as written by hand in the landing fixture: 11 lines of which 1 malformed (T10), and a
    second file of 3 lines of which 2 malformed. Both ways of counting (while the batch is written, or by
    reading the batch back when there are too many files) give these."""
    from cpbi_spark.ingest import bronze

    landing = write_landing(tmp_path / "landing")
    header = TRANSACTIONS.splitlines()[0]
    (landing / "transactions" / "transactions_2024-02.csv").write_text(
        header + "\nT20,B20,A1,C1,P1,S1,1,2.50,2.50,USD,SALE,card,2024-02-01T10:00:00+00:00\nT21,B21\nT22\n")
    if not observed:
        monkeypatch.setattr(bronze, "OBSERVED_FILES_MAX", 0)
    ctx = _ctx(spark, tmp_path)
    result = run_bronze(ctx)
    ledger = {r["file_name"]: (r["rows_landed"], r["corrupt_rows"])
              for r in ctx.lake.read_records("audit_ingest") if r["source"] == "transactions"}
    assert ledger == {"transactions_2024-01.csv": (11, 1), "transactions_2024-02.csv": (3, 2)}
    assert result.tables["raw_transactions"] == 14


def test_the_ledger_appends_new_files_and_updates_a_files_changed_entry(spark, tmp_path):
    from cpbi_spark.ingest.bronze import LEDGER, write_ledger

    ctx = _ctx(spark, tmp_path)

    def entry(sha, status, rows=0, reason=None):
        return {"source": "transactions", "sha256": sha, "file_uri": f"file:/x/{sha}.csv", "file_name": f"{sha}.csv",
                "bytes": 10, "batch_id": ctx.run_id, "status": status, "reason": reason, "rows_landed": rows,
                "corrupt_rows": 0, "ingested_at": ctx.started_at}

    def ledger():
        return {r["sha256"]: (r["status"], r["rows_landed"]) for r in ctx.lake.read_records(LEDGER)}

    write_ledger(ctx, [entry("a", "landed", 5), entry("b", "rejected", reason="new column")])
    first = ctx.lake.version(LEDGER)
    write_ledger(ctx, [entry("b", "rejected", reason="new column")])  # the same rejection on a rerun
    assert ctx.lake.version(LEDGER) == first
    # the mapping now keeps the new column: the same file lands; and a new file arrives
    write_ledger(ctx, [entry("b", "landed", 7), entry("c", "landed", 2)])
    assert ledger() == {"a": ("landed", 5), "b": ("landed", 7), "c": ("landed", 2)}
    assert len(ctx.lake.read_records(LEDGER)) == 3  # one entry per file
    write_ledger(ctx, [entry("d", "landed", 1)])
    assert ledger()["d"] == ("landed", 1) and len(ctx.lake.read_records(LEDGER)) == 4
