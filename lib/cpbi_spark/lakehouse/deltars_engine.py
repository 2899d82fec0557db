"""delta-rs backend: Spark computes and writes the parquet files, delta-rs commits the log.

No table data passes through the driver: Spark's executors write every data file under
the table folder (``<table>/<write-id>/part-*.parquet``), then the driver reads only the
files' footers (row counts) and commits add/remove actions through delta-rs's transaction
API. MERGE, DELETE and predicate overwrites are computed in Spark and rewrite only the files
that hold an updated or deleted row, committed as one atomic remove+add transaction, so an
interrupted job leaves the table at its last committed version (the uncommitted files are
orphans that :meth:`vacuum` removes). A MERGE of a source smaller than a table of at least
:attr:`DeltaRsEngine.merge_probe_min_bytes` first finds the files the source matches and reads
only those; otherwise the table is joined whole in one pass; an empty one only appends. Each add
action records ``numRecords``, so :meth:`row_count` needs no Spark job.

Rows the driver built itself (run records, reference data: :meth:`append_records`,
:meth:`overwrite_records`) are the one exception: they are already on the driver, so delta-rs
writes and commits them directly, without a Spark job per record batch.

Protocol used: reader 1 / writer 2 (no deletion vectors, no column mapping), the features
every Delta reader supports, so delta-spark can read and write these tables too.

Example:
    >>> engine = DeltaRsEngine(spark)                          # doctest: +SKIP
    >>> engine.merge(updates, "/lake/silver/dim_x", MergeSpec.upsert(["id"]))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from cpbi_spark.errors import CommitConflict, TableError, TableNotFound
from cpbi_spark.lakehouse.engine import (
    CHANGE_COLUMN,
    TAG_PREFIX,
    CommitInfo,
    HistoryEntry,
    TableEngine,
    compaction_plan,
)
from cpbi_spark.lakehouse.merge_spec import MergeSpec

if TYPE_CHECKING:
    from collections.abc import Mapping

    from deltalake import DeltaTable
    from pyspark.sql import DataFrame
    from pyspark.sql.types import StructType

_FILE = "_cpbi_file"
_ROW = "_cpbi_row"
_T_PRESENT = "_cpbi_t"
_S_PRESENT = "_cpbi_s"
_ACTION = "_cpbi_action"
_UNKNOWN_SIZE = 2**63 - 1  # Spark's size estimate of a plan it cannot size
# An overwrite by ``replace`` records the content signature ``[rows, h64, h32]`` of what it wrote under this tag.
SIGNATURE_TAG = "content_signature"


def _norm(uri: str) -> str:
    """Normalise a file URI so Spark's ``file:/x`` and delta-rs's ``/x`` compare equal."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return unquote(parsed.path).replace("//", "/")
    return f"{parsed.netloc}{unquote(parsed.path)}"


def _escape(name: str) -> str:
    """A column name for inside SQL backticks."""
    return name.replace("`", "``")


def _clause_condition(expr: str | None) -> str:
    """A MERGE clause's condition as SQL: a NULL outcome does not take the clause; none is always true."""
    return f"coalesce(({expr}), false)" if expr else "true"


def _struct_of(columns: list[str], alias: str):
    """``struct(`a`, `b`, ...) AS alias``: the columns nested under one name (one call into Spark)."""
    from pyspark.sql import functions as F

    return F.expr("struct(" + ", ".join(f"`{_escape(c)}`" for c in columns) + ")").alias(alias)


def _spark_uri(uri: str) -> str:
    """Spark's Hadoop filesystems name S3 ``s3a``; delta-rs names it ``s3``."""
    return "s3a://" + uri[len("s3://"):] if uri.startswith("s3://") else uri


def _add_actions(dt: DeltaTable) -> list[dict]:
    """The live files of the snapshot (path, size_bytes, ...) as plain dicts."""
    import pyarrow as pa

    return pa.table(dt.get_add_actions(flatten=True)).to_pylist()


def _filesystem_of(uri: str):
    """``(pyarrow filesystem, path in it)`` of a table path or file: a URI, or a local path."""
    from pyarrow import fs as pafs

    return pafs.FileSystem.from_uri(uri if "://" in uri else f"file://{uri}")


def _file_exists(uri: str) -> bool:
    from pyarrow import fs as pafs

    filesystem, where = _filesystem_of(uri)
    return filesystem.get_file_info(where).type != pafs.FileType.NotFound


def _now_ms() -> int:
    return int(time.time() * 1000)


