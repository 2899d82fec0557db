"""Source C (quality): the conf's expectation suites, validated with Great Expectations on Spark frames.

Each table's checks (``conf/base/expectations.yaml``) compile to one GE ``ExpectationSuite`` that is
validated as a whole on the table's checked columns (cached once; GE computes the metrics of the suite
together), whenever a stage commits to the table. ``references`` compiles to an ``UnexpectedRowsExpectation``
(anti-join against the referenced table), ``row_count`` with ``sql`` to ``ExpectTableRowCountToEqual``
with the count the SQL returns at validation time (``{table}`` = a lakehouse table).

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
    _GX.update(gx=gx, context=context, batch=asset.add_batch_definition_whole_dataframe("whole"))


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
    pct = result.get("unexpected_percent")
    sample = result.get("partial_unexpected_list") or []
    text = f"{unexpected} unexpected" + (f" of {elements} ({pct:.3f}%)" if elements is not None and pct is not None
                                         else "")
    return text, None if unexpected is None else int(unexpected), None if elements is None else int(elements), \
        None if pct is None else float(pct), sample


def validate_table(store: PlatformStore, table: str, suite: ExpectationSuiteConfig) -> list[dict]:
    """Validate ``table``'s suite as one GE run; one result dict per check.

    Result keys: check_name, expectation_type, column_name, severity, check_status (passed|failed|error),
    observed_value, unexpected_count, element_count, unexpected_percent, sample, dataset_version.
    """
    from pyspark import StorageLevel

    lake, spark = store.lake, store.ctx.spark
    version = lake.version(table)
    key = (lake.path(table), version, suite_fingerprint(table, suite))
    if key in _RESULTS:
        return _RESULTS[key]
    gxs = _context()
    gx = gxs["gx"]
    views: dict[str, str] = {}
    refs = {c.table for c in suite.checks if c.expect == "references" and c.table}
    refs |= {t for c in suite.checks if c.sql for t in sql_table_refs(c.sql)}
    for ref in sorted(refs):
        views[ref] = _view(ref)
        (lake.read(ref) if lake.exists(ref) else lake.read_or_empty(ref)).createOrReplaceTempView(views[ref])
    table_df = lake.read(table)
    # Only the checked columns are cached and scanned (a row count needs just one): caching a bronze
    # table's raw text columns made its one-column uniqueness check take twice as long.
    df: DataFrame = table_df.select(*checked_columns(suite, table_df.columns)).persist(StorageLevel.MEMORY_AND_DISK)
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
        gx_suite = gx.ExpectationSuite(name=f"cpbi.{table}.{key[2]}")
        for spec in specs:
            gx_suite.add_expectation(_expectation(gx, spec))
        gx_suite = gxs["context"].suites.add_or_update(gx_suite)
        batch = gxs["batch"].get_batch(batch_parameters={"dataframe": df})
        outcome = batch.validate(gx_suite, result_format={"result_format": "BASIC",
                                                          "partial_unexpected_count": 5})
    finally:
        df.unpersist()
        for view in views.values():
            spark.catalog.dropTempView(view)
    by_check = {r.expectation_config.meta["check"]: r for r in outcome.results}
    results = []
    for spec in specs:
        r = by_check.get(spec.check.check)
        raised = bool(r is None or (r.exception_info or {}).get("raised_exception"))
        observed, unexpected, elements, pct, sample = _observed(dict(r.result or {}), spec) if r is not None \
            else ("not evaluated", None, None, None, [])
        if raised:
            message = (r.exception_info or {}).get("exception_message") if r is not None else "no result"
            observed = f"error: {message}"[:500]
        results.append({"check_name": spec.check.check, "expectation_type": spec.expectation_type,
                        "column_name": spec.column, "severity": spec.check.severity,
                        "check_status": "error" if raised else ("passed" if r.success else "failed"),
                        "observed_value": observed, "unexpected_count": unexpected, "element_count": elements,
                        "unexpected_percent": pct, "sample": sample, "dataset_version": version,
                        "kwargs": spec.kwargs})
    _RESULTS[key] = results
    return results


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
