"""The gold stage: conformed facts, marts and the end-to-end reconciliation.

Gold is incremental: it reads only the silver rows that changed since the input versions its
last successful run recorded (``ctl_stage_inputs``), recomputes the gold rows they affect (see
:mod:`cpbi_spark.gold.incremental`) and MERGEs them within that scope. The first run, a change
of settings, an input whose changes cannot be read, or ``--full-refresh`` recompute everything
from silver instead; each recomputed table is then rewritten in one commit only if its content
differs (:meth:`Lakehouse.replace`). Either way a rerun on the same silver makes no new version,
and a late SCD2 update re-points the facts of that customer or product.
When no input has new rows since gold's last successful run (the same versions, or only table upkeep
since: ``cpbi maintain``) and its settings are the same, nothing is recomputed (only the
reconciliation runs again, when a table it reads changed).
The reconciliation (``audit_recon``) checks raw = accepted + quarantined + duplicate and that
counts and amount checksums agree from silver to gold; an unbalanced check fails the stage
after it is recorded.

Example:
    >>> run_gold(ctx).tables          # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import TYPE_CHECKING

from cpbi_spark.errors import PipelineError
from cpbi_spark.gold import marts
from cpbi_spark.gold.conform import conform_transactions, daily_rates
from cpbi_spark.gold.incremental import (
    SilverChanges,
    account_months,
    affected_business_dates,
    affected_returns,
    affected_sales,
    changed_keys,
    changed_rate_days,
    dimension_change_points,
    scoped_merge_source,
    scoped_merge_spec,
    small_side,
    snapshot_starts,
)
from cpbi_spark.lakehouse.engine import CHANGE_COLUMN
from cpbi_spark.lakehouse.merge_spec import MergeSpec, changed_condition
from cpbi_spark.runtime import StageResult

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from cpbi_spark.runtime import RunContext

STAGE = "gold"


def _KEEP():  # a constant, looked up when used so that importing this module needs no Spark
    from pyspark import StorageLevel

    return StorageLevel.MEMORY_AND_DISK


def _freeze(df: DataFrame) -> DataFrame:
    """Materialise ``df`` and cut its lineage.

    The scope frames are reused by many later queries; with their plans inlined the plans grow with
    every reuse (rendering one ran the driver out of memory), so each is computed once and later
    queries start from its blocks.
    """
    return df.localCheckpoint(eager=True)


def _scope(df: DataFrame) -> DataFrame:
    """A scope frame (keys that select rows of larger tables), frozen and hinted for broadcast joins
    when small (see :func:`small_side`); counting frozen blocks is a cheap job."""
    df = _freeze(df)
    return small_side(df, df.count())


@contextmanager
def _timed(result: StageResult, step: str) -> Iterator[None]:
    """Seconds per step in ``counters['step_seconds']`` (where an incremental run spends its time)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        steps = result.counters.setdefault("step_seconds", {})
        steps[step] = round(steps.get(step, 0) + time.perf_counter() - t0, 2)


def _sync(ctx: RunContext, table: str, df: DataFrame, result: StageResult) -> None:
    """Make ``table`` equal to ``df``, a full recompute: no commit when equal, else one overwrite."""
    with _timed(result, table):
        _count(ctx.lake.replace(table, df), table, result)


def _count(info, table: str, result: StageResult) -> None:
    if info.changed:
        result.tables[table] = sum(info.metrics.get(k, 0) for k in ("num_inserted", "num_updated", "num_deleted"))


def _sync_scope(ctx: RunContext, table: str, df: DataFrame, in_scope: DataFrame, result: StageResult) -> None:
    """Make the rows of ``table`` inside a scope equal to ``df``; rows outside it are not touched.

    ``in_scope`` selects the table's current rows of the scope (its keys are what matters): those
    ``df`` no longer produces are deleted. ``counters['scope'][table]`` records how many rows were fed.
    """
    cfg = ctx.config.table(table)
    keys = list(cfg.keys)
    df = ctx.lake.conform(table, df)
    with _timed(result, table):
        source = _freeze(scoped_merge_source(df, in_scope, keys))
        fed = source.count()
        result.counters.setdefault("scope", {})[table] = fed
        if fed:
            _count(ctx.lake.merge(table, source, scoped_merge_spec(keys, df.columns)), table, result)


