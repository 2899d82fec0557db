"""delta-spark backend: every operation through Delta Lake's own Spark API (``delta.tables``).

Use it where Spark ships Delta's JVM jars (Databricks, EMR, a session started with
``--packages io.delta:delta-spark_2.13:<version>`` and the Delta SQL extension): Delta then
writes both the data files and the log, with its own conflict detection. ``delta`` is imported
lazily inside the methods, so this module imports (and the engine can be named) without the
JVM classes; :func:`cpbi_spark.lakehouse.select.make_engine` only builds it when they load.

The semantics follow :class:`~cpbi_spark.lakehouse.deltars_engine.DeltaRsEngine`, so a job
behaves the same on either backend: tables are created with deletion vectors off (protocol
reader 1 / writer 2, rewritten files instead of deletion vectors, so the delta-rs backend and
every other Delta reader can read them), an append to a missing table creates it first
(version 0) and commits the rows as version 1, a write that changes nothing returns
``CommitInfo(None, ...)``, a timestamp read picks the last version committed at or before it,
and Spark/Delta exceptions surface as :class:`TableError` (:class:`CommitConflict` for a lost
concurrent commit).

Where Delta itself decides, Delta's behaviour stands: a MERGE that is not matched-only (an
upsert with ``only_if_changed``, say) rewrites every file holding a matched row even when no
clause condition holds, so a rerun that changes no row still commits a version (its metrics
show 0 inserted/updated/deleted); the delta-rs backend commits nothing then. Concurrent
writers follow Delta's WriteSerializable conflict rules.

Example:
    >>> engine = DeltaSparkEngine(spark)                                    # doctest: +SKIP
    >>> engine.merge(updates, "/lake/silver/dim_x", MergeSpec.upsert(["id"])).metrics  # doctest: +SKIP
    {'num_inserted': 3, 'num_updated': 1, 'num_deleted': 0, 'num_copied': 7}
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from cpbi_spark.errors import CommitConflict, CpbiError, TableError, TableNotFound
from cpbi_spark.lakehouse.deltars_engine import DeltaRsEngine, _spark_uri
from cpbi_spark.lakehouse.engine import TAG_PREFIX, CommitInfo, HistoryEntry, TableEngine, compaction_plan
from cpbi_spark.lakehouse.merge_spec import MergeSpec

if TYPE_CHECKING:
    from collections.abc import Mapping

    from delta.tables import DeltaTable
    from pyspark.sql import DataFrame, Row, SparkSession
    from pyspark.sql.types import StructType

# Deletion vectors would make files partly live: readers that replay add/remove actions only
# (the delta-rs backend reads ``file_uris()``) would then see deleted rows again.
TABLE_PROPERTIES: dict[str, str] = {"delta.enableDeletionVectors": "false"}

# cpbi's metric names (those of the delta-rs backend) -> Delta's operationMetrics keys.
_METRICS: dict[str, dict[str, str]] = {
    "APPEND": {"num_inserted": "numOutputRows"},
    "OVERWRITE": {"num_inserted": "numOutputRows", "num_deleted": "numDeletedRows"},
    "DELETE": {"num_deleted": "numDeletedRows"},
    "MERGE": {"num_inserted": "numTargetRowsInserted", "num_updated": "numTargetRowsUpdated",
              "num_deleted": "numTargetRowsDeleted", "num_copied": "numTargetRowsCopied"},
    "OPTIMIZE": {"files_compacted": "numRemovedFiles"},
}
_FILES_ADDED = ("numTargetFilesAdded", "numAddedFiles", "numFiles")
_FILES_REMOVED = ("numTargetFilesRemoved", "numRemovedFiles")
_RETENTION_CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"


def _rs_uri(path: str) -> str:
    """deltalake names S3 ``s3``; Spark's Hadoop filesystems name it ``s3a``."""
    return "s3://" + path[len("s3a://"):] if path.startswith("s3a://") else path


def _sql_table(path: str) -> str:
    """``delta.`<path>``` with backticks in the path escaped, for SQL-only commands (VACUUM DRY RUN)."""
    return "delta.`" + _spark_uri(path).replace("`", "``") + "`"


def _int_metrics(raw: Mapping[str, str] | None) -> dict[str, int]:
    """Delta stores operationMetrics as strings; keep the integral ones as ints."""
    out = {}
    for key, value in (raw or {}).items():
        try:
            out[key] = int(value)
        except (TypeError, ValueError):
            continue
    return out


def _operation_name(operation: str, parameters: Mapping[str, str] | None) -> str:
    """Delta logs appends and overwrites as ``WRITE``; name them as the delta-rs backend does."""
    if operation == "WRITE":
        mode = str((parameters or {}).get("mode", "")).strip('"').lower()
        return {"append": "APPEND", "overwrite": "OVERWRITE"}.get(mode, operation)
    return operation


