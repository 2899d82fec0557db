"""Reference tables declared in conf (``refdata``): loaded by silver, left alone while unchanged."""

from __future__ import annotations

from collections import Counter

from cpbi_spark.lakehouse.engine import coerce_records
from cpbi_spark.runtime import RunContext, StageResult
from cpbi_spark.silver.stage import _same_records, sync_refdata

TABLES = {"fee_schedule": "ref_fee_schedule", "limits": "ref_limits", "statuses": "dim_status"}


def _ctx(spark, tmp_path) -> RunContext:
    return RunContext.create(env="ci", spark=spark, overrides={
        "storage.root": str(tmp_path / "lake"), "storage.landing": str(tmp_path / "landing"),
        "storage.outputs": str(tmp_path / "outputs"), "platform.enabled": "false"})


def _stored(ctx: RunContext, table: str) -> Counter:
    schema = ctx.lake.schema(table)
    return Counter(tuple(r) for r in coerce_records([r.asDict() for r in ctx.lake.read(table).collect()], schema))


def test_refdata_is_loaded_once_and_restored_when_the_table_drifts(spark, tmp_path):
    ctx = _ctx(spark, tmp_path)
    conf = {t: ctx.config.refdata[k] for k, t in TABLES.items()}
    assert all(conf.values())  # the shipped conf declares all three
    first = StageResult("silver")
    sync_refdata(ctx, first)
    assert set(first.tables) == set(TABLES.values())
    for table, rows in conf.items():  # read back through Spark, not the driver-side check
        assert _stored(ctx, table) == Counter(coerce_records(rows, ctx.lake.schema(table))), table
    versions = {t: ctx.lake.version(t) for t in conf}

    again = StageResult("silver")
    sync_refdata(ctx, again)
    assert again.tables == {} and {t: ctx.lake.version(t) for t in conf} == versions

    # Someone edits a limit in the table: it differs from conf, so the next run writes conf's rows back.
    changed = [dict(r) for r in ctx.lake.read_records("ref_limits")]
    changed[0]["limit_value"] = 123456.0
    ctx.lake.overwrite_records("ref_limits", changed)
    assert not _same_records(ctx, "ref_limits", conf["ref_limits"])
    restored = StageResult("silver")
    sync_refdata(ctx, restored)
    assert set(restored.tables) == {"ref_limits"}
    assert _stored(ctx, "ref_limits") == Counter(coerce_records(conf["ref_limits"], ctx.lake.schema("ref_limits")))
