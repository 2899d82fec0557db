"""Source B (operations): structured JSON-lines logs per run, error codes, incidents and log retention.

While a stage runs, every record of the ``cpbi`` loggers is written as one JSON line to
``<storage.outputs>/logs/<run_id>.jsonl`` (service = the job, instance = the run); after the stage the
new lines are loaded into ``fact_logs``. A failure is classified by the first matching rule of
``platform.error_codes`` (``ref_error_codes``) and opens a ``stage_incidents`` row, resolved when the
stage next succeeds. ``platform.retention`` trims old rows and log files (``stage_trimmed_logs``).

Example:
    >>> rules = [ErrorCodeConfig(code="DQ-BLOCKING", exception="QualityError"),
    ...          ErrorCodeConfig(code="UNCLASSIFIED", exception="BaseException")]
    >>> from cpbi_spark.errors import QualityError
    >>> classify_error(QualityError("blocked"), rules).code, classify_error(ValueError("x"), rules).code
    ('DQ-BLOCKING', 'UNCLASSIFIED')
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cpbi_spark.config.platform import ErrorCodeConfig

if TYPE_CHECKING:
    from cpbi_spark.platform.scan_memo import ScanMemo
    from cpbi_spark.platform.store import PlatformStore
    from cpbi_spark.runtime import RunContext

LOGGER = "cpbi"
_UNCLASSIFIED = ErrorCodeConfig(code="UNCLASSIFIED", exception="BaseException", severity="high",
                                description="an error no rule classifies")


def classify_error(error: BaseException, rules: list[ErrorCodeConfig]) -> ErrorCodeConfig:
    """The first rule whose exception class is in the error's hierarchy and whose ``match`` is in the message."""
    names = {cls.__name__ for cls in type(error).__mro__}
    message = str(error)
    for rule in rules:
        if rule.exception in names and (rule.match is None or re.search(rule.match, message)):
            return rule
    return _UNCLASSIFIED


def logs_folder(ctx: RunContext) -> str:
    return f"{ctx.config.storage.outputs.rstrip('/')}/logs"


def log_path(ctx: RunContext) -> str:
    """``<storage.outputs>/logs/<run_id>.jsonl``."""
    return f"{logs_folder(ctx)}/{ctx.run_id}.jsonl"


def _fs(uri: str):
    from cpbi_spark.ingest.files import _filesystem

    return _filesystem(uri)


@dataclass
class _Active:
    run_id: str
    stage: str
    path: str
    local: bool
    buffer: list[str]


class JsonLinesRouter(logging.Handler):
    """One handler on the ``cpbi`` logger: routes records to the JSON-lines file of the active stage's run.

    Records logged while no stage is active (between stages, other libraries' tests) are not written.
    """

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self._lock_active = threading.Lock()
        self.active: _Active | None = None
        self.seq: dict[str, int] = {}

    def activate(self, run_id: str, stage: str, path: str, level: str) -> None:
        local = "://" not in path or path.startswith("file://")
        if local:
            Path(path.replace("file://", "")).parent.mkdir(parents=True, exist_ok=True)
        with self._lock_active:
            self.active = _Active(run_id, stage, path, local, [])
        self.setLevel(getattr(logging, level))

    def deactivate(self) -> None:
        """Stop routing; a remote log file gets the stage's lines appended now (object stores do not append)."""
        with self._lock_active:
            active, self.active = self.active, None
        if active is not None and not active.local and active.buffer:
            filesystem, path = _fs(active.path)
            try:
                with filesystem.open_input_stream(path) as fh:
                    before = fh.read()
            except (FileNotFoundError, OSError):
                before = b""
            with filesystem.open_output_stream(path) as fh:
                fh.write(before + "".join(active.buffer).encode())

    def emit(self, record: logging.LogRecord) -> None:
        active = self.active
        if active is None:
            return
        try:
            seq = self.seq.get(active.run_id, 0) + 1
            self.seq[active.run_id] = seq
            exc = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else None
            line = json.dumps({
                "seq": seq, "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
                "service": f"cpbi-{active.stage}", "instance": active.run_id, "stage": active.stage,
                "level": record.levelname, "level_no": record.levelno, "logger": record.name,
                "message": record.getMessage(), "module": record.module, "line": record.lineno, "exc_type": exc,
            }, default=str) + "\n"
            if active.local:
                with open(active.path.replace("file://", ""), "a", encoding="utf-8") as fh:
                    fh.write(line)
            else:
                active.buffer.append(line)
        except Exception:  # a log handler must never break the job it observes
            self.handleError(record)


