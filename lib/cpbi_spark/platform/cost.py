"""Source D (cost): what each stage used, from Spark's status store, priced by the rate card in conf.

The session runs with ``spark.ui.enabled=false``, but the application status store (which the UI would
render) is always kept: :class:`SparkMeter` drains the listener bus and sums the task metrics of every
Spark stage submitted since a mark (executor run and CPU time, input, output and shuffle bytes).

Meters and their quantities (pure, :func:`quantities`): ``core_hours`` = wall seconds x cores / 3600
(provisioned capacity), ``cpu_hours`` = executor CPU seconds / 3600, ``gb_read``, ``gb_written``,
``gb_shuffled`` (10^9 bytes); ``gb_month`` prices stored bytes per day (:func:`storage_rows`).
Unit prices = catalog list price x (1 - discount) (:func:`rate_rows`). Costs are decimals with 8
places, so totals and allocations add up exactly.

Example:
    >>> q = quantities({"wall_seconds": 3600, "cores": 2, "executor_cpu_seconds": 1800, "bytes_read": 10**9,
    ...                 "bytes_written": 0, "shuffle_read_bytes": 0, "shuffle_write_bytes": 0})
    >>> q["core_hours"], q["cpu_hours"], q["gb_read"]
    (2.0, 0.5, 1.0)
"""

from __future__ import annotations

import calendar
import time
from collections import defaultdict
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from cpbi_spark.config.platform import ChargebackRule, PlatformConfig

METERS: dict[str, tuple[str, str, str]] = {  # meter -> (unit, measured from, description)
    "core_hours": ("core-hour", "wall clock of the stage x Spark cores", "provisioned compute capacity"),
    "cpu_hours": ("cpu-hour", "status store: executorCpuTime", "CPU time used by executor tasks"),
    "gb_read": ("GB", "status store: inputBytes", "bytes read by tasks"),
    "gb_written": ("GB", "status store: outputBytes", "bytes written by tasks"),
    "gb_shuffled": ("GB", "status store: shuffleReadBytes + shuffleWriteBytes", "bytes moved by shuffles"),
    "gb_month": ("GB-month", "file sizes under each table folder", "bytes stored, billed per day"),
}
RUN_METERS = ("core_hours", "cpu_hours", "gb_read", "gb_written", "gb_shuffled")
PLACES = Decimal("0.00000001")


def money(value: Decimal | float | int) -> Decimal:
    return Decimal(str(value)).quantize(PLACES, rounding=ROUND_HALF_EVEN)


class SparkMeter:
    """Task metrics of the Spark stages run since :meth:`mark` (status store; works without the UI)."""

    def __init__(self, spark: SparkSession):
        self.sc = spark.sparkContext
        self.cores = int(self.sc.defaultParallelism)

    def _drain(self) -> None:
        # The status store is fed asynchronously by the listener bus: wait until it caught up.
        try:
            self.sc._jsc.sc().listenerBus().waitUntilEmpty(10_000)
        except Exception:
            time.sleep(0.2)

    def _stages(self):
        gateway = self.sc._gateway
        store = self.sc._jsc.sc().statusStore()
        # stageList(statuses, details, withSummaries, unsortedQuantiles, taskStatus): newest stage first.
        return store.stageList(None, False, False, gateway.new_array(gateway.jvm.double, 0), None).iterator()

    def mark(self) -> int:
        """The id of the newest Spark stage so far (-1 when none ran)."""
        self._drain()
        it = self._stages()
        return int(it.next().stageId()) if it.hasNext() else -1

    def since(self, mark: int) -> dict[str, int | float]:
        """Summed metrics of the stages with an id above ``mark``."""
        self._drain()
        out = {"executor_run_seconds": 0.0, "executor_cpu_seconds": 0.0, "bytes_read": 0, "bytes_written": 0,
               "shuffle_read_bytes": 0, "shuffle_write_bytes": 0, "spark_stages": 0, "tasks": 0}
        it = self._stages()
        while it.hasNext():
            s = it.next()
            if s.stageId() <= mark:
                break
            if s.status().toString() == "SKIPPED":
                continue
            out["spark_stages"] += 1
            out["tasks"] += int(s.numCompleteTasks()) + int(s.numFailedTasks())
            out["executor_run_seconds"] += s.executorRunTime() / 1000.0
            out["executor_cpu_seconds"] += s.executorCpuTime() / 1e9
            out["bytes_read"] += int(s.inputBytes())
            out["bytes_written"] += int(s.outputBytes())
            out["shuffle_read_bytes"] += int(s.shuffleReadBytes())
            out["shuffle_write_bytes"] += int(s.shuffleWriteBytes())
        return out


def quantities(usage: dict[str, Any]) -> dict[str, float]:
    """Meter quantities of one stage attempt's measured usage (pure)."""
    return {
        "core_hours": usage["wall_seconds"] * usage["cores"] / 3600.0,
        "cpu_hours": usage["executor_cpu_seconds"] / 3600.0,
        "gb_read": usage["bytes_read"] / 1e9,
        "gb_written": usage["bytes_written"] / 1e9,
        "gb_shuffled": (usage["shuffle_read_bytes"] + usage["shuffle_write_bytes"]) / 1e9,
    }


