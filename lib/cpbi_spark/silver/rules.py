"""Line classification rules of a source mapping: returns, exclusions, constant columns.

Real exports mark returns their own way (a ``C`` prefix on the invoice number, a negative
quantity) and mix non-product lines (postage, fees) into the sales. These pure helpers turn
the mapping's declarative rules into column expressions and validation rules.

Example:
    >>> typed = df.withColumn("txn_type", return_flag(source, F.col("quantity"), F.col("txn_type")))
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cpbi_spark.silver.validate import Rule

if TYPE_CHECKING:
    from pyspark.sql import Column

    from cpbi_spark.config.models import SourceConfig

EXCLUDED_PREFIX = "excluded_"


def return_flag(source: SourceConfig, quantity: Column, txn_type: Column, ids: dict[str, Column]) -> Column:
    """``RETURN`` where the mapping's return rule holds, else the exported type (default ``SALE``)."""
    from pyspark.sql import functions as F

    is_return = F.lit(False)
    if source.returns.negative_quantity:
        is_return = is_return | F.coalesce(quantity < 0, F.lit(False))
    for column, prefix in source.returns.id_prefix.items():
        is_return = is_return | F.coalesce(ids[column].startswith(prefix), F.lit(False))
    return F.when(is_return, F.lit("RETURN")).otherwise(F.coalesce(txn_type, F.lit("SALE")))


def exclusion_rules(source: SourceConfig, values: dict[str, Column]) -> list[Rule]:
    """One validation rule per exclusion; the reason is ``excluded_<reason>`` so it reads as intended."""
    from pyspark.sql import functions as F

    rules = []
    for rule in source.exclude:
        col = values[rule.column]
        hit = F.lit(False)
        if rule.values:
            hit = hit | F.trim(col).isin(list(rule.values))
        if rule.pattern is not None:
            hit = hit | F.coalesce(F.trim(col).rlike(f"^(?:{rule.pattern})$"), F.lit(False))
        detail = F.concat(F.lit(f"{rule.column} matches an exclusion rule: "), F.coalesce(col, F.lit("NULL")))
        rules.append(Rule(f"{EXCLUDED_PREFIX}{rule.reason}", hit, detail))
    return rules
