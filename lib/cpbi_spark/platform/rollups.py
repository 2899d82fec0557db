"""Roll-ups of sources A–D, recomputed from the per-stage records when a run ends.

Reference tables come from conf (compared with what is stored: an unchanged table makes no version);
derived tables are recomputed whole from ``fact_job_runs``, ``fact_cost_usage``, ``fact_resource_usage``,
``fact_table_commits``, ``stage_incidents`` and ``fact_data_quality`` (small platform tables), so a
repeated refresh gives the same rows, and a run that did not end normally is caught up by the next one.

Example:
    >>> refresh_all(ctx, PlatformStore(ctx), datetime.now(timezone.utc), written=[])   # doctest: +SKIP
"""

from __future__ import annotations

import platform as pyplatform
import socket
from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from cpbi_spark.platform.cost import money

if TYPE_CHECKING:
    from cpbi_spark.platform.scan_memo import ScanMemo
    from cpbi_spark.platform.store import PlatformStore
    from cpbi_spark.runtime import RunContext

MICRO = Decimal(1_000_000)


def service_rows(ctx: RunContext) -> list[dict]:
    from cpbi_spark.pipeline import PIPELINE, analysis_names

    owner = ctx.config.project.owner
    rows = [{"service": f"cpbi-{s}", "kind": "pipeline_stage", "entrypoint": f"cpbi run {s}", "owner": owner,
             "description": f"the {s} stage"} for s in PIPELINE]
    try:
        analyses = analysis_names()
    except Exception:  # analyses are optional plug-ins: the catalog of services must not depend on them
        analyses = []
    rows += [{"service": f"cpbi-{a}", "kind": "analysis", "entrypoint": f"cpbi run {a}", "owner": owner,
              "description": f"the {a} analysis"} for a in analyses]
    rows.append({"service": "cpbi-platform", "kind": "platform", "entrypoint": "stage observers",
                 "owner": owner, "description": "the platform recorder (sources A-D)"})
    return rows


def reference_tables(ctx: RunContext, store: PlatformStore) -> dict[str, list[dict]]:
    """Every table of A–D that is reference data from conf (or from the machine and session)."""
    import psutil

    from cpbi_spark.platform import cost, governance, ingest_audit, ops_logs, quality
    from cpbi_spark.platform.observer import host_id
    from cpbi_spark.platform.settings import platform_source_of

    cfg, plat = ctx.config, ctx.config.platform
    systems, schema, types = ingest_audit.source_rows(ctx)
    hosts = {r["host_id"]: r for r in store.rows("dim_host")}
    hosts[host_id()] = {"host_id": host_id(), "hostname": socket.gethostname(),
                        "os": f"{pyplatform.system()} {pyplatform.release()}",
                        "python_version": pyplatform.python_version(), "cpu_count": psutil.cpu_count(),
                        "memory_gb": round(psutil.virtual_memory().total / 2**30, 2)}
    profiles = {r["profile_id"]: r for r in store.rows("dim_compute_profile")}
    prof = cost.profile(ctx.spark)
    profiles[prof["profile_id"]] = prof
    tables = {
        "dim_source_system": systems, "ref_file_schema": schema, "dim_file_type": types,
        "ref_error_codes": ops_logs.error_code_rows(plat.error_codes),
        "ref_retention_policy": [{"target": t, "kind": r.kind, "ts_column": r.ts_column, "retention_days": r.days,
                                  "description": r.description} for t, r in plat.retention.items()],
        "dim_service": service_rows(ctx),
        "ref_stage_sla": [{"stage": s, "max_seconds": v} for s, v in plat.sla_seconds.items()],
        "dim_dataset": governance.dataset_rows(cfg, platform_source_of(cfg)),
        "dim_column": governance.column_rows(cfg),
        "ref_policies": governance.policy_rows(cfg),
        "ref_expectations": quality.expectation_rows(cfg),
        "dim_expectation_suite": quality.suite_rows(cfg),
        "ref_price_catalog": [{"sku": p.sku, "meter": p.meter, "unit": p.unit, "list_price": money(p.list_price),
                               "currency": plat.rates.currency, "description": p.description}
                              for p in plat.price_catalog],
        "ref_rates": cost.rate_rows(plat),
        "dim_meter": [{"meter": m, "unit": u, "measured_from": src, "description": d}
                      for m, (u, src, d) in cost.METERS.items()],
        "dim_cost_center": [{"cost_center": k, "name": c.name, "owner": c.owner,
                             "monthly_budget": Decimal(str(c.monthly_budget)), "currency": plat.rates.currency}
                            for k, c in plat.cost_centers.items()],
        "ref_chargeback_rules": [{"rule_id": r.rule, "stage_pattern": r.stage, "cost_center": r.cost_center,
                                  "share": r.share, "description": r.description} for r in plat.chargeback],
        "dim_host": list(hosts.values()),
        "dim_compute_profile": list(profiles.values()),
    }
    tables.update(governance.catalog_rows(cfg))
    return tables


