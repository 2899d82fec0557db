"""The platform recorder: one stage observer that fills sources A–D around every stage of a run.

Per stage attempt (``stage_finished`` / ``stage_failed``), written at once so a run that dies later
keeps them: ``fact_job_runs``, ``fact_logs``, ``fact_stage_metrics`` (the stage's counters plus what was
measured: Spark status-store resources, driver/host load, run info, unit prices in force),
``fact_table_commits``, ``stage_lineage``, ``fact_data_quality`` (+ ``stage_dq_failures``),
``stage_incidents``, ``stage_retries``; after bronze the landing records of source A, after silver
``ref_parsing_errors``.

Roll-ups are recomputed from those records when a run ends normally (after ``gold`` or an analysis):
catalog and reference tables from conf, ``fact_resource_usage`` / ``fact_host_metrics`` /
``fact_cost_usage`` / ``dim_run`` from the measurements, allocations, monthly costs, budgets, trust,
policy audit, PII scan, storage, alerts, retention trimming. A failed or blocked stage refreshes the
incident metrics at once; a run of bronze or silver alone (``jobs/ingest_bronze.py``) is caught up by the
next run that ends (nothing is lost: everything is recomputed from the per-stage records).

A blocking data-quality failure is recorded first (job run ``blocked``, incident ``DQ-BLOCKING``) and
then raised as :class:`~cpbi_spark.errors.QualityError`, which stops promotion to the next stage.

Example:
    >>> ctx = RunContext.create(env="ci")           # doctest: +SKIP
    >>> ctx.observers                                # doctest: +SKIP
    [<cpbi_spark.platform.observer.PlatformObserver object at ...>]
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import os
import socket
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from cpbi_spark.errors import QualityError
from cpbi_spark.runtime import StageObserver

if TYPE_CHECKING:
    from cpbi_spark.runtime import RunContext, StageResult

_log = logging.getLogger("cpbi.platform")
DATA_STAGES = ("bronze", "silver")  # stages after which a run usually goes on (no roll-up yet)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def host_id() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:12]


@dataclass
class _Attempt:
    stage: str
    attempt: int
    started: datetime
    t0: float
    mark: int
    commits_from: int
    reads_from: int
    tables: list[str] = field(default_factory=list)


def flatten_counters(counters: dict[str, Any], prefix: str = "") -> list[tuple[str, float | None, str | None]]:
    """``(metric, number, text)`` for every leaf of a stage's counters (pure).

    >>> flatten_counters({"files": 2, "transactions": {"rows_in": 10}, "note": "ok"})
    [('files', 2.0, None), ('transactions.rows_in', 10.0, None), ('note', None, 'ok')]
    """
    out: list[tuple[str, float | None, str | None]] = []
    for key, value in counters.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out += flatten_counters(value, f"{name}.")
        elif isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
            out.append((name, None, str(value)[:1000]))
        else:
            out.append((name, float(value), None))
    return out


class PlatformObserver(StageObserver):
    """Records sources A–D around every stage (one instance per run context)."""

    def __init__(self) -> None:
        self.store: Any = None
        self.meter: Any = None
        self.router: Any = None
        self.attempts: dict[str, int] = defaultdict(int)
        self.current: _Attempt | None = None
        self.loaded_seq = 0
        self.history: list[dict] | None = None  # fact_job_runs rows (every run), kept up to date in memory
        self.written: list[str] = []  # tables this run committed (snapshots, contracts)
        self.refreshed = False  # a first refresh appends the run's end-of-run records, a later one merges them

    # ------------------------------------------------------------------------------------------- hooks
    def stage_started(self, ctx: RunContext, stage: str) -> None:
        from cpbi_spark.platform.cost import SparkMeter
        from cpbi_spark.platform.ops_logs import log_path, router
        from cpbi_spark.platform.store import PlatformStore

        if self.store is None:
            self.store = PlatformStore(ctx)
            self.meter = SparkMeter(ctx.spark)
            self.router = router(ctx.config.platform.log_level)
            if ctx.config.expectations:
                from cpbi_spark.platform.quality import warm_up

                warm_up()  # ready by the time the first stage's tables are validated
        self.attempts[stage] += 1
        self.current = _Attempt(stage, self.attempts[stage], _now(), time.perf_counter(), self.meter.mark(),
                                len(ctx.lake.commits), len(ctx.lake.reads))
        self.router.activate(ctx.run_id, stage, log_path(ctx), ctx.config.platform.log_level)
        ctx.log.info("stage %s started (run %s, attempt %d)", stage, ctx.run_id, self.current.attempt)

    def stage_finished(self, ctx: RunContext, stage: str, result: StageResult) -> None:
        attempt = self._attempt(ctx, stage)
        attempt.tables = [c.table for c in ctx.lake.commits[attempt.commits_from:]]
        dq = self._validate(ctx, attempt)
        failed = [r for r in dq if r["severity"] == "blocking" and r["check_status"] != "passed"]
        error = None
        if failed:
            detail = "; ".join(f"{r['dataset_id']}.{r['check_name']} ({r['observed_value']})" for r in failed)
            error = QualityError(f"stage {stage}: {len(failed)} blocking data-quality check(s) failed, promotion "
                                 f"to the next stage stopped (see fact_data_quality, run {ctx.run_id}): {detail}")
            ctx.log.error("%s", error)
        else:
            ctx.log.info("stage %s finished: %s", stage, result.summary())
        self._record(ctx, attempt, "blocked" if error else "succeeded", result, error, dq)
        if error is not None:
            raise error

    def stage_failed(self, ctx: RunContext, stage: str, error: BaseException) -> None:
        try:
            attempt = self._attempt(ctx, stage)
            attempt.tables = [c.table for c in ctx.lake.commits[attempt.commits_from:]]
            ctx.log.error("stage %s failed: %s: %s", stage, type(error).__name__, error)
            self._record(ctx, attempt, "failed", None, error, [])
        except Exception:  # recording must never hide the stage's own error
            _log.exception("the platform recorder could not record the failure of stage %s", stage)
            if self.router is not None:
                self.router.deactivate()

    def _attempt(self, ctx: RunContext, stage: str) -> _Attempt:
        if self.current is None or self.current.stage != stage:  # observer added after stage_started
            self.stage_started(ctx, stage)
        assert self.current is not None
        return self.current

    # ------------------------------------------------------------------------------------------- quality
    def _validate(self, ctx: RunContext, attempt: _Attempt) -> list[dict]:
        from cpbi_spark.platform.quality import WATERMARKS, validate_table

        results: list[dict] = []
        watermarks: list[dict] | None = None
        for table in dict.fromkeys(attempt.tables):
            suite = ctx.config.expectations.get(table)
            if suite is None or not self.store.lake.exists(table):
                continue
            if watermarks is None:  # where each table was last validated clean (read once per stage)
                watermarks = self.store.rows(WATERMARKS)
            with self.store.timed(f"dq:{table}"):
                try:
                    found = validate_table(self.store, table, suite, watermarks,
                                           incremental_min_rows=ctx.config.platform.dq_incremental_min_rows,
                                           local_max_rows=ctx.config.platform.dq_local_max_rows)
                except Exception as exc:  # the suite could not run: every check is an error (blocking fails closed)
                    _log.exception("data-quality suite of %s could not run", table)
                    found = [{"check_name": c.check, "expectation_type": c.expect, "column_name": c.column,
                              "severity": c.severity, "check_status": "error", "observed_value": f"error: {exc}"[:500],
                              "unexpected_count": None, "element_count": None, "unexpected_percent": None,
                              "sample": [], "dataset_version": self.store.lake.version(table)} for c in suite.checks]
                results += [{**r, "dataset_id": table} for r in found]
        return results

    # ------------------------------------------------------------------------------------------- records
    def _record(self, ctx: RunContext, attempt: _Attempt, status: str, result: StageResult | None,
                error: BaseException | None, dq: list[dict]) -> None:
        from cpbi_spark.platform import cost, governance, ops_logs

        store, plat = self.store, ctx.config.platform
        stage, n = attempt.stage, attempt.attempt
        wall = time.perf_counter() - attempt.t0
        usage = {**self.meter.since(attempt.mark), "wall_seconds": wall, "cores": self.meter.cores}
        now = _now()
        self.router.deactivate()
        token = f"platform/{ctx.run_id}/{stage}/{n}"
        key = {"run_id": ctx.run_id, "stage": stage, "attempt": n}
        commits = ctx.lake.commits[attempt.commits_from:]
        reads = ctx.lake.reads[attempt.reads_from:]
        self.written += [c.table for c in commits]
        rule = ops_logs.classify_error(error, plat.error_codes) if error is not None else None
        if self.history is None:
            self.history = store.rows("fact_job_runs")
        previous = sorted((h for h in self.history if h["stage"] == stage),
                          key=lambda h: (h["finished_ts"] or h["started_ts"], h["run_id"], h["attempt"]))

        rows_written = sum(sum(c.info.metrics.get(k, 0) for k in ("num_inserted", "num_updated", "num_deleted"))
                           for c in commits)
        job = {**key, "service": f"cpbi-{stage}", "status": status, "started_ts": attempt.started,
               "finished_ts": now, "seconds": wall, "tables_written": len(set(attempt.tables)),
               "rows_written": rows_written, "error_code": rule.code if rule else None,
               "message": str(error)[:2000] if error is not None else (result.summary()[:2000] if result else None)}
        store.append_once("fact_job_runs", [job], token=token)
        self.history.append(job)

        records = ops_logs.read_log_lines(ops_logs.log_path(ctx), self.loaded_seq)
        if records:
            self.loaded_seq = max(r["seq"] for r in records)
            store.append_once("fact_logs", ops_logs.log_rows(records), token=token)
        # Measurements travel as metrics (one write); fact_resource_usage, fact_host_metrics and
        # fact_cost_usage are derived from them when the run ends (see rollups.measured_rows).
        counters: dict[str, Any] = dict(result.counters) if result else {}
        counters["tables"] = dict(result.tables) if result else {}
        counters["resource"] = {**usage, "profile_id": cost.profile(ctx.spark)["profile_id"],
                                "region_code": plat.region.code}
        counters["host"] = self._host_metrics()
        counters["run"] = self._run_info(ctx)
        counters["rate"] = {"card": plat.rates.card, **{m: float(p) for m, p in cost.unit_prices(plat).items()}}
        store.append_once("fact_stage_metrics", [{**key, "metric": m, "value": v, "text_value": t}
                                                 for m, v, t in flatten_counters(counters)], token=token)
        store.append_once("fact_table_commits", [
            {"table_name": c.table, "version": c.info.version, **key, "operation": c.info.operation,
             "files_added": c.info.files_added, "files_removed": c.info.files_removed,
             "rows_inserted": c.info.metrics.get("num_inserted"), "rows_updated": c.info.metrics.get("num_updated"),
             "rows_deleted": c.info.metrics.get("num_deleted"), "committed_ts": now} for c in commits], token=token)

        layers = {name: cfg.layer for name, cfg in ctx.config.tables.items()}
        landed, ledger = {}, []
        if stage == "bronze":
            ledger = store.rows("audit_ingest")  # a small table, read once: filtered here, no Spark job
            landed = {e["source"]: ctx.config.sources[e["source"]].bronze_table for e in ledger
                      if e["batch_id"] == ctx.run_id and e["status"] == "landed" and e["source"] in ctx.config.sources}
        edges = governance.lineage_edges(reads, [c.table for c in commits], layers, landed)
        store.append_once("stage_lineage", [
            {"run_id": ctx.run_id, "stage": stage, "source_dataset": s, "source_kind": k, "target_dataset": t,
             "recorded_ts": now} for s, k, t in sorted(edges)], token=token)
        if dq:
            self._record_quality(ctx, key, dq, now, token)

        last = previous[-1] if previous else None
        if last is not None and last["status"] in ("failed", "blocked"):
            streak = 0
            for h in reversed(previous):
                if h["status"] == "succeeded":
                    break
                streak += 1
            store.append_once("stage_retries", [{**key, "retry_number": streak, "previous_run_id": last["run_id"],
                                                 "previous_status": last["status"],
                                                 "previous_error_code": last["error_code"],
                                                 "previous_finished_ts": last["finished_ts"], "outcome": status,
                                                 "retried_ts": now}], token=token)
            if status == "succeeded":
                ops_logs.resolve_incidents(store, stage, ctx.run_id, now)
        if error is not None and rule is not None:
            store.append_once("stage_incidents", [ops_logs.incident_row(ctx, stage, n, error, rule, now)],
                              token=token)

        if stage == "bronze":
            with store.timed("landing"):
                self._record_landing(ctx, now, token, ledger)
        if stage == "silver" and "stage_quarantine" in attempt.tables:  # else this attempt quarantined nothing
            from cpbi_spark.platform.ingest_audit import parsing_error_rows

            store.upsert("ref_parsing_errors", parsing_error_rows(ctx, store, "silver", now), insert_only=True)
        with store.timed("refresh"):
            if status == "succeeded" and stage not in DATA_STAGES:
                self.refresh(ctx, now)
            elif status != "succeeded":
                # The run stops here: the incident view is refreshed now; the other roll-ups (costs, trust, ...)
                # are caught up by the next run that ends normally, from the per-stage records.
                store.replace("fact_incident_metrics", ops_logs.incident_metrics(store.rows("stage_incidents")))
        _log.debug("platform recorder, seconds per table after stage %s: %s", stage,
                   {k: round(v, 2) for k, v in sorted(store.timings.items(), key=lambda kv: -kv[1])})
        self.current = None

    @staticmethod
    def _run_info(ctx: RunContext) -> dict:
        """What ``dim_run`` holds about the run (sent with every stage's metrics)."""
        sc = ctx.spark.sparkContext
        return {"env": ctx.config.env, "started_ts": ctx.started_at.isoformat(), "engine": ctx.lake.engine.name,
                "full_refresh": str(ctx.full_refresh).lower(), "user_name": getpass.getuser(), "host_id": host_id(),
                "pid": os.getpid(), "spark_app_id": sc.applicationId, "spark_version": sc.version,
                "conf_dir": ctx.config.conf_dir}

    @staticmethod
    def _host_metrics() -> dict:
        import psutil

        proc = psutil.Process()
        cpu = proc.cpu_times()
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = None
        return {"host_id": host_id(), "driver_rss_mb": proc.memory_info().rss / 2**20,
                "driver_cpu_seconds": cpu.user + cpu.system, "system_cpu_percent": psutil.cpu_percent(interval=None),
                "memory_available_gb": psutil.virtual_memory().available / 2**30, "load_avg_1m": load}

    def _record_quality(self, ctx: RunContext, key: dict, dq: list[dict], now: datetime, token: str) -> None:
        from cpbi_spark.platform.governance import pii_columns_of
        from cpbi_spark.platform.quality import WATERMARKS, watermark_rows

        rows, failures = [], []
        for r in dq:
            dq_id = hashlib.sha256(f"{key['run_id']}|{key['stage']}|{key['attempt']}|{r['dataset_id']}|"
                                   f"{r['check_name']}".encode()).hexdigest()[:24]
            rows.append({"dq_id": dq_id, "run_id": key["run_id"], "stage": key["stage"],
                         "dataset_id": r["dataset_id"], "dataset_version": r["dataset_version"],
                         "check_name": r["check_name"], "expectation_type": r["expectation_type"],
                         "column_name": r["column_name"], "severity": r["severity"],
                         "check_status": r["check_status"], "observed_value": r["observed_value"],
                         "unexpected_count": r["unexpected_count"], "element_count": r["element_count"],
                         "checked_ts": now})
            if r["check_status"] != "passed":
                pii = set(pii_columns_of(ctx.config, r["dataset_id"]))
                masked = bool(pii & set((r["column_name"] or "").split(",")))
                sample = "***" if masked and r["sample"] else ", ".join(str(v) for v in r["sample"])[:500] or None
                failures.append({"dq_id": dq_id, "run_id": key["run_id"], "dataset_id": r["dataset_id"],
                                 "check_name": r["check_name"], "severity": r["severity"],
                                 "unexpected_count": r["unexpected_count"],
                                 "unexpected_percent": r["unexpected_percent"], "sample_values": sample,
                                 "recorded_ts": now})
        self.store.append_once("fact_data_quality", rows, token=token)
        self.store.append_once("stage_dq_failures", failures, token=token)
        self.store.append_once(WATERMARKS, watermark_rows(key, dq, now), token=token)

    def _record_landing(self, ctx: RunContext, now: datetime, token: str, ledger_all: list[dict]) -> None:
        """Source A after bronze: raw events, counts, volumes, arrivals, latency, schema drift, rejected files
        (``ledger_all``: every row of ``audit_ingest``)."""
        from pyspark import StorageLevel

        from cpbi_spark.platform import ingest_audit as A

        store = self.store
        token = f"platform/{ctx.run_id}/bronze-batch"  # per batch: a second bronze attempt of the run adds nothing
        ledger = [e for e in ledger_all if e["batch_id"] == ctx.run_id]
        # Raw events come from the files this batch landed: with none (a scheduled run with nothing new)
        # there is nothing to read, and no Spark job is spent finding that out.
        landed = any(e["status"] == "landed" for e in ledger)
        events = A.raw_events(ctx, store, ctx.run_id) if landed else None
        if events is not None:
            events = events.persist(StorageLevel.MEMORY_AND_DISK)
            # Every table below holds rows of this batch only (keys include the batch or a file of it):
            # appended once per batch, never updated.
            store.append_once("fact_raw_events", events, token=token)
            store.append_once("fact_event_counts", A.event_counts(events), token=token)
            store.append_once("stage_duplicate_keys", A.duplicate_keys(events), token=token)
            events.unpersist()
        volumes, batch = A.volume_rows(ledger, ctx.run_id)
        store.append_once("fact_source_volumes", volumes, token=token)
        store.append_once("dim_batch", batch, token=token)
        store.append_once("fact_ingest_latency", A.latency_rows(ledger), token=token)
        store.append_once("fact_file_arrivals", A.arrival_rows(ctx, ledger_all, now), token=token)
        versions, drift = A.drift_rows(ctx, ledger, store.rows("dim_schema_version"), now)
        store.upsert("dim_schema_version", versions, insert_only=True)
        store.upsert("audit_schema_drift", drift, insert_only=True)
        store.upsert("ref_parsing_errors", A.rejected_file_rows(ledger, ctx.run_id, now), insert_only=True)

    # ------------------------------------------------------------------------------------------- roll-ups
    def refresh(self, ctx: RunContext, now: datetime | None = None) -> None:
        """Recompute the roll-ups and reference tables of A–D from the per-stage records (see module doc)."""
        from cpbi_spark.platform.rollups import refresh_all

        refresh_all(ctx, self.store, now or _now(), written=self.written, first=not self.refreshed)
        self.refreshed = True
