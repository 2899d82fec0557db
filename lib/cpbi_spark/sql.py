"""``cpbi sql``: Spark SQL over the lakehouse tables, read as an access role.

Every table a query names is registered as a temporary view under its own name, read through
:class:`~cpbi_spark.platform.access.SecureReader`: a role without the layer grant gets
``AccessDenied`` and a role without the PII grant sees personal columns masked, exactly as in the
dashboard and the notebooks. Only the tables the query names are read (each read is audited in
``audit_access``), so a query costs nothing for the tables it does not use.

Example:
    >>> referenced_tables("SELECT * FROM fact_transactions t JOIN dim_customer c USING (customer_sk)",
    ...                   ["dim_customer", "fact_transactions", "dim_product"])
    ['dim_customer', 'fact_transactions']
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from cpbi_spark.runtime import RunContext

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'")


def referenced_tables(query: str, names: Iterable[str]) -> list[str]:
    """The known table names that appear as words in ``query`` (string literals ignored), sorted."""
    known = {n.lower(): n for n in names}
    words = {w.lower() for w in _WORD.findall(_QUOTED.sub("''", query))}
    return sorted(known[w] for w in words if w in known)


def register_tables(ctx: RunContext, query: str, role: str) -> list[str]:
    """Register every table ``query`` names (and that exists) as a temp view read as ``role``."""
    from cpbi_spark.platform.access import SecureReader

    reader = SecureReader(ctx, role)
    registered = []
    for name in referenced_tables(query, ctx.config.tables):
        if ctx.lake.exists(name):
            reader.read(name).createOrReplaceTempView(name)
            registered.append(name)
    return registered


def run_sql(ctx: RunContext, query: str, role: str) -> DataFrame:
    """The result of one Spark SQL statement over the tables ``role`` may read."""
    register_tables(ctx, query, role)
    return ctx.spark.sql(query)
