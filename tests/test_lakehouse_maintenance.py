"""``cpbi maintain``: compaction of small files and vacuum, checked with the test-only Delta-log reader."""

from __future__ import annotations

import os

from cpbi_spark import cli
from cpbi_spark.lakehouse.deltars_engine import DeltaRsEngine
from cpbi_spark.lakehouse.engine import compaction_plan
from cpbi_spark.lakehouse.maintenance import maintain_tables
from cpbi_spark.lakehouse.signature import content_signature
from cpbi_spark.runtime import RunContext
from delta_log_reader import commit_actions, data_files_on_disk, live_files, live_row_count

MB = 1024 * 1024


def test_compaction_plan_counts_small_files_against_the_threshold():
    # Files under half the target are small; the big one stays as it is.
    assert compaction_plan([1 * MB] * 5 + [100 * MB], target_file_mb=128, min_files=5) == ([0, 1, 2, 3, 4], 1)
    assert compaction_plan([1 * MB] * 4 + [100 * MB], target_file_mb=128, min_files=5) == ([], 0)
    assert compaction_plan([60 * MB] * 5, target_file_mb=128, min_files=2) == ([0, 1, 2, 3, 4], 3)  # 300 MB
    assert compaction_plan([10], target_file_mb=128, min_files=1) == ([], 0)  # one file: nothing to merge


def _argv(tmp_path, *extra: str) -> list[str]:
    return ["maintain", "--env", "ci", "--set", f"storage.root={tmp_path / 'lake'}",
            "--set", f"storage.landing={tmp_path / 'landing'}", "--set", f"storage.outputs={tmp_path / 'out'}",
            "--set", "platform.enabled=false", "--set", "maintenance.min_small_files=3",
            "--set", "maintenance.retention_hours=0", *extra]


