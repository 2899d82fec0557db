"""Validation rules as data: each rule names a reason and a failing condition.

:func:`classify` tags each row with the FIRST rule it fails (rules are ordered from the
most basic, a line the parser could not split, to business limits), so every rejected
record has exactly one reason and the counts per reason add up to the rejected rows.

Example:
    >>> rules = [Rule("missing_key", F.col("txn_id").isNull(), F.lit("txn_id is empty"))]
    >>> classify(df, rules).filter("_reject_reason IS NULL")      # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

REASON = "_reject_reason"
DETAIL = "_reject_detail"
_RULE = "_reject_rule"


@dataclass(frozen=True)
class Rule:
    """A validation rule: rows where ``failed`` is true are rejected with ``reason``."""

    reason: str
    failed: Column
    detail: Column | None = None


def classify(df: DataFrame, rules: Sequence[Rule]) -> DataFrame:
    """Add ``_reject_reason``/``_reject_detail``: the first failing rule, NULL for a valid row."""
    from pyspark.sql import functions as F

    if not rules:
        return df.withColumn(REASON, F.lit(None).cast("string")).withColumn(DETAIL, F.lit(None).cast("string"))
    # The index of the first failing rule is computed once; reason and detail are looked up from it
    # (each rule's condition inlined into both would be evaluated twice per row).
    first = F.lit(None).cast("int")
    for i, rule in reversed(list(enumerate(rules))):
        first = F.when(F.coalesce(rule.failed, F.lit(False)), F.lit(i)).otherwise(first)
    detail = F.lit(None).cast("string")
    for i, rule in enumerate(rules):
        detail = F.when(F.col(_RULE) == i, rule.detail if rule.detail is not None else F.lit(rule.reason)
                        ).otherwise(detail)
    reasons = F.array(*[F.lit(r.reason) for r in rules])
    return (df.withColumn(_RULE, first)
            .withColumn(REASON, F.when(F.col(_RULE).isNotNull(), F.element_at(reasons, F.col(_RULE) + 1)))
            .withColumn(DETAIL, detail).drop(_RULE))


def missing(columns: Sequence[str], parsed: dict[str, Column]) -> Rule:
    """Any of ``columns`` (parsed values) is NULL -> ``missing_key`` naming the first missing one."""
    from pyspark.sql import functions as F

    failed = F.lit(False)
    detail = F.lit(None).cast("string")
    for c in reversed(columns):
        failed = failed | parsed[c].isNull()
        detail = F.when(parsed[c].isNull(), F.lit(f"{c} is empty")).otherwise(detail)
    return Rule("missing_key", failed, detail)


def bad_type(raw: dict[str, Column], parsed: dict[str, Column], expected: dict[str, str]) -> Rule:
    """A raw value is present but does not parse as its type -> ``bad_type`` with the value."""
    from pyspark.sql import functions as F

    failed = F.lit(False)
    detail = F.lit(None).cast("string")
    for c in reversed(list(expected)):
        bad = raw[c].isNotNull() & (F.trim(raw[c]) != "") & parsed[c].isNull()
        failed = failed | bad
        detail = F.when(bad, F.concat(F.lit(f"{c} is not a {expected[c]}: "), raw[c])).otherwise(detail)
    return Rule("bad_type", failed, detail)


def record_json(raw_columns: Sequence[Column]) -> Column:
    """The record as received, as the JSON object the quarantine stores (file column names as keys)."""
    from pyspark.sql import functions as F

    return F.to_json(F.struct(*raw_columns))


def quarantine_frame(rejected: DataFrame, *, stage: str, source: str, raw_columns: Sequence[Column] | None = None,
                     run_id: str, at, payload: Column | None = None) -> DataFrame:
    """Rows for ``stage_quarantine``: the reason and the record exactly as received.

    The record is ``raw_columns`` as one JSON object, or ``payload`` when that JSON was made earlier.
    """
    from pyspark.sql import functions as F

    if payload is None:
        if raw_columns is None:
            raise ValueError("quarantine_frame needs raw_columns or payload")
        payload = record_json(raw_columns)
    return rejected.select(
        F.lit(stage).alias("stage"), F.lit(source).alias("source"), F.col("_record_id").alias("record_id"),
        F.col("_record_hash").alias("record_hash"), F.col("_batch_id").alias("batch_id"),
        F.col(REASON).alias("reason"), F.col(DETAIL).alias("detail"), payload.alias("payload"),
        F.lit(run_id).alias("run_id"), F.lit(at).cast("timestamp").alias("quarantined_at"))
