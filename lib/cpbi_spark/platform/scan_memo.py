"""Results of the platform's whole-table scans, kept with the table states they were computed on.

The roll-up refresh after a run reads some tables whole: the PII scan (silver and gold PII columns against
the values landed in bronze), the policy audit (PII columns hashed or masked, the oldest row of each table
under a retention rule), the merchant regions and two reconciliation counts. Each result is stored in
``ctl_scan_memo`` with the state of every table it read (:meth:`~cpbi_spark.lakehouse.Lakehouse.state`:
the table's Delta identity and version, which name one content) and a digest of the conf it depends on.
A later refresh, in the same run or in the next one, whose inputs are at the same states reuses the result
instead of reading the tables again; a table at a new version, a table created again, or a changed conf is
scanned again. Where the engine cannot tell a table's identity, nothing is reused.

So a scheduled run with nothing new scans nothing, and an analysis after gold does not scan the unchanged
silver and gold tables a second time.

Example:
    >>> memo = ScanMemo(store)                                                          # doctest: +SKIP
    >>> memo.value("rows", "stage_quarantine", ["stage_quarantine"],
    ...            lambda: store.lake.read("stage_quarantine").count())                 # doctest: +SKIP
    12
    >>> memo.save()                                                                     # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cpbi_spark.platform.store import PlatformStore

MEMO = "ctl_scan_memo"
MISSING = object()  # no result stored for these inputs (a stored result may itself be None)
_ABSENT = "absent"  # the state of a table that does not exist (a scan of it has a known, empty answer)


def _digest(conf: Any) -> str:
    return hashlib.sha256(json.dumps(conf, sort_keys=True, default=str).encode()).hexdigest()[:16]


class ScanMemo:
    """Stored scan results of one platform store (see the module doc); :meth:`save` writes what changed."""

    def __init__(self, store: PlatformStore):
        self.store = store
        self._known: dict[tuple[str, str], dict] | None = None
        self._dirty = False
        self.reused = 0  # results taken from the memo since this object was made (the run log says how many)
        self.computed = 0

    def _rows(self) -> dict[tuple[str, str], dict]:
        if self._known is None:  # read once per store: later refreshes of the run see what earlier ones kept
            self._known = {(r["scan"], r["subject"]): r for r in self.store.rows(MEMO)}
        return self._known

    def inputs(self, tables: Iterable[str], conf: Any = None) -> str | None:
        """The key of a result: the state of each table read and a digest of ``conf``; None when a table's
        state is unknown (the result is then computed every time and not kept)."""
        states = {}
        for table in sorted(set(tables)):
            if not self.store.lake.exists(table):
                states[table] = _ABSENT
                continue
            state = self.store.lake.state(table)
            if state is None:
                return None
            states[table] = state
        return json.dumps({"tables": states, "conf": _digest(conf)}, sort_keys=True)

    def lookup(self, scan: str, subject: str, inputs: str | None) -> Any:
        """The stored result of ``scan`` on ``subject`` when it was computed on ``inputs``, else :data:`MISSING`."""
        row = self._rows().get((scan, subject)) if inputs is not None else None
        if row is None or row["inputs"] != inputs:
            return MISSING
        self.reused += 1
        return json.loads(row["result"])

    def keep(self, scan: str, subject: str, inputs: str | None, result: Any) -> None:
        """Store ``result`` (JSON-able) as computed on ``inputs`` (nothing is kept when they are unknown)."""
        self.computed += 1
        if inputs is None:
            return
        self._rows()[(scan, subject)] = {
            "scan": scan, "subject": subject, "inputs": inputs, "result": json.dumps(result, default=str),
            "run_id": self.store.ctx.run_id, "computed_ts": datetime.now(timezone.utc)}
        self._dirty = True

    def value(self, scan: str, subject: str, tables: Iterable[str], compute: Callable[[], Any], *,
              conf: Any = None) -> Any:
        """The result of ``compute()`` on ``tables`` as they are now: stored, or computed and kept.

        ``inputs`` are read before ``compute`` runs, so a table committed to in between is at a later state
        than the key says, and the result is computed again next time (never reused for a state it did not see).
        """
        key = self.inputs(tables, conf)
        found = self.lookup(scan, subject, key)
        if found is not MISSING:
            return found
        result = compute()
        self.keep(scan, subject, key, result)
        return result

    def save(self) -> None:
        """Write the kept results (``ctl_scan_memo`` is replaced only when something new was kept)."""
        if self._dirty and self._known is not None:
            self.store.replace(MEMO, list(self._known.values()))
            self._dirty = False