@contextmanager
def _delta_errors(path: str, operation: str) -> Iterator[None]:
    """Re-raise Spark/Delta failures as cpbi errors (CommitConflict for a lost concurrent commit)."""
    from delta.exceptions import (
        ConcurrentAppendException,
        ConcurrentDeleteDeleteException,
        ConcurrentDeleteReadException,
        ConcurrentTransactionException,
        ConcurrentWriteException,
        DeltaConcurrentModificationException,
        MetadataChangedException,
        ProtocolChangedException,
    )
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    conflicts = (ConcurrentAppendException, ConcurrentDeleteDeleteException, ConcurrentDeleteReadException,
                 ConcurrentTransactionException, ConcurrentWriteException,
                 DeltaConcurrentModificationException, MetadataChangedException, ProtocolChangedException)
    try:
        yield
    except CpbiError:
        raise
    except conflicts as exc:
        raise CommitConflict(f"{path}: {operation} lost against a concurrent commit: {exc}") from exc
    except (PySparkException, Py4JJavaError) as exc:
        # Only the first line: Delta's messages are followed by a JVM stack trace.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TableError(f"{path}: {operation} failed: {first}") from exc


@contextmanager
def _session_conf(spark: SparkSession, settings: Mapping[str, str]) -> Iterator[None]:
    """Set session confs for one call and restore the previous values (or unset them) after it."""
    previous = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


