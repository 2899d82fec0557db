"""The table-engine contract: the same cases against every backend that can start here.

Each case writes real Delta tables under ``tmp_path`` with tiny inline frames and checks
rows, versions and counts written out by hand. After the writes, :func:`check_log` compares
the engine with two readers it does not share code with: ``tests/delta_log_reader.py``
(replays the ``_delta_log`` JSON per the Delta protocol) and delta-rs's own ``file_uris()``,
and checks the table stays at protocol reader 1 / writer 2 so delta-spark can read it.

delta-spark needs Delta's JVM jars on Spark's classpath; where they are missing (as on a
machine without a Maven repository) its cases are skipped with the reason
:func:`delta_spark_unavailable_reason` gives.

Example:
    $ .venv/bin/python -m pytest tests/test_lakehouse_contract.py -q
"""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest
from chispa import assert_df_equality

from cpbi_spark.errors import TableError
from cpbi_spark.lakehouse.deltars_engine import DeltaRsEngine
from cpbi_spark.lakehouse.merge_spec import MatchedClause, MergeSpec, NotMatchedBySourceClause, NotMatchedClause
from cpbi_spark.lakehouse.select import delta_spark_unavailable_reason
from delta_log_reader import commit_actions, live_files, live_row_count, read_log, table_root

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from cpbi_spark.lakehouse.engine import TableEngine

SCHEMA = "id long, v string"
ENGINE_NAMES = ("delta-rs", "delta-spark")
# MERGE has a second delta-rs path for large tables (find the touched files first); run it on small ones.
MERGE_ENGINES = ("delta-rs", "delta-rs-probe", "delta-spark")


def make_test_engine(spark: SparkSession, name: str) -> TableEngine:
    """The named engine, or a skip saying why delta-spark cannot start in this session."""
    if name == "delta-spark":
        reason = delta_spark_unavailable_reason(spark)
        if reason is not None:
            pytest.skip(f"delta-spark cannot start in this session: {reason}")
        from cpbi_spark.lakehouse.deltaspark_engine import DeltaSparkEngine

        return DeltaSparkEngine(spark)
    return ProbeFirstEngine(spark) if name == "delta-rs-probe" else DeltaRsEngine(spark)


class ProbeFirstEngine(DeltaRsEngine):
    """delta-rs taking its large-table MERGE path (find the touched files first) whatever the sizes."""

    def _probe_first(self, dt, source, spec) -> bool:
        return not spec.when_not_matched_by_source


@pytest.fixture(params=ENGINE_NAMES)
def engine(request: pytest.FixtureRequest, spark: SparkSession) -> TableEngine:
    return make_test_engine(spark, request.param)


@pytest.fixture
def table(tmp_path) -> str:
    return str(tmp_path / "t")


def frame(spark: SparkSession, rows: list[tuple], schema: str = SCHEMA) -> DataFrame:
    # One partition: one data file per write, so file counts below are known by hand.
    return spark.createDataFrame(rows, schema).coalesce(1)


def assert_rows(df: DataFrame, spark: SparkSession, rows: list[tuple], schema: str = SCHEMA) -> None:
    assert_df_equality(df, spark.createDataFrame(rows, schema), ignore_row_order=True)


def check_log(engine: TableEngine, path: str) -> None:
    """The engine's view of the table agrees with an independent replay of its log."""
    import pyarrow.parquet as pq
    from deltalake import DeltaTable

    snap = read_log(path)
    assert snap.version == engine.version(path)
    assert snap.protocol.get("minReaderVersion") == 1
    assert snap.protocol.get("minWriterVersion") == 2
    assert not snap.protocol.get("readerFeatures") and not snap.protocol.get("writerFeatures")
    rs_files = {os.path.normpath(table_root(u)) for u in DeltaTable(path).file_uris()}
    assert set(snap.files) == rs_files
    assert all(os.path.isfile(f) for f in snap.files), "the log adds a file that is not on disk"
    for f, add in snap.files.items():  # the numRecords stats of each add match the file's footer
        if add.get("stats"):
            assert json.loads(add["stats"])["numRecords"] == pq.read_metadata(f).num_rows
    assert live_row_count(path) == engine.read(path).count() == engine.row_count(path)


def seed(engine: TableEngine, spark: SparkSession, path: str, rows: list[tuple]) -> None:
    """Version 0 (create) and version 1 (one file with ``rows``)."""
    info = engine.append(frame(spark, rows), path)
    assert info.version == 1


