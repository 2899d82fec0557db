"""The table-engine interface every backend implements.

Jobs never talk to delta-rs or delta-spark directly: they call a :class:`TableEngine`
(normally through :class:`cpbi_spark.lakehouse.Lakehouse`, which adds names, schemas and
layers). All paths are table root folders or URIs; all data moves as Spark DataFrames.

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
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

    from cpbi_spark.lakehouse.merge_spec import MergeSpec


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
               app_version: int | None = None) -> CommitInfo:
        """Append rows; creates the table when missing.

        With ``app_id``/``app_version`` the commit is idempotent: when the table already
        recorded that version (or a later one) for that application, nothing is written.
        """

    @abc.abstractmethod
    def overwrite(self, df: DataFrame, path: str, *, predicate: str | None = None) -> CommitInfo:
        """Replace the whole table, or only the rows matching ``predicate`` (SQL), atomically."""

    @abc.abstractmethod
    def delete(self, path: str, predicate: str) -> CommitInfo:
        """Delete the rows matching ``predicate``."""

    @abc.abstractmethod
    def merge(self, source: DataFrame, path: str, spec: MergeSpec) -> CommitInfo:
        """Run the MERGE described by ``spec``; metrics hold inserted/updated/deleted row counts."""

    @abc.abstractmethod
    def history(self, path: str) -> list[HistoryEntry]:
        """Commit history, newest first."""

    @abc.abstractmethod
    def app_version(self, path: str, app_id: str) -> int | None:
        """The last idempotent-write version recorded for ``app_id`` (None when never written)."""

    @abc.abstractmethod
    def optimize(self, path: str, *, target_file_mb: int = 128) -> CommitInfo:
        """Compact small files without changing the data (a ``dataChange=false`` commit)."""

    @abc.abstractmethod
    def vacuum(self, path: str, *, retention_hours: int = 168, dry_run: bool = False) -> list[str]:
        """Delete files no longer referenced by versions within the retention; returns them."""
