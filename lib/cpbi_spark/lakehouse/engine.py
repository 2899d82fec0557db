"""The table-engine interface every backend implements.

Jobs never talk to delta-rs or delta-spark directly: they call a :class:`TableEngine`
(normally through :class:`cpbi_spark.lakehouse.Lakehouse`, which adds names, schemas and
layers). All paths are table root folders or URIs; all data moves as Spark DataFrames, except
the few rows a job builds on the driver itself (run records, reference data), which
:meth:`TableEngine.append_records` / :meth:`TableEngine.overwrite_records` take as dicts.

Example:
    >>> engine = make_engine(spark, "auto")                 # doctest: +SKIP
    >>> engine.append(df, "/data/silver/orders")            # doctest: +SKIP
    CommitInfo(version=0, operation='CREATE', ...)
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

    from cpbi_spark.lakehouse.merge_spec import MergeSpec


CHANGE_COLUMN = "_change"  # what :meth:`TableEngine.changes` adds: 'insert' or 'delete'
TAG_PREFIX = "cpbi.tag."  # a commit's tags (see :meth:`TableEngine.append`) in its history parameters


@dataclass(frozen=True)
class CommitInfo:
    """What one write committed: the new version (None when nothing changed) and its counts."""

    version: int | None
    operation: str
    files_added: int = 0
    files_removed: int = 0
    metrics: dict[str, int] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return self.version is not None


def coerce_records(rows: list[dict], schema: StructType) -> list[tuple]:
    """Driver-built rows (dicts) as tuples in ``schema``'s column order, numbers coerced to its types.

    A missing key is NULL; a number for a double column becomes a float, for a decimal column a
    ``Decimal`` rounded half-up to the column's scale (as Spark rounds a wider decimal).

    Example:
        >>> from pyspark.sql.types import DecimalType, StructField, StructType
        >>> coerce_records([{"x": 1.005}], StructType([StructField("x", DecimalType(18, 2))]))
        [(Decimal('1.01'),)]
    """
    from decimal import ROUND_HALF_UP, Decimal

    from pyspark.sql.types import DecimalType, DoubleType, FloatType

    def coerce(value: Any, data_type: Any) -> Any:
        if value is None:
            return None
        if isinstance(data_type, (DoubleType, FloatType)):
            return float(value)
        if isinstance(data_type, DecimalType):
            return Decimal(str(value)).quantize(Decimal(1).scaleb(-data_type.scale), rounding=ROUND_HALF_UP)
        return value

    return [tuple(coerce(r.get(f.name), f.dataType) for f in schema.fields) for r in rows]


def records_frame(spark: SparkSession, rows: list[dict], schema: StructType) -> DataFrame:
    """A small Spark frame of driver-built ``rows`` in ``schema`` (numbers coerced, see :func:`coerce_records`)."""
    return spark.createDataFrame(coerce_records(rows, schema), schema)


def compaction_plan(sizes: list[int], target_file_mb: int, min_files: int = 2) -> tuple[list[int], int]:
    """Which files a compaction rewrites and into how many: ``(their indexes in sizes, files they become)``.

    Files under half the target are small; with at least ``min_files`` (and at least two) of them, they
    are rewritten into files of about the target size. Else ``([], 0)``: nothing to do.

    Example:
        >>> compaction_plan([10, 20, 300 * 2**20], target_file_mb=128)
        ([0, 1], 1)
        >>> compaction_plan([10, 20], target_file_mb=128, min_files=8)
        ([], 0)
    """
    target = target_file_mb * 1024 * 1024
    small = [i for i, size in enumerate(sizes) if size < target // 2]
    if len(small) < max(2, min_files):
        return [], 0
    return small, max(1, -(-sum(sizes[i] for i in small) // target))  # ceiling division


@dataclass(frozen=True)
class HistoryEntry:
    """One entry of a table's commit log."""

    version: int
    timestamp: datetime
    operation: str
    parameters: dict[str, Any]
    app_id: str | None = None