def rate_rows(plat: PlatformConfig) -> list[dict]:
    """``ref_rates``: one unit price per meter = list price x (1 - discount of its SKU)."""
    card = plat.rates
    rows = []
    for item in plat.price_catalog:
        discount = card.discount_pct.get(item.sku, 0.0)
        rows.append({"rate_card": card.card, "meter": item.meter, "sku": item.sku, "unit": item.unit,
                     "list_price": money(item.list_price), "discount_pct": discount,
                     "unit_price": money(Decimal(str(item.list_price)) * (1 - Decimal(str(discount)))),
                     "currency": card.currency, "effective_from": card.effective_from})
    return rows


def unit_prices(plat: PlatformConfig) -> dict[str, Decimal]:
    return {r["meter"]: r["unit_price"] for r in rate_rows(plat)}


def cost_rows(key: dict, usage: dict[str, Any], plat: PlatformConfig, usage_date: date,
              prices: dict[str, Decimal] | None = None, card: str | None = None) -> list[dict]:
    """``fact_cost_usage`` rows of one stage attempt: one per run meter (pure).

    ``prices``/``card``: the unit prices in force when the stage ran (stored with its measurements), so a
    later change of the rate card does not reprice history; default: the current card.
    """
    prices = prices if prices is not None else unit_prices(plat)
    rows = []
    for meter, qty in quantities(usage).items():
        price = prices.get(meter, Decimal(0))
        rows.append({**key, "usage_date": usage_date, "meter": meter, "quantity": qty, "unit": METERS[meter][0],
                     "unit_price": price, "cost": money(Decimal(repr(qty)) * price),
                     "currency": plat.rates.currency, "rate_card": card or plat.rates.card,
                     "region_code": usage.get("region_code") or plat.region.code})
    return rows


def allocate(key: dict, stage: str, cost: Decimal, rules: list[ChargebackRule], usage_date: date,
             currency: str) -> list[dict]:
    """``stage_allocations`` rows: the cost split by the stage's rules; the last share takes the rounding
    remainder so the allocations add up to the cost exactly (pure).

    >>> from cpbi_spark.config.platform import ChargebackRule as R
    >>> rows = allocate({"run_id": "r"}, "s", Decimal("0.00000010"), [R(rule="a", stage="s", cost_center="x",
    ...     share=1/3), R(rule="b", stage="s", cost_center="y", share=2/3)], date(2026, 1, 1), "USD")
    >>> [str(r["allocated_cost"]) for r in rows], sum(r["allocated_cost"] for r in rows)
    (['3E-8', '7E-8'], Decimal('1.0E-7'))
    """
    from cpbi_spark.platform.settings import rules_for_stage

    chosen = rules_for_stage(rules, stage)
    rows = []
    remaining = cost
    for i, rule in enumerate(chosen):
        part = remaining if i == len(chosen) - 1 else money(cost * Decimal(repr(rule.share)))
        remaining -= part
        rows.append({**key, "usage_date": usage_date, "cost_center": rule.cost_center, "rule_id": rule.rule,
                     "share": rule.share, "allocated_cost": part, "currency": currency})
    return rows


def month_start(day: date) -> date:
    return day.replace(day=1)


def month_end(day: date) -> date:
    return day.replace(day=calendar.monthrange(day.year, day.month)[1])


def monthly_rows(usage: list[dict], storage: list[dict], currency: str) -> list[dict]:
    """``fact_monthly_costs``: usage cost per month and meter, plus stored bytes (``gb_month``) per month."""
    agg: dict[tuple, dict] = {}
    for r in usage:
        k = (month_start(r["usage_date"]), r["meter"])
        a = agg.setdefault(k, {"quantity": 0.0, "cost": Decimal(0), "runs": set()})
        a["quantity"] += r["quantity"]
        a["cost"] += r["cost"]
        a["runs"].add(r["run_id"])
    for r in storage:
        k = (month_start(r["snapshot_date"]), "gb_month")
        a = agg.setdefault(k, {"quantity": 0.0, "cost": Decimal(0), "runs": set()})
        days = calendar.monthrange(r["snapshot_date"].year, r["snapshot_date"].month)[1]
        a["quantity"] += r["bytes"] / 1e9 / days
        a["cost"] += r["daily_cost"]
    return [{"month": m, "meter": meter, "quantity": a["quantity"], "cost": a["cost"], "runs": len(a["runs"]),
             "currency": currency} for (m, meter), a in sorted(agg.items())]