_ROUTER: JsonLinesRouter | None = None


def router(level: str) -> JsonLinesRouter:
    """The process's router, attached once to the ``cpbi`` logger (which must let ``level`` records through)."""
    global _ROUTER
    logger = logging.getLogger(LOGGER)
    if _ROUTER is None:
        _ROUTER = JsonLinesRouter()
        logger.addHandler(_ROUTER)
    wanted = getattr(logging, level)
    if logger.getEffectiveLevel() > wanted:
        logger.setLevel(wanted)  # otherwise INFO records are dropped before any handler sees them
    return _ROUTER


def read_log_lines(path: str, after_seq: int = 0) -> list[dict]:
    """Parsed records of a JSON-lines log file with ``seq`` greater than ``after_seq``."""
    filesystem, local = _fs(path)
    try:
        with filesystem.open_input_stream(local) as fh:
            text = fh.read().decode("utf-8")
    except (FileNotFoundError, OSError):
        return []
    out = []
    for line in text.splitlines():
        if line.strip():
            record = json.loads(line)
            if record["seq"] > after_seq:
                out.append(record)
    return out


def log_rows(records: list[dict]) -> list[dict]:
    """``fact_logs`` rows from parsed log records (pure)."""
    return [{"log_id": f"{r['instance']}:{r['seq']:08d}", "service": r["service"], "instance": r["instance"],
             "stage": r["stage"], "level": r["level"], "level_no": r["level_no"], "logger": r["logger"],
             "message": r["message"][:4000], "logged_ts": datetime.fromisoformat(r["ts"]), "module": r["module"],
             "line": r["line"], "exc_type": r["exc_type"]} for r in records]


def incident_row(ctx: RunContext, stage: str, attempt: int, error: BaseException, rule: ErrorCodeConfig,
                 at: datetime) -> dict:
    return {"incident_id": f"{ctx.run_id}:{stage}:{attempt}", "run_id": ctx.run_id, "stage": stage,
            "attempt": attempt, "error_code": rule.code, "error_class": type(error).__name__,
            "message": str(error)[:2000], "severity": rule.severity, "status": "open", "opened_ts": at,
            "resolved_ts": None, "resolved_by_run_id": None}


def resolve_incidents(store: PlatformStore, stage: str, run_id: str, at: datetime) -> int:
    """Mark the open incidents of ``stage`` resolved by this successful run; returns how many."""
    open_rows = store.rows("stage_incidents", f"stage = '{stage}' AND status = 'open'")
    if not open_rows:
        return 0
    store.upsert("stage_incidents", [{**r, "status": "resolved", "resolved_ts": at, "resolved_by_run_id": run_id}
                                     for r in open_rows])
    return len(open_rows)


def incident_metrics(incidents: list[dict]) -> list[dict]:
    """``fact_incident_metrics`` rows: per opening day and error code (pure).

    >>> from datetime import datetime as D
    >>> rows = incident_metrics([{"opened_ts": D(2026, 1, 1, 10), "error_code": "X", "severity": "high",
    ...     "status": "resolved", "resolved_ts": D(2026, 1, 1, 11)}])
    >>> rows[0]["resolved"], rows[0]["mean_seconds_to_resolve"]
    (1, 3600.0)
    """
    groups: dict[tuple, list[dict]] = {}
    for r in incidents:
        groups.setdefault((r["opened_ts"].date(), r["error_code"]), []).append(r)
    out = []
    for (day, code), rows in sorted(groups.items()):
        resolved = [r for r in rows if r["status"] == "resolved" and r["resolved_ts"]]
        spans = [(r["resolved_ts"] - r["opened_ts"]).total_seconds() for r in resolved]
        out.append({"incident_date": day, "error_code": code, "severity": rows[0]["severity"], "opened": len(rows),
                    "resolved": len(resolved), "still_open": len(rows) - len(resolved),
                    "mean_seconds_to_resolve": sum(spans) / len(spans) if spans else None})
    return out