def measured_rows(metrics: list[dict], jobs: list[dict], plat) -> dict[str, list[dict]]:
    """``fact_resource_usage``, ``fact_host_metrics``, ``fact_cost_usage`` and ``dim_run`` from the measurements
    each stage attempt stored in ``fact_stage_metrics`` (``resource.*``, ``host.*``, ``run.*``) (pure)."""
    from cpbi_spark.platform import cost

    by: dict[tuple[str, str, int], dict[str, dict]] = defaultdict(lambda: defaultdict(dict))
    for m in metrics:
        group, _, name = m["metric"].partition(".")
        by[(m["run_id"], m["stage"], m["attempt"])][group][name] = m["value"] if m["value"] is not None \
            else m["text_value"]
    finished = {(j["run_id"], j["stage"], j["attempt"]): j for j in jobs}
    usage, hosts, costs, runs = [], [], [], {}
    for k, groups in sorted(by.items()):
        job = finished.get(k)
        if job is None or "resource" not in groups:
            continue
        key = {"run_id": k[0], "stage": k[1], "attempt": k[2]}
        r = groups["resource"]
        ints = ("cores", "bytes_read", "bytes_written", "shuffle_read_bytes", "shuffle_write_bytes", "spark_stages",
                "tasks")
        measured = {c: int(r.get(c) or 0) if c in ints else float(r.get(c) or 0.0)
                    for c in ("wall_seconds", "cores", "executor_run_seconds", "executor_cpu_seconds", *ints[1:])}
        usage.append({**key, "profile_id": r.get("profile_id"), "region_code": r.get("region_code"),
                      "started_ts": job["started_ts"], **measured})
        rate = groups.get("rate", {})
        prices = {m: money(v) for m, v in rate.items() if m != "card"} or None
        costs += cost.cost_rows(key, {**measured, "region_code": r.get("region_code")}, plat,
                                job["started_ts"].date(), prices, rate.get("card"))
        h = groups.get("host", {})
        hosts.append({**key, "host_id": h.get("host_id"), "driver_rss_mb": h.get("driver_rss_mb"),
                      "driver_cpu_seconds": h.get("driver_cpu_seconds"),
                      "system_cpu_percent": h.get("system_cpu_percent"),
                      "memory_available_gb": h.get("memory_available_gb"), "load_avg_1m": h.get("load_avg_1m"),
                      "measured_ts": job["finished_ts"]})
        info = groups.get("run")
        if info and k[0] not in runs:
            runs[k[0]] = {"run_id": k[0], "env": info.get("env"),
                          "started_ts": datetime.fromisoformat(info["started_ts"]).replace(tzinfo=None),
                          "engine": info.get("engine"), "full_refresh": info.get("full_refresh") == "true",
                          "user_name": info.get("user_name"), "host_id": info.get("host_id"),
                          "pid": int(info.get("pid") or 0), "spark_app_id": info.get("spark_app_id"),
                          "spark_version": info.get("spark_version"), "profile_id": r.get("profile_id"),
                          "conf_dir": info.get("conf_dir")}
    return {"fact_resource_usage": usage, "fact_host_metrics": hosts, "fact_cost_usage": costs,
            "dim_run": list(runs.values())}