def storage_rows(sizes: dict[str, tuple[str, int, int]], plat: PlatformConfig, day: date) -> list[dict]:
    """``fact_storage_usage`` of one day from ``{table: (layer, bytes, files)}`` (pure)."""
    price = unit_prices(plat).get("gb_month", Decimal(0))
    days = calendar.monthrange(day.year, day.month)[1]
    return [{"snapshot_date": day, "dataset_id": t, "layer": layer, "bytes": size, "files": files,
             "unit_price": price, "daily_cost": money(Decimal(size) / Decimal(10**9) * price / days),
             "currency": plat.rates.currency} for t, (layer, size, files) in sorted(sizes.items())]


def budget_rows(allocations: list[dict], plat: PlatformConfig, today: date) -> tuple[list[dict], list[dict],
                                                                                     list[dict]]:
    """(``fact_budget_status``, ``fact_cost_forecast``, ``fact_chargeback_invoices``) from allocations (pure)."""
    by: dict[tuple[date, str], dict] = defaultdict(lambda: {"cost": Decimal(0), "lines": 0})
    for a in allocations:
        k = (month_start(a["usage_date"]), a["cost_center"])
        by[k]["cost"] += a["allocated_cost"]
        by[k]["lines"] += 1
    budgets, forecasts, invoices = [], [], []
    warn = plat.budget_warning_pct
    for (month, center), a in sorted(by.items()):
        budget = Decimal(str(plat.cost_centers[center].monthly_budget)) if center in plat.cost_centers else Decimal(0)
        pct = float(a["cost"] / budget) if budget else None

        def status(value: Decimal, budget: Decimal = budget) -> str:
            if not budget:
                return "ok"
            return "over" if value > budget else "warning" if value >= budget * Decimal(str(warn)) else "ok"

        budgets.append({"month": month, "cost_center": center, "budget": budget, "actual": a["cost"],
                        "pct_used": pct, "status": status(a["cost"])})
        days = calendar.monthrange(month.year, month.month)[1]
        closed = month_end(month) < today
        elapsed = days if closed else max(1, (today - month).days + 1)
        forecast = money(a["cost"] * days / elapsed)
        forecasts.append({"month": month, "cost_center": center, "month_to_date": a["cost"], "days_elapsed": elapsed,
                          "days_in_month": days, "forecast": forecast, "budget": budget, "status": status(forecast)})
        invoices.append({"invoice_id": f"INV-{month:%Y%m}-{center}", "month": month, "cost_center": center,
                         "lines": a["lines"], "amount": a["cost"].quantize(Decimal("0.01")),
                         "currency": plat.rates.currency, "status": "final" if closed else "draft"})
    return budgets, forecasts, invoices


def anomaly_rows(costs: list[dict], ratio: float) -> list[dict]:
    """``stage_cost_anomalies``: each stage attempt against the mean cost of earlier attempts of the stage (pure).

    ``costs`` are ``{run_id, stage, attempt, started_ts, cost}`` per stage attempt.
    """
    out = []
    history: dict[str, list[Decimal]] = defaultdict(list)
    for c in sorted(costs, key=lambda c: (c["started_ts"], c["run_id"], c["attempt"])):
        earlier = history[c["stage"]]
        if earlier:
            baseline = money(sum(earlier) / len(earlier))
            r = float(c["cost"] / baseline) if baseline else None
            out.append({"run_id": c["run_id"], "stage": c["stage"], "attempt": c["attempt"], "cost": c["cost"],
                        "baseline_cost": baseline, "ratio": r, "is_anomaly": bool(r is not None and r >= ratio)})
        earlier.append(c["cost"])
    return out


def folder_sizes(paths: dict[str, tuple[str, str]]) -> dict[str, tuple[str, int, int]]:
    """``{table: (layer, path)}`` -> ``{table: (layer, bytes, files)}`` for the tables whose folder exists."""
    from pyarrow import fs as pafs

    from cpbi_spark.ingest.files import _filesystem

    out = {}
    for table, (layer, path) in paths.items():
        filesystem, base = _filesystem(path)
        if filesystem.get_file_info(base).type == pafs.FileType.NotFound:
            continue
        size = files = 0
        for entry in filesystem.get_file_info(pafs.FileSelector(base, recursive=True)):
            if entry.type == pafs.FileType.File:
                size += entry.size
                files += 1
        out[table] = (layer, size, files)
    return out


def profile(spark: SparkSession) -> dict[str, Any]:
    """``dim_compute_profile`` row of the session (id = hash of what shapes the cost)."""
    import hashlib

    conf = spark.sparkContext.getConf()
    row = {"master": spark.sparkContext.master, "cores": int(spark.sparkContext.defaultParallelism),
           "driver_memory": conf.get("spark.driver.memory", "1g"),
           "executor_memory": conf.get("spark.executor.memory", "1g"),
           "shuffle_partitions": spark.conf.get("spark.sql.shuffle.partitions"), "spark_version": spark.version}
    row["profile_id"] = hashlib.sha256(repr(sorted(row.items())).encode()).hexdigest()[:12]
    return row


def now_utc() -> datetime:
    from datetime import timezone

    return datetime.now(timezone.utc)
