"""``cpbi sql``: read-only Spark SQL over the lakehouse tables, read as an access role.

Every table a query names is registered as a temporary view under its own name, read through
:class:`~cpbi_spark.platform.access.SecureReader`: a role without the layer grant gets
``AccessDenied`` and a role without the PII grant sees personal columns masked, as through the
library's reader in a notebook. Only the tables the query names are read (each read is audited in
``audit_access``). Statements that write or change anything are refused, and reading files by path
(``delta.`/path```) is switched off while the query is analysed, so the views are the only way in.

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
# string literals ('...' and "..." in Spark SQL) and comments: table names inside them are not references
_NOT_CODE = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|--[^\n]*|/\*.*?\*/", re.S)
_READ_ONLY_START = {"select", "with", "from", "values", "table", "show", "describe", "desc", "explain"}
_WRITES = {"insert", "delete", "update", "merge", "drop", "create", "alter", "truncate", "overwrite", "refresh",
           "cache", "uncache", "msck", "load", "set", "reset", "add", "use", "analyze", "repair", "vacuum",
           "optimize", "restore", "clone", "grant", "revoke"}


def referenced_tables(query: str, names: Iterable[str]) -> list[str]:
    """The known table names that appear as words in ``query`` (string literals ignored), sorted."""
    known = {n.lower(): n for n in names}
    words = {w.lower() for w in _WORD.findall(_NOT_CODE.sub(" ", query))}
    return sorted(known[w] for w in words if w in known)


def read_only_problem(query: str) -> str | None:
    """Why ``query`` is not a read-only statement, or None when it is.

    >>> read_only_problem("WITH t AS (SELECT 1) SELECT * FROM t") is None
    True
    >>> read_only_problem("DELETE FROM fact_transactions")
    'cpbi sql runs read-only statements; this one starts with DELETE'
    """
    words = [w.lower() for w in _WORD.findall(_NOT_CODE.sub(" ", query))]
    if not words:
        return "the statement is empty"
    if words[0] not in _READ_ONLY_START:
        return f"cpbi sql runs read-only statements; this one starts with {words[0].upper()}"
    writes = sorted({w.upper() for w in words} & {w.upper() for w in _WRITES})
    if writes:
        return f"cpbi sql runs read-only statements; this one contains {', '.join(writes)}"
    return None


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
    """The result of one read-only Spark SQL statement over the tables ``role`` may read.

    Raises :class:`~cpbi_spark.errors.AccessDenied` for a statement that would write or change anything.
    """
    from cpbi_spark.errors import AccessDenied

    problem = read_only_problem(query)
    if problem:
        raise AccessDenied(problem)
    register_tables(ctx, query, role)
    conf = ctx.spark.conf
    before = conf.get("spark.sql.runSQLOnFiles", "true")
    conf.set("spark.sql.runSQLOnFiles", "false")  # no delta.`/path` around the views; analysis happens in sql()
    try:
        return ctx.spark.sql(query)
    finally:
        conf.set("spark.sql.runSQLOnFiles", before)