def log_file_rows(ctx: RunContext, loaded: set[str]) -> list[dict]:
    """``audit_log_files`` rows of the JSON-lines files under the logs folder (``loaded``: runs recorded)."""
    from pyarrow import fs as pafs

    filesystem, base = _fs(logs_folder(ctx))
    rows = []
    info = filesystem.get_file_info(base)
    if info.type != pafs.FileType.NotFound:
        for entry in filesystem.get_file_info(pafs.FileSelector(base)):
            if entry.type != pafs.FileType.File or not entry.path.endswith(".jsonl"):
                continue
            with filesystem.open_input_stream(entry.path) as fh:
                data = fh.read()
            run_id = entry.path.rsplit("/", 1)[-1][: -len(".jsonl")]
            rows.append({"file_path": entry.path, "run_id": run_id, "lines": data.count(b"\n"), "bytes": len(data),
                         "sha256": hashlib.sha256(data).hexdigest(), "loaded_ts": None,
                         "status": "loaded" if run_id in loaded else "written"})
    return rows


def trim(ctx: RunContext, store: PlatformStore, now: datetime | None = None,
         memo: ScanMemo | None = None) -> list[dict]:
    """Apply ``platform.retention``: delete rows and log files older than each rule's days.

    Returns the ``stage_trimmed_logs`` rows of what was trimmed (also written). A table's oldest row is
    read once per table state (``memo``; the policy audit that follows reuses it when nothing was trimmed).
    """
    from pyarrow import fs as pafs

    from cpbi_spark.platform.governance import oldest_value
    from cpbi_spark.platform.scan_memo import ScanMemo

    now = now or datetime.now(timezone.utc)
    memo = memo or ScanMemo(store)
    trimmed: list[dict] = []
    for target, rule in ctx.config.platform.retention.items():
        cutoff = now - timedelta(days=rule.days)
        # Spark reads and compares timestamps in UTC (the session time zone), naive.
        naive_cutoff = cutoff.astimezone(timezone.utc).replace(tzinfo=None) if cutoff.tzinfo else cutoff
        cutoff_sql = naive_cutoff.strftime("%Y-%m-%d %H:%M:%S")
        row = {"trim_id": f"{ctx.run_id}:{target}", "run_id": ctx.run_id, "target": target,
               "cutoff_ts": cutoff, "rows_trimmed": 0, "files_trimmed": 0, "bytes_trimmed": 0, "trimmed_ts": now}
        if rule.kind == "table":
            if not store.lake.exists(target):
                continue
            oldest = oldest_value(store, memo, target, rule.ts_column)
            if oldest is None or oldest >= naive_cutoff:  # nothing older than the cutoff: no Spark job to delete
                continue
            predicate = f"{rule.ts_column} < TIMESTAMP '{cutoff_sql}'"
            info = store.lake.delete(target, predicate)
            row["rows_trimmed"] = int(info.metrics.get("num_deleted", 0))
        else:
            filesystem, base = _fs(logs_folder(ctx))
            if filesystem.get_file_info(base).type == pafs.FileType.NotFound:
                continue
            for entry in filesystem.get_file_info(pafs.FileSelector(base)):
                if entry.type == pafs.FileType.File and entry.path.endswith(".jsonl") and entry.mtime < cutoff:
                    row["files_trimmed"] += 1
                    row["bytes_trimmed"] += entry.size
                    filesystem.delete_file(entry.path)
        if row["rows_trimmed"] or row["files_trimmed"]:
            trimmed.append(row)
    if trimmed:
        store.upsert("stage_trimmed_logs", trimmed)
    return trimmed


def error_code_rows(rules: list[ErrorCodeConfig]) -> list[dict[str, Any]]:
    return [{"error_code": r.code, "exception": r.exception, "match": r.match, "severity": r.severity,
             "description": r.description, "runbook": r.runbook, "priority": i + 1} for i, r in enumerate(rules)]
