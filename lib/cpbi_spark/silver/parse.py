"""Typed parsing of as-received strings (pure column expressions).

Every parser returns NULL for a value it cannot read, so validation can tell "missing"
(raw value NULL or blank) from "bad type" (raw value present, parsed value NULL).

Example:
    >>> df.select(parse_timestamp(F.col("posted_ts"), None, "Europe/Paris").alias("ts"))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column

# An explicit offset or Z at the end: the string names its instant; otherwise it is local time.
_OFFSET = r"(Z|z|[+-]\d{2}:?\d{2})$"


def clean_str(col: Column) -> Column:
    """Trimmed string; blank becomes NULL (exports write missing values as empty fields)."""
    from pyspark.sql import functions as F

    trimmed = F.trim(col.cast("string"))
    return F.when(trimmed == "", F.lit(None)).otherwise(trimmed)


def parse_number(col: Column, sql_type: str = "double", decimal_comma: bool = False) -> Column:
    """A number; ``decimal_comma`` reads ``1.234,50`` exports. Unreadable -> NULL."""
    from pyspark.sql import functions as F

    text = clean_str(col)
    if decimal_comma:
        text = F.regexp_replace(F.regexp_replace(text, r"\.", ""), ",", ".")
    return text.try_cast(sql_type)


def parse_timestamp(col: Column, fmt: str | None, timezone: str) -> Column:
    """An instant (UTC). Strings with an offset keep it; others are local time in ``timezone``."""
    from pyspark.sql import functions as F

    text = clean_str(col)
    local = F.try_to_timestamp(text, F.lit(fmt)) if fmt else text.try_cast("timestamp")
    if timezone.upper() == "UTC":
        return local
    return F.when(text.rlike(_OFFSET), local).otherwise(F.to_utc_timestamp(local, timezone))


def parse_date(col: Column, fmt: str | None = None) -> Column:
    from pyspark.sql import functions as F

    text = clean_str(col)
    if fmt:
        return F.try_to_timestamp(text, F.lit(fmt)).cast("date")
    # A timestamp string is also accepted (first 10 characters are the date).
    return F.coalesce(text.try_cast("date"), F.substring(text, 1, 10).try_cast("date"))


def parse_bool(col: Column) -> Column:
    from pyspark.sql import functions as F

    text = F.lower(clean_str(col))
    return (F.when(text.isin("true", "t", "yes", "y", "1"), F.lit(True))
            .when(text.isin("false", "f", "no", "n", "0"), F.lit(False)))
