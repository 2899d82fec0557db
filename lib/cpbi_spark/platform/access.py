"""Source C (access): the table reader that enforces the roles of ``platform.roles``.

A role reads a table when it has a grant on the table's layer or on the table itself; otherwise
:class:`~cpbi_spark.errors.AccessDenied` says which grant is missing. A role without the PII grant sees
personal-data columns (the table's ``pii:`` policies and ``platform.pii_columns``) masked. Every decision
(granted, masked, denied) is appended to ``audit_access``.

Example:
    >>> reader = SecureReader(ctx, "analyst")                                  # doctest: +SKIP
    >>> reader.read("fact_transactions").count()                               # doctest: +SKIP
    >>> reader.read("raw_customers")                                           # doctest: +SKIP
    Traceback (most recent call last):
    cpbi_spark.errors.AccessDenied: role 'analyst' may not read raw_customers: no grant on layer bronze ...
"""

from __future__ import annotations

import getpass
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from cpbi_spark.errors import AccessDenied

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from cpbi_spark.config import CpbiConfig
    from cpbi_spark.runtime import RunContext


@dataclass(frozen=True)
class Decision:
    """What a role may do with a table: ``denied``, ``masked`` (PII columns masked) or ``granted``."""

    decision: str
    reason: str
    masked_columns: tuple[str, ...] = ()


def decide(config: CpbiConfig, role: str, table: str, columns: list[str]) -> Decision:
    """The access decision for ``role`` reading ``table`` with ``columns`` (pure).

    >>> from cpbi_spark.config import load_config
    >>> decide(load_config(env="ci"), "analyst", "raw_customers", ["email"]).decision     # doctest: +SKIP
    'denied'
    """
    from cpbi_spark.platform.governance import pii_columns_of

    roles = config.platform.roles
    if role not in roles:
        return Decision("denied", f"unknown role {role!r}; roles are {', '.join(sorted(roles)) or 'none'}")
    spec, cfg = roles[role], config.table(table)
    if cfg.layer not in spec.layers and table not in spec.tables:
        return Decision("denied", f"no grant on layer {cfg.layer} or on table {table} (role {role!r} may read "
                                  f"layers {', '.join(spec.layers) or 'none'})")
    pii = [c for c in pii_columns_of(config, table, columns) if c in columns]
    if pii and not spec.pii:
        return Decision("masked", f"role {role!r} has no PII grant", tuple(pii))
    return Decision("granted", "grant on " + (f"layer {cfg.layer}" if cfg.layer in spec.layers else f"table {table}"))


class SecureReader:
    """Reads lakehouse tables as a role; see the module doc."""

    def __init__(self, ctx: RunContext, role: str, *, user: str | None = None):
        from cpbi_spark.platform.store import PlatformStore

        self.ctx, self.role = ctx, role
        self.user = user or getpass.getuser()
        self.store = PlatformStore(ctx)

    def read(self, name: str) -> DataFrame:
        """The table as this role may see it; raises AccessDenied (after auditing) without a grant."""
        from pyspark.sql import functions as F

        from cpbi_spark.silver.pii import mask_value

        cfg = self.ctx.config.table(name)
        columns = list(cfg.columns)
        df = None
        if cfg.as_received and self.ctx.lake.exists(name):
            df = self.ctx.lake.read(name)
            columns = df.columns
        decision = decide(self.ctx.config, self.role, name, columns)
        self._audit(name, cfg.layer, decision)
        if decision.decision == "denied":
            raise AccessDenied(f"role {self.role!r} may not read {name}: {decision.reason}")
        df = df if df is not None else self.ctx.lake.read(name)
        for column in decision.masked_columns:
            df = df.withColumn(column, mask_value(F.col(column)))
        return df

    def _audit(self, name: str, layer: str, decision: Decision) -> None:
        now = datetime.now(timezone.utc)
        row = {"decision_id": f"{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}", "role": self.role, "dataset_id": name,
               "layer": layer, "decision": decision.decision, "reason": decision.reason,
               "masked_columns": ",".join(decision.masked_columns) or None, "user_name": self.user,
               "decided_ts": now}
        self.store.append_once("audit_access", [row], token=f"access/{row['decision_id']}")