# ------------------------------------------------------------------------- create, append, read
def test_create_empty_table_and_schema_check(engine, spark, table):
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    schema = StructType([StructField("id", LongType()), StructField("v", StringType())])
    assert not engine.exists(table)
    info = engine.create(table, schema, description="contract table")
    assert (info.version, info.changed) == (0, True)
    assert engine.exists(table)
    assert engine.version(table) == 0
    assert engine.schema(table) == schema
    assert_rows(engine.read(table), spark, [])
    again = engine.create(table, schema)
    assert again.version is None
    other = StructType([StructField("id", LongType()), StructField("w", StringType())])
    with pytest.raises(TableError, match=r"missing column v.*unexpected column w"):
        engine.create(table, other)
    assert engine.version(table) == 0
    check_log(engine, table)


def test_append_and_read(engine, spark, table):
    first = engine.append(frame(spark, [(1, "a"), (2, "b")]), table)
    assert (first.version, first.operation, first.metrics["num_inserted"]) == (1, "APPEND", 2)
    assert first.files_added == 1
    second = engine.append(frame(spark, [(3, "c")]), table)
    assert second.version == 2
    assert engine.version(table) == 2
    assert_rows(engine.read(table), spark, [(1, "a"), (2, "b"), (3, "c")])
    check_log(engine, table)


def test_idempotent_append_with_app_version(engine, spark, table):
    batch0 = frame(spark, [(1, "a"), (2, "b")])
    assert engine.append(batch0, table, app_id="load", app_version=0).version == 1
    rerun = engine.append(batch0, table, app_id="load", app_version=0)
    assert (rerun.version, rerun.changed) == (None, False)
    assert engine.version(table) == 1
    assert_rows(engine.read(table), spark, [(1, "a"), (2, "b")])
    assert engine.app_version(table, "load") == 0
    assert engine.append(frame(spark, [(3, "c")]), table, app_id="load", app_version=1).version == 2
    # An older batch of the same application is skipped too.
    assert not engine.append(batch0, table, app_id="load", app_version=0).changed
    assert engine.app_version(table, "load") == 1
    assert engine.app_version(table, "other") is None
    assert read_log(table).txns == {"load": 1}
    assert_rows(engine.read(table), spark, [(1, "a"), (2, "b"), (3, "c")])
    check_log(engine, table)


RECORD_SCHEMA = "id long, amount decimal(18,2), rate double, at timestamp, label string"


def test_driver_records_append_once_and_overwrite(engine, spark, table):
    """Run records built on the driver: typed by the schema, idempotent by token, replaceable."""
    from pyspark.sql.types import _parse_datatype_string

    schema = _parse_datatype_string(RECORD_SCHEMA)
    at = datetime(2024, 3, 1, 12, 30, tzinfo=timezone.utc)
    rows = [{"id": 1, "amount": 2.005, "rate": 3, "at": at, "label": "x", "not_a_column": 1}, {"id": 2}]
    first = engine.append_records(rows, schema, table, app_id="run-1/bronze", app_version=1)
    assert (first.version, first.metrics["num_inserted"]) == (1, 2)
    assert not engine.append_records(rows, schema, table, app_id="run-1/bronze", app_version=1).changed
    # half-up to the column's scale, an int for a double column as a float, absent keys NULL
    expected = [(1, Decimal("2.01"), 3.0, datetime(2024, 3, 1, 12, 30), "x"), (2, None, None, None, None)]
    assert_rows(engine.read(table), spark, expected, RECORD_SCHEMA)
    assert read_log(table).txns == {"run-1/bronze": 1}
    check_log(engine, table)
    collected = sorted((r.asDict() for r in engine.read(table).collect()), key=lambda r: r["id"])
    assert sorted(engine.read_records(table), key=lambda r: r["id"]) == collected
    assert collected[0]["at"] == datetime(2024, 3, 1, 12, 30)  # naive UTC, as the session time zone
    replaced = engine.overwrite_records([{"id": 7, "label": "only"}], schema, table)
    assert (replaced.version, replaced.files_removed) == (2, 1)
    assert_rows(engine.read(table), spark, [(7, None, None, None, "only")], RECORD_SCHEMA)
    assert engine.overwrite_records([], schema, table).version == 3
    assert engine.read(table).count() == 0 and live_row_count(table) == 0
    check_log(engine, table)
    with pytest.raises(TableError, match="column label is int"):
        engine.append_records([{"id": 1}], _parse_datatype_string("id long, amount decimal(18,2), rate double, "
                                                                  "at timestamp, label int"), table)


