"""Writes of the platform recorder: idempotent, and through its own lakehouse handle.

The recorder has its own :class:`~cpbi_spark.lakehouse.Lakehouse` on the run's engine, so its reads and
commits never appear in ``ctx.lake.reads`` / ``ctx.lake.commits`` (the lineage and summaries of the
pipeline). Three write patterns, all safe to repeat for the same run:

* :meth:`PlatformStore.append_once` - per-run records; a Delta application transaction id
  (``platform/<run>/<stage>/<attempt>``) makes a repeated write of the same records a no-op.
* :meth:`PlatformStore.upsert` - MERGE on the table's keys (only changed rows are rewritten).
* :meth:`PlatformStore.replace` - small tables recomputed whole (reference data from conf, roll-ups):
  compared with what is stored and overwritten only when different, so an unchanged table makes no version.

Example:
    >>> store = PlatformStore(ctx)                                                   # doctest: +SKIP
    >>> store.append_once("fact_job_runs", rows, token=f"platform/{ctx.run_id}/silver/1")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from cpbi_spark.lakehouse.engine import CommitInfo
    from cpbi_spark.runtime import RunContext

# (table path) -> (version, fingerprint) of what this process last wrote or read: an unchanged table at an
# unchanged version is not read again (reference tables are compared once per process, not per run).
_KNOWN: dict[str, tuple[int, str]] = {}


def _norm(value: Any) -> Any:
    """A comparable, JSON-able form of a cell (Decimal and float compare by value, times as ISO text)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float, Decimal)):
        return round(float(value), 9)
    if isinstance(value, datetime):
        return value.replace(tzinfo=None).isoformat(timespec="microseconds")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def fingerprint(rows: list[dict], columns: list[str]) -> str:
    """Order-independent fingerprint of rows over ``columns``.

    >>> one = fingerprint([{"a": 1, "b": "x"}, {"a": 2}], ["a", "b"])
    >>> one == fingerprint([{"a": 2.0}, {"b": "x", "a": 1}], ["a", "b"])
    True
    """
    lines = sorted(json.dumps([_norm(r.get(c)) for c in columns]) for r in rows)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


class PlatformStore:
    """The recorder's reads and writes on the run's engine (see the module doc).

    ``timings`` holds the seconds spent per table written (``cpbi -v`` logs them; they show what the
    recorder costs a run).
    """

    def __init__(self, ctx: RunContext):
        from cpbi_spark.lakehouse import Lakehouse

        self.ctx = ctx
        self.lake = Lakehouse(ctx.spark, ctx.config, engine=ctx.lake.engine)
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def timed(self, label: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[label] = self.timings.get(label, 0.0) + time.perf_counter() - t0

    def columns(self, name: str) -> list[str]:
        return list(self.ctx.config.table(name).columns)

    def frame(self, name: str, rows: list[dict]) -> DataFrame:
        return self.lake.frame(name, rows)

    def rows(self, name: str, where: str | None = None) -> list[dict]:
        """The table's rows as dicts (small platform tables only); [] when it does not exist."""
        if not self.lake.exists(name):
            return []
        if not where:
            return self.lake.read_records(name)
        return [r.asDict() for r in self.lake.read(name).where(where).collect()]

    def append_once(self, name: str, rows: list[dict] | DataFrame, *, token: str) -> CommitInfo | None:
        """Append the records of one run step once: a repeat with the same ``token`` writes nothing."""
        with self.timed(name):
            if isinstance(rows, list):  # records built here: committed without a Spark job
                return self.lake.append_records(name, rows, app_id=token, app_version=1) if rows else None
            return self.lake.append(name, rows, app_id=token, app_version=1)

    def upsert(self, name: str, rows: list[dict] | DataFrame, *, insert_only: bool = False) -> CommitInfo | None:
        """MERGE on the declared keys: insert new keys, update changed rows (or only insert new keys).

        Columns ending in ``_ts`` / ``_at`` (when a row was recorded) do not make a row "changed".
        """
        from cpbi_spark.lakehouse.merge_spec import MergeSpec, changed_condition

        if isinstance(rows, list):
            if not rows:
                return None
            rows = self.frame(name, rows)
        keys = list(self.ctx.config.table(name).keys)
        with self.timed(name):
            if insert_only:
                return self.lake.merge(name, self.lake.conform(name, rows), MergeSpec.insert_new(keys))
            # When a row was recorded is not a change of it: a repeated refresh writes no new version.
            others = [c for c in self.columns(name) if c not in keys and not c.endswith(("_ts", "_at"))]
            changed = changed_condition(others) or None
            return self.lake.merge(name, self.lake.conform(name, rows),
                                   MergeSpec.upsert(keys, only_if_changed=changed))

    def replace(self, name: str, rows: list[dict]) -> bool:
        """Make the table hold exactly ``rows``; returns True when a new version was written."""
        with self.timed(name):
            return self._replace(name, rows)

    def _replace(self, name: str, rows: list[dict]) -> bool:
        columns = self.columns(name)
        wanted = fingerprint(rows, columns)
        path = self.lake.path(name)
        exists = self.lake.exists(name)
        if exists:
            version = self.lake.version(name)
            known = _KNOWN.get(path)
            if known is None or known[0] != version:
                known = (version, fingerprint(self.rows(name), columns))
                _KNOWN[path] = known
            if known[1] == wanted:
                return False
        if not rows and not exists:
            self.lake.ensure(name)
        else:
            self.lake.overwrite_records(name, rows)
        _KNOWN[path] = (self.lake.version(name), wanted)
        return True