# Silver tables gold reads; their versions are recorded after each successful gold run.
INPUTS = ("stg_transactions", "stg_returns", "dim_customer", "dim_product", "dim_merchant", "ref_exchange_rates",
          "ref_fee_schedule")
OUTPUTS = ("fact_transactions", "fact_returns", "fact_basket_lines", "stage_adjustments", "stage_settlements",
           "fact_settlements", "fact_balance_snapshots")
# Bump when a change to the gold code changes its output: the next run then recomputes everything.
LOGIC_VERSION = "1"


def _fingerprint(ctx: RunContext) -> str:
    """Settings every gold row depends on; a different value forces a full recompute."""
    import hashlib
    import json

    limits = ctx.config.refdata.get("limits", [])
    columns = {t: ctx.config.table(t).columns for t in (*OUTPUTS, "dim_time")}  # a declared column added
    text = json.dumps({"logic": LOGIC_VERSION, "reporting": ctx.config.project.reporting_currency,
                       "limits": limits, "columns": columns}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def input_versions(ctx: RunContext) -> dict[str, int]:
    """Current version of every gold input (-1 for a table that does not exist)."""
    return {t: ctx.lake.version(t) if ctx.lake.exists(t) else -1 for t in INPUTS}


def consumed_versions(ctx: RunContext, stage: str = STAGE) -> tuple[dict[str, int], str | None]:
    """The input versions and settings fingerprint of gold's last successful run (empty when none).

    ``stage`` ``gold.reconcile``: the tables the last balanced reconciliation read.
    """
    if not ctx.lake.exists("ctl_stage_inputs"):
        return {}, None
    rows = [r for r in ctx.lake.read_records("ctl_stage_inputs") if r["stage"] == stage]
    prints = {r["fingerprint"] for r in rows}
    return {r["table_name"]: int(r["version"]) for r in rows}, (prints.pop() if len(prints) == 1 else None)


def _record_inputs(ctx: RunContext, by_stage: dict[str, dict[str, int]]) -> None:
    """Record, per stage key (``gold``, ``gold.reconcile``), the table versions it consumed (one MERGE)."""
    if not by_stage:
        return
    rows = [{"stage": stage, "table_name": t, "version": v, "fingerprint": _fingerprint(ctx), "run_id": ctx.run_id,
             "consumed_at": ctx.started_at} for stage, versions in by_stage.items() for t, v in versions.items()]
    # Only a new version is a change: a rerun on the same silver leaves this table as it is.
    ctx.lake.merge("ctl_stage_inputs", ctx.lake.frame("ctl_stage_inputs", rows), MergeSpec.upsert(
        ["stage", "table_name"],
        only_if_changed=changed_condition(["version", "fingerprint"])))


def _missing_outputs(ctx: RunContext) -> list[str]:
    return [t for t in OUTPUTS if not ctx.lake.exists(t)]


def _unchanged_since_last_run(ctx: RunContext, versions: dict[str, int],
                              last: tuple[dict[str, int], str | None]) -> bool:
    """True when gold's last successful run consumed exactly these input versions with the same settings.

    ``last`` is :func:`consumed_versions`, read once per run.

    Gold is a function of its inputs and settings, so there is nothing to recompute: a scheduled run
    with no new data skips the recompute (``--full-refresh`` always recomputes, e.g. after a gold table
    was edited by hand).
    """
    if ctx.full_refresh:
        return False
    consumed, fingerprint = last
    return fingerprint == _fingerprint(ctx) and _same_rows(ctx, consumed, versions) and not _missing_outputs(ctx)


def _same_rows(ctx: RunContext, recorded: dict[str, int], current: dict[str, int]) -> bool:
    """The tables hold the rows they held at the recorded versions: the same versions, or only table
    upkeep since (``cpbi maintain``'s compaction and vacuum commits change no row)."""
    return recorded.keys() == current.keys() and all(
        v == recorded[t] or (v >= 0 and recorded[t] >= 0 and ctx.lake.same_rows_between(t, recorded[t], v))
        for t, v in current.items())


def _full_reason(ctx: RunContext, versions: dict[str, int],
                 last: tuple[dict[str, int], str | None]) -> str | None:
    """Why this run must recompute all of gold, or None when an incremental run is possible."""
    if ctx.full_refresh:
        return "--full-refresh"
    if not ctx.config.gold.incremental:
        return "gold.incremental is off"
    consumed, fingerprint = last
    if not consumed:
        return "no earlier gold run recorded"
    if fingerprint != _fingerprint(ctx):
        return "settings or gold logic changed since the last run"
    missing = _missing_outputs(ctx)
    if missing:
        return f"gold tables missing: {', '.join(missing)}"
    for t, v in versions.items():
        if consumed.get(t, -1) != v and (v < 0 or consumed.get(t, -1) < 0 or v < consumed[t]):
            return f"input {t} appeared, disappeared or was recreated"
    return None


def run_gold(ctx: RunContext) -> StageResult:
    from pyspark.sql import functions as F

    lake, result = ctx.lake, StageResult(STAGE)
    if not lake.exists("stg_transactions"):
        entities = {src.entity_of(n) for n, src in ctx.config.sources.items()}
        if "transactions" not in entities:  # e.g. a campaign test export: no lines to conform
            result.counters["skipped"] = "the sources hold no transaction lines"
            return result
        lines = [(n, src) for n, src in ctx.config.sources.items() if src.entity_of(n) == "transactions"]
        if not any(lake.exists(src.bronze_table) for _, src in lines):
            # Nothing landed yet: the usual cause is a landing folder or a path glob that matches no file.
            where = ", ".join(f"sources.{n}.path {src.path!r}" for n, src in lines)
            raise PipelineError(f"no transaction lines have landed: no file under storage.landing "
                                f"{ctx.config.storage.landing!r} matched {where}; check both, then run "
                                f"`cpbi run bronze,silver,gold`")
        raise PipelineError("gold needs silver table stg_transactions; run the silver stage first")
    versions, last = input_versions(ctx), consumed_versions(ctx)
    if _unchanged_since_last_run(ctx, versions, last):
        result.counters["mode"] = "unchanged"
        ctx.log.info("gold: inputs and settings unchanged since its last run, nothing to recompute")
        # Versions moved by table upkeep alone are recorded, so the next run compares with them directly.
        moved = {STAGE: versions} if versions != last[0] else {}
        # Bronze counts and the batch log can change without any gold input changing.
        _record_inputs(ctx, {**moved, **_reconcile(ctx, result)})
        return result
    sales = lake.read("stg_transactions")
    returns = lake.read_or_empty("stg_returns")
    bounds = sales.agg(F.min("posted_date"), F.max("posted_date")).first()
    ret_max = returns.agg(F.max(F.to_date("returned_ts"))).first()[0]
    start, has_time = bounds[0], bounds[0] is not None
    end = max((d for d in (bounds[1], ret_max) if d is not None), default=None)
    if start is None:  # no line has a time (a basket-per-line file): one day so the joins stay uniform
        import datetime as dt

        start = end = dt.date(1970, 1, 1)
    rates = _daily_rates(ctx, lake.read_or_empty("ref_exchange_rates"), start, end).persist(
        _KEEP())
    reason = _full_reason(ctx, versions, last)
    changes = None
    if reason is None:
        with _timed(result, "silver changes"):
            changes, reason = _silver_changes(ctx, versions, last[0], rates, start, end)
    if changes is not None:
        result.counters["mode"] = "incremental"
        _gold_incremental(ctx, sales, returns, rates, changes, result)
    else:
        result.counters["mode"] = "full"
        result.counters["full_reason"] = reason
        ctx.log.info("gold: full recompute (%s)", reason)
        _gold_full(ctx, sales, returns, rates, result)
    if has_time:
        _sync(ctx, "dim_time", marts.calendar(start, end), result)
    rates.unpersist()
    recorded = _reconcile(ctx, result)
    # Written last: a run that fails before this point is redone from the same versions next time.
    _record_inputs(ctx, {STAGE: versions, **recorded})
    return result


RECONCILE = "gold.reconcile"


def reconcile_reads(ctx: RunContext) -> dict[str, int]:
    """Current version of every table :func:`reconcile` reads (-1 for one that does not exist)."""
    tables = {"ctl_batch_log", "stg_transactions", "stg_returns", "dim_customer", "fact_transactions",
              "fact_basket_lines"}
    tables |= {src.bronze_table for name, src in ctx.config.sources.items()
               if src.entity_of(name) in ("transactions", "returns")}
    return {t: ctx.lake.version(t) if ctx.lake.exists(t) else -1 for t in sorted(tables)}


def _reconcile(ctx: RunContext, result: StageResult) -> dict[str, dict[str, int]]:
    """Record the reconciliation; an unbalanced check fails the stage.

    When no table it reads has new rows since the last balanced reconciliation (same versions, or only
    table upkeep since; same settings), the outcome cannot differ: the recorded one is reported and
    nothing is recomputed. Returns what the caller records once the stage succeeded:
    ``{RECONCILE: versions read}``, empty when skipped at the recorded versions.
    """
    with _timed(result, "reconcile"):
        reads = reconcile_reads(ctx)
        recorded, fingerprint = consumed_versions(ctx, RECONCILE)
        if (not ctx.full_refresh and ctx.lake.exists("audit_recon") and fingerprint == _fingerprint(ctx)
                and _same_rows(ctx, recorded, reads)):
            result.counters["reconciliation"] = {r["check_name"]: r["status"]
                                                 for r in ctx.lake.read_records("audit_recon")}
            return {RECONCILE: reads} if reads != recorded else {}  # versions moved by upkeep alone
        checks = reconcile(ctx)
    result.counters["reconciliation"] = {c["check_name"]: c["status"] for c in checks}
    bad = [c for c in checks if c["status"] == "unbalanced"]
    if bad:
        detail = "; ".join(f"{c['domain']}.{c['check_name']}: expected {c['expected']} observed {c['observed']}"
                           for c in bad)
        raise PipelineError(f"reconciliation failed ({len(bad)} check(s), see table audit_recon): {detail}")
    return {RECONCILE: reads}


def _daily_rates(ctx: RunContext, rates_src: DataFrame, start, end) -> DataFrame:
    from pyspark.sql import functions as F

    reporting = ctx.config.project.reporting_currency
    return daily_rates(rates_src.unionByName(  # the reporting currency converts at 1 even without a rate file
        ctx.spark.createDataFrame([(start, reporting, 1.0, 1.0)], rates_src.schema)), str(start), str(end)) \
        .groupBy("currency", "rate_date").agg(F.first("rate_to_reporting").alias("rate_to_reporting"))


def _silver_changes(ctx: RunContext, versions: dict[str, int], consumed: dict[str, int], rates: DataFrame,
                    start, end) -> tuple[SilverChanges | None, str | None]:
    """The silver changes since the ``consumed`` versions, or None and why gold must recompute all."""
    from pyspark.sql import functions as F

    lake = ctx.lake
    frames: dict[str, DataFrame] = {}
    for t in INPUTS:
        if versions[t] < 0:
            frames[t] = ctx.spark.createDataFrame([], lake.schema(t)).withColumn(CHANGE_COLUMN, F.lit(""))
            continue
        if versions[t] == consumed[t]:
            frames[t] = lake.read(t).limit(0).withColumn(CHANGE_COLUMN, F.lit(""))
            continue
        ch = lake.changes(t, consumed[t])
        if ch is None:
            return None, f"the changes of {t} since version {consumed[t]} cannot be read (e.g. vacuumed)"
        frames[t] = _freeze(ch)
    if versions["ref_fee_schedule"] != consumed["ref_fee_schedule"] and frames["ref_fee_schedule"].limit(1).count():
        # Fees enter every settlement: recompute all of gold (a rare change of a small reference table).
        return None, "the fee schedule changed"
    if versions["ref_exchange_rates"] != consumed["ref_exchange_rates"]:
        old = lake.read("ref_exchange_rates", version=consumed["ref_exchange_rates"]) \
            if consumed["ref_exchange_rates"] >= 0 else lake.read_or_empty("ref_exchange_rates").limit(0)
        rate_days = changed_rate_days(_daily_rates(ctx, old, start, end), rates)
    else:
        rate_days = rates.select("currency", "rate_date").limit(0)
    return SilverChanges(
        sales=frames["stg_transactions"], returns=frames["stg_returns"],
        customers=_scope(dimension_change_points(frames["dim_customer"], lake.read_or_empty("dim_customer"),
                                                 "customer_id", "customer_sk")),
        products=_scope(dimension_change_points(frames["dim_product"], lake.read_or_empty("dim_product"),
                                                "product_id", "product_sk")),
        merchants=_scope(changed_keys(frames["dim_merchant"], "merchant_id")),
        rate_days=_scope(rate_days)), None


def _gold_full(ctx: RunContext, sales: DataFrame, returns: DataFrame, rates: DataFrame, result: StageResult) -> None:
    """Recompute every gold table from all of silver; a table is rewritten only when its content differs."""
    lake, reporting = ctx.lake, ctx.config.project.reporting_currency
    customers, products = lake.read_or_empty("dim_customer"), lake.read_or_empty("dim_product")
    merchants = lake.read_or_empty("dim_merchant")
    fees = lake.read_or_empty("ref_fee_schedule")
    facts = conform_transactions(sales, returns, customers, products, merchants, rates, reporting)
    facts = lake.conform("fact_transactions", facts).persist(_KEEP())
    _sync(ctx, "fact_transactions", facts, result)
    _sync(ctx, "fact_returns", marts.returns_fact(facts, returns, products), result)
    _sync(ctx, "fact_basket_lines", marts.basket_lines(facts, products), result)
    _sync(ctx, "stage_adjustments", marts.adjustments(returns), result)
    stage_settle = marts.settlements(sales, returns, fees)
    _sync(ctx, "stage_settlements", stage_settle, result)
    _sync(ctx, "fact_settlements", marts.settlements_reporting(stage_settle, rates, fees, reporting), result)
    _sync(ctx, "fact_balance_snapshots", marts.balance_snapshots(facts, _limits(ctx)), result)
    facts.unpersist()


def _limits(ctx: RunContext) -> dict[str, float]:
    return {r["limit_name"]: float(r["limit_value"]) for r in ctx.config.refdata.get("limits", [])}


def _gold_incremental(ctx: RunContext, sales: DataFrame, returns: DataFrame, rates: DataFrame,
                      ch: SilverChanges, result: StageResult) -> None:
    """Recompute only the gold rows the silver changes affect and MERGE them within their scope.

    The marts are computed from a view of the new facts (the unchanged gold lines plus the
    recomputed ones) and written before ``fact_transactions``: until that last MERGE the old fact
    images stay in gold, so a run interrupted midway finds the same scope again when it is redone.
    """
    from pyspark.sql import functions as F

    lake, reporting = ctx.lake, ctx.config.project.reporting_currency
    customers, products = lake.read_or_empty("dim_customer"), lake.read_or_empty("dim_product")
    merchants = lake.read_or_empty("dim_merchant")
    fees = lake.read_or_empty("ref_fee_schedule")
    with _timed(result, "affected lines"):
        sale_ids = _scope(affected_sales(sales, ch))
        return_ids = _scope(affected_returns(returns, sale_ids, ch))
        ids = _freeze(sale_ids.select(F.col("txn_id").alias("transaction_id"))
                      .unionByName(return_ids.select(F.col("return_id").alias("transaction_id"))).distinct())
        n_ids = result.counters["affected_lines"] = ids.count()
        ids = small_side(ids, n_ids)
    gold_facts = lake.read("fact_transactions")
    ret_scope = returns.join(return_ids, "return_id", "left_semi")
    origins = ret_scope.select(F.col("original_txn_id").alias("txn_id")).where(F.col("txn_id").isNotNull())
    # Scopes derived from the affected lines hold at most twice as many rows (a line and its sale).
    sale_scope = sales.join(small_side(sale_ids.unionByName(origins), 2 * n_ids), "txn_id", "left_semi")
    with _timed(result, "conform affected lines"):
        new_facts = conform_transactions(sale_scope, ret_scope, customers, products, merchants, rates, reporting)
        new_facts = _freeze(lake.conform("fact_transactions", new_facts.join(ids, "transaction_id", "left_semi")))
        old_facts = _freeze(gold_facts.join(ids, "transaction_id", "left_semi"))
    # The whole fact table as it will be after this run, without writing it yet.
    view = gold_facts.join(ids, "transaction_id", "left_anti").unionByName(new_facts)

    # fact_returns and stage_adjustments: the affected returns.
    needed = small_side(return_ids.select(F.col("return_id").alias("transaction_id")).unionByName(
        origins.select(F.col("txn_id").alias("transaction_id"))).distinct(), 2 * n_ids)
    _sync_scope(ctx, "fact_returns", marts.returns_fact(view.join(needed, "transaction_id", "left_semi"),
                                                        ret_scope, products),
                lake.read("fact_returns").join(return_ids, "return_id", "left_semi"), result)
    _sync_scope(ctx, "stage_adjustments", marts.adjustments(ret_scope),
                lake.read("stage_adjustments").join(
                    return_ids.select(F.col("return_id").alias("adjustment_id")), "adjustment_id", "left_semi"),
                result)

    # fact_basket_lines: every basket holding an affected line (old or new image).
    baskets = small_side(old_facts.select("basket_id").unionByName(new_facts.select("basket_id"))
                         .where(F.col("basket_id").isNotNull()).distinct(), 2 * n_ids)
    _sync_scope(ctx, "fact_basket_lines",
                marts.basket_lines(view.join(baskets, "basket_id", "left_semi"), products),
                lake.read("fact_basket_lines").join(baskets, "basket_id", "left_semi"), result)

    # Settlements: every business day with a changed line or rate.
    with _timed(result, "affected days"):
        days = _scope(affected_business_dates(returns, ch))
    day_returns = returns.join(days, F.to_date("returned_ts") == days["business_date"], "left_semi")
    day_origins = day_returns.select(F.col("original_txn_id").alias("txn_id")).where(F.col("txn_id").isNotNull())
    day_sales = sales.join(days.select(F.col("business_date").alias("posted_date")), "posted_date",
                           "left_semi").unionByName(sales.join(day_origins, "txn_id", "left_semi"))
    with _timed(result, "stage_settlements"):
        stage_settle = _freeze(marts.settlements(day_sales.distinct(), day_returns, fees).join(
            days, "business_date", "left_semi"))
    _sync_scope(ctx, "stage_settlements", stage_settle,
                lake.read("stage_settlements").join(days, "business_date", "left_semi"), result)
    _sync_scope(ctx, "fact_settlements", marts.settlements_reporting(stage_settle, rates, fees, reporting),
                lake.read("fact_settlements").join(days, "business_date", "left_semi"), result)

    # Month-end snapshots: per account from the first changed month on; all accounts for a new month.
    _sync_balances(ctx, view, old_facts, new_facts, result)

    # The facts themselves, last (see the docstring).
    _sync_scope(ctx, "fact_transactions", new_facts, old_facts, result)


def _sync_balances(ctx: RunContext, view: DataFrame, old_facts: DataFrame, new_facts: DataFrame,
                   result: StageResult) -> None:
    from pyspark.sql import functions as F

    lake, limits = ctx.lake, _limits(ctx)
    snapshots = lake.read("fact_balance_snapshots")
    with _timed(result, "snapshot months"):
        old_last = snapshots.agg(F.max(F.trunc("snapshot_date", "month"))).first()[0]
        new_last = (view.where(F.col("account_id").isNotNull())
                    .agg(F.max(F.trunc("posted_ts", "month"))).first()[0])
    if new_last is None or old_last is None or new_last < old_last:
        # No snapshot yet, or the data no longer reaches the last month: rebuild the table.
        _sync(ctx, "fact_balance_snapshots", marts.balance_snapshots(view, limits), result)
        return
    import datetime as dt

    new_month = None
    if new_last > old_last:
        new_month = (old_last.replace(day=28) + dt.timedelta(days=4)).replace(day=1)  # the month after old_last
    changed = account_months(old_facts).unionByName(account_months(new_facts))
    with _timed(result, "snapshot months"):
        starts = _scope(snapshot_starts(changed, snapshots, new_month))
    bases = (snapshots.join(starts, "account_id")
             .filter(F.trunc("snapshot_date", "month") == F.add_months("start", -1))
             .select("account_id", "cumulative_net_spend"))
    lines = view.join(starts.select("account_id"), "account_id", "left_semi")
    rows = marts.balance_snapshots_since(lines, starts, bases, new_last, limits)
    in_scope = (snapshots.join(starts, "account_id")
                .filter(F.trunc("snapshot_date", "month") >= F.col("start")).select("account_id", "snapshot_date"))
    _sync_scope(ctx, "fact_balance_snapshots", rows, in_scope, result)


def _totals(df: DataFrame, **measures) -> dict[str, Decimal]:
    """Several aggregates of ``df`` in one Spark job, as Decimals (an empty sum is 0).

    Example:
        >>> _totals(stg, rows=F.count(F.lit(1)), amount=F.sum("amount"))   # doctest: +SKIP
        {'rows': Decimal('99012'), 'amount': Decimal('4120377.15')}
    """
    row = df.agg(*[expr.alias(name) for name, expr in measures.items()]).first()
    return {name: Decimal(row[name] or 0) for name in measures}


def reconcile(ctx: RunContext) -> list[dict]:
    """Counts and amount checksums from raw to gold; written to ``audit_recon`` (latest state).

    Each table is aggregated once (every measure of it in one Spark job); bronze row counts come from
    the Delta log's per-file row counts and the batch log is read as records, without a Spark job.
    """
    from pyspark.sql import functions as F

    lake = ctx.lake
    checks: list[tuple[str, str, Decimal, Decimal]] = []
    log = [r for r in (lake.read_records("ctl_batch_log") if lake.exists("ctl_batch_log") else [])
           if r["stage"] == "silver"]
    for source, src_cfg in sorted(ctx.config.sources.items()):
        if src_cfg.entity_of(source) not in ("transactions", "returns") or not lake.exists(src_cfg.bronze_table):
            continue
        if src_cfg.format == "basket_lines":  # one bronze line is one basket of several item records
            from cpbi_spark.silver.entities import explode_basket_lines, with_raw

            bronze = lake.read(src_cfg.bronze_table)
            raw = Decimal(explode_basket_lines(with_raw(bronze, src_cfg), src_cfg).count())
        else:
            raw = Decimal(lake.row_count(src_cfg.bronze_table))
            lake.reads.append(src_cfg.bronze_table)  # counted from its log, but read all the same (lineage)
        parts = [(r["rows_accepted"], r["rows_quarantined"], r["rows_duplicate"]) for r in log if r["source"] == source]
        # As SQL's SUM(a + b + c): an entry with an unknown count adds nothing (and the check then fails).
        accounted = Decimal(sum(sum(p) for p in parts if None not in p))
        checks.append((source, "raw_rows = accepted + quarantined + duplicate", raw, accounted))
    rows_and_amount = {"rows": F.count(F.lit(1)), "amount": F.sum("amount")}
    stg = _totals(lake.read("stg_transactions"), **rows_and_amount)
    stg_r = _totals(lake.read_or_empty("stg_returns"), **rows_and_amount)
    sale, ret = F.col("txn_type") == "SALE", F.col("txn_type") == "RETURN"
    fact = _totals(
        lake.read("fact_transactions"),
        sale_rows=F.count_if(sale), sale_amount=F.sum(F.when(sale, F.col("amount"))),
        return_rows=F.count_if(ret), return_amount=F.sum(F.when(ret, F.col("amount"))),
        no_reporting=F.count_if(F.col("amount").isNotNull() & F.col("amount_reporting").isNull()),
        basket_sales=F.sum(F.when(sale & F.col("basket_id").isNotNull(), F.col("amount_reporting"))),
        no_customer_version=F.count_if(F.col("customer_id").isNotNull() & F.col("customer_sk").isNull()))
    basket_lines = _totals(lake.read("fact_basket_lines"), amount=F.sum("amount_reporting"))
    checks += [
        ("transactions", "silver rows = gold sale rows", stg["rows"], fact["sale_rows"]),
        ("transactions", "silver amount = gold sale amount", stg["amount"], fact["sale_amount"]),
        ("returns", "silver rows = gold return rows", stg_r["rows"], fact["return_rows"]),
        ("returns", "silver amount = gold refund amount", stg_r["amount"], -fact["return_amount"]),
        ("gold", "lines with an amount but no reporting amount", Decimal(0), fact["no_reporting"]),
        ("gold", "sale amount_reporting = basket lines amount_reporting", fact["basket_sales"], basket_lines["amount"]),
    ]
    if lake.exists("dim_customer"):
        lake.reads.append("dim_customer")  # counted from its log (lineage, as above)
        if lake.row_count("dim_customer"):
            checks.append(("gold", "lines without customer version", Decimal(0), fact["no_customer_version"]))
    rows = [{"domain": d, "check_name": n, "expected": e, "observed": o, "difference": o - e,
             "status": "balanced" if e == o else "unbalanced", "run_id": ctx.run_id, "checked_at": ctx.started_at}
            for d, n, e, o in checks]
    df = lake.frame("audit_recon", rows)
    # Only a changed outcome is a new version: rerunning on the same data leaves the table as it is.
    changed = changed_condition(["expected", "observed", "status"])  # status is never NULL: as `<>` would decide
    lake.merge("audit_recon", df, MergeSpec.upsert(["domain", "check_name"], only_if_changed=changed))
    return rows