def test_row_count_without_file_stats_counts_the_rows(spark, table, tmp_path):
    """A file another writer committed without ``stats`` is counted by reading it, not taken as 0."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from deltalake import DeltaTable
    from deltalake.transaction import AddAction

    engine = DeltaRsEngine(spark)
    seed(engine, spark, table, [(1, "a")])
    foreign = os.path.join(table, "foreign.parquet")
    pq.write_table(pa.table({"id": pa.array([2, 3], pa.int64()), "v": ["b", "c"]}), foreign)
    dt = DeltaTable(table)
    dt.create_write_transaction([AddAction("foreign.parquet", os.path.getsize(foreign),
                                           {}, int(time.time() * 1000), True, None)],
                                mode="append", schema=dt.schema())
    assert engine.row_count(table) == live_row_count(table) == 3


def test_time_travel_by_version_and_timestamp(engine, spark, table):
    seed(engine, spark, table, [(1, "a")])
    time.sleep(0.05)
    between = datetime.now(timezone.utc)
    time.sleep(0.05)
    assert engine.append(frame(spark, [(2, "b")]), table).version == 2
    assert_rows(engine.read(table, version=0), spark, [])
    assert_rows(engine.read(table, version=1), spark, [(1, "a")])
    assert_rows(engine.read(table, timestamp=between), spark, [(1, "a")])
    assert_rows(engine.read(table, timestamp=between.replace(tzinfo=None)), spark, [(1, "a")])  # naive = UTC
    assert_rows(engine.read(table), spark, [(1, "a"), (2, "b")])
    with pytest.raises(TableError):
        engine.read(table, version=99)
    with pytest.raises(TableError, match="before the first commit"):
        engine.read(table, timestamp=datetime(2000, 1, 1, tzinfo=timezone.utc))


# ------------------------------------------------------------------------- overwrite, delete
def test_overwrite_whole_table(engine, spark, table):
    seed(engine, spark, table, [(1, "a"), (2, "b")])
    info = engine.overwrite(frame(spark, [(3, "c")]), table)
    assert (info.version, info.operation, info.files_added, info.files_removed) == (2, "OVERWRITE", 1, 1)
    assert_rows(engine.read(table), spark, [(3, "c")])
    assert_rows(engine.read(table, version=1), spark, [(1, "a"), (2, "b")])
    check_log(engine, table)


def test_overwrite_by_predicate_replaces_only_matching_rows(engine, spark, table):
    seed(engine, spark, table, [(1, "a"), (2, "b"), (10, "x"), (11, "y")])
    info = engine.overwrite(frame(spark, [(10, "X"), (12, "Z")]), table, predicate="id >= 10")
    assert (info.version, info.metrics["num_inserted"]) == (2, 2)
    assert_rows(engine.read(table), spark, [(1, "a"), (2, "b"), (10, "X"), (12, "Z")])
    with pytest.raises(TableError, match="do not match"):
        engine.overwrite(frame(spark, [(3, "outside")]), table, predicate="id >= 10")
    assert engine.version(table) == 2
    assert_rows(engine.read(table), spark, [(1, "a"), (2, "b"), (10, "X"), (12, "Z")])
    check_log(engine, table)


def test_delete_by_predicate(engine, spark, table):
    seed(engine, spark, table, [(1, "a"), (2, "b"), (3, "c"), (4, "d")])
    info = engine.delete(table, "id % 2 = 0")
    assert (info.version, info.operation, info.metrics["num_deleted"]) == (2, "DELETE", 2)
    assert_rows(engine.read(table), spark, [(1, "a"), (3, "c")])
    nothing = engine.delete(table, "id > 100")
    assert nothing.version is None
    assert engine.version(table) == 2
    check_log(engine, table)


# ------------------------------------------------------------------------- merge
@pytest.mark.parametrize("engine", MERGE_ENGINES, indirect=True)
def test_merge_upsert(engine, spark, table):
    seed(engine, spark, table, [(1, "a"), (2, "b")])
    info = engine.merge(frame(spark, [(2, "B"), (3, "c")]), table, MergeSpec.upsert(["id"]))
    assert (info.version, info.operation) == (2, "MERGE")
    assert (info.metrics["num_inserted"], info.metrics["num_updated"], info.metrics["num_deleted"]) == (1, 1, 0)
    assert_rows(engine.read(table), spark, [(1, "a"), (2, "B"), (3, "c")])
    check_log(engine, table)


@pytest.mark.parametrize("engine", MERGE_ENGINES, indirect=True)
def test_merge_insert_only_rerun_changes_nothing(engine, spark, table):
    seed(engine, spark, table, [(1, "a")])
    source = frame(spark, [(1, "not-applied"), (2, "b")])
    first = engine.merge(source, table, MergeSpec.insert_new(["id"]))
    assert (first.version, first.metrics["num_inserted"], first.metrics["num_updated"]) == (2, 1, 0)
    rerun = engine.merge(source, table, MergeSpec.insert_new(["id"]))
    assert (rerun.version, rerun.metrics["num_inserted"]) == (None, 0)
    assert engine.version(table) == 2
    assert_rows(engine.read(table), spark, [(1, "a"), (2, "b")])
    check_log(engine, table)


@pytest.mark.parametrize("engine", MERGE_ENGINES, indirect=True)
def test_merge_conditional_update_only_if_changed(engine, spark, table):
    seed(engine, spark, table, [(1, "a"), (2, "b")])
    spec = MergeSpec.upsert(["id"], only_if_changed="t.v <> s.v")
    source = frame(spark, [(1, "a"), (2, "B")])
    info = engine.merge(source, table, spec)
    assert (info.version, info.metrics["num_updated"], info.metrics["num_inserted"]) == (2, 1, 0)
    assert_rows(engine.read(table), spark, [(1, "a"), (2, "B")])
    rerun = engine.merge(source, table, spec)  # nothing differs any more
    assert (rerun.metrics["num_updated"], rerun.metrics["num_inserted"], rerun.metrics["num_deleted"]) == (0, 0, 0)
    # delta-rs commits nothing. Delta's MERGE (not matched-only) rewrites the files holding
    # matched rows even when no condition holds: a version without row changes.
    assert rerun.version == {"delta-rs": None, "delta-spark": 3}[engine.name]
    assert_rows(engine.read(table), spark, [(1, "a"), (2, "B")])
    check_log(engine, table)


@pytest.mark.parametrize("engine", MERGE_ENGINES, indirect=True)
def test_merge_with_delete_clause(engine, spark, table):
    seed(engine, spark, table, [(1, "a"), (2, "b"), (3, "c")])
    source = frame(spark, [(1, "A", "U"), (2, None, "D"), (4, "d", "I"), (5, None, "D")],
                   "id long, v string, op string")
    spec = MergeSpec(
        predicate="t.id <=> s.id",
        when_matched=(MatchedClause("delete", condition="s.op = 'D'"), MatchedClause("update", set={"v": "s.v"})),
        when_not_matched=(NotMatchedClause(condition="s.op <> 'D'", values={"id": "s.id", "v": "s.v"}),),
    )
    info = engine.merge(source, table, spec)
    assert (info.metrics["num_inserted"], info.metrics["num_updated"], info.metrics["num_deleted"]) == (1, 1, 1)
    assert_rows(engine.read(table), spark, [(1, "A"), (3, "c"), (4, "d")])
    check_log(engine, table)


@pytest.mark.parametrize("engine", MERGE_ENGINES, indirect=True)
def test_merge_when_not_matched_by_source(engine, spark, table):
    seed(engine, spark, table, [(1, "a"), (2, "b"), (3, "c")])
    spec = MergeSpec(
        predicate="t.id <=> s.id",
        when_matched=(MatchedClause("update"),),
        when_not_matched_by_source=(
            NotMatchedBySourceClause("update", condition="t.id = 2", set={"v": "'stale'"}),
            NotMatchedBySourceClause("delete"),
        ),
    )
    info = engine.merge(frame(spark, [(1, "A")]), table, spec)
    assert (info.metrics["num_inserted"], info.metrics["num_updated"], info.metrics["num_deleted"]) == (0, 2, 1)
    assert_rows(engine.read(table), spark, [(1, "A"), (2, "stale")])
    check_log(engine, table)


@pytest.mark.parametrize("engine", MERGE_ENGINES, indirect=True)
def test_merge_into_an_empty_table_runs_only_the_insert_clauses(engine, spark, table):
    """The first load of a synced table: nothing to match, update or delete; conditions still apply."""
    from pyspark.sql.types import _parse_datatype_string

    engine.create(table, _parse_datatype_string(SCHEMA))
    spec = MergeSpec(predicate="t.id <=> s.id",
                     when_matched=(MatchedClause("update"),),
                     when_not_matched=(NotMatchedClause(condition="s.v <> 'skip'"),),
                     when_not_matched_by_source=(NotMatchedBySourceClause("delete"),))
    info = engine.merge(frame(spark, [(1, "a"), (2, "skip"), (3, "c")]), table, spec)
    assert (info.version, info.metrics["num_inserted"], info.metrics["num_updated"],
            info.metrics["num_deleted"]) == (1, 2, 0, 0)
    assert_rows(engine.read(table), spark, [(1, "a"), (3, "c")])
    check_log(engine, table)


@pytest.mark.parametrize("engine", MERGE_ENGINES, indirect=True)
def test_merge_by_source_update_needs_assignments(engine, spark, table):
    seed(engine, spark, table, [(1, "a")])
    spec = MergeSpec(predicate="t.id <=> s.id", when_not_matched_by_source=(NotMatchedBySourceClause("update"),))
    with pytest.raises(TableError, match="NOT MATCHED BY SOURCE"):
        engine.merge(frame(spark, [(2, "b")]), table, spec)
    assert_rows(engine.read(table), spark, [(1, "a")])


@pytest.mark.parametrize("with_by_source", [False, True], ids=["upsert", "upsert+by-source"])
@pytest.mark.parametrize("engine", MERGE_ENGINES, indirect=True)
def test_merge_several_source_rows_for_one_target_row_raises(engine, spark, table, with_by_source):
    seed(engine, spark, table, [(1, "a"), (2, "b")])
    spec = MergeSpec.upsert(["id"])
    if with_by_source:
        spec = MergeSpec(spec.predicate, spec.when_matched, spec.when_not_matched,
                         (NotMatchedBySourceClause("delete"),))
    with pytest.raises(TableError):
        engine.merge(frame(spark, [(1, "x"), (1, "y")]), table, spec)
    assert engine.version(table) == 1
    assert_rows(engine.read(table), spark, [(1, "a"), (2, "b")])


@pytest.mark.parametrize("engine", MERGE_ENGINES, indirect=True)
def test_merge_metrics_count_each_kind(engine, spark, table):
    seed(engine, spark, table, [(1, "a"), (2, "b"), (3, "c"), (4, "d"), (5, "e"), (6, "f")])
    source = frame(spark, [(1, "A", "U"), (2, "B", "U"), (3, None, "D"), (7, "g", "I"), (8, "h", "I"),
                           (9, "i", "I")], "id long, v string, op string")
    spec = MergeSpec(
        predicate="t.id = s.id",
        when_matched=(MatchedClause("delete", condition="s.op = 'D'"), MatchedClause("update", set={"v": "s.v"})),
        when_not_matched=(NotMatchedClause(values={"id": "s.id", "v": "s.v"}),),
    )
    info = engine.merge(source, table, spec)
    assert (info.metrics["num_inserted"], info.metrics["num_updated"], info.metrics["num_deleted"]) == (3, 2, 1)
    assert engine.read(table).count() == 8
    check_log(engine, table)


@pytest.mark.parametrize("engine", MERGE_ENGINES, indirect=True)
def test_merge_null_safe_key(engine, spark, table):
    seed(engine, spark, table, [(None, "x"), (1, "a")])
    info = engine.merge(frame(spark, [(None, "y"), (2, "b")]), table, MergeSpec.upsert(["id"]))
    assert (info.metrics["num_inserted"], info.metrics["num_updated"]) == (1, 1)
    assert_rows(engine.read(table), spark, [(None, "y"), (1, "a"), (2, "b")])
    check_log(engine, table)


# ------------------------------------------------------------------------- history, maintenance
@pytest.mark.parametrize("probe", [False, True], ids=["one-pass", "probe-first"])
def test_merge_rewrites_only_files_with_changed_rows(spark, table, probe):
    engine = make_test_engine(spark, "delta-rs-probe" if probe else "delta-rs")  # delta-spark: its own layout
    seed(engine, spark, table, [(1, "a"), (2, "b")])        # file A
    engine.append(frame(spark, [(3, "c")]), table)         # file B
    engine.append(frame(spark, [(5, "e")]), table)         # file C
    file_a = live_files(table, version=1)
    file_c = live_files(table) - live_files(table, version=2)
    file_b = live_files(table) - file_a - file_c
    spec = MergeSpec.upsert(["id"], only_if_changed="t.v <> s.v")
    # Row 1 (file A) matches unchanged, row 3 (file B) changes, row 4 is new, file C has no match:
    # only file B is rewritten.
    info = engine.merge(frame(spark, [(1, "a"), (3, "C"), (4, "d")]), table, spec)
    assert (info.files_removed, info.metrics["num_updated"], info.metrics["num_inserted"]) == (1, 1, 1)
    assert info.metrics["num_copied"] == 0
    assert file_a | file_c <= live_files(table) and not file_b & live_files(table)  # A, C stay; B replaced
    assert_rows(engine.read(table), spark, [(1, "a"), (2, "b"), (3, "C"), (4, "d"), (5, "e")])
    check_log(engine, table)


def test_merge_finds_touched_files_first_only_for_a_small_source_into_a_large_table(spark, table):
    from deltalake import DeltaTable

    engine = DeltaRsEngine(spark)
    seed(engine, spark, table, [(i, f"v{i}") for i in range(2000)])
    dt = DeltaTable(table)
    small = spark.range(3).selectExpr("id", "'x' AS v")                       # Spark sizes these two
    large = spark.range(200_000).selectExpr("id", "repeat('x', 200) AS v")
    unsized = frame(spark, [(1, "x")])                                         # driver rows: size unknown
    upsert, sync = MergeSpec.upsert(["id"]), MergeSpec(
        "t.id <=> s.id", when_not_matched_by_source=(NotMatchedBySourceClause("delete"),))
    assert not engine._probe_first(dt, small, upsert)  # the table is under merge_probe_min_bytes
    engine.merge_probe_min_bytes = 0
    assert engine._probe_first(dt, small, upsert)
    assert engine._probe_first(dt, unsized, upsert)
    assert not engine._probe_first(dt, large, upsert)  # a source as large as the table: one pass
    assert not engine._probe_first(dt, small, sync)    # NOT MATCHED BY SOURCE reads every file anyway


def _changes(engine, table: str, since: int) -> set[tuple]:
    return {(r["id"], r["v"], r["_change"]) for r in engine.changes(table, since).collect()}


def test_changes_since_a_version_are_exactly_the_changed_row_images(engine, spark, table):
    seed(engine, spark, table, [(1, "a"), (2, "b"), (3, "c")])                       # version 1, one file
    engine.merge(frame(spark, [(2, "B"), (4, "d")]), table, MergeSpec.upsert(["id"]))  # 2: rewrites that file
    engine.delete(table, "id = 3")                                                     # 3
    # Rows 1 (copied into the rewritten file) and 4 -> 4 are unchanged in between: never reported.
    assert _changes(engine, table, 1) == {(2, "B", "insert"), (4, "d", "insert"), (2, "b", "delete"),
                                          (3, "c", "delete")}
    assert _changes(engine, table, 2) == {(3, "c", "delete")}
    assert _changes(engine, table, 3) == set()
    engine.optimize(table)  # compaction moves rows between files without changing them
    assert _changes(engine, table, 3) == set()
    assert engine.changes(table, 99) is None  # a version the table never had: the caller recomputes


def test_changes_after_appends_only_are_the_appended_rows(engine, spark, table):
    seed(engine, spark, table, [(1, "a"), (2, "b")])                                   # version 1
    engine.append(frame(spark, [(3, "c"), (1, "a")]), table)                           # 2: (1, a) a second time
    engine.append(frame(spark, [(4, "d")]), table)                                     # 3
    got = [(r["id"], r["v"], r["_change"]) for r in engine.changes(table, 1).collect()]
    assert sorted(got) == [(1, "a", "insert"), (3, "c", "insert"), (4, "d", "insert")]  # the copy is a new row
    assert _changes(engine, table, 3) == set()


def test_appended_since_is_the_added_rows_while_the_old_rows_stay(spark, table):
    engine = DeltaRsEngine(spark)
    seed(engine, spark, table, [(1, "a"), (2, "b")])                                   # version 1
    first_id = engine.table_id(table)
    engine.append(frame(spark, [(3, "c"), (1, "a")]), table)                           # 2
    engine.merge(frame(spark, [(4, "d"), (2, "b")]), table, MergeSpec.insert_new(["id"]))  # 3: inserts (4, d)
    assert sorted(map(tuple, engine.appended_since(table, 1).collect())) == [(1, "a"), (3, "c"), (4, "d")]
    assert sorted(map(tuple, engine.appended_since(table, 2).collect())) == [(4, "d")]
    assert engine.appended_since(table, 3).count() == 0                                 # nothing since now
    assert engine.appended_since(table, 9) is None                                      # a version it never had
    engine.delete(table, "id = 3")                                                      # 4: a row removed
    assert engine.appended_since(table, 3) is None  # a row of version 3 is gone
    # Every row of version 1 is still there: the others are what was added since (and not removed again).
    assert sorted(map(tuple, engine.appended_since(table, 1).collect())) == [(1, "a"), (4, "d")]
    engine.append(frame(spark, [(5, "e")]), table)                                      # 5
    assert sorted(map(tuple, engine.appended_since(table, 4).collect())) == [(5, "e")]
    engine.optimize(table, min_files=2)                                                 # 6: files rewritten
    assert engine.appended_since(table, 5) is None  # rows moved between files: no longer known to be only added
    # The identity is the log's metaData id: the same across versions, new for a table created again.
    (created,) = [a["metaData"] for a in commit_actions(table, 0) if "metaData" in a]
    assert engine.table_id(table) == first_id == created["id"]
    shutil.rmtree(table)
    seed(engine, spark, table, [(1, "a")])
    assert engine.table_id(table) != first_id


def test_a_backend_that_cannot_list_its_files_answers_appended_since_with_none(spark, table):
    from cpbi_spark.lakehouse.engine import TableEngine

    engine = DeltaRsEngine(spark)
    seed(engine, spark, table, [(1, "a")])
    engine.append(frame(spark, [(2, "b")]), table)
    # The base class's answer (a caller then validates or recomputes in full), on a table where the
    # delta-rs backend does know the appended rows.
    assert TableEngine.appended_since(engine, table, 1) is None and TableEngine.table_id(engine, table) is None
    assert engine.appended_since(table, 1).count() == 1


def test_changes_are_unknown_once_the_old_files_are_vacuumed(spark, table):
    engine = DeltaRsEngine(spark)
    seed(engine, spark, table, [(1, "a")])
    engine.overwrite(frame(spark, [(1, "A")]), table)
    assert _changes(engine, table, 1) == {(1, "A", "insert"), (1, "a", "delete")}
    engine.vacuum(table, retention_hours=0)
    assert engine.changes(table, 1) is None


def test_history_lists_operations_newest_first(engine, spark, table):
    engine.append(frame(spark, [(1, "a"), (2, "b"), (3, "c")]), table, app_id="load", app_version=5)
    engine.overwrite(frame(spark, [(3, "C")]), table, predicate="id = 3")
    engine.delete(table, "id = 1")
    engine.merge(frame(spark, [(2, "B")]), table, MergeSpec.upsert(["id"]))
    history = engine.history(table)
    assert [(h.version, h.operation) for h in history] == [
        (4, "MERGE"), (3, "DELETE"), (2, "OVERWRITE"), (1, "APPEND"), (0, "CREATE TABLE")]
    assert [h.app_id for h in history] == [None, None, None, "load", None]
    stamps = [h.timestamp for h in reversed(history)]
    assert stamps == sorted(stamps) and all(s.tzinfo is not None for s in stamps)
    assert_rows(engine.read(table), spark, [(2, "B"), (3, "C")])


def test_append_tags_are_kept_in_the_commit(engine, spark, table):
    engine.append(frame(spark, [(1, "a")]), table, tags={"files": '["f1", "f2"]'})
    engine.append(frame(spark, [(2, "b")]), table, app_id="load", app_version=1, tags={"files": '["f3"]'})
    engine.append(frame(spark, [(3, "c")]), table)
    by_version = {h.version: h.parameters.get("cpbi.tag.files") for h in engine.history(table)}
    assert by_version == {0: None, 1: '["f1", "f2"]', 2: '["f3"]', 3: None}
    assert [h.app_id for h in engine.history(table)][:2] == [None, "load"]
    check_log(engine, table)


def test_optimize_compacts_small_files_without_changing_rows(engine, spark, table):
    for i in range(1, 5):  # versions 1..4, one file each
        engine.append(frame(spark, [(i, f"v{i}")]), table)
    assert len(live_files(table)) == 4
    assert sorted(engine.file_sizes(table)) == sorted(os.path.getsize(f) for f in live_files(table))
    assert engine.optimize(table, min_files=5).version is None  # four small files: below the threshold
    assert len(live_files(table)) == 4
    info = engine.optimize(table, min_files=4)
    assert (info.version, info.operation, info.files_removed, info.files_added) == (5, "OPTIMIZE", 4, 1)
    assert len(live_files(table)) == 1
    actions = [a for a in commit_actions(table, 5) if "add" in a or "remove" in a]
    assert len(actions) == 5
    assert all(next(iter(a.values()))["dataChange"] is False for a in actions)
    assert_rows(engine.read(table), spark, [(1, "v1"), (2, "v2"), (3, "v3"), (4, "v4")])
    assert_rows(engine.read(table, version=4), spark, [(1, "v1"), (2, "v2"), (3, "v3"), (4, "v4")])
    assert engine.optimize(table).version is None  # one file left: nothing to compact
    check_log(engine, table)


def _abs(path: str, listed: str) -> str:
    """Vacuum lists files relative to the table or as absolute paths/URIs; make them comparable."""
    local = table_root(listed)
    return os.path.normpath(local if os.path.isabs(local) else os.path.join(path, local))


def test_vacuum_removes_unreferenced_files(engine, spark, table):
    seed(engine, spark, table, [(1, "a"), (2, "b")])
    old = live_files(table)
    engine.overwrite(frame(spark, [(3, "c")]), table)
    current = live_files(table)
    assert old and current and not old & current
    planned = {_abs(table, f) for f in engine.vacuum(table, retention_hours=0, dry_run=True)}
    assert planned == old
    assert all(os.path.exists(f) for f in old)  # a dry run deletes nothing
    removed = {_abs(table, f) for f in engine.vacuum(table, retention_hours=0)}
    assert removed == old
    assert not any(os.path.exists(f) for f in old)
    assert all(os.path.exists(f) for f in current)
    assert_rows(engine.read(table), spark, [(3, "c")])
    check_log(engine, table)


def test_append_schema_mismatch_names_the_column(engine, spark, table):
    seed(engine, spark, table, [(1, "a")])
    with pytest.raises(TableError, match="unexpected column extra"):
        engine.append(frame(spark, [(2, "b", 1)], "id long, v string, extra int"), table)
    with pytest.raises(TableError, match="column id is string, table has bigint"):
        engine.append(frame(spark, [("2", "b")], "id string, v string"), table)
    assert engine.version(table) == 1
    assert_rows(engine.read(table), spark, [(1, "a")])


# ------------------------------------------------------------------------- another reader
WIDE = ("id long, name string, amount decimal(10,2), qty int, price double, sold_on date, "
        "sold_at timestamp, promo boolean")


def _wide_rows() -> list[tuple]:
    utc = timezone.utc
    return [
        (1, "anna", Decimal("12.50"), 2, 6.25, date(2024, 1, 31), datetime(2024, 1, 31, 9, 30, tzinfo=utc), True),
        (2, "bo", Decimal("-3.10"), None, None, date(2024, 2, 29), datetime(2024, 2, 29, 23, 59, 59, 999999,
                                                                             tzinfo=utc), False),
        (3, None, None, 7, 1.5, None, None, None),
        (4, "dörte", Decimal("99999999.99"), -1, 0.1, date(1999, 12, 31), datetime(1970, 1, 1, tzinfo=utc),
         True),
    ]


def _normalise(rows: list[dict[str, Any]]) -> list[tuple]:
    """Comparable tuples: timestamps as UTC instants, rows sorted by id."""
    out = []
    for r in rows:
        vals = []
        for v in r.values():
            if isinstance(v, datetime):
                v = v.astimezone(timezone.utc) if v.tzinfo else v.replace(tzinfo=timezone.utc)
            vals.append(v)
        out.append(tuple(vals))
    return sorted(out, key=lambda t: t[0])


def test_another_reader_sees_the_same_rows(engine, spark, table):
    from deltalake import DeltaTable

    def same_through_deltalake(expected_ids: list[int]) -> None:
        theirs = _normalise(DeltaTable(table).to_pyarrow_table().to_pylist())
        ours = _normalise(engine.read(table).toArrow().to_pylist())
        assert ours == theirs
        assert [r[0] for r in theirs] == expected_ids
        check_log(engine, table)

    rows = _wide_rows()
    engine.append(spark.createDataFrame(rows[:2], WIDE).coalesce(1), table)
    same_through_deltalake([1, 2])
    engine.append(spark.createDataFrame(rows[2:], WIDE).coalesce(1), table)
    same_through_deltalake([1, 2, 3, 4])
    changed = spark.createDataFrame([(2, "bo", Decimal("4.00"), 3, 2.0, date(2024, 3, 1), None, True),
                                     (5, "eve", Decimal("0.01"), 1, 9.0, None, None, False)], WIDE)
    engine.merge(changed, table, MergeSpec.upsert(["id"]))
    same_through_deltalake([1, 2, 3, 4, 5])
    engine.delete(table, "id = 3")
    same_through_deltalake([1, 2, 4, 5])
    engine.optimize(table)
    same_through_deltalake([1, 2, 4, 5])
    theirs = {r["id"]: r for r in DeltaTable(table).to_pyarrow_table().to_pylist()}
    assert (theirs[2]["amount"], theirs[2]["qty"], theirs[4]["name"]) == (Decimal("4.00"), 3, "dörte")


def test_log_reader_replays_from_a_checkpoint(spark, table):
    """The test reader itself: starting from a checkpoint gives the same live set as the JSON alone."""
    from deltalake import DeltaTable

    engine = DeltaRsEngine(spark)
    seed(engine, spark, table, [(1, "a")])
    engine.append(frame(spark, [(2, "b")]), table)
    engine.delete(table, "id = 1")  # version 3: a remove before the checkpoint
    before = live_files(table)
    DeltaTable(table).create_checkpoint()
    assert any(".checkpoint." in n for n in os.listdir(os.path.join(table, "_delta_log")))
    assert live_files(table) == before
    engine.append(frame(spark, [(3, "c")]), table)  # version 4, after the checkpoint
    snap = read_log(table)
    assert snap.version == 4 and len(snap.files) == 2
    assert live_files(table, version=3) == before
    check_log(engine, table)