class DeltaSparkEngine(TableEngine):
    """Delta tables read and written by delta-spark (needs Delta's jars and SQL extension)."""

    name = "delta-spark"

    # ---------------------------------------------------------------- metadata
    def _table(self, path: str) -> DeltaTable:
        from delta.tables import DeltaTable

        if not self.exists(path):
            raise TableNotFound(f"no Delta table at {path}")
        with _delta_errors(path, "open"):
            return DeltaTable.forPath(self.spark, _spark_uri(path))

    def exists(self, path: str) -> bool:
        from delta.tables import DeltaTable

        return bool(DeltaTable.isDeltaTable(self.spark, _spark_uri(path)))

    def _last_commit(self, path: str) -> Row:
        with _delta_errors(path, "history"):
            return self._table(path).history(1).collect()[0]

    def version(self, path: str) -> int:
        return int(self._last_commit(path)["version"])

    def schema(self, path: str) -> StructType:
        if not self.exists(path):
            raise TableNotFound(f"no Delta table at {path}")
        with _delta_errors(path, "schema"):
            return self.spark.read.format("delta").load(_spark_uri(path)).schema

    def create(self, path: str, schema: StructType, *, description: str | None = None) -> CommitInfo:
        from delta.tables import DeltaTable

        if self.exists(path):
            DeltaRsEngine._check_schema(self.schema(path), schema, path)
            return CommitInfo(None, "CREATE")
        builder = DeltaTable.createIfNotExists(self.spark).location(_spark_uri(path)).addColumns(schema)
        for key, value in TABLE_PROPERTIES.items():
            builder = builder.property(key, value)
        if description:
            builder = builder.comment(description)
        with _delta_errors(path, "CREATE"):
            builder.execute()
        # createIfNotExists is a no-op when another job created the table meanwhile: check it too.
        DeltaRsEngine._check_schema(self.schema(path), schema, path)
        return CommitInfo(0, "CREATE")

    # ---------------------------------------------------------------- reads
    def read(self, path: str, *, version: int | None = None, timestamp: datetime | None = None) -> DataFrame:
        if not self.exists(path):
            raise TableNotFound(f"no Delta table at {path}")
        if version is not None and timestamp is not None:
            raise TableError(f"{path}: read as of a version or a timestamp, not both")
        if timestamp is not None:
            version = self._version_at(path, timestamp)
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", int(version))
        with _delta_errors(path, f"read (version {version})" if version is not None else "read"):
            return reader.load(_spark_uri(path))

    def _version_at(self, path: str, timestamp: datetime) -> int:
        """The last version committed at or before ``timestamp`` (naive = UTC, as in delta-rs).

        Delta's own ``timestampAsOf`` refuses timestamps after the last commit; resolving the
        version here gives the delta-rs backend's answer (the latest version) instead.
        """
        from pyspark.sql import functions as F

        when = timestamp if timestamp.tzinfo is not None else timestamp.replace(tzinfo=timezone.utc)
        with _delta_errors(path, "history"):
            row = (self._table(path).history().filter(F.col("timestamp") <= F.lit(when))
                   .agg(F.max("version").alias("v")).collect()[0])
        if row["v"] is None:
            raise TableError(f"{path}: no version as of {when.isoformat()} (before the first commit)")
        return int(row["v"])

    def history(self, path: str) -> list[HistoryEntry]:
        from pyspark.sql import functions as F

        with _delta_errors(path, "history"):
            rows = (self._table(path).history()
                    .select("version", F.expr("unix_micros(timestamp)").alias("ts_us"), "operation",
                            "operationParameters", "operationMetrics", "userMetadata")
                    .orderBy(F.col("version").desc()).collect())
        out = []
        for r in rows:
            params = dict(r["operationParameters"] or {})
            parameters: dict[str, Any] = {"operationParameters": params,
                                          "operationMetrics": dict(r["operationMetrics"] or {})}
            user = self._user_metadata(r["userMetadata"])
            parameters.update(user)
            out.append(HistoryEntry(
                version=int(r["version"]),
                timestamp=datetime.fromtimestamp(r["ts_us"] / 1_000_000, tz=timezone.utc),
                operation=_operation_name(r["operation"], params),
                parameters=parameters,
                app_id=user.get("cpbi.app_id"),
            ))
        return out

    @staticmethod
    def _user_metadata(raw: str | None) -> dict[str, Any]:
        """The ``cpbi.*`` keys this engine stores in a commit's userMetadata (JSON), if any."""
        if not raw:
            return {}
        try:
            data = json.loads(raw)
        except ValueError:
            return {"userMetadata": raw}
        return data if isinstance(data, dict) else {"userMetadata": raw}

    def app_version(self, path: str, app_id: str) -> int | None:
        from deltalake import DeltaTable as RsTable

        if not self.exists(path):
            return None
        # delta-spark has no Python API for the txn actions; deltalake reads any Delta table's log.
        return RsTable(_rs_uri(path)).transaction_version(app_id)

    # ---------------------------------------------------------------- writes
    def _commit_info(self, path: str, before: int, operation: str) -> CommitInfo:
        """What the operation committed, from the newest history entry (None when no new version)."""
        last = self._last_commit(path)
        if int(last["version"]) == before:
            return CommitInfo(None, operation)
        raw = _int_metrics(last["operationMetrics"])
        added = next((raw[k] for k in _FILES_ADDED if k in raw), 0)
        removed = next((raw[k] for k in _FILES_REMOVED if k in raw), 0)
        metrics = {ours: raw.get(theirs, 0) for ours, theirs in _METRICS.get(operation, {}).items()}
        return CommitInfo(int(last["version"]), operation, added, removed, metrics)

    def _ensure_table(self, df: DataFrame, path: str) -> None:
        if not self.exists(path):
            self.create(path, df.schema)
        else:
            DeltaRsEngine._check_schema(self.schema(path), df.schema, path)

    def append(self, df: DataFrame, path: str, *, app_id: str | None = None,
               app_version: int | None = None, tags: Mapping[str, str] | None = None) -> CommitInfo:
        if app_id is not None:
            done = self.app_version(path, app_id)
            if done is not None and done >= int(app_version or 0):
                return CommitInfo(None, "APPEND")  # this batch was committed before: idempotent rerun
        self._ensure_table(df, path)
        # No empty-frame check: Delta skips a commit without actions (skipRecordingEmptyCommits),
        # and _commit_info then reports no version, as the delta-rs backend does.
        before = self.version(path)
        writer = df.write.format("delta").mode("append")
        metadata = {f"{TAG_PREFIX}{k}": v for k, v in (tags or {}).items()}
        if app_id is not None:
            # Delta records (txnAppId, txnVersion) in the same commit and skips a version it has
            # already seen, so two racing reruns still write the batch once.
            writer = writer.option("txnAppId", app_id).option("txnVersion", int(app_version or 0))
            metadata.update({"cpbi.app_id": app_id, "cpbi.app_version": int(app_version or 0)})
        if metadata:
            writer = writer.option("userMetadata", json.dumps(metadata))
        with _delta_errors(path, "APPEND"):
            writer.save(_spark_uri(path))
        return self._commit_info(path, before, "APPEND")

    def overwrite(self, df: DataFrame, path: str, *, predicate: str | None = None) -> CommitInfo:
        from pyspark.sql import functions as F

        self._ensure_table(df, path)
        writer = df.write.format("delta").mode("overwrite")
        if predicate is not None:
            # Delta checks this too, but only while writing and with a JVM error; fail early and clearly.
            outside = df.filter(~F.coalesce(F.expr(predicate), F.lit(False))).limit(1).count()
            if outside:
                raise TableError(f"{path}: overwrite with predicate {predicate!r}: "
                                 "some new rows do not match it")
            writer = writer.option("replaceWhere", predicate)
        before = self.version(path)
        # A whole overwrite removes every live file; Delta's WRITE metrics do not always count them.
        replaced = None if predicate is not None else int(self._table(path).detail().first()["numFiles"])
        with _delta_errors(path, "OVERWRITE"):
            writer.save(_spark_uri(path))
        info = self._commit_info(path, before, "OVERWRITE")
        if replaced is not None and info.changed and not info.files_removed:
            info = dataclasses.replace(info, files_removed=replaced)
        return info

    def delete(self, path: str, predicate: str) -> CommitInfo:
        table = self._table(path)
        before = self.version(path)
        with _delta_errors(path, "DELETE"):
            table.delete(predicate)
        return self._commit_info(path, before, "DELETE")

    # ---------------------------------------------------------------- merge
    def merge(self, source: DataFrame, path: str, spec: MergeSpec) -> CommitInfo:
        table = self._table(path)
        before = self.version(path)
        builder = table.alias(spec.target_alias).merge(source.alias(spec.source_alias), spec.predicate)
        # Clauses keep their order: Delta, like SQL, applies the first one whose condition holds.
        for m in spec.when_matched:
            if m.action == "delete":
                builder = builder.whenMatchedDelete(condition=m.condition)
            elif m.set is None:
                builder = builder.whenMatchedUpdateAll(condition=m.condition)
            else:
                builder = builder.whenMatchedUpdate(condition=m.condition, set=dict(m.set))
        for n in spec.when_not_matched:
            if n.values is None:
                builder = builder.whenNotMatchedInsertAll(condition=n.condition)
            else:
                builder = builder.whenNotMatchedInsert(condition=n.condition, values=dict(n.values))
        for b in spec.when_not_matched_by_source:
            if b.action == "delete":
                builder = builder.whenNotMatchedBySourceDelete(condition=b.condition)
            elif b.set is None:
                raise TableError(f"{path}: MERGE: WHEN NOT MATCHED BY SOURCE THEN UPDATE needs explicit "
                                 "assignments (there is no source row to copy)")
            else:
                builder = builder.whenNotMatchedBySourceUpdate(condition=b.condition, set=dict(b.set))
        with _delta_errors(path, "MERGE"):
            builder.execute()
        info = self._commit_info(path, before, "MERGE")
        if info.version is None:  # nothing matched any clause: Delta made no commit
            return CommitInfo(None, "MERGE", metrics=dict.fromkeys(_METRICS["MERGE"], 0))
        return info

    # ---------------------------------------------------------------- maintenance
    def file_sizes(self, path: str) -> list[int]:
        # The live files as Delta lists them, sized through the Hadoop file system that holds them.
        jvm, hadoop_conf = self.spark._jvm, self.spark._jsc.hadoopConfiguration()
        sizes = []
        for uri in self.read(path).inputFiles():
            file = jvm.org.apache.hadoop.fs.Path(uri)
            sizes.append(int(file.getFileSystem(hadoop_conf).getFileStatus(file).getLen()))
        return sizes

    def optimize(self, path: str, *, target_file_mb: int = 128, min_files: int = 2) -> CommitInfo:
        table = self._table(path)
        before = self.version(path)
        target = target_file_mb * 1024 * 1024
        # Delta's OPTIMIZE has no minimum count of small files: the shared rule decides whether to run it.
        if not compaction_plan(self.file_sizes(path), target_file_mb, min_files)[0]:
            return CommitInfo(None, "OPTIMIZE")
        # Same rule as the delta-rs backend: files under half the target are compacted into
        # files of about the target size.
        settings = {"spark.databricks.delta.optimize.maxFileSize": str(target),
                    "spark.databricks.delta.optimize.minFileSize": str(target // 2)}
        with _session_conf(self.spark, settings), _delta_errors(path, "OPTIMIZE"):
            table.optimize().executeCompaction()
        return self._commit_info(path, before, "OPTIMIZE")

    def vacuum(self, path: str, *, retention_hours: int = 168, dry_run: bool = False) -> list[str]:
        table = self._table(path)
        hours = float(retention_hours)
        # The caller chose the retention (0 after a crash, say): lift Delta's 168 h floor for
        # this call only, as the delta-rs backend does with enforce_retention_duration=False.
        with _session_conf(self.spark, {_RETENTION_CHECK: "false"}), _delta_errors(path, "VACUUM"):
            # DeltaTable.vacuum returns no file list; DRY RUN (SQL only) lists what would go.
            files = [str(r[0]) for r in self.spark.sql(
                f"VACUUM {_sql_table(path)} RETAIN {hours:g} HOURS DRY RUN").collect()]
            if not dry_run:
                table.vacuum(hours)
        return files