def run_cost_rows(usage: list[dict], resources: list[dict], currency: str) -> list[dict]:
    """``fact_run_costs``: per run, the sum of its stage attempts (pure)."""
    runs: dict[str, dict] = {}
    for r in resources:
        a = runs.setdefault(r["run_id"], {"run_id": r["run_id"], "started_ts": r["started_ts"], "stage_attempts": 0,
                                          "wall_seconds": 0.0, "executor_cpu_seconds": 0.0, "bytes_read": 0,
                                          "bytes_written": 0, "cost": Decimal(0), "currency": currency})
        a["started_ts"] = min(a["started_ts"], r["started_ts"])
        a["stage_attempts"] += 1
        a["wall_seconds"] += r["wall_seconds"]
        a["executor_cpu_seconds"] += r["executor_cpu_seconds"]
        a["bytes_read"] += r["bytes_read"]
        a["bytes_written"] += r["bytes_written"]
    for u in usage:
        if u["run_id"] in runs:
            runs[u["run_id"]]["cost"] += u["cost"]
    return sorted(runs.values(), key=lambda r: r["run_id"])


def attempt_costs(usage: list[dict]) -> dict[tuple[str, str, int], dict]:
    out: dict[tuple[str, str, int], dict] = {}
    for u in usage:
        k = (u["run_id"], u["stage"], u["attempt"])
        a = out.setdefault(k, {"cost": Decimal(0), "usage_date": u["usage_date"], "currency": u["currency"]})
        a["cost"] += u["cost"]
    return out


