"""``cpbi status``: the operator's one-screen view of the last runs, from the platform tables.

Per run: its stages (status, seconds), rows landed / in / accepted / quarantined / duplicate, the
data-quality pass rate, the cost, and any incident.

Example:
    >>> print(format_status(run_status(ctx, last=3)))           # doctest: +SKIP
    run 20261125T140102-3f9a1c2e  env=ci  started 2026-11-25 14:01:02  cost 0.000412 USD
      stages     bronze succeeded 12.3s | silver succeeded 20.1s | gold blocked 5.2s
      rows       landed 1,234 | silver in 1,230, accepted 1,200, quarantined 25, duplicate 5
      quality    30/31 checks passed (96.8%), 1 blocking failure
      incidents  gold DQ-BLOCKING open: stage gold: 1 blocking data-quality check(s) failed ...
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cpbi_spark.runtime import RunContext


@dataclass
class RunStatus:
    run_id: str
    env: str | None
    started: object
    stages: list[tuple[str, str, float | None]] = field(default_factory=list)
    landed: int = 0
    rows_in: int = 0
    accepted: int = 0
    quarantined: int = 0
    duplicate: int = 0
    checks: int = 0
    passed: int = 0
    blocking_failed: int = 0
    cost: Decimal | None = None
    currency: str = "USD"
    incidents: list[tuple[str, str, str, str]] = field(default_factory=list)


def run_status(ctx: RunContext, last: int = 5) -> list[RunStatus]:
    """Status of the ``last`` runs (newest first) from the platform tables; [] before any recorded run."""
    from cpbi_spark.platform.store import PlatformStore

    store = PlatformStore(ctx)
    jobs = store.rows("fact_job_runs")
    if not jobs:
        return []
    first: dict[str, object] = {}
    for j in jobs:
        first[j["run_id"]] = min(first.get(j["run_id"], j["started_ts"]), j["started_ts"])
    runs = sorted(first, key=lambda r: (first[r], r), reverse=True)[:last]
    wanted = ", ".join(f"'{r}'" for r in runs)
    where = f"run_id IN ({wanted})"
    envs = {r["run_id"]: r["env"] for r in store.rows("dim_run", where)}
    out = {r: RunStatus(r, envs.get(r), first[r]) for r in runs}
    for j in sorted(jobs, key=lambda j: (j["started_ts"], j["attempt"])):
        if j["run_id"] in out:
            out[j["run_id"]].stages.append((j["stage"], j["status"], j["seconds"]))
    for v in store.rows("fact_source_volumes", where):
        out[v["run_id"]].landed += v["rows"] or 0
    for b in store.rows("ctl_batch_log", f"{where} AND stage = 'silver'"):
        s = out[b["run_id"]]
        s.rows_in += b["rows_in"] or 0
        s.accepted += b["rows_accepted"] or 0
        s.quarantined += b["rows_quarantined"] or 0
        s.duplicate += b["rows_duplicate"] or 0
    for d in store.rows("fact_data_quality", where):
        s = out[d["run_id"]]
        s.checks += 1
        s.passed += d["check_status"] == "passed"
        s.blocking_failed += d["check_status"] != "passed" and d["severity"] == "blocking"
    costs: dict[str, Decimal] = defaultdict(Decimal)
    for c in store.rows("fact_cost_usage", where):
        costs[c["run_id"]] += c["cost"]
        out[c["run_id"]].currency = c["currency"]
    for r, total in costs.items():
        out[r].cost = total
    for i in store.rows("stage_incidents", where):
        out[i["run_id"]].incidents.append((i["stage"], i["error_code"], i["status"], i["message"] or ""))
    return [out[r] for r in runs]


def format_status(runs: list[RunStatus], width: int = 120) -> str:
    """The one-screen text of :func:`run_status` (pure)."""
    if not runs:
        return "no recorded run yet (platform.enabled and run a stage: cpbi run all)"
    lines = []
    for s in runs:
        started = f"{s.started:%Y-%m-%d %H:%M:%S}" if hasattr(s.started, "strftime") else str(s.started)
        cost = f"{s.cost:.6f} {s.currency}" if s.cost is not None else "not priced yet"
        lines.append(f"run {s.run_id}  env={s.env or '?'}  started {started}  cost {cost}")
        stages = " | ".join(f"{n} {st} {sec:.1f}s" if sec is not None else f"{n} {st}" for n, st, sec in s.stages)
        lines.append(f"  stages     {stages}")
        lines.append(f"  rows       landed {s.landed:,} | silver in {s.rows_in:,}, accepted {s.accepted:,}, "
                     f"quarantined {s.quarantined:,}, duplicate {s.duplicate:,}")
        if s.checks:
            rate = 100.0 * s.passed / s.checks
            blocking = f", {s.blocking_failed} blocking failure(s)" if s.blocking_failed else ""
            lines.append(f"  quality    {s.passed}/{s.checks} checks passed ({rate:.1f}%){blocking}")
        else:
            lines.append("  quality    no check ran (no table with a suite changed)")
        if s.incidents:
            for stage, code, status, message in s.incidents:
                text = f"  incidents  {stage} {code} {status}: {' '.join(message.split())}"
                lines.append(text if len(text) <= width else text[: width - 3] + "...")
        else:
            lines.append("  incidents  none")
    return "\n".join(lines)