class TableEngine(abc.ABC):
    """Operations on Delta tables; every backend passes the same contract tests."""

    name: str = "abstract"

    def __init__(self, spark: SparkSession):
        self.spark = spark

    @abc.abstractmethod
    def exists(self, path: str) -> bool:
        """True when a Delta table (a ``_delta_log``) exists at ``path``."""

    @abc.abstractmethod
    def create(self, path: str, schema: StructType, *, description: str | None = None) -> CommitInfo:
        """Create an empty table with ``schema``; no-op when it exists with the same schema."""

    @abc.abstractmethod
    def read(self, path: str, *, version: int | None = None, timestamp: datetime | None = None) -> DataFrame:
        """The table (current, or as of a version or a timestamp) as a DataFrame."""

    @abc.abstractmethod
    def version(self, path: str) -> int:
        """The current version of the table."""

    @abc.abstractmethod
    def schema(self, path: str) -> StructType:
        """The table's schema as a Spark StructType."""

    @abc.abstractmethod
    def append(self, df: DataFrame, path: str, *, app_id: str | None = None,
               app_version: int | None = None, tags: Mapping[str, str] | None = None) -> CommitInfo:
        """Append rows; creates the table when missing.

        With ``app_id``/``app_version`` the commit is idempotent: when the table already
        recorded that version (or a later one) for that application, nothing is written.
        ``tags`` are stored in the same commit's metadata (history parameters ``cpbi.tag.<key>``),
        so what they say about the rows commits atomically with them.
        """

    @abc.abstractmethod
    def overwrite(self, df: DataFrame, path: str, *, predicate: str | None = None) -> CommitInfo:
        """Replace the whole table, or only the rows matching ``predicate`` (SQL), atomically."""

    def append_records(self, rows: list[dict], schema: StructType, path: str, *, app_id: str | None = None,
                       app_version: int | None = None) -> CommitInfo:
        """:meth:`append` for a few rows built on the driver (dicts, typed by ``schema``).

        Meant for run records and reference data, never for table data (that stays on the
        executors). This default goes through a Spark frame; a backend may commit them directly.
        """
        return self.append(self._records_frame(rows, schema), path, app_id=app_id, app_version=app_version)

    def overwrite_records(self, rows: list[dict], schema: StructType, path: str) -> CommitInfo:
        """:meth:`overwrite` (whole table) with a few rows built on the driver; see :meth:`append_records`."""
        return self.overwrite(self._records_frame(rows, schema), path)

    def read_records(self, path: str) -> list[dict]:
        """The rows of a small table (run records, reference data) as dicts, as Spark's ``collect`` gives them.

        Timestamps come back naive in UTC (the session time zone), decimals as ``Decimal``.
        """
        return [r.asDict() for r in self.read(path).collect()]

    def row_count(self, path: str) -> int:
        """Rows in the current version. This default counts with Spark; a backend whose log records
        each file's row count (Delta ``stats.numRecords``) sums those instead, without a Spark job."""
        return self.read(path).count()

    def _records_frame(self, rows: list[dict], schema: StructType) -> DataFrame:
        return records_frame(self.spark, rows, schema)

    def replace(self, df: DataFrame, path: str) -> CommitInfo:
        """Make the existing table hold exactly the rows of ``df`` (its declared schema): no commit when it
        already does, else one overwrite. Whether it does is decided by the content signature of both sides
        (:mod:`cpbi_spark.lakehouse.signature`).

        This default caches ``df`` for the check and the write; a backend that can write files before it
        commits them writes ``df`` once and compares the written files instead (nothing cached).
        """
        from pyspark import StorageLevel

        from cpbi_spark.lakehouse.signature import content_signature

        # A frame the caller already cached is used as it is, not cached a second time.
        cache = df.storageLevel == StorageLevel.NONE
        new = df.persist(StorageLevel.MEMORY_AND_DISK) if cache else df
        try:
            both = content_signature(new).crossJoin(
                content_signature(self.read(path)).toDF("old_rows", "old_h64", "old_h32")).first()
            if both[:3] == both[3:]:  # (rows, h64, h32) of the new frame and of the stored table
                return CommitInfo(None, "OVERWRITE", metrics={"num_inserted": 0})
            return self.overwrite(new, path)
        finally:
            if cache:
                new.unpersist()

    @abc.abstractmethod
    def delete(self, path: str, predicate: str) -> CommitInfo:
        """Delete the rows matching ``predicate``."""

    @abc.abstractmethod
    def merge(self, source: DataFrame, path: str, spec: MergeSpec) -> CommitInfo:
        """Run the MERGE described by ``spec``; metrics hold inserted/updated/deleted row counts."""

    def changes(self, path: str, since_version: int) -> DataFrame | None:
        """Rows that differ between version ``since_version`` and the current version.

        Each row image that is in the table now but was not at ``since_version`` comes back with
        ``_change = 'insert'``; each image that was there and is gone, with ``'delete'`` (an
        update gives both). Unchanged rows never appear. None when the answer cannot be known
        (the old version cannot be read, or the schema changed), so the caller recomputes in full.
        This default compares the two snapshots; a backend may read only the files that changed.

        Example:
            >>> engine.changes("/lake/silver/dim_x", 3).groupBy("_change").count()   # doctest: +SKIP
        """
        from pyspark.sql import functions as F

        from cpbi_spark.errors import TableError

        if since_version > self.version(path):
            return None  # the table was recreated since: its versions are not comparable
        try:
            old = self.read(path, version=since_version)
        except TableError:
            return None
        new = self.read(path)
        if old.schema.simpleString() != new.schema.simpleString():
            return None
        return (new.exceptAll(old).withColumn(CHANGE_COLUMN, F.lit("insert"))
                .unionByName(old.exceptAll(new).withColumn(CHANGE_COLUMN, F.lit("delete"))))

    def appended_since(self, path: str, since_version: int) -> DataFrame | None:
        """The rows added since ``since_version`` while every row of that version stayed in the table
        unchanged (appends, insert-only MERGEs, changes to rows added later); None when a row of that
        version may have been removed or rewritten, or when that is unknown.

        A caller that knows something of every row of ``since_version`` (that it passed a check) then
        only has to look at these. This default cannot tell without comparing snapshots and answers
        None; a backend that knows each version's files answers from them.

        Example:
            >>> engine.appended_since("/lake/bronze/raw_x", 3).count()          # doctest: +SKIP
            1204
        """
        return None

    def table_id(self, path: str) -> str | None:
        """The table's identity (Delta ``metaData.id``, new when a table is created again at the same
        path); None when the backend cannot read it. Versions of two identities are not comparable."""
        return None

    def state(self, path: str) -> str | None:
        """The table's identity and current version as one token (``<id>@<version>``): two reads at the
        same token read the same rows. None when the identity cannot be read, so nothing may be reused."""
        table_id = self.table_id(path)
        return None if table_id is None else f"{table_id}@{self.version(path)}"

    @abc.abstractmethod
    def history(self, path: str) -> list[HistoryEntry]:
        """Commit history, newest first."""

    @abc.abstractmethod
    def app_version(self, path: str, app_id: str) -> int | None:
        """The last idempotent-write version recorded for ``app_id`` (None when never written)."""

    @abc.abstractmethod
    def file_sizes(self, path: str) -> list[int]:
        """The size in bytes of each data file of the current version."""

    @abc.abstractmethod
    def optimize(self, path: str, *, target_file_mb: int = 128, min_files: int = 2) -> CommitInfo:
        """Compact files under half of ``target_file_mb`` into files of about that size, once there are
        at least ``min_files`` of them, without changing the data (a ``dataChange=false`` commit)."""

    @abc.abstractmethod
    def vacuum(self, path: str, *, retention_hours: int = 168, dry_run: bool = False) -> list[str]:
        """Delete files no longer referenced by versions within the retention; returns them."""