def table_cost_rows(costs: dict[tuple[str, str, int], dict], commits: list[dict]) -> list[dict]:
    """``fact_table_costs``: each stage attempt's cost split over the tables it changed by rows changed (pure)."""
    changed: dict[tuple, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for c in commits:
        k = (c["run_id"], c["stage"], c["attempt"])
        changed[k][c["table_name"]] += sum(c.get(m) or 0 for m in ("rows_inserted", "rows_updated", "rows_deleted"))
    rows = []
    for k, tables in changed.items():
        if k not in costs:
            continue
        total_rows = sum(tables.values())
        names = sorted(tables)
        remaining = costs[k]["cost"]
        for i, name in enumerate(names):
            share = tables[name] / total_rows if total_rows else 1 / len(names)
            part = remaining if i == len(names) - 1 else money(costs[k]["cost"] * Decimal(repr(share)))
            remaining -= part
            rows.append({"run_id": k[0], "stage": k[1], "attempt": k[2], "table_name": name,
                         "rows_changed": tables[name], "share": share, "cost": part, "currency": costs[k]["currency"]})
    return rows


def alert_rows(incidents: list[dict], dq: list[dict], sla: list[dict], anomalies: list[dict], budgets: list[dict],
               now: datetime) -> list[dict]:
    """``stage_alerts`` from the records (pure): open incidents, blocking DQ failures, SLA breaches, anomalies,
    budgets at risk."""
    alerts = []
    for i in incidents:
        if i["status"] == "open":
            alerts.append({"alert_id": f"incident:{i['incident_id']}", "run_id": i["run_id"], "stage": i["stage"],
                           "kind": "incident", "severity": i["severity"], "subject": i["error_code"],
                           "message": (i["message"] or "")[:500], "raised_ts": i["opened_ts"]})
    for r in dq:
        if r["severity"] == "blocking" and r["check_status"] != "passed":
            alerts.append({"alert_id": f"dq:{r['dq_id']}", "run_id": r["run_id"], "stage": r["stage"],
                           "kind": "data_quality", "severity": "high",
                           "subject": f"{r['dataset_id']}.{r['check_name']}",
                           "message": f"blocking check failed: {r['observed_value']}", "raised_ts": r["checked_ts"]})
    # Alert times come from the records (a repeated refresh gives the same alerts); budgets: the day's start.
    day = datetime.combine(now.date(), datetime.min.time())
    for s in sla:
        if s["breached"]:
            alerts.append({"alert_id": f"sla:{s['run_id']}:{s['stage']}:{s['attempt']}", "run_id": s["run_id"],
                           "stage": s["stage"], "kind": "sla", "severity": "medium", "subject": s["stage"],
                           "message": f"{s['seconds']:.1f} s > SLA {s['max_seconds']:.0f} s",
                           "raised_ts": s.get("finished_ts") or day})
    for a in anomalies:
        if a["is_anomaly"]:
            alerts.append({"alert_id": f"cost:{a['run_id']}:{a['stage']}:{a['attempt']}", "run_id": a["run_id"],
                           "stage": a["stage"], "kind": "cost_anomaly", "severity": "low", "subject": a["stage"],
                           "message": f"cost {a['ratio']:.1f}x the stage's average",
                           "raised_ts": a.get("started_ts") or day})
    for b in budgets:
        if b["status"] != "ok":
            alerts.append({"alert_id": f"budget:{b['month']:%Y-%m}:{b['cost_center']}", "run_id": None,
                           "stage": None, "kind": "budget",
                           "severity": "medium" if b["status"] == "warning" else "high",
                           "subject": b["cost_center"], "message": f"{b['status']}: {b['pct_used']:.0%} of budget used",
                           "raised_ts": day})
    return alerts


def refresh_all(ctx: RunContext, store: PlatformStore, now: datetime, *, written: list[str],
                first: bool = False) -> None:
    """Recompute every roll-up and reference table of A–D (idempotent; see the module doc).

    ``first``: the run's end-of-run records (snapshots, contracts, policies, PII scan) are appended once
    (cheaper than a MERGE); a later refresh of the same run (an analysis after gold) merges them.
    """
    from pyspark.sql import functions as F

    from cpbi_spark.lakehouse.merge_spec import MergeSpec, changed_condition
    from cpbi_spark.platform import cost, governance, ops_logs
    from cpbi_spark.platform.scan_memo import ScanMemo

    plat = ctx.config.platform
    memo = ScanMemo(store)  # whole-table scans are reused while the tables they read are unchanged
    # Every table of A-D exists after a run that ended, empty when nothing happened yet (no incident, ...).
    for name in sorted({t for spec in plat.sources.values() for t in spec.tables}):
        if ctx.config.table(name).columns and not store.lake.exists(name):
            store.lake.ensure(name)
    for name, rows in reference_tables(ctx, store).items():
        store.replace(name, rows)

    jobs = store.rows("fact_job_runs")
    measures = store.rows("fact_stage_metrics", "metric RLIKE '^(resource|host|run|rate)[.]'")
    measured = measured_rows(measures, jobs, plat)
    for name, rows in measured.items():
        store.replace(name, rows)
    usage, resources = measured["fact_cost_usage"], measured["fact_resource_usage"]
    incidents = store.rows("stage_incidents")
    dq = store.rows("fact_data_quality")
    commits = store.rows("fact_table_commits")
    currency = plat.rates.currency

    store.replace("fact_incident_metrics", ops_logs.incident_metrics(incidents))
    sla = [{"run_id": j["run_id"], "stage": j["stage"], "attempt": j["attempt"], "seconds": j["seconds"],
            "max_seconds": plat.sla_seconds[j["stage"]], "breached": j["seconds"] > plat.sla_seconds[j["stage"]]}
           for j in jobs if j["stage"] in plat.sla_seconds and j["seconds"] is not None]
    store.replace("fact_sla_checks", sla)
    finished = {(j["run_id"], j["stage"], j["attempt"]): j["finished_ts"] for j in jobs}
    for s in sla:
        s["finished_ts"] = finished.get((s["run_id"], s["stage"], s["attempt"]))

    costs = attempt_costs(usage)
    allocations = []
    for (run_id, stage, attempt), a in sorted(costs.items()):
        allocations += cost.allocate({"run_id": run_id, "stage": stage, "attempt": attempt}, stage, a["cost"],
                                     plat.chargeback, a["usage_date"], a["currency"])
    store.replace("stage_allocations", allocations)
    run_costs = run_cost_rows(usage, resources, currency)
    store.replace("fact_run_costs", run_costs)
    store.replace("fact_table_costs", table_cost_rows(costs, commits))

    today = now.date()
    paths = {n: (c.layer, ctx.config.table_path(n)) for n, c in ctx.config.tables.items()}
    # One snapshot per day: the first refresh of the day measures every table folder, a later one only adds
    # tables that did not exist yet (so refreshing twice gives the same rows).
    storage = store.rows("fact_storage_usage")
    measured_today = {r["dataset_id"] for r in storage if r["snapshot_date"] == today}
    paths = {n: p for n, p in paths.items() if n not in measured_today}
    storage += cost.storage_rows(cost.folder_sizes(paths), plat, today)
    store.replace("fact_storage_usage", storage)
    store.replace("fact_monthly_costs", cost.monthly_rows(usage, storage, currency))
    months = defaultdict(set)
    for j in jobs:
        months[cost.month_start(j["started_ts"].date())].add(j["run_id"])
    store.replace("dim_billing_period", [{"month": m, "period_start": m, "period_end": cost.month_end(m),
                                          "status": "closed" if cost.month_end(m) < today else "open",
                                          "runs": len(r)} for m, r in sorted(months.items())])
    budgets, forecasts, invoices = cost.budget_rows(allocations, plat, today)
    store.replace("fact_budget_status", budgets)
    store.replace("fact_cost_forecast", forecasts)
    store.replace("fact_chargeback_invoices", invoices)
    starts = {(r["run_id"], r["stage"], r["attempt"]): r["started_ts"] for r in resources}
    anomalies = cost.anomaly_rows([{"run_id": k[0], "stage": k[1], "attempt": k[2], "cost": a["cost"],
                                    "started_ts": starts.get(k, now.replace(tzinfo=None))}
                                   for k, a in costs.items()], plat.anomaly_ratio)
    store.replace("stage_cost_anomalies", anomalies)
    for a in anomalies:
        a["started_ts"] = starts.get((a["run_id"], a["stage"], a["attempt"]))
    store.replace("fact_dataset_trust", governance.trust_rows(dq))
    store.replace("stage_alerts", alert_rows(incidents, dq, sla, anomalies, budgets, now))
    store.replace("dim_region", governance.region_rows(ctx, store, memo))

    if store.lake.exists("fact_logs"):
        volume = (store.lake.read("fact_logs").groupBy("instance", "service", "level")
                  .agg(F.count(F.lit(1)).alias("records"), F.sum(F.length("message")).cast("long")
                       .alias("message_bytes")).collect())
        store.replace("fact_log_volume", [r.asDict() for r in volume])

    trimmed = ops_logs.trim(ctx, store, now, memo)
    known = {r["file_path"]: r for r in store.rows("audit_log_files")}
    loaded = {j["run_id"] for j in jobs}
    files = {r["file_path"]: {**r, "loaded_ts": (known.get(r["file_path"]) or {}).get("loaded_ts") or now}
             for r in ops_logs.log_file_rows(ctx, loaded)}
    for path, r in known.items():
        if path not in files:  # gone from the folder: removed by the retention policy
            files[path] = {**r, "status": "trimmed"}
    store.replace("audit_log_files", list(files.values()))
    if trimmed:
        _log_trim(ctx, trimmed)

    tables = [t for t in sorted(set(written)) if store.lake.exists(t)]
    end_of_run = {
        "fact_table_snapshots": [{"run_id": ctx.run_id, "table_name": t, "layer": ctx.config.table(t).layer,
                                  "version": store.lake.version(t), "rows": n, "snapshot_ts": now}
                                 for t, n in table_counts(store, tables).items()],
        "audit_schema_contracts": governance.contract_rows(ctx, store, tables, now),
        "audit_policies": governance.audit_policy_rows(ctx, store, now, memo),
        "fact_pii_scan": governance.pii_scan_rows(ctx, store, now, memo),
    }
    for name, records in end_of_run.items():
        if first:
            store.append_once(name, records, token=f"platform/{ctx.run_id}/end")
        else:
            store.upsert(name, records)

    recon = _recon_rows(ctx, store, usage, run_costs, allocations, now, memo)
    # Only checks whose outcome changed are merged (a rerun that changed nothing makes no MERGE and no version).
    stored = {(r["domain"], r["check_name"]): (r["expected"], r["observed"], r["status"])
              for r in store.rows("audit_recon") if r["domain"] in {c["domain"] for c in recon}}
    changed = [c for c in recon if stored.get((c["domain"], c["check_name"])) != (c["expected"], c["observed"],
                                                                                  c["status"])]
    if changed:
        store.lake.merge("audit_recon", store.frame("audit_recon", changed), MergeSpec.upsert(
            ["domain", "check_name"], only_if_changed=changed_condition(["expected", "observed", "status"])))
    memo.save()
    if memo.reused or memo.computed:
        ctx.log.info("platform scans: %d result(s) reused (tables unchanged), %d computed", memo.reused,
                     memo.computed)


def table_counts(store: PlatformStore, tables: list[str]) -> dict[str, int]:
    """Rows of each table, from the Delta log where the engine can (no Spark job)."""
    return {t: store.lake.row_count(t) for t in tables}


def _log_trim(ctx: RunContext, trimmed: list[dict]) -> None:
    for t in trimmed:
        ctx.log.info("retention: trimmed %s rows and %s files of %s (older than %s)", t["rows_trimmed"],
                     t["files_trimmed"], t["target"], t["cutoff_ts"])


def _recon_rows(ctx: RunContext, store: PlatformStore, usage: list[dict], run_costs: list[dict],
                allocations: list[dict], now: datetime, memo: ScanMemo) -> list[dict]:
    """Platform checks in the conformed ``audit_recon`` (domains ``cost`` and ``ingest``)."""
    from pyspark.sql import functions as F

    # Cost checks compare differences (expected 0), so a rerun that adds cost does not make a new version.
    usage_total = sum((u["cost"] for u in usage), Decimal(0))
    checks = [
        ("cost", "usage cost - run totals (micro-USD)", Decimal(0),
         (sum((r["cost"] for r in run_costs), Decimal(0)) - usage_total) * MICRO),
        ("cost", "usage cost - allocated cost (micro-USD)", Decimal(0),
         (sum((a["allocated_cost"] for a in allocations), Decimal(0)) - usage_total) * MICRO),
    ]
    # Row counts come from the Delta log where the engine can; the filtered sums are read once per table state.
    if store.lake.exists("fact_raw_events") and store.lake.exists("audit_ingest"):
        landed = memo.value("recon", "audit_ingest.rows_landed", ["audit_ingest"], lambda: store.lake.read(
            "audit_ingest").where("status = 'landed'").agg(F.sum("rows_landed")).first()[0])
        checks.append(("ingest", "landed rows = raw events", Decimal(landed or 0),
                       Decimal(store.lake.row_count("fact_raw_events"))))
    if store.lake.exists("stage_quarantine") and store.lake.exists("ref_parsing_errors"):
        errors = memo.value("recon", "ref_parsing_errors.after_bronze", ["ref_parsing_errors"], lambda: store.lake.read(
            "ref_parsing_errors").where("stage <> 'bronze'").count())
        checks.append(("ingest", "quarantined records = parsing errors",
                       Decimal(store.lake.row_count("stage_quarantine")), Decimal(errors)))
    return [{"domain": d, "check_name": n, "expected": e.quantize(Decimal("0.01")),
             "observed": o.quantize(Decimal("0.01")), "difference": (o - e).quantize(Decimal("0.01")),
             "status": "balanced" if e.quantize(Decimal("0.01")) == o.quantize(Decimal("0.01")) else "unbalanced",
             "run_id": ctx.run_id, "checked_at": now} for d, n, e, o in checks]
