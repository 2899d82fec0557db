"""What each analysis needs from the data, checked before it runs.

An export may lack customer ids (basket-per-line files), times, prices or promotion
exposures. Instead of failing deep inside Spark, ``cpbi run`` checks the gold tables first
and records a skipped analysis with the reason ("no customer id: cohorts need to know who
bought").

Example:
    >>> missing_for(ctx, "cohorts")          # doctest: +SKIP
    'no transaction line has a customer id'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cpbi_spark.runtime import RunContext


def _lines(ctx: RunContext) -> str | None:
    if not ctx.lake.exists("fact_transactions") or ctx.lake.read("fact_transactions").limit(1).count() == 0:
        return "the sources hold no transaction lines"
    return None


def _column_present(column: str, what: str) -> Callable[[RunContext], str | None]:
    def check(ctx: RunContext) -> str | None:
        from pyspark.sql import functions as F

        reason = _lines(ctx)
        if reason:
            return reason
        if ctx.lake.read("fact_transactions").filter(F.col(column).isNotNull()).limit(1).count() == 0:
            return f"no transaction line has {what}"
        return None

    return check


def _exposures(ctx: RunContext) -> str | None:
    if not ctx.lake.exists("fact_promotion_exposures") or \
            ctx.lake.read("fact_promotion_exposures").limit(1).count() == 0:
        return "the sources hold no promotion exposures (who was offered what)"
    return None


CHECKS: dict[str, Callable[[RunContext], str | None]] = {
    "lines": _lines,
    "customers": _column_present("customer_id", "a customer id"),
    "timestamps": _column_present("posted_ts", "a time"),
    "amounts": _column_present("amount_reporting", "an amount"),
    "exposures": _exposures,
}

# analysis -> what it needs (checked in this order; the first missing need is the reason)
NEEDS: dict[str, tuple[str, ...]] = {
    "baskets": ("lines",),
    "cohorts": ("lines", "customers", "timestamps"),
    "clv": ("lines", "customers", "timestamps", "amounts"),
    "uplift": ("exposures",),
    "drivers": ("lines", "customers", "timestamps"),
}


def missing_for(ctx: RunContext, analysis: str) -> str | None:
    """Why ``analysis`` cannot run on this data, or None when it can."""
    for need in NEEDS.get(analysis, ()):
        reason = CHECKS[need](ctx)
        if reason:
            return reason
    return None
