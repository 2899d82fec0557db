"""An interrupted job leaves the table at its previous version; racing writers lose no rows.

The crash cases run the write in a separate Python process with its own local Spark session
and kill its whole process group (Python driver, JVM, Python workers) with SIGKILL, once
at a known point of the write:

* ``before-commit`` (delta-rs): Spark has written every data file and the driver is about to
  commit (``_commit`` is replaced in the child by a function that signals and sleeps);
* ``mid-write``: a UDF sleeps on every row, and the kill comes as soon as the first data file
  of the write appears on disk, while the Spark task is still writing.

Then, in the test process: the table reads at the old version with exactly the old rows, the
files of the killed write are on disk but not in the table, ``vacuum(retention_hours=0)``
deletes them, and the same append (same idempotency token) completes on rerun.

Example:
    $ .venv/bin/python -m pytest tests/test_lakehouse_crash.py -q
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from chispa import assert_df_equality

from cpbi_spark.errors import CommitConflict
from cpbi_spark.lakehouse.deltars_engine import DeltaRsEngine
from cpbi_spark.lakehouse.merge_spec import MergeSpec
from cpbi_spark.lakehouse.select import delta_spark_unavailable_reason
from delta_log_reader import data_files_on_disk, live_files, read_log
from test_lakehouse_contract import check_log, make_test_engine

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

SCHEMA = "id long, v string"
OLD_ROWS = [(1, "a"), (2, "b")]
NEW_ROWS = [(100 + i, f"new-{i}") for i in range(20)]
APP_ID, APP_VERSION = "crash-job", 7

# The child: its own Spark session, one append of NEW_ROWS, stopped at the point `mode` names.
CHILD = r'''
import json, sys, time

mode, engine_name, path, marker, delta_conf = sys.argv[1:6]
from cpbi_spark.session import get_spark
from cpbi_spark.lakehouse.select import make_engine

# C1-only JIT and the serial GC: the child lives seconds, and they start Spark ~40% faster.
spark = get_spark({"spark.sql.shuffle.partitions": "1", "spark.default.parallelism": "1",
                   "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
                   **json.loads(delta_conf)},
                  app_name="cpbi-crash-child", master="local[1]")
spark.sparkContext.setLogLevel("ERROR")
engine = make_engine(spark, engine_name)
rows = spark.createDataFrame([(100 + i, f"new-{i}") for i in range(20)], "id long, v string").coalesce(1)
if mode == "before-commit":
    def stalled_commit(*args, **kwargs):
        open(marker, "w").write("files written, commit not started")
        time.sleep(600)
    engine._commit = stalled_commit
elif mode == "mid-write":
    from pyspark.sql import functions as F

    @F.udf("string")
    def slow(v):
        time.sleep(1.0)  # 20 rows: the task takes 20 s, the test kills it long before
        return v
    rows = rows.withColumn("v", slow("v"))
engine.append(rows, path, app_id="crash-job", app_version=7)
open(marker + ".finished", "w").write("the append completed: the kill came too late")
'''


DELTA_CONF_KEYS = ("spark.jars", "spark.jars.packages", "spark.sql.extensions", "spark.sql.catalog.spark_catalog")
CRASH_CASES = [("before-commit", "delta-rs"), ("mid-write", "delta-rs"), ("mid-write", "delta-spark")]


def frame(spark: SparkSession, rows: list[tuple]) -> DataFrame:
    return spark.createDataFrame(rows, SCHEMA).coalesce(1)


class CrashChild:
    """One child append, started at once and SIGKILLed (whole process group) at its kill point."""

    def __init__(self, folder: Path, mode: str, engine_name: str, table: str, delta_conf: dict[str, str]):
        self.mode, self.table = mode, table
        self.marker = folder / "marker"
        self.log = folder / "child.log"
        script = folder / "child.py"
        script.write_text(CHILD)
        self.before = data_files_on_disk(table)
        env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
        with open(self.log, "wb") as out:
            # A session of its own: killpg reaches the JVM and the Python workers too, as a crash would.
            args = [sys.executable, str(script), mode, engine_name, table, str(self.marker), json.dumps(delta_conf)]
            self.proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def at_kill_point(self) -> bool:
        if self.mode == "before-commit":
            return self.marker.exists()
        return any(f.endswith(".parquet") for f in data_files_on_disk(self.table) - self.before)

    def kill(self) -> None:
        # The group id is the child's pid (start_new_session), so this reaches its JVM and Python
        # workers and nothing else; only before the child is reaped, while that id is still ours.
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@pytest.fixture(scope="module")
def killed_appends(spark, tmp_path_factory) -> dict[tuple[str, str], tuple[str, set[str]]]:
    """Per crash case that can run here: (table, files committed before the killed append).

    Every child runs at the same time (each spends ~5 s starting Spark), and each is killed as
    soon as it reaches its own kill point.
    """
    # Whatever made Delta load in this session (jars, extension) is handed to the children too.
    delta_conf = {k: v for k in DELTA_CONF_KEYS if (v := spark.conf.get(k, None))}
    children: dict[tuple[str, str], CrashChild] = {}
    committed: dict[tuple[str, str], set[str]] = {}
    try:
        for mode, engine_name in CRASH_CASES:
            if engine_name == "delta-spark" and delta_spark_unavailable_reason(spark) is not None:
                continue  # the test itself reports the skip and why
            folder = tmp_path_factory.mktemp(f"{mode}-{engine_name}")
            table = str(folder / "t")
            engine = make_test_engine(spark, engine_name)
            assert engine.append(frame(spark, OLD_ROWS), table).version == 1
            committed[(mode, engine_name)] = live_files(table)
            children[(mode, engine_name)] = CrashChild(folder, mode, engine_name, table, delta_conf)
        waiting = dict(children)
        deadline = time.monotonic() + 120
        while waiting:
            for key, child in list(waiting.items()):
                if child.at_kill_point():
                    assert child.proc.poll() is None, "the child must still be writing when it is killed"
                    child.kill()
                    del waiting[key]
                elif child.proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"{key}: the child ended or timed out before its kill point "
                                f"(rc={child.proc.poll()}):\n{child.output()}")
            time.sleep(0.05)
    finally:
        for child in children.values():
            child.kill()
    for key, child in children.items():
        assert child.proc.returncode == -signal.SIGKILL, child.output()
        assert not Path(f"{child.marker}.finished").exists(), f"{key}: the append completed before the kill"
    return {key: (child.table, committed[key]) for key, child in children.items()}


@pytest.mark.parametrize(("mode", "engine_name"), CRASH_CASES)
def test_killed_append_leaves_previous_version(spark, killed_appends, mode, engine_name):
    engine = make_test_engine(spark, engine_name)
    table, committed = killed_appends[(mode, engine_name)]

    assert engine.version(table) == 1
    assert read_log(table).version == 1
    assert_df_equality(engine.read(table), frame(spark, OLD_ROWS), ignore_row_order=True)
    assert engine.app_version(table, APP_ID) is None
    orphans = data_files_on_disk(table) - committed
    assert any(f.endswith(".parquet") for f in orphans), "the killed write left no file behind"
    assert live_files(table) == committed
    check_log(engine, table)

    engine.vacuum(table, retention_hours=0)
    parquet_on_disk = {f for f in data_files_on_disk(table) if f.endswith(".parquet")}
    assert parquet_on_disk == committed
    assert_df_equality(engine.read(table), frame(spark, OLD_ROWS), ignore_row_order=True)

    rerun = engine.append(frame(spark, NEW_ROWS), table, app_id=APP_ID, app_version=APP_VERSION)
    assert rerun.changed
    assert engine.app_version(table, APP_ID) == APP_VERSION
    assert_df_equality(engine.read(table), frame(spark, OLD_ROWS + NEW_ROWS), ignore_row_order=True)
    assert not engine.append(frame(spark, NEW_ROWS), table, app_id=APP_ID, app_version=APP_VERSION).changed
    check_log(engine, table)


# ------------------------------------------------------------------------- concurrent writers
def _second_writer_commits_first(monkeypatch, first: DeltaRsEngine, write) -> dict:
    """Make ``first`` commit only after ``write()`` (another engine) committed from the same version.

    ``first`` has already read its snapshot and written its files when ``_commit`` is called,
    so the other writer's commit lands between its read and its commit.
    """
    seen: dict = {}
    original = first._commit

    def commit_late(dt, *args, **kwargs):
        seen["first_read_version"] = dt.version()
        seen["second"] = write()
        return original(dt, *args, **kwargs)

    monkeypatch.setattr(first, "_commit", commit_late)
    return seen


def test_concurrent_appends_keep_both(spark, tmp_path, monkeypatch):
    table = str(tmp_path / "t")
    a, b = DeltaRsEngine(spark), DeltaRsEngine(spark)
    a.append(frame(spark, [(1, "a")]), table)
    seen = _second_writer_commits_first(monkeypatch, a, lambda: b.append(frame(spark, [(2, "b")]), table))
    info = a.append(frame(spark, [(3, "c")]), table)
    # Observed: delta-rs retries a blind append on top of the other commit.
    assert (seen["first_read_version"], seen["second"].version, info.version) == (1, 2, 3)
    assert_df_equality(a.read(table), frame(spark, [(1, "a"), (2, "b"), (3, "c")]), ignore_row_order=True)
    check_log(a, table)


def test_stale_merge_after_concurrent_delete_raises_commit_conflict(spark, tmp_path, monkeypatch):
    table = str(tmp_path / "t")
    a, b = DeltaRsEngine(spark), DeltaRsEngine(spark)
    a.append(frame(spark, [(1, "a"), (2, "b")]), table)  # one file holds both rows
    seen = _second_writer_commits_first(monkeypatch, a, lambda: b.delete(table, "id = 1"))
    with pytest.raises(CommitConflict, match="MERGE lost against a concurrent commit"):
        a.merge(frame(spark, [(2, "B")]), table, MergeSpec.upsert(["id"]))
    # Observed: the merge rewrote the file the delete removed; committing it would bring id 1
    # back, so delta-rs refuses it. The delete stands, the merge must be rerun.
    assert (seen["first_read_version"], seen["second"].version) == (1, 2)
    assert a.version(table) == 2
    assert_df_equality(a.read(table), frame(spark, [(2, "b")]), ignore_row_order=True)
    check_log(a, table)


def test_stale_insert_only_merge_and_concurrent_append_keep_both(spark, tmp_path, monkeypatch):
    table = str(tmp_path / "t")
    a, b = DeltaRsEngine(spark), DeltaRsEngine(spark)
    a.append(frame(spark, [(1, "a")]), table)
    seen = _second_writer_commits_first(monkeypatch, a, lambda: b.append(frame(spark, [(5, "by-b")]), table))
    info = a.merge(frame(spark, [(5, "by-a")]), table, MergeSpec.insert_new(["id"]))
    # Observed (Delta's WriteSerializable rule, delta-spark does the same): a blind append does
    # not conflict with a merge that read the table before it, so both rows are kept, and the
    # key 5 is now there twice. No row is lost; the duplicate is the documented price.
    assert (seen["first_read_version"], seen["second"].version, info.version) == (1, 2, 3)
    assert_df_equality(a.read(table), frame(spark, [(1, "a"), (5, "by-a"), (5, "by-b")]), ignore_row_order=True)
    check_log(a, table)


def test_stale_optimize_after_concurrent_delete_raises_commit_conflict(spark, tmp_path, monkeypatch):
    table = str(tmp_path / "t")
    a, b = DeltaRsEngine(spark), DeltaRsEngine(spark)
    for row in [(1, "a"), (2, "b"), (3, "c")]:  # three small files
        a.append(frame(spark, [row]), table)
    seen = _second_writer_commits_first(monkeypatch, a, lambda: b.delete(table, "id = 1"))
    with pytest.raises(CommitConflict, match="OPTIMIZE lost against a concurrent commit"):
        a.optimize(table)
    # The compacted file still holds id 1: committing it would bring the deleted row back.
    assert (seen["first_read_version"], seen["second"].version) == (3, 4)
    assert a.version(table) == 4
    assert_df_equality(a.read(table), frame(spark, [(2, "b"), (3, "c")]), ignore_row_order=True)
    check_log(a, table)


def test_stale_optimize_and_concurrent_append_keep_every_row_once(spark, tmp_path, monkeypatch):
    table = str(tmp_path / "t")
    a, b = DeltaRsEngine(spark), DeltaRsEngine(spark)
    for row in [(1, "a"), (2, "b")]:
        a.append(frame(spark, [row]), table)
    seen = _second_writer_commits_first(monkeypatch, a, lambda: b.append(frame(spark, [(3, "c")]), table))
    info = a.optimize(table)
    # The appended file is not among the compacted ones: the compaction commits on top of it.
    assert (seen["first_read_version"], seen["second"].version, info.version) == (2, 3, 4)
    assert info.files_removed == 2 and info.files_added == 1
    assert_df_equality(a.read(table), frame(spark, [(1, "a"), (2, "b"), (3, "c")]), ignore_row_order=True)
    check_log(a, table)