def _commit_properties(operation: str, metrics: dict[str, int] | None, app_id: str | None,
                       app_version: int | None, tags: Mapping[str, str] | None = None):
    """The commit's custom metadata (``cpbi.*``: operation, metrics, app id, tags), retries and idempotency token."""
    from deltalake.transaction import CommitProperties, Transaction

    custom = {"cpbi.operation": operation, **{f"cpbi.{k}": v for k, v in (metrics or {}).items()},
              **{f"{TAG_PREFIX}{k}": v for k, v in (tags or {}).items()}}
    txns = None
    if app_id is not None:
        custom["cpbi.app_id"] = app_id
        txns = [Transaction(app_id, int(app_version or 0), _now_ms())]
    return CommitProperties(custom_metadata=custom, max_commit_retries=3, app_transactions=txns)


class DeltaRsEngine(TableEngine):
    """Delta tables written by Spark and committed with delta-rs (the embedded default)."""

    name = "delta-rs"

    # ---------------------------------------------------------------- metadata
    def _table(self, path: str, version: int | None = None) -> DeltaTable:
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            return DeltaTable(path, version=version)
        except TableNotFoundError as exc:
            raise TableNotFound(f"no Delta table at {path}") from exc
        except Exception as exc:  # delta-rs raises plain errors for a missing version
            if "version" in str(exc).lower() and version is not None:
                raise TableError(f"{path}: version {version} cannot be read: {exc}") from exc
            raise

    def exists(self, path: str) -> bool:
        from deltalake import DeltaTable

        return DeltaTable.is_deltatable(path)

    def row_count(self, path: str) -> int:
        """The sum of the live files' ``numRecords`` (every writer here records it); a Spark count
        when some file lacks it (a file added by another writer without statistics)."""
        counts = [a.get("num_records") for a in _add_actions(self._table(path))]
        if any(c is None for c in counts):
            return super().row_count(path)
        return int(sum(counts))

    @staticmethod
    def _spark_schema(dt: DeltaTable) -> StructType:
        from pyspark.sql.types import StructType

        # Delta's schema JSON is Spark's StructType JSON, so no type mapping is needed.
        return StructType.fromJson(json.loads(dt.schema().to_json()))

    def schema(self, path: str) -> StructType:
        return self._spark_schema(self._table(path))

    def version(self, path: str) -> int:
        return self._table(path).version()

    def create(self, path: str, schema: StructType, *, description: str | None = None) -> CommitInfo:
        from deltalake import Schema
        from deltalake.transaction import create_table_with_add_actions

        if self.exists(path):
            self._check_schema(self.schema(path), schema, path)
            return CommitInfo(None, "CREATE")
        create_table_with_add_actions(
            path, Schema.from_json(schema.json()), [], mode="error", description=description
        )
        return CommitInfo(0, "CREATE")

    # ---------------------------------------------------------------- reads
    def read(self, path: str, *, version: int | None = None, timestamp: datetime | None = None) -> DataFrame:
        dt = self._table(path, version)
        if timestamp is not None:
            when = timestamp if timestamp.tzinfo is not None else timestamp.replace(tzinfo=timezone.utc)
            # delta-rs loads the first version for any earlier timestamp; the table did not exist then.
            first_ms = min(h["timestamp"] for h in dt.history())
            if when.timestamp() * 1000 < first_ms:
                raise TableError(f"{path}: no version as of {when.isoformat()} (before the first commit)")
            try:
                dt.load_as_version(when)
            except Exception as exc:
                raise TableError(f"{path}: no version as of {timestamp.isoformat()}: {exc}") from exc
        return self._read_files(dt.file_uris(), self._spark_schema(dt))

    def _read_files(self, uris: list[str], schema: StructType, *, with_position: bool = False) -> DataFrame:
        from pyspark.sql import functions as F

        if not uris:
            df = self.spark.createDataFrame([], schema)
            if with_position:
                df = df.withColumn(_FILE, F.lit(None).cast("string")).withColumn(
                    _ROW, F.lit(None).cast("long"))
            return df
        reader = self.spark.read.schema(schema).parquet(*[_spark_uri(u) for u in uris])
        if with_position:
            reader = reader.select("*", F.col("_metadata.file_path").alias(_FILE),
                                   F.col("_metadata.row_index").alias(_ROW))
        return reader

    def _files_since(self, path: str, since_version: int) -> tuple[StructType, list[str], list[str]] | None:
        """(schema, files added, files removed) between ``since_version`` and now; None when the two
        versions are not comparable (the table was recreated, the old version is gone, the schema changed)."""
        now = self._table(path)
        if since_version > now.version():
            return None  # the table was recreated since: its versions are not comparable
        try:
            old = self._table(path, since_version)
        except TableError:
            return None
        schema = self._spark_schema(now)
        if self._spark_schema(old).simpleString() != schema.simpleString():
            return None
        now_files = {_norm(u): u for u in now.file_uris()}
        old_files = {_norm(u): u for u in old.file_uris()}
        return (schema, [u for k, u in now_files.items() if k not in old_files],
                [u for k, u in old_files.items() if k not in now_files])

    def changes(self, path: str, since_version: int) -> DataFrame | None:
        """Only the files added or removed since ``since_version`` are read (see the base class).

        A MERGE rewrites whole files, so an added file holds the changed rows and copies of
        unchanged ones; the copies are also in the removed file it replaced and cancel out
        (``exceptAll`` both ways), which leaves exactly the changed row images.
        """
        from pyspark.sql import functions as F

        diff = self._files_since(path, since_version)
        if diff is None:
            return None
        schema, added, removed = diff
        if not all(_file_exists(uri) for uri in removed):  # vacuumed: the old rows are gone, the difference unknown
            return None
        new_rows = self._read_files(added, schema)
        if not removed:  # appends only (a daily batch): every added row is an insert, no shuffle needed
            return new_rows.withColumn(CHANGE_COLUMN, F.lit("insert"))
        old_rows = self._read_files(removed, schema)
        return (new_rows.exceptAll(old_rows).withColumn(CHANGE_COLUMN, F.lit("insert"))
                .unionByName(old_rows.exceptAll(new_rows).withColumn(CHANGE_COLUMN, F.lit("delete"))))

    def appended_since(self, path: str, since_version: int) -> DataFrame | None:
        """The rows of the files added since ``since_version`` when none of that version's files was
        removed (see the base class). A compaction (``optimize``) removes files too: after one, None."""
        diff = self._files_since(path, since_version)
        if diff is None or diff[2]:
            return None
        return self._read_files(diff[1], diff[0])

    def table_id(self, path: str) -> str | None:
        return str(self._table(path).metadata().id)

    def state(self, path: str) -> str | None:
        dt = self._table(path)  # one log read for both
        return f"{dt.metadata().id}@{dt.version()}"

    def history(self, path: str) -> list[HistoryEntry]:
        out = []
        for h in self._table(path).history():
            out.append(HistoryEntry(
                version=int(h["version"]),
                timestamp=datetime.fromtimestamp(h["timestamp"] / 1000, tz=timezone.utc),
                operation=str(h.get("cpbi.operation") or h.get("operation")),
                parameters={k: v for k, v in h.items() if k.startswith("cpbi.") or k == "operationParameters"},
                app_id=h.get("cpbi.app_id"),
            ))
        return out

    def app_version(self, path: str, app_id: str) -> int | None:
        if not self.exists(path):
            return None
        return self._table(path).transaction_version(app_id)

    # ---------------------------------------------------------------- writes
    @staticmethod
    def _check_schema(table: StructType, incoming: StructType, path: str) -> None:
        want = {f.name: f.dataType.simpleString() for f in table.fields}
        got = {f.name: f.dataType.simpleString() for f in incoming.fields}
        problems = [f"missing column {c} ({t})" for c, t in want.items() if c not in got]
        problems += [f"unexpected column {c} ({t})" for c, t in got.items() if c not in want]
        problems += [f"column {c} is {got[c]}, table has {t}" for c, t in want.items()
                     if c in got and got[c] != t]
        if problems:
            raise TableError(f"{path}: schema does not match the table: " + "; ".join(problems))

    def _write_files(self, df: DataFrame, path: str, *, data_change: bool = True) -> list:
        """Let Spark's executors write ``df`` under the table folder; return add actions."""
        import pyarrow.parquet as pq
        from deltalake.transaction import AddAction
        from pyarrow import fs as pafs

        write_id = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}"
        out = f"{path.rstrip('/')}/{write_id}"
        df.write.mode("errorifexists").parquet(_spark_uri(out))
        filesystem, base = _filesystem_of(out)
        actions = []
        for info in filesystem.get_file_info(pafs.FileSelector(base, recursive=True)):
            name = info.path.rsplit("/", 1)[-1]
            if info.type != pafs.FileType.File:
                continue
            if not name.endswith(".parquet"):
                filesystem.delete_file(info.path)  # _SUCCESS markers and .crc checksums
                continue
            with filesystem.open_input_file(info.path) as fh:
                rows = pq.read_metadata(fh).num_rows
            if rows == 0:  # Spark writes a schema-only file for an empty frame
                filesystem.delete_file(info.path)
                continue
            rel = f"{write_id}/{info.path[len(base):].lstrip('/')}"
            actions.append(AddAction(rel, info.size, {}, int(info.mtime.timestamp() * 1000),
                                     data_change, json.dumps({"numRecords": rows})))
        return actions

    def _commit(self, dt: DeltaTable, actions: list, mode: str, operation: str, *,
                metrics: dict[str, int] | None = None, app_id: str | None = None,
                app_version: int | None = None, tags: Mapping[str, str] | None = None) -> CommitInfo:
        from deltalake.exceptions import CommitFailedError
        from deltalake.transaction import AddAction

        props = _commit_properties(operation, metrics, app_id, app_version, tags)
        try:
            dt.create_write_transaction(actions, mode=mode, schema=dt.schema(), commit_properties=props)
        except CommitFailedError as exc:
            raise CommitConflict(f"{dt.table_uri}: {operation} lost against a concurrent commit: {exc}") from exc
        dt.update_incremental()
        adds = sum(isinstance(a, AddAction) for a in actions)
        return CommitInfo(dt.version(), operation, adds, len(actions) - adds, dict(metrics or {}))

    def _ensure_table(self, df: DataFrame, path: str) -> DeltaTable:
        return self._ensure_schema(df.schema, path)

    def append(self, df: DataFrame, path: str, *, app_id: str | None = None,
               app_version: int | None = None, tags: Mapping[str, str] | None = None) -> CommitInfo:
        dt = self._ensure_table(df, path)
        done = dt.transaction_version(app_id) if app_id is not None else None
        if done is not None and done >= int(app_version or 0):
            return CommitInfo(None, "APPEND")  # this batch was committed before: idempotent rerun
        adds = self._write_files(df, path)
        if not adds and app_id is None:
            return CommitInfo(None, "APPEND")
        rows = sum(json.loads(a.stats)["numRecords"] for a in adds)
        return self._commit(dt, adds, "append", "APPEND", metrics={"num_inserted": rows},
                            app_id=app_id, app_version=app_version, tags=tags)

    def append_records(self, rows: list[dict], schema: StructType, path: str, *, app_id: str | None = None,
                       app_version: int | None = None) -> CommitInfo:
        if not rows:  # nothing to write; the Spark path records an idempotency token alone
            return super().append_records(rows, schema, path, app_id=app_id, app_version=app_version)
        dt = self._ensure_schema(schema, path)
        done = dt.transaction_version(app_id) if app_id is not None else None
        if done is not None and done >= int(app_version or 0):
            return CommitInfo(None, "APPEND")  # this batch was committed before: idempotent rerun
        return self._write_records(dt, rows, schema, "append", "APPEND", app_id=app_id, app_version=app_version)

    def overwrite_records(self, rows: list[dict], schema: StructType, path: str) -> CommitInfo:
        dt = self._ensure_schema(schema, path)
        replaced = len(dt.file_uris())
        info = self._write_records(dt, rows, schema, "overwrite", "OVERWRITE")
        return dataclasses.replace(info, files_removed=replaced)

    def read_records(self, path: str) -> list[dict]:
        import pyarrow as pa

        data = self._table(path).to_pyarrow_table()
        # Delta timestamps are UTC instants; Spark hands them back naive in the session time zone (UTC).
        for i, field in enumerate(data.schema):
            if pa.types.is_timestamp(field.type) and field.type.tz is not None:
                data = data.set_column(i, field.name, data.column(i).cast(pa.timestamp(field.type.unit)))
        return data.to_pylist()

    def _ensure_schema(self, schema: StructType, path: str) -> DeltaTable:
        if not self.exists(path):
            self.create(path, schema)
        dt = self._table(path)
        self._check_schema(self._spark_schema(dt), schema, path)
        return dt

    def _write_records(self, dt: DeltaTable, rows: list[dict], schema: StructType, mode: str, operation: str, *,
                       app_id: str | None = None, app_version: int | None = None) -> CommitInfo:
        """Write driver-built rows with delta-rs itself (one parquet file and one commit)."""
        import pyarrow as pa
        from deltalake import write_deltalake
        from deltalake.exceptions import CommitFailedError

        from cpbi_spark.lakehouse.engine import coerce_records

        names = schema.fieldNames()
        data = pa.Table.from_pylist([dict(zip(names, r, strict=True)) for r in coerce_records(rows, schema)],
                                    schema=pa.schema(dt.schema().to_arrow()))
        metrics = {"num_inserted": data.num_rows}
        try:
            write_deltalake(dt, data, mode=mode,
                            commit_properties=_commit_properties(operation, metrics, app_id, app_version))
        except CommitFailedError as exc:
            raise CommitConflict(f"{dt.table_uri}: {operation} lost against a concurrent commit: {exc}") from exc
        dt.update_incremental()
        written = (dt.history(1)[0].get("operationMetrics") or {}) if data.num_rows else {}
        return CommitInfo(dt.version(), operation, int(written.get("num_added_files", 0)), 0, metrics)

    def _remove_actions(self, dt: DeltaTable, uris: list[str]) -> list:
        from deltalake.transaction import RemoveAction

        wanted = {_norm(u) for u in uris}
        adds = _add_actions(dt)
        root = _norm(dt.table_uri).rstrip("/")
        removes = []
        for a in adds:
            if f"{root}/{unquote(a['path'])}" in wanted:
                removes.append(RemoveAction(a["path"], True, _now_ms(), a["size_bytes"], {}))
        if len(removes) != len(wanted):
            raise TableError(f"{dt.table_uri}: {len(wanted) - len(removes)} touched files are not in the table")
        return removes

    def overwrite(self, df: DataFrame, path: str, *, predicate: str | None = None) -> CommitInfo:
        from pyspark.sql import functions as F

        dt = self._ensure_table(df, path)
        if predicate is None:
            return self._commit_overwrite(dt, self._write_files(df, path))
        outside = df.filter(~F.coalesce(F.expr(predicate), F.lit(False))).limit(1).count()
        if outside:
            raise TableError(f"{path}: overwrite with predicate {predicate!r}: some new rows do not match it")
        return self._rewrite_matching(dt, path, predicate, new_rows=df, operation="OVERWRITE")

    def replace(self, df: DataFrame, path: str) -> CommitInfo:
        """See :meth:`TableEngine.replace`. The executors write ``df`` once, straight from its plan (nothing
        is cached); the written files are then compared with the table and deleted, uncommitted, when they
        hold the same rows. The overwrite records the new content's signature in its commit
        (:data:`SIGNATURE_TAG`), so the next replace of a table still at that version reads only its own
        new files."""
        from cpbi_spark.lakehouse.signature import content_signature

        dt = self._ensure_table(df, path)
        schema = self._spark_schema(dt)
        adds = self._write_files(df, path)
        new = content_signature(self._read_files([f"{path.rstrip('/')}/{a.path}" for a in adds], schema))
        old = self._recorded_signature(dt)
        if old is None:  # one job for both sides
            both = new.crossJoin(content_signature(self._read_files(dt.file_uris(), schema))
                                 .toDF("old_rows", "old_h64", "old_h32")).first()
            signature, old = tuple(both[:3]), tuple(both[3:])
        else:
            signature = tuple(new.first())
        if signature == old:
            self._discard(path, adds)
            return CommitInfo(None, "OVERWRITE", metrics={"num_inserted": 0})
        return self._commit_overwrite(dt, adds, tags={SIGNATURE_TAG: json.dumps([str(v) for v in signature])})

    def _commit_overwrite(self, dt: DeltaTable, adds: list, *, tags: Mapping[str, str] | None = None) -> CommitInfo:
        """Commit ``adds`` as the table's whole content (every live file of ``dt``'s version removed)."""
        replaced = len(dt.file_uris())  # mode="overwrite": delta-rs writes these remove actions itself
        inserted = sum(json.loads(a.stats)["numRecords"] for a in adds)
        info = self._commit(dt, adds, "overwrite", "OVERWRITE", metrics={"num_inserted": inserted}, tags=tags)
        return dataclasses.replace(info, files_removed=replaced)

    @staticmethod
    def _recorded_signature(dt: DeltaTable) -> tuple | None:
        """``(rows, h64, h32)`` that the commit of the table's current version recorded (a replace does),
        else None: any later commit (an append, a MERGE, a compaction) leaves the version without one."""
        from decimal import Decimal

        last = dt.history(1)
        raw = last[0].get(f"{TAG_PREFIX}{SIGNATURE_TAG}") if last else None
        if raw is None or int(last[0].get("version", -1)) != dt.version():
            return None
        rows, h64, h32 = json.loads(raw)
        return int(rows), Decimal(h64), Decimal(h32)

    @staticmethod
    def _discard(path: str, adds: list) -> None:
        """Delete files written for a commit that is not made (the write's own folder under the table)."""
        for folder in {a.path.split("/", 1)[0] for a in adds}:
            filesystem, base = _filesystem_of(f"{path.rstrip('/')}/{folder}")
            filesystem.delete_dir(base)

    def delete(self, path: str, predicate: str) -> CommitInfo:
        return self._rewrite_matching(self._table(path), path, predicate, new_rows=None, operation="DELETE")

    def _rewrite_matching(self, dt: DeltaTable, path: str, predicate: str, *, new_rows: DataFrame | None,
                          operation: str) -> CommitInfo:
        """Rewrite only the files holding rows that match ``predicate``, dropping those rows."""
        from pyspark.sql import functions as F

        schema = self._spark_schema(dt)
        current = self._read_files(dt.file_uris(), schema, with_position=True)
        hit = F.coalesce(F.expr(predicate), F.lit(False))
        touched = [r[0] for r in current.filter(hit).select(_FILE).distinct().collect()]
        kept = self._read_files(touched, schema).filter(~hit) if touched else None
        parts = [p for p in (kept, new_rows) if p is not None]
        if not touched and (new_rows is None):
            return CommitInfo(None, operation)
        data = parts[0] if len(parts) == 1 else parts[0].unionByName(parts[1])
        deleted = (current.filter(hit).count()) if touched else 0
        adds = self._write_files(data.select(*schema.fieldNames()), path)
        removes = self._remove_actions(dt, touched)
        if not adds and not removes:
            return CommitInfo(None, operation)
        inserted = new_rows.count() if new_rows is not None else 0
        return self._commit(dt, removes + adds, "append", operation,
                            metrics={"num_deleted": deleted, "num_inserted": inserted})

    # ---------------------------------------------------------------- merge
    # MERGE into a table at least this large (bytes of its live files), from a source Spark estimates
    # smaller than the table, first finds the files the source matches (a join that usually broadcasts
    # the source), so only those are read, joined and cached: a daily batch into a large table. Otherwise
    # the table is joined whole in one pass (one Spark job fewer: on small tables the fixed cost of a
    # job, not the data, is what a MERGE pays; a source as large as the table touches every file anyway).
    merge_probe_min_bytes = 32 * 1024 * 1024

    @staticmethod
    def _table_bytes(dt: DeltaTable) -> int:
        return int(sum(a["size_bytes"] for a in _add_actions(dt)))

    def _probe_first(self, dt: DeltaTable, source: DataFrame, spec: MergeSpec) -> bool:
        if spec.when_not_matched_by_source:  # those clauses act on every file: nothing to narrow
            return False
        table_bytes = self._table_bytes(dt)
        if table_bytes < self.merge_probe_min_bytes:
            return False
        try:  # Spark's size estimate of the source plan (from file sizes, row counts, checkpoints)
            source_bytes = int(str(source._jdf.queryExecution().optimizedPlan().stats().sizeInBytes()))
        except Exception:  # no estimate (e.g. a Spark Connect frame)
            source_bytes = _UNKNOWN_SIZE
        # Unknown (Spark says Long.MaxValue, e.g. rows built on the driver): find the touched files
        # first; on a large table one join too many costs less than reading every file.
        return source_bytes == _UNKNOWN_SIZE or source_bytes < table_bytes

    def merge(self, source: DataFrame, path: str, spec: MergeSpec) -> CommitInfo:
        from pyspark import StorageLevel
        from pyspark.sql import functions as F

        dt = self._table(path)
        schema = self._spark_schema(dt)
        cols = schema.fieldNames()
        ta, sa = spec.target_alias, spec.source_alias
        src = source.select(_struct_of(source.columns, sa), F.lit(True).alias(_S_PRESENT))
        for c in spec.when_not_matched_by_source:
            if c.action == "update" and c.set is None:  # SET * would null every column
                raise TableError(f"{path}: MERGE: WHEN NOT MATCHED BY SOURCE THEN UPDATE needs explicit "
                                 "assignments (there is no source row to copy)")
        # An empty table has no row to match, update or delete: only the insert clauses can act, and
        # the join, persist and per-file counts of the general path would be spent on nothing (the
        # first load of every table).
        files = list(dt.file_uris())
        if not files or (not spec.when_matched and not spec.when_not_matched_by_source):
            return self._merge_insert_only(dt, path, src, spec, schema)
        on = F.expr(spec.predicate)
        if self._probe_first(dt, source, spec):
            # Find the files holding a matched row first (one join), so only those are read, joined in
            # full and cached below.
            probe = self._read_files(files, schema, with_position=True).select(_struct_of(cols, ta), _FILE, _ROW)
            files = [r[0] for r in probe.join(src, on, "left_semi").select(_FILE).distinct().collect()]
        # NOT MATCHED BY SOURCE clauses act on rows of every file, not only the matched ones.
        tgt = self._read_files(files, schema, with_position=True).select(
            _struct_of(cols, ta), _FILE, _ROW, F.lit(True).alias(_T_PRESENT))
        joined = tgt.join(src, on, "full_outer")
        matched = f"({_T_PRESENT} IS NOT NULL AND {_S_PRESENT} IS NOT NULL)"
        src_only, tgt_only = f"({_T_PRESENT} IS NULL)", f"({_S_PRESENT} IS NULL)"

        # One branch per clause, in SQL order: (row filter, kind, column -> SQL expression). The plan's
        # expressions are built as SQL text, one call into Spark per column: building them from Column
        # objects cost thousands of calls per MERGE (seconds per run, on the driver).
        branches: list[tuple[str, str, dict[str, str]]] = []
        for c in spec.when_matched:
            branches.append((f"{matched} AND {_clause_condition(c.condition)}", c.action,
                             self._assign_sql(c.set, cols, ta, sa, "update")))
        for c in spec.when_not_matched:
            branches.append((f"{src_only} AND {_clause_condition(c.condition)}", "insert",
                             self._assign_sql(c.values, cols, ta, sa, "insert")))
        for c in spec.when_not_matched_by_source:
            branches.append((f"{tgt_only} AND {_clause_condition(c.condition)}", c.action,
                             self._assign_sql(c.set, cols, ta, sa, "update")))
        action = " ".join(f"WHEN {flt} THEN {i}" for i, (flt, _, _) in enumerate(branches))
        joined = joined.withColumn(_ACTION, F.expr(f"CASE {action} ELSE -1 END" if branches else "-1"))
        out_cols = []
        for field in schema.fields:
            cases = " ".join(f"WHEN {_ACTION} = {i} THEN ({assign[field.name]})"
                             for i, (_, kind, assign) in enumerate(branches) if kind in ("update", "insert"))
            current = f"{ta}.`{_escape(field.name)}`"
            col = F.expr(f"CASE {cases} ELSE {current} END" if cases else current)
            out_cols.append(col.cast(field.dataType).alias(field.name))
        kinds = " ".join(f"WHEN {_ACTION} = {i} THEN '{kind}'" for i, (_, kind, _) in enumerate(branches))
        kind_col = F.expr(f"CASE WHEN {src_only} AND {_ACTION} = -1 THEN 'skip' {kinds} ELSE 'copy' END")
        matched_row = F.expr(f"CASE WHEN {matched} THEN {_ROW} END").alias(_ROW)
        result = joined.select(*out_cols, kind_col.alias(_ACTION), _FILE, matched_row
                               ).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            # Per file: rows of each kind, and matched rows vs distinct matched target rows (the check
            # that no target row matched two source rows), in one pass over the cached join.
            kind_names = ("insert", "update", "delete", "copy", "skip")
            per_file = result.groupBy(_FILE).agg(
                *[F.count(F.when(F.col(_ACTION) == k, 1)).alias(k) for k in kind_names],
                F.count(_ROW).alias("_matched"), F.countDistinct(_ROW).alias("_matched_rows")).collect()
            if spec.when_matched and any(r["_matched"] != r["_matched_rows"] for r in per_file):
                raise TableError(f"{path}: MERGE failed: several source rows matched the same target row "
                                 f"(predicate {spec.predicate!r}); deduplicate the source first")
            # Only files holding an updated or deleted row are rewritten: a file whose rows all matched
            # unchanged (or that a NOT MATCHED BY SOURCE clause left alone) keeps its place in the table.
            rewritten = sorted({r[_FILE] for r in per_file if r[_FILE] is not None and (r["update"] or r["delete"])})
            counts = {k: 0 for k in kind_names}
            for r in per_file:
                for k in kind_names:
                    if k != "copy" or r[_FILE] in rewritten:
                        counts[k] += r[k]
            metrics = {"num_inserted": counts["insert"], "num_updated": counts["update"],
                       "num_deleted": counts["delete"], "num_copied": counts["copy"]}
            if not (metrics["num_inserted"] or metrics["num_updated"] or metrics["num_deleted"]):
                return CommitInfo(None, "MERGE", metrics=metrics)  # nothing changes: no new version
            keep = (F.col(_ACTION) == "insert") | (F.col(_ACTION).isin("update", "copy") & F.col(_FILE).isin(rewritten))
            adds = self._write_files(result.filter(keep).select(*cols), path)
        finally:
            result.unpersist()
        removes = self._remove_actions(dt, rewritten)
        return self._commit(dt, removes + adds, "append", "MERGE", metrics=metrics)

    def _merge_insert_only(self, dt: DeltaTable, path: str, src: DataFrame, spec: MergeSpec,
                           schema: StructType) -> CommitInfo:
        """Only WHEN NOT MATCHED clauses (or an empty table): append the unmatched source rows, rewrite no file."""
        from pyspark.sql import functions as F

        cols = schema.fieldNames()
        ta, sa = spec.target_alias, spec.source_alias
        target = self._read_files(dt.file_uris(), schema).select(_struct_of(cols, ta))
        unmatched = src.join(target, F.expr(spec.predicate), "left_anti") if dt.file_uris() else src
        clauses = list(spec.when_not_matched)
        choice = " ".join(f"WHEN {_clause_condition(c.condition)} THEN {i}" for i, c in enumerate(clauses))
        rows = unmatched.withColumn(_ACTION, F.expr(f"CASE {choice} ELSE -1 END" if clauses else "-1")
                                    ).filter(F.col(_ACTION) >= 0)
        # As SQL text, one call into Spark per column (see merge).
        assigns = [self._assign_sql(c.values, cols, ta, sa, "insert") for c in clauses]
        out = []
        for field in schema.fields:
            cases = " ".join(f"WHEN {_ACTION} = {i} THEN ({a[field.name]})" for i, a in enumerate(assigns))
            out.append(F.expr(f"CASE {cases} ELSE NULL END" if cases else "NULL").cast(field.dataType)
                       .alias(field.name))
        # Written straight from the plan: one pass, no cached copy (the counts come from the files).
        adds = self._write_files(rows.select(*out), path)
        inserted = sum(json.loads(a.stats)["numRecords"] for a in adds)
        metrics = {"num_inserted": inserted, "num_updated": 0, "num_deleted": 0, "num_copied": 0}
        if not adds:
            return CommitInfo(None, "MERGE", metrics=metrics)
        return self._commit(dt, adds, "append", "MERGE", metrics=metrics)

    @staticmethod
    def _assign_sql(mapping: dict[str, str] | None, cols: list[str], ta: str, sa: str, kind: str) -> dict[str, str]:
        """Column -> SQL expression of one clause's assignments (unassigned: the target's value on update,
        NULL on insert)."""
        if mapping is None:  # SET * / INSERT *: the source column of the same name
            return {c: f"{sa}.`{_escape(c)}`" for c in cols}
        unknown = set(mapping) - set(cols)
        if unknown:
            raise TableError(f"MERGE {kind} names columns the table does not have: {sorted(unknown)}")
        return {c: mapping[c] if c in mapping else (f"{ta}.`{_escape(c)}`" if kind == "update" else "NULL")
                for c in cols}

    # ---------------------------------------------------------------- maintenance
    def file_sizes(self, path: str) -> list[int]:
        return [int(a["size_bytes"]) for a in _add_actions(self._table(path))]

    def optimize(self, path: str, *, target_file_mb: int = 128, min_files: int = 2) -> CommitInfo:
        dt = self._table(path)
        files = _add_actions(dt)
        chosen, n_files = compaction_plan([int(a["size_bytes"]) for a in files], target_file_mb, min_files)
        if not chosen:
            return CommitInfo(None, "OPTIMIZE")
        small = [files[i] for i in chosen]
        root = dt.table_uri.rstrip("/")
        uris = [f"{root}/{a['path']}" for a in small]
        data = self._read_files(uris, self._spark_schema(dt)).coalesce(n_files)
        adds = self._write_files(data, path, data_change=False)
        from deltalake.transaction import RemoveAction

        removes = [RemoveAction(a["path"], False, _now_ms(), a["size_bytes"], {}) for a in small]
        return self._commit(dt, removes + adds, "append", "OPTIMIZE",
                            metrics={"files_compacted": len(small)})

    def vacuum(self, path: str, *, retention_hours: int = 168, dry_run: bool = False) -> list[str]:
        dt = self._table(path)
        # full=True: the default ("lite") vacuum only deletes files a commit removed; the files of
        # a job killed before its commit are in no commit, and only a full listing finds them.
        options = {"retention_hours": retention_hours, "enforce_retention_duration": False, "full": True}
        root = dt.table_uri.rstrip("/")
        # delta-rs lists a removed file again after deleting it (its remove action stays in the log), and
        # records every run that deletes as two log commits: only files still on disk count, and with
        # none the run is skipped, so a second vacuum makes no new version.
        present = [f for f in dt.vacuum(dry_run=True, **options)
                   if _file_exists(f if "://" in f or f.startswith("/") else f"{root}/{unquote(f)}")]
        if present and not dry_run:
            dt.vacuum(dry_run=False, **options)
        return present