def test_maintain_compacts_small_files_keeps_every_row_and_vacuums_the_old_files(spark, tmp_path, capsys):
    ctx = RunContext.create(env="ci", spark=spark, overrides={
        "storage.root": str(tmp_path / "lake"), "storage.landing": str(tmp_path / "landing"),
        "storage.outputs": str(tmp_path / "out"), "platform.enabled": "false"})
    lake = ctx.lake
    for batch in range(4):  # four batches, one small file each
        rows = [{"limit_name": f"l{batch}-{i}", "limit_value": float(i), "description": None if i % 3 else "d"}
                for i in range(25)]
        lake.append("ref_limits", lake.frame("ref_limits", rows).coalesce(1))
    lake.append("ref_fee_schedule", lake.frame("ref_fee_schedule", [
        {"payment_method": "card", "fee_pct": 0.01, "fee_fixed": 0.1, "settlement_lag_days": 1}]).coalesce(1))
    limits, fees = lake.path("ref_limits"), lake.path("ref_fee_schedule")
    files, fee_files = live_files(limits), live_files(fees)
    version, fee_version = lake.version("ref_limits"), lake.version("ref_fee_schedule")
    signature = content_signature(lake.read("ref_limits")).first()
    assert len(files) == 4

    # A dry run reports the plan and changes nothing.
    assert cli.main(_argv(tmp_path, "--dry-run")) == 0
    out = capsys.readouterr().out
    assert "ref_limits: would compact 4 of 4 files into 1" in out
    assert lake.version("ref_limits") == version and live_files(limits) == files

    assert cli.main(_argv(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "ref_limits: compacted 4 of 4 files into 1" in out
    # The independent log reader sees one new file holding the same 100 rows, in a dataChange=false commit.
    compacted = live_files(limits)
    assert len(compacted) == 1 and not compacted & files
    # The compaction, then vacuum's own record of its run (two commits without data, as delta-rs logs it).
    assert [(h.version, h.operation) for h in lake.history("ref_limits")][:3] == [
        (version + 3, "VACUUM END"), (version + 2, "VACUUM START"), (version + 1, "OPTIMIZE")]
    assert not [a for v in (version + 2, version + 3) for a in commit_actions(limits, v) if "add" in a or "remove" in a]
    moves = [a for a in commit_actions(limits, version + 1) if "add" in a or "remove" in a]
    assert len(moves) == 5 and all(next(iter(a.values()))["dataChange"] is False for a in moves)
    assert live_row_count(limits) == 100
    assert content_signature(lake.read("ref_limits")).first() == signature
    # Vacuum (retention 0 here) deleted the four replaced files and nothing the table uses.
    assert not any(os.path.exists(f) for f in files) and all(os.path.exists(f) for f in compacted)
    assert "deleted 4 unused file(s)" in out
    # One file is below min_small_files: left as it was.
    assert live_files(fees) == fee_files and lake.version("ref_fee_schedule") == fee_version

    # A second run finds nothing to do: no new version anywhere.
    assert cli.main(_argv(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "0 compacted (0 files into 0), 0 unused file(s) deleted, 0 failed" in out
    assert lake.version("ref_limits") == version + 3 and live_files(limits) == compacted


def test_maintain_names_an_unknown_table(tmp_path, capsys):
    assert cli.main(_argv(tmp_path, "--table", "fact_nothing")) == 2
    assert "unknown table(s) ['fact_nothing']" in capsys.readouterr().err


def test_a_compaction_that_loses_against_a_concurrent_commit_is_reported_and_the_others_are_done(
        spark, tmp_path, monkeypatch):
    ctx = RunContext.create(env="ci", spark=spark, overrides={
        "storage.root": str(tmp_path / "lake"), "storage.landing": str(tmp_path / "landing"),
        "storage.outputs": str(tmp_path / "out"), "platform.enabled": "false",
        "maintenance.min_small_files": "2", "maintenance.retention_hours": "0"})
    lake = ctx.lake
    for i in range(3):
        lake.append("ref_limits", lake.frame("ref_limits", [
            {"limit_name": f"l{i}", "limit_value": float(i), "description": None}]).coalesce(1))
        lake.append("ref_fee_schedule", lake.frame("ref_fee_schedule", [
            {"payment_method": f"m{i}", "fee_pct": 0.01, "fee_fixed": 0.1, "settlement_lag_days": i}]).coalesce(1))
    limits, fees = lake.path("ref_limits"), lake.path("ref_fee_schedule")
    # Another writer deletes a row of ref_limits while its compaction is being written.
    original = lake.engine._commit

    def commit_after_a_delete(dt, actions, mode, operation, **kwargs):
        if operation == "OPTIMIZE" and dt.table_uri.rstrip("/").endswith(limits.rstrip("/").rsplit("/", 1)[-1]):
            DeltaRsEngine(spark).delete(limits, "limit_name = 'l0'")
        return original(dt, actions, mode, operation, **kwargs)

    monkeypatch.setattr(lake.engine, "_commit", commit_after_a_delete)
    outcomes = {u.table: u for u in maintain_tables(ctx)}
    assert "OPTIMIZE lost against a concurrent commit" in outcomes["ref_limits"].error
    assert outcomes["ref_limits"].compacted == 0 and outcomes["ref_limits"].version is None
    # ref_limits holds what the other writer committed: its delete, no compaction, no row back.
    assert sorted(r["limit_name"] for r in lake.read_records("ref_limits")) == ["l1", "l2"]
    assert len(live_files(limits)) == 2  # the delete dropped l0's one-row file; nothing was compacted
    # The lost compaction's file was never committed; vacuum (retention 0) removed it with the rest.
    assert data_files_on_disk(limits) == live_files(limits)
    # The other table was compacted.
    assert outcomes["ref_fee_schedule"].error is None and outcomes["ref_fee_schedule"].compacted == 3
    assert len(live_files(fees)) == 1 and live_row_count(fees) == 3


def test_maintain_is_recorded_in_the_platform_like_a_stage(spark, tmp_path, capsys):
    root = tmp_path / "lake"
    ctx = RunContext.create(env="ci", spark=spark, overrides={
        "storage.root": str(root), "storage.landing": str(tmp_path / "landing"),
        "storage.outputs": str(tmp_path / "out"), "platform.enabled": "false"})
    for i in range(3):
        ctx.lake.append("ref_limits", ctx.lake.frame("ref_limits", [
            {"limit_name": f"l{i}", "limit_value": float(i), "description": None}]).coalesce(1))
    assert cli.main(["maintain", "--env", "ci", "--set", f"storage.root={root}",
                     "--set", f"storage.landing={tmp_path / 'landing'}", "--set", f"storage.outputs={tmp_path / 'out'}",
                     "--set", "maintenance.min_small_files=2"]) == 0
    capsys.readouterr()
    runs = [r for r in ctx.lake.read_records("fact_job_runs") if r["stage"] == "maintain"]
    assert [(r["status"], r["service"]) for r in runs] == [("succeeded", "cpbi-maintain")]
    commits = [c for c in ctx.lake.read_records("fact_table_commits") if c["stage"] == "maintain"]
    assert [(c["table_name"], c["operation"], c["files_removed"], c["files_added"]) for c in commits] == [
        ("ref_limits", "OPTIMIZE", 3, 1)]
    assert commits[0]["version"] == ctx.lake.version("ref_limits") and commits[0]["run_id"] == runs[0]["run_id"]


def test_a_lost_compaction_fails_the_run_after_the_other_tables_and_is_recorded(spark, tmp_path, capsys,
                                                                                 monkeypatch):
    root = tmp_path / "lake"
    ctx = RunContext.create(env="ci", spark=spark, overrides={
        "storage.root": str(root), "storage.landing": str(tmp_path / "landing"),
        "storage.outputs": str(tmp_path / "out"), "platform.enabled": "false"})
    for i in range(2):
        ctx.lake.append("ref_limits", ctx.lake.frame("ref_limits", [
            {"limit_name": f"l{i}", "limit_value": float(i), "description": None}]).coalesce(1))
        ctx.lake.append("ref_fee_schedule", ctx.lake.frame("ref_fee_schedule", [
            {"payment_method": f"m{i}", "fee_pct": 0.01, "fee_fixed": 0.1, "settlement_lag_days": i}]).coalesce(1))
    limits = ctx.lake.path("ref_limits")
    original = DeltaRsEngine._commit

    def commit_after_a_delete(self, dt, actions, mode, operation, **kwargs):
        if operation == "OPTIMIZE" and dt.table_uri.rstrip("/").endswith(limits.rstrip("/").rsplit("/", 1)[-1]):
            DeltaRsEngine(spark).delete(limits, "limit_name = 'l0'")  # another writer, meanwhile
        return original(self, dt, actions, mode, operation, **kwargs)

    monkeypatch.setattr(DeltaRsEngine, "_commit", commit_after_a_delete)
    assert cli.main(["maintain", "--env", "ci", "--set", f"storage.root={root}",
                     "--set", f"storage.landing={tmp_path / 'landing'}", "--set", f"storage.outputs={tmp_path / 'out'}",
                     "--set", "maintenance.min_small_files=2"]) == 2
    err = capsys.readouterr().err
    assert "1 table(s) not compacted" in err and "ref_limits" in err
    assert len(live_files(ctx.lake.path("ref_fee_schedule"))) == 1  # the other table was compacted
    runs = [r for r in ctx.lake.read_records("fact_job_runs") if r["stage"] == "maintain"]
    assert [r["status"] for r in runs] == ["failed"] and "ref_limits" in runs[0]["message"]
