"""The gold stage: conformed facts, marts and the end-to-end reconciliation.

Gold is recomputed from silver and applied with MERGEs that only write what changed
(a rerun on the same silver makes no new version). Late SCD2 updates therefore re-point
old facts to the right dimension version. The reconciliation (``audit_recon``) checks
raw = accepted + quarantined + duplicate and that counts and amount checksums agree from
silver to gold; an unbalanced check fails the stage after it is recorded.

Example:
    >>> run_gold(ctx).tables          # doctest: +SKIP
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from cpbi_spark.errors import PipelineError
from cpbi_spark.gold import marts
from cpbi_spark.gold.conform import conform_transactions, daily_rates
from cpbi_spark.lakehouse.merge_spec import MergeSpec
from cpbi_spark.runtime import StageResult
from cpbi_spark.silver.stage import sync_spec

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from cpbi_spark.runtime import RunContext

STAGE = "gold"


def _sync(ctx: RunContext, table: str, df: DataFrame, result: StageResult) -> None:
    """Make ``table`` equal to ``df`` with one MERGE that writes only changed rows."""
    cfg = ctx.config.table(table)
    df = ctx.lake.conform(table, df)
    info = ctx.lake.merge(table, df, sync_spec(list(cfg.keys), df.columns))
    if info.changed:
        result.tables[table] = sum(info.metrics.get(k, 0) for k in ("num_inserted", "num_updated", "num_deleted"))


def run_gold(ctx: RunContext) -> StageResult:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    lake, result = ctx.lake, StageResult(STAGE)
    if not lake.exists("stg_transactions"):
        entities = {src.entity_of(n) for n, src in ctx.config.sources.items()}
        if "transactions" not in entities:  # e.g. a campaign test export: no lines to conform
            result.counters["skipped"] = "the sources hold no transaction lines"
            return result
        raise PipelineError("gold needs silver table stg_transactions; run the silver stage first")
    reporting = ctx.config.project.reporting_currency
    sales = lake.read("stg_transactions")
    returns = lake.read_or_empty("stg_returns")
    customers, products = lake.read_or_empty("dim_customer"), lake.read_or_empty("dim_product")
    merchants = lake.read_or_empty("dim_merchant")
    fees = lake.read_or_empty("ref_fee_schedule")
    bounds = sales.agg(F.min("posted_date"), F.max("posted_date")).first()
    ret_max = returns.agg(F.max(F.to_date("returned_ts"))).first()[0]
    start, has_time = bounds[0], bounds[0] is not None
    end = max((d for d in (bounds[1], ret_max) if d is not None), default=None)
    if start is None:  # no line has a time (a basket-per-line file): one day so the joins stay uniform
        import datetime as dt

        start = end = dt.date(1970, 1, 1)
    rates_src = lake.read_or_empty("ref_exchange_rates")
    rates = daily_rates(rates_src.unionByName(  # the reporting currency converts at 1 even without a rate file
        ctx.spark.createDataFrame([(start, reporting, 1.0, 1.0)], rates_src.schema)), str(start), str(end)) \
        .groupBy("currency", "rate_date").agg(F.first("rate_to_reporting").alias("rate_to_reporting")) \
        .persist(StorageLevel.MEMORY_AND_DISK)

    facts = conform_transactions(sales, returns, customers, products, merchants, rates, reporting)
    facts = lake.conform("fact_transactions", facts).persist(StorageLevel.MEMORY_AND_DISK)
    _sync(ctx, "fact_transactions", facts, result)
    _sync(ctx, "fact_returns", marts.returns_fact(facts, returns, products), result)
    _sync(ctx, "fact_basket_lines", marts.basket_lines(facts, products), result)
    _sync(ctx, "stage_adjustments", marts.adjustments(returns), result)
    stage_settle = marts.settlements(sales, returns, fees)
    _sync(ctx, "stage_settlements", stage_settle, result)
    _sync(ctx, "fact_settlements", marts.settlements_reporting(stage_settle, rates, fees, reporting), result)
    limits = {r["limit_name"]: float(r["limit_value"]) for r in ctx.config.refdata.get("limits", [])}
    _sync(ctx, "fact_balance_snapshots", marts.balance_snapshots(facts, limits), result)
    if has_time:
        _sync(ctx, "dim_time", marts.calendar(start, end), result)
    checks = reconcile(ctx)
    facts.unpersist()
    rates.unpersist()
    result.counters["reconciliation"] = {c["check_name"]: c["status"] for c in checks}
    bad = [c for c in checks if c["status"] == "unbalanced"]
    if bad:
        detail = "; ".join(f"{c['domain']}.{c['check_name']}: expected {c['expected']} observed {c['observed']}"
                           for c in bad)
        raise PipelineError(f"reconciliation failed ({len(bad)} check(s), see table audit_recon): {detail}")
    return result


def _sum(df: DataFrame, expr) -> Decimal:
    from pyspark.sql import functions as F

    value = df.agg(F.sum(expr)).first()[0]
    return Decimal(value or 0)


def reconcile(ctx: RunContext) -> list[dict]:
    """Counts and amount checksums from raw to gold; written to ``audit_recon`` (latest state)."""
    from pyspark.sql import functions as F

    lake = ctx.lake
    fact = lake.read("fact_transactions")
    sale_f, ret_f = fact.filter(F.col("txn_type") == "SALE"), fact.filter(F.col("txn_type") == "RETURN")
    stg, stg_r = lake.read("stg_transactions"), lake.read_or_empty("stg_returns")
    log = lake.read_or_empty("ctl_batch_log").filter(F.col("stage") == "silver")
    checks: list[tuple[str, str, Decimal, Decimal]] = []
    for source, src_cfg in sorted(ctx.config.sources.items()):
        if src_cfg.entity_of(source) not in ("transactions", "returns") or not lake.exists(src_cfg.bronze_table):
            continue
        bronze = lake.read(src_cfg.bronze_table)
        if src_cfg.format == "basket_lines":  # one bronze line is one basket of several item records
            from cpbi_spark.silver.entities import explode_basket_lines, with_raw

            bronze = explode_basket_lines(with_raw(bronze, src_cfg), src_cfg)
        raw = Decimal(bronze.count())
        accounted = _sum(log.filter(F.col("source") == source),
                         F.col("rows_accepted") + F.col("rows_quarantined") + F.col("rows_duplicate"))
        checks.append((source, "raw_rows = accepted + quarantined + duplicate", raw, accounted))
    checks += [
        ("transactions", "silver rows = gold sale rows", Decimal(stg.count()), Decimal(sale_f.count())),
        ("transactions", "silver amount = gold sale amount", _sum(stg, F.col("amount")), _sum(sale_f, F.col("amount"))),
        ("returns", "silver rows = gold return rows", Decimal(stg_r.count()), Decimal(ret_f.count())),
        ("returns", "silver amount = gold refund amount", _sum(stg_r, F.col("amount")), -_sum(ret_f, F.col("amount"))),
        ("gold", "lines with an amount but no reporting amount", Decimal(0), Decimal(fact.filter(
            F.col("amount").isNotNull() & F.col("amount_reporting").isNull()).count())),
        ("gold", "sale amount_reporting = basket lines amount_reporting",
         _sum(sale_f.filter(F.col("basket_id").isNotNull()), F.col("amount_reporting")),
         _sum(lake.read("fact_basket_lines"), F.col("amount_reporting"))),
    ]
    if lake.exists("dim_customer") and lake.read("dim_customer").limit(1).count():
        checks.append(("gold", "lines without customer version", Decimal(0), Decimal(fact.filter(
            F.col("customer_id").isNotNull() & F.col("customer_sk").isNull()).count())))
    rows = [{"domain": d, "check_name": n, "expected": e, "observed": o, "difference": o - e,
             "status": "balanced" if e == o else "unbalanced", "run_id": ctx.run_id, "checked_at": ctx.started_at}
            for d, n, e, o in checks]
    df = lake.frame("audit_recon", rows)
    # Only a changed outcome is a new version: rerunning on the same data leaves the table as it is.
    lake.merge("audit_recon", df, MergeSpec.upsert(["domain", "check_name"], only_if_changed=(
        "NOT (t.expected <=> s.expected) OR NOT (t.observed <=> s.observed) OR t.status <> s.status")))
    return rows
