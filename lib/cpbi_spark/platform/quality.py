"""Source C (quality): the conf's expectation suites, validated with Great Expectations on Spark frames.

Each table's checks (``conf/base/expectations.yaml``) compile to one GE ``ExpectationSuite`` that is
validated as a whole on the table's checked columns (cached once; GE computes the metrics of the suite
together), whenever a stage commits to the table. Rows that fit ``platform.dq_local_max_rows`` (a small
table, or the rows a batch appended to a large one) are validated by GE's pandas engine in the driver
instead, when every check of the suite means the same there (:func:`local_capable`): GE on Spark runs a
few Spark jobs per suite, a fixed cost of seconds that dwarfs the work on a few thousand rows.
``references`` compiles to an ``UnexpectedRowsExpectation`` (anti-join against the referenced table),
``row_count`` with ``sql`` to ``ExpectTableRowCountToEqual`` with the count the SQL returns at validation
time (``{table}`` = a lakehouse table).

Example:
    >>> from cpbi_spark.config.platform import ExpectationConfig as C
    >>> spec = compile_check(C(check="id_set", expect="not_null", column="id"), views={})
    >>> spec.expectation_type
    'expect_column_values_to_not_be_null'
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cpbi_spark.platform.settings import sql_table_refs

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from cpbi_spark.config.platform import ExpectationConfig, ExpectationSuiteConfig
    from cpbi_spark.platform.store import PlatformStore

_GX: dict[str, Any] = {}
_GX_LOCK = threading.Lock()
_log = logging.getLogger(__name__)
# (table path, version, suite fingerprint) -> results: an unchanged table is not validated twice per process.
_RESULTS: dict[tuple[str, int, str], list[dict]] = {}


@dataclass(frozen=True)
class CheckSpec:
    """A check compiled to a GE expectation class and its arguments."""

    check: ExpectationConfig
    expectation_type: str
    kwargs: dict[str, Any]

    @property
    def column(self) -> str | None:
        return self.check.column or (",".join(self.check.columns) or None)


def _view(table: str) -> str:
    return f"cpbi_dq_{table}"


def compile_check(check: ExpectationConfig, views: dict[str, str], expected_rows: int | None = None) -> CheckSpec:
    """The GE expectation type and kwargs of one declared check (pure; ``views``: table -> temp view)."""
    mostly = {"mostly": check.mostly} if check.mostly < 1 else {}
    if check.expect == "not_null":
        return CheckSpec(check, "expect_column_values_to_not_be_null", {"column": check.column, **mostly})
    if check.expect == "unique":
        if len(check.columns) == 1:
            return CheckSpec(check, "expect_column_values_to_be_unique", {"column": check.columns[0], **mostly})
        return CheckSpec(check, "expect_compound_columns_to_be_unique", {"column_list": list(check.columns), **mostly})
    if check.expect == "between":
        return CheckSpec(check, "expect_column_values_to_be_between",
                         {"column": check.column, "min_value": check.min, "max_value": check.max, **mostly})
    if check.expect == "in_set":
        return CheckSpec(check, "expect_column_values_to_be_in_set",
                         {"column": check.column, "value_set": list(check.values), **mostly})
    if check.expect == "references":
        col, ref, ref_col = check.column, views.get(check.table or "", _view(check.table or "")), check.table_column
        query = (f"SELECT b.* FROM {{batch}} b LEFT ANTI JOIN {ref} r ON b.`{col}` = r.`{ref_col}` "
                 f"WHERE b.`{col}` IS NOT NULL")
        return CheckSpec(check, "unexpected_rows_expectation", {"unexpected_rows_query": query})
    if check.sql:
        return CheckSpec(check, "expect_table_row_count_to_equal", {"value": int(expected_rows or 0)})
    return CheckSpec(check, "expect_table_row_count_to_be_between",
                     {"min_value": None if check.min is None else int(check.min),
                      "max_value": None if check.max is None else int(check.max)})


def checked_columns(suite: ExpectationSuiteConfig, columns: list[str]) -> list[str]:
    """The columns of ``columns`` the suite's checks read, in table order (the first one if none does).

    Example:
        >>> from cpbi_spark.config.platform import ExpectationConfig as C, ExpectationSuiteConfig as S
        >>> checked_columns(S(checks=[C(check="k", expect="unique", columns=["id"])]), ["name", "id"])
        ['id']
    """
    used = {c for check in suite.checks for c in (check.column, *check.columns) if c}
    return [c for c in columns if c in used] or columns[:1]


def suite_fingerprint(name: str, suite: ExpectationSuiteConfig) -> str:
    return hashlib.sha256(json.dumps([name, suite.model_dump(mode="json")], sort_keys=True).encode()).hexdigest()[:16]


def warm_up() -> threading.Thread | None:
    """Build the GE context (:func:`_context`) in a background thread; None when it is built already.

    Importing Great Expectations and creating its context costs several seconds of driver time. Started
    when a stage starts, that work overlaps the stage's Spark jobs (the driver mostly waits for the JVM
    then), instead of delaying the stage's first validation. A failure here is left to the first
    validation, which builds the context again and reports it.
    """
    if _GX:
        return None

    def build() -> None:
        try:
            _context()
        except Exception:  # reported by the validation that needs the context
            _log.debug("building the Great Expectations context in the background failed", exc_info=True)

    thread = threading.Thread(target=build, name="cpbi-gx-warm-up")
    thread.start()
    return thread


def _context():
    """One ephemeral GE context per process, with a Spark data source and a whole-frame batch definition."""
    with _GX_LOCK:  # one build, also when warm_up's thread is still building it
        if not _GX:
            _build_context()
    return _GX


def _build_context() -> None:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_spark("cpbi")
    asset = source.add_dataframe_asset("table")
    local = context.data_sources.add_pandas("cpbi_local").add_dataframe_asset("table")
    _GX.update(gx=gx, context=context, batch=asset.add_batch_definition_whole_dataframe("whole"),
               local_batch=local.add_batch_definition_whole_dataframe("whole"))


def _expectation(gx: Any, spec: CheckSpec):
    classes = {
        "expect_column_values_to_not_be_null": gx.expectations.ExpectColumnValuesToNotBeNull,
        "expect_column_values_to_be_unique": gx.expectations.ExpectColumnValuesToBeUnique,
        "expect_compound_columns_to_be_unique": gx.expectations.ExpectCompoundColumnsToBeUnique,
        "expect_column_values_to_be_between": gx.expectations.ExpectColumnValuesToBeBetween,
        "expect_column_values_to_be_in_set": gx.expectations.ExpectColumnValuesToBeInSet,
        "unexpected_rows_expectation": gx.expectations.UnexpectedRowsExpectation,
        "expect_table_row_count_to_equal": gx.expectations.ExpectTableRowCountToEqual,
        "expect_table_row_count_to_be_between": gx.expectations.ExpectTableRowCountToBeBetween,
    }
    meta = {"check": spec.check.check, "severity": spec.check.severity}
    return classes[spec.expectation_type](**spec.kwargs, meta=meta)


def _observed(result: dict, spec: CheckSpec) -> tuple[str, int | None, int | None, float | None, list]:
    """(observed value text, unexpected count, element count, unexpected percent, sample) of a GE result."""
    if "observed_value" in result and spec.expectation_type != "unexpected_rows_expectation":
        return str(result["observed_value"]), None, None, None, []
    unexpected = result.get("unexpected_count")
    if spec.expectation_type == "unexpected_rows_expectation":
        unexpected = result.get("observed_value", unexpected)
    elements = result.get("element_count")
    if unexpected is None and elements == 0:
        # GE leaves the count empty on no rows: none is unexpected. The rows a batch added are validated
        # alone, and may be none; the whole table's count is then 0, as a whole validation reports it.
        unexpected = 0
    pct = result.get("unexpected_percent")
    sample = [{k: _plain(x) for k, x in v.items()} if isinstance(v, dict) else _plain(v)
              for v in result.get("partial_unexpected_list") or []]
    text = f"{unexpected} unexpected" + (f" of {elements} ({pct:.3f}%)" if elements is not None and pct is not None
                                         else "")
    return text, None if unexpected is None else int(unexpected), None if elements is None else int(elements), \
        None if pct is None else float(pct), sample


# The default of ``platform.dq_local_max_rows``. Measured here: a 4-check suite on a 43k-row table took 1.8-1.9 s
# on Spark and 0.25 s on pandas (0.16 s of it moving the checked columns to the driver). The bound keeps the
# driver's memory independent of the data size: larger frames stay on Spark. At 200,000 the scale-20 bench's
# driver peak rose from 452-470 MB to 518-525 MB (the 160k-row dim_customer validated on pandas).
LOCAL_MAX_ROWS = 50_000
_INTEGRAL = {"tinyint", "smallint", "int", "bigint"}
_NUMERIC = _INTEGRAL | {"float", "double"}


def local_capable(suite: ExpectationSuiteConfig, dtypes: dict[str, str]) -> bool:
    """Whether GE's pandas engine decides every check of ``suite`` as its Spark engine does.

    ``dtypes`` are the table's Spark column types (``DataFrame.dtypes``). Not so for a ``references``
    check (an SQL anti-join: Spark only), a ``between`` on a non-numeric column (Spark casts a bound
    such as ``'2024-01-01'`` to the column's type; pandas compares a date with a string and fails), or an
    ``in_set`` whose values are not of the column's kind (Spark casts ``1`` to ``'1'``; pandas does not).

    Example:
        >>> from cpbi_spark.config.platform import ExpectationSuiteConfig as S
        >>> local_capable(S.model_validate({"checks": [{"check": "q", "expect": "between", "column": "q",
        ...                                             "min": 0}]}), {"q": "decimal(12,2)"})
        True
        >>> local_capable(S.model_validate({"checks": [{"check": "t", "expect": "in_set", "column": "t",
        ...                                             "values": [1, 2]}]}), {"t": "string"})
        False
    """
    def numeric(t: str | None) -> bool:
        return t is not None and (t in _NUMERIC or t.startswith("decimal"))

    for c in suite.checks:
        kind = dtypes.get(c.column or "")
        if c.expect == "references" or (c.expect == "between" and not numeric(kind)):
            return False
        if c.expect == "in_set":
            strings = kind == "string" and all(isinstance(v, str) for v in c.values)
            integers = kind in _INTEGRAL and all(isinstance(v, int) and not isinstance(v, bool) for v in c.values)
            if not (strings or integers):
                return False
    return True


def _plain(value: Any) -> Any:
    """A sample value as Python gives it (pandas hands numpy scalars, and NaN for a missing number)."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def _is_local(frame: Any) -> bool:
    import pandas as pd

    return isinstance(frame, pd.DataFrame)


WATERMARKS = "ctl_dq_watermarks"
# The default of ``platform.dq_incremental_min_rows``: smaller tables are validated whole. At scale 5 here,
# tables of 1k-35k rows took as long or longer on their appended rows (GE's fixed cost per run and the extra
# Spark jobs); the suites of the 0.5M-row transaction tables took 15-30% less, and at 2M rows 50-55% less.
INCREMENTAL_MIN_ROWS = 100_000


@dataclass(frozen=True)
class Watermark:
    """A table version whose whole suite passed with no unexpected row (a ``ctl_dq_watermarks`` row)."""

    table_id: str | None
    version: int
    fingerprint: str
    refs: dict[str, tuple[str | None, int]]   # references table -> (its table id, its version) then


def last_watermark(rows: list[dict], table: str) -> Watermark | None:
    """The newest watermark of ``table`` among ``ctl_dq_watermarks`` rows (pure).

    Example:
        >>> last_watermark([{"dataset_id": "t", "table_id": "a", "dataset_version": 3, "suite_fingerprint": "f",
        ...                  "ref_versions": '{"d": ["b", 7]}'}], "t").refs
        {'d': ('b', 7)}
    """
    mine = [r for r in rows if r["dataset_id"] == table]
    if not mine:
        return None
    r = max(mine, key=lambda r: (r["dataset_version"], r.get("recorded_ts") or 0))
    return Watermark(r["table_id"], int(r["dataset_version"]), r["suite_fingerprint"],
                     {k: (v[0], int(v[1])) for k, v in json.loads(r["ref_versions"] or "{}").items()})


def references_of(suite: ExpectationSuiteConfig) -> list[str]:
    """The tables the suite's ``references`` checks look keys up in."""
    return sorted({c.table for c in suite.checks if c.expect == "references" and c.table})


def _keys_kept(lake, ref: str, columns: list[str], since: int, now: int) -> bool:
    """Whether every value of ``columns`` that ``ref`` held at version ``since`` is still in it (at ``now``).

    Appends keep them all; otherwise (an SCD2 dimension closes versions in place) the row images
    removed since are looked up: a value of one that no current row holds is gone.
    """
    from pyspark.sql import functions as F

    from cpbi_spark.lakehouse.engine import CHANGE_COLUMN

    if now == since or lake.appended_since(ref, since) is not None:
        return True
    changed = lake.changes(ref, since)
    if changed is None:
        return False
    removed = changed.where(F.col(CHANGE_COLUMN) == "delete")
    current = lake.read(ref)
    for column in columns:
        gone = removed.select(column).where(F.col(column).isNotNull()).distinct() \
            .join(current.select(column), on=column, how="left_anti")
        if not gone.isEmpty():
            return False
    return True


def incremental_base(lake, table: str, suite: ExpectationSuiteConfig, fingerprint: str, mark: Watermark | None,
                     table_id: str | None, refs: dict[str, tuple[str | None, int]]) -> DataFrame | None:
    """The rows appended since ``mark`` when a validation of them alone decides the whole table; else None.

    That holds when the suite is the one ``mark`` passed, the table is the same table and every row
    of ``mark``'s version is still in it unchanged, and every table a ``references`` check looks up
    still holds every key it held then. The rows of ``mark``'s version then still pass every
    row-level check; only the appended rows, and old rows sharing a unique key with them, can fail one.
    ``table_id`` and ``refs`` (references table -> (table id, version)) describe the tables now.
    """
    if mark is None or mark.fingerprint != fingerprint:
        return None
    if table_id is None or table_id != mark.table_id:
        return None
    for ref in references_of(suite):
        ref_id, ref_version = mark.refs.get(ref, (None, -1))
        now_id, now_version = refs.get(ref, (None, -1))
        if ref_id is None or now_id != ref_id:
            return None
        columns = sorted({c.table_column for c in suite.checks if c.expect == "references" and c.table == ref})
        if not _keys_kept(lake, ref, columns, ref_version, now_version):
            return None
    return lake.appended_since(table, mark.version)


def _incremental_batch(lake, table: str, suite: ExpectationSuiteConfig, appended: DataFrame, since: int,
                       columns: list[str]) -> DataFrame:
    """The appended rows plus the rows of version ``since`` sharing a value of a unique key with one.

    Each unique key's appended values are joined null-safely to the old rows; a left join per key
    (not a union of semi-joins) keeps each old row once when it matches on several keys.
    """
    from pyspark.sql import functions as F

    new = appended.select(*columns)
    keys = [list(c.columns) for c in suite.checks if c.expect == "unique"]
    if not keys:
        return new
    old = lake.read(table, version=since).select(*columns)
    for i, cols in enumerate(keys):
        aliases = [f"_cpbi_k{i}_{j}" for j in range(len(cols))]
        values = appended.select(*[F.col(c).alias(a) for c, a in zip(cols, aliases, strict=True)]).distinct() \
            .withColumn(f"_cpbi_m{i}", F.lit(True))
        cond = None
        for c, a in zip(cols, aliases, strict=True):
            term = old[c].eqNullSafe(values[a])
            cond = term if cond is None else cond & term
        old = old.join(F.broadcast(values), cond, "left").drop(*aliases)
    matched = old.where(" OR ".join(f"_cpbi_m{i} IS NOT NULL" for i in range(len(keys)))).select(*columns)
    return new.unionByName(matched)


def _row_count_offset(spec: CheckSpec, offset: int) -> CheckSpec | None:
    """A row-count check on the validated rows that is equivalent to the table-level one (``offset``
    rows are not validated); None when no count of those rows can pass (the table-level check fails)."""
    kwargs = dict(spec.kwargs)
    if spec.expectation_type == "expect_table_row_count_to_equal":
        kwargs["value"] = kwargs["value"] - offset
        return None if kwargs["value"] < 0 else CheckSpec(spec.check, spec.expectation_type, kwargs)
    if spec.expectation_type == "expect_table_row_count_to_be_between":
        if kwargs["max_value"] is not None:
            kwargs["max_value"] -= offset
            if kwargs["max_value"] < 0:
                return None
        if kwargs["min_value"] is not None:
            kwargs["min_value"] = max(0, kwargs["min_value"] - offset)
        return CheckSpec(spec.check, spec.expectation_type, kwargs)
    return spec


def validate_table(store: PlatformStore, table: str, suite: ExpectationSuiteConfig,
                   watermarks: list[dict] | None = None, *, incremental_min_rows: int = INCREMENTAL_MIN_ROWS,
                   local_max_rows: int = LOCAL_MAX_ROWS) -> list[dict]:
    """Validate ``table``'s suite as one GE run; one result dict per check.

    With ``watermarks`` (``ctl_dq_watermarks`` rows) and a clean validation of an earlier version of
    the same suite there, a table of at least ``incremental_min_rows`` rows that was only appended to
    since is validated on the appended rows (see :func:`incremental_base`); the results are the whole
    table's, and ``validation_mode`` says ``incremental since version N``. At most ``local_max_rows``
    validated rows of a suite :func:`local_capable` of are validated on pandas (0: always on Spark);
    ``validation_engine`` says which.

    Result keys: check_name, expectation_type, column_name, severity, check_status (passed|failed|error),
    observed_value, unexpected_count, element_count, unexpected_percent, sample, dataset_version,
    table_id, suite_fingerprint, ref_versions, validated_rows, validation_mode.
    """
    from pyspark import StorageLevel

    lake, spark = store.lake, store.ctx.spark
    version = lake.version(table)
    fingerprint = suite_fingerprint(table, suite)
    key = (lake.path(table), version, fingerprint)
    if key in _RESULTS:
        return _RESULTS[key]
    gxs = _context()
    gx = gxs["gx"]
    table_id = lake.table_id(table)
    ref_versions = {ref: (lake.table_id(ref), lake.version(ref)) for ref in references_of(suite) if lake.exists(ref)}
    mark = last_watermark(watermarks or [], table)
    appended = incremental_base(lake, table, suite, fingerprint, mark, table_id, ref_versions) \
        if mark is not None and lake.row_count(table) >= incremental_min_rows else None
    views: dict[str, str] = {}
    refs = set(references_of(suite)) | {t for c in suite.checks if c.sql for t in sql_table_refs(c.sql)}
    for ref in sorted(refs):
        views[ref] = _view(ref)
        (lake.read(ref) if lake.exists(ref) else lake.read_or_empty(ref)).createOrReplaceTempView(views[ref])
    table_df = lake.read(table)
    # Only the checked columns are cached and scanned (a row count needs just one): caching a bronze
    # table's raw text columns made its one-column uniqueness check take twice as long.
    columns = checked_columns(suite, table_df.columns)
    rows = table_df if appended is None else _incremental_batch(lake, table, suite, appended, mark.version, columns)
    local_max = local_max_rows if local_capable(suite, dict(table_df.dtypes)) else 0

    def frame_of(source: DataFrame, known_rows: int | None):
        """The checked columns of ``source``: a pandas frame when they fit ``local_max``, else a cached
        Spark frame. ``known_rows`` is the row count when the log tells it (a whole table)."""
        chosen = source.select(*columns)
        if local_max and (known_rows is None or known_rows <= local_max):
            # A count first would cost a Spark job: fetch one row more than the bound instead.
            local = (chosen if known_rows is not None else chosen.limit(local_max + 1)).toPandas()
            if len(local) <= local_max:
                return local
        return chosen.persist(StorageLevel.MEMORY_AND_DISK)

    def release(frame) -> None:
        if not _is_local(frame):
            frame.unpersist()

    df = frame_of(rows, lake.row_count(table) if appended is None else None)
    try:
        specs = []
        for check in suite.checks:
            expected = None
            if check.sql:
                sql = check.sql
                for ref, view in views.items():
                    sql = sql.replace(f"{{{ref}}}", view)
                expected = spark.sql(sql).first()[0]
            specs.append(compile_check(check, views, expected))
        # Row counts are checked on the validated rows against bounds less the rows left out.
        counted = appended is not None and any(c.expect == "row_count" for c in suite.checks)
        validated = (len(df) if _is_local(df) else df.count()) if counted else None
        offset = 0 if validated is None else lake.row_count(table) - validated
        run_specs = [_row_count_offset(s, offset) if offset else s for s in specs]
        if any(s is None for s in run_specs):  # a row count the validated rows cannot satisfy: check it all
            release(df)
            df = frame_of(table_df, lake.row_count(table))
            appended, validated, offset, run_specs = None, None, 0, specs
        gx_suite = gx.ExpectationSuite(name=f"cpbi.{table}.{fingerprint}")
        for spec in run_specs:
            gx_suite.add_expectation(_expectation(gx, spec))
        gx_suite = gxs["context"].suites.add_or_update(gx_suite)
        engine = "pandas" if _is_local(df) else "spark"
        batch = gxs["local_batch" if engine == "pandas" else "batch"].get_batch(batch_parameters={"dataframe": df})
        outcome = batch.validate(gx_suite, result_format={"result_format": "BASIC",
                                                          "partial_unexpected_count": 5})
    finally:
        release(df)
        for view in views.values():
            spark.catalog.dropTempView(view)
    mode = "full" if appended is None else f"incremental since version {mark.version}"
    if appended is not None and validated is None:  # a column check's element count is the rows validated
        validated = next((int(r.result["element_count"]) for r in outcome.results
                          if (r.result or {}).get("element_count") is not None), None)
    by_check = {r.expectation_config.meta["check"]: r for r in outcome.results}
    results = []
    for spec in specs:
        r = by_check.get(spec.check.check)
        raised = bool(r is None or (r.exception_info or {}).get("raised_exception"))
        observed, unexpected, elements, pct, sample = _observed(dict(r.result or {}), spec) if r is not None \
            else ("not evaluated", None, None, None, [])
        if offset and spec.check.expect == "row_count" and not raised and observed.lstrip("-").isdigit():
            observed = str(int(observed) + offset)  # the table's rows, not only the validated ones
        if raised:
            message = (r.exception_info or {}).get("exception_message") if r is not None else "no result"
            observed = f"error: {message}"[:500]
        results.append({"check_name": spec.check.check, "expectation_type": spec.expectation_type,
                        "column_name": spec.column, "severity": spec.check.severity,
                        "check_status": "error" if raised else ("passed" if r.success else "failed"),
                        "observed_value": observed, "unexpected_count": unexpected, "element_count": elements,
                        "unexpected_percent": pct, "sample": sample, "dataset_version": version,
                        "kwargs": spec.kwargs, "table_id": table_id, "suite_fingerprint": fingerprint,
                        "ref_versions": ref_versions, "validated_rows": validated, "validation_mode": mode,
                        "validation_engine": engine})
    _RESULTS[key] = results
    return results


def clean(results: list[dict]) -> bool:
    """Whether every check passed with no unexpected row (a watermark may be recorded).

    Example:
        >>> clean([{"check_status": "passed", "unexpected_count": 0}])
        True
    """
    return bool(results) and all(r["check_status"] == "passed" and not r["unexpected_count"] for r in results)


def watermark_rows(key: dict, dq: list[dict], now) -> list[dict]:
    """``ctl_dq_watermarks`` rows: one per table of ``dq`` (results with ``dataset_id``) validated clean.

    ``key`` is the stage attempt (run_id, stage, attempt). Example:
        >>> r = {"dataset_id": "t", "check_status": "passed", "unexpected_count": 0, "dataset_version": 2,
        ...      "table_id": "a", "suite_fingerprint": "f", "ref_versions": {}, "validated_rows": None,
        ...      "validation_mode": "full"}
        >>> [w["dataset_version"] for w in watermark_rows({"run_id": "r", "stage": "s", "attempt": 1}, [r], None)]
        [2]
    """
    by_table: dict[str, list[dict]] = {}
    for r in dq:
        by_table.setdefault(r["dataset_id"], []).append(r)
    out = []
    for table, results in by_table.items():
        first = results[0]
        if not clean(results) or first.get("table_id") is None:
            continue
        out.append({"watermark_id": hashlib.sha256(f"{key['run_id']}|{key['stage']}|{key['attempt']}|{table}"
                                                   .encode()).hexdigest()[:24],
                    "run_id": key["run_id"], "stage": key["stage"], "dataset_id": table,
                    "table_id": first["table_id"], "dataset_version": first["dataset_version"],
                    "suite_fingerprint": first["suite_fingerprint"],
                    "ref_versions": json.dumps(first["ref_versions"], sort_keys=True),
                    "validated_rows": first["validated_rows"], "validation_mode": first["validation_mode"],
                    "recorded_ts": now})
    return out


def expectation_rows(config) -> list[dict]:
    """``ref_expectations`` rows: each declared check and what it compiles to."""
    rows = []
    for table, suite in config.expectations.items():
        for check in suite.checks:
            spec = compile_check(check, {}, 0)
            kwargs = dict(spec.kwargs)
            if check.sql:
                kwargs = {"value": f"result of: {check.sql}"}
            rows.append({"dataset_id": table, "check_name": check.check, "expect": check.expect,
                         "expectation_type": spec.expectation_type, "column_name": spec.column,
                         "kwargs_json": json.dumps(kwargs, default=str), "severity": check.severity,
                         "description": check.description})
    return rows


def suite_rows(config) -> list[dict]:
    """``dim_expectation_suite`` rows."""
    return [{"suite_name": f"cpbi.{t}", "dataset_id": t, "expectations": len(s.checks),
             "blocking": sum(c.severity == "blocking" for c in s.checks),
             "warning": sum(c.severity == "warning" for c in s.checks), "fingerprint": suite_fingerprint(t, s)}
            for t, s in config.expectations.items()]
