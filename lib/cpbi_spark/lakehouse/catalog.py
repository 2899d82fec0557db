"""The Lakehouse facade: tables by logical name, with their declared schema, on one engine.

This is the only place where jobs read and write tables. It resolves a logical name
(``dim_customer``) to its path (``<root>/silver/customer_purchase_behavior_insights_dim_customer``),
conforms a DataFrame to the columns and types declared in ``conf/base/tables.yaml``, creates
missing tables, and keeps a log of every commit of the run (for lineage and the run summary).

Example:
    >>> lake = Lakehouse(spark, load_config())              # doctest: +SKIP
    >>> lake.merge("dim_customer", changes, MergeSpec.upsert(["customer_sk"]))  # doctest: +SKIP
    >>> lake.read("dim_customer").count()                    # doctest: +SKIP
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from cpbi_spark.errors import TableError, TableNotFound
from cpbi_spark.lakehouse.select import make_engine

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import DataType, StructType

    from cpbi_spark.config import CpbiConfig
    from cpbi_spark.lakehouse.engine import CommitInfo, HistoryEntry, TableEngine
    from cpbi_spark.lakehouse.merge_spec import MergeSpec


@dataclass(frozen=True)
class CommitRecord:
    """One commit made through the facade during this process (for lineage and summaries)."""

    table: str
    info: CommitInfo


@functools.cache
def _sql_type(sql_type: str) -> DataType:
    # Parsing a type string is a round trip to the JVM; a run declares ~100 tables from a few dozen strings.
    from pyspark.sql.types import _parse_datatype_string

    return _parse_datatype_string(sql_type)


def declared_schema(columns: dict[str, str]) -> StructType:
    """Spark schema from a ``{column: "sql type"}`` mapping, in declaration order."""
    from pyspark.sql.types import StructField, StructType

    return StructType([StructField(name, _sql_type(sql_type), True) for name, sql_type in columns.items()])


# Commits that change no row: a compaction (files rewritten, dataChange=false) and vacuum's records.
UPKEEP_OPERATIONS = frozenset({"OPTIMIZE", "VACUUM START", "VACUUM END"})
# Commits that add no row: table creation (its name in the log of either backend) and table upkeep.
_NO_NEW_ROWS = UPKEEP_OPERATIONS | {"CREATE TABLE", "CREATE"}


class Lakehouse:
    """Named Delta tables of one configuration on one engine."""

    def __init__(self, spark: SparkSession, config: CpbiConfig, engine: TableEngine | None = None):
        self.spark = spark
        self.config = config
        self.engine = engine or make_engine(spark, config.engine)
        self.commits: list[CommitRecord] = []
        self.reads: list[str] = []  # logical names read through the facade (lineage)

    # ------------------------------------------------------------------ names
    def path(self, name: str) -> str:
        return self.config.table_path(name)

    def schema(self, name: str) -> StructType | None:
        """The declared schema, or None for a bronze table stored "as received"."""
        columns = self.config.table(name).columns
        return declared_schema(columns) if columns else None

    def exists(self, name: str) -> bool:
        return self.engine.exists(self.path(name))

    def ensure(self, name: str) -> None:
        """Create the table empty with its declared schema when it does not exist yet."""
        schema = self.schema(name)
        if schema is None:
            raise TableError(f"table {name} has no declared columns; it is created by its first append")
        if not self.exists(name):
            self._record(name, self.engine.create(self.path(name), schema,
                                                  description=self.config.table(name).description))

    # ------------------------------------------------------------------ reads
    def read(self, name: str, *, version: int | None = None, timestamp: datetime | None = None) -> DataFrame:
        path = self.path(name)
        if not self.engine.exists(path):
            raise TableNotFound(f"table {name} does not exist yet at {path}; run the stage that writes it")
        self.reads.append(name)
        return self.engine.read(path, version=version, timestamp=timestamp)

    def read_or_empty(self, name: str) -> DataFrame:
        """The table, or an empty frame of its declared schema when it was never written."""
        if self.exists(name):
            return self.read(name)
        schema = self.schema(name)
        if schema is None:
            raise TableNotFound(f"table {name} does not exist yet")
        return self.spark.createDataFrame([], schema)

    def distinct_values(self, tables: dict[str, str], column: str) -> dict[str, set]:
        """Per key, the distinct values of ``column`` in the table it names (empty when not written yet).

        One Spark job for all the tables: a fixed-cost lookup a scheduled run does on every source
        costs one job, not one per source.

        Example:
            >>> lake.distinct_values({"transactions": "raw_transactions"}, "_batch_id")  # doctest: +SKIP
            {'transactions': {'20261126T091253-47701089'}}
        """
        from functools import reduce

        from pyspark.sql import functions as F

        out: dict[str, set] = {key: set() for key in tables}
        parts = [self.read(t).select(F.lit(key).alias("_key"), F.col(f"`{column}`").alias("_value")).distinct()
                 for key, t in sorted(tables.items()) if self.exists(t)]
        if parts:
            for key, value in reduce(lambda a, b: a.unionByName(b), parts).collect():
                out[key].add(value)
        return out

    def read_records(self, name: str) -> list[dict]:
        """A small table's rows as dicts (run records, reference data), read without a Spark job when
        the engine can; as ``[r.asDict() for r in lake.read(name).collect()]`` would give them."""
        path = self.path(name)
        if not self.engine.exists(path):
            raise TableNotFound(f"table {name} does not exist yet at {path}; run the stage that writes it")
        self.reads.append(name)
        return self.engine.read_records(path)

    def version(self, name: str) -> int:
        return self.engine.version(self.path(name))

    def row_count(self, name: str) -> int:
        """Rows in the table's current version (from the Delta log where the engine can).

        Example:
            >>> lake.row_count("stg_transactions")                 # doctest: +SKIP
            99012
        """
        path = self.path(name)
        if not self.engine.exists(path):
            raise TableNotFound(f"table {name} does not exist yet at {path}; run the stage that writes it")
        return self.engine.row_count(path)

    def history(self, name: str) -> list[HistoryEntry]:
        return self.engine.history(self.path(name))

    def changes(self, name: str, since_version: int) -> DataFrame | None:
        """Row images inserted / deleted since ``since_version`` (column ``_change``); None when unknown.

        Example:
            >>> lake.changes("dim_customer", 4).filter("_change = 'insert'")   # doctest: +SKIP
        """
        if not self.exists(name):
            return None
        self.reads.append(name)
        return self.engine.changes(self.path(name), since_version)

    def appended_since(self, name: str, since_version: int) -> DataFrame | None:
        """The rows added since ``since_version`` while that version's rows all stayed; else None.

        Example:
            >>> lake.appended_since("raw_transactions", 7).count()             # doctest: +SKIP
            5083
        """
        if not self.exists(name):
            return None
        self.reads.append(name)
        return self.engine.appended_since(self.path(name), since_version)

    def table_id(self, name: str) -> str | None:
        """The table's identity (new when it is created again at the same path); None if unknown."""
        return self.engine.table_id(self.path(name)) if self.exists(name) else None

    def state(self, name: str) -> str | None:
        """``<table id>@<version>`` of the table now (see :meth:`TableEngine.state`); None when it does not
        exist or its identity is unknown. A result computed from a table at one state holds at that state.

        Example:
            >>> lake.state("dim_customer")   # doctest: +SKIP
            '5f0c...@12'
        """
        return self.engine.state(self.path(name)) if self.exists(name) else None

    def frame(self, name: str, rows: list[dict]) -> DataFrame:
        """A small frame of ``rows`` (dicts) with the table's declared schema; numbers are coerced.

        For run records and reference data built on the driver (a handful of rows), never for data.
        """
        from cpbi_spark.lakehouse.engine import records_frame

        return records_frame(self.spark, rows, self._declared(name))

    def _declared(self, name: str) -> StructType:
        schema = self.schema(name)
        if schema is None:
            raise TableError(f"table {name} has no declared columns")
        return schema

    # ------------------------------------------------------------------ writes
    def conform(self, name: str, df: DataFrame) -> DataFrame:
        """Select the declared columns in order, cast to the declared types; name what is missing.

        A frame that already has the declared columns and types is returned as it is, so a frame the
        caller cached stays the cached one (a projection over it would be a different plan).
        """
        from pyspark.sql import functions as F

        schema = self.schema(name)
        if schema is None or [(f.name, f.dataType) for f in df.schema.fields] == [
                (f.name, f.dataType) for f in schema.fields]:
            return df
        missing = [f.name for f in schema.fields if f.name not in df.columns]
        extra = [c for c in df.columns if c not in schema.fieldNames()]
        if missing or extra:
            raise TableError(f"table {name}: frame does not fit the declared columns"
                             + (f"; missing {missing}" if missing else "")
                             + (f"; not declared {extra}" if extra else ""))
        return df.select(*[F.col(f"`{f.name}`").cast(f.dataType).alias(f.name) for f in schema.fields])

    def _record(self, name: str, info: CommitInfo) -> CommitInfo:
        if info.changed:
            self.commits.append(CommitRecord(name, info))
        return info

    def append(self, name: str, df: DataFrame, *, app_id: str | None = None,
               app_version: int | None = None, tags: Mapping[str, str] | None = None) -> CommitInfo:
        """Append ``df`` (see :meth:`TableEngine.append`; ``tags`` go into the commit, see :meth:`tag_values`)."""
        if self.schema(name) is not None:
            self.ensure(name)
        return self._record(name, self.engine.append(self.conform(name, df), self.path(name),
                                                     app_id=app_id, app_version=app_version, tags=tags))

    def overwrite(self, name: str, df: DataFrame, *, predicate: str | None = None) -> CommitInfo:
        if self.schema(name) is not None:
            self.ensure(name)
        return self._record(name, self.engine.overwrite(self.conform(name, df), self.path(name),
                                                        predicate=predicate))

    def replace(self, name: str, df: DataFrame) -> CommitInfo:
        """Make the table hold exactly the rows of ``df``: no commit when it already does, else one overwrite.

        Whether it already does is decided by the content signature of both sides (see
        :mod:`cpbi_spark.lakehouse.signature` and :meth:`TableEngine.replace`), so a recompute that changed
        nothing writes nothing (a rerun changes no version) and one that changed rows rewrites the table in
        one commit. Use it for a table recomputed in full: a MERGE of a full recompute joins both sides whole
        and then also rewrites every file holding a changed row, which after a late change to a dimension
        is most of them. Into an empty table (the first load) ``df`` is appended straight from its plan,
        with nothing to compare.

        Example:
            >>> lake.replace("fact_basket_lines", recomputed).changed   # doctest: +SKIP
            False
        """
        self.ensure(name)
        if self.row_count(name) == 0:
            # Nothing stored to compare with (the first load): append straight from the plan.
            return self.append(name, df)
        return self._record(name, self.engine.replace(self.conform(name, df), self.path(name)))

    def append_records(self, name: str, rows: list[dict], *, app_id: str | None = None,
                       app_version: int | None = None) -> CommitInfo:
        """Append a few rows built on the driver (run records, reference data; see :meth:`frame`).

        Example:
            >>> lake.append_records("fact_job_runs", [{"run_id": "r1", ...}], app_id="r1/bronze")  # doctest: +SKIP
        """
        schema = self._declared(name)
        self.ensure(name)
        return self._record(name, self.engine.append_records(rows, schema, self.path(name), app_id=app_id,
                                                             app_version=app_version))

    def overwrite_records(self, name: str, rows: list[dict]) -> CommitInfo:
        """Make the table hold exactly these driver-built rows (one commit; see :meth:`append_records`)."""
        schema = self._declared(name)
        self.ensure(name)
        return self._record(name, self.engine.overwrite_records(rows, schema, self.path(name)))

    def merge(self, name: str, df: DataFrame, spec: MergeSpec) -> CommitInfo:
        self.ensure(name)
        return self._record(name, self.engine.merge(df, self.path(name), spec))

    def delete(self, name: str, predicate: str) -> CommitInfo:
        return self._record(name, self.engine.delete(self.path(name), predicate))

    def tag_values(self, name: str, tag: str) -> set[str] | None:
        """The values every commit that added rows stored under ``tag`` (a JSON list, see :meth:`append`),
        read from the commit log alone: no Spark job.

        None when that cannot answer for the table's whole history: a commit other than the creation
        and table upkeep carries no such tag (written another way, or before tags existed), or the log
        no longer reaches version 0 (cleaned up). The caller then reads the rows themselves.

        Example:
            >>> lake.append("raw_orders", frame, tags={"files": json.dumps(["ab12..."])})  # doctest: +SKIP
            >>> lake.tag_values("raw_orders", "files")                                      # doctest: +SKIP
            {'ab12...'}
        """
        import json

        from cpbi_spark.lakehouse.engine import TAG_PREFIX

        history = self.history(name)  # of the current version: its newest entry is that version
        if sorted(h.version for h in history) != list(range(len(history))):
            return None
        values: set[str] = set()
        for h in history:
            raw = h.parameters.get(f"{TAG_PREFIX}{tag}")
            if raw is None:
                if h.operation in _NO_NEW_ROWS:
                    continue
                return None
            values.update(json.loads(raw))
        return values

    def logged_values(self, tables: dict[str, str], column: str, tag: str) -> dict[str, set]:
        """Per key, the distinct values of ``column`` in the table it names, from the commit log when it can
        answer (:meth:`tag_values`: each commit that added rows stored them under ``tag``), else read from
        the rows: every such table in one Spark job (:meth:`distinct_values`). Empty for a table not
        written yet.

        Example:
            >>> lake.logged_values({"transactions": "raw_transactions"}, "_batch_id", "batch_id")  # doctest: +SKIP
            {'transactions': {'20261126T091253-47701089'}}
        """
        out: dict[str, set] = {}
        scan: dict[str, str] = {}
        for key, table in tables.items():
            found = self.tag_values(table, tag) if self.exists(table) else set()
            if found is None:
                scan[key] = table
            else:
                out[key] = found
        if scan:
            out.update(self.distinct_values(scan, column))
        return out

    def same_rows_between(self, name: str, old: int, new: int) -> bool:
        """True when versions ``old`` and ``new`` hold the same rows because every commit after ``old``
        up to ``new`` only moved or deleted unused files (compaction, vacuum: ``cpbi maintain``).

        Example:
            >>> # versions 4, 5, 6: OPTIMIZE, VACUUM START, VACUUM END
            >>> lake.same_rows_between("stg_transactions", 3, 6)  # doctest: +SKIP
            True
        """
        if old == new:
            return True
        if not 0 <= old < new <= self.version(name):
            return False
        between = [h.operation for h in self.history(name) if old < h.version <= new]
        return len(between) == new - old and all(op in UPKEEP_OPERATIONS for op in between)

    def file_sizes(self, name: str) -> list[int]:
        """The size in bytes of each data file of the table's current version."""
        return self.engine.file_sizes(self.path(name))

    def optimize(self, name: str, *, target_file_mb: int = 128, min_files: int = 2) -> CommitInfo:
        """Compact the table's small files (see :meth:`TableEngine.optimize`); no commit when too few."""
        return self._record(name, self.engine.optimize(self.path(name), target_file_mb=target_file_mb,
                                                       min_files=min_files))

    def vacuum(self, name: str, *, retention_hours: int = 168, dry_run: bool = False) -> list[str]:
        """Delete the files no version of the last ``retention_hours`` uses; returns them (a dry run deletes none)."""
        return self.engine.vacuum(self.path(name), retention_hours=retention_hours, dry_run=dry_run)

    def app_version(self, name: str, app_id: str) -> int | None:
        return self.engine.app_version(self.path(name), app_id)
