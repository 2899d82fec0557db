"""PII policies applied to columns before they reach silver: hash, mask or drop.

Hashing is sha256 over a salt and the value, so joins and SCD2 comparisons on the hashed
value still work while the clear value never lands. The salt comes from ``CPBI_PII_SALT``;
without it a fixed development salt is used and a warning says so.

Example:
    >>> apply_pii(df, {"email": "hash", "phone": "mask"}, salt="s3cret")     # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

DEV_SALT = "cpbi-development-salt"
_log = logging.getLogger("cpbi.pii")


def pii_salt() -> str:
    salt = os.environ.get("CPBI_PII_SALT")
    if not salt:
        _log.warning("CPBI_PII_SALT is not set: PII is hashed with the development salt")
        return DEV_SALT
    return salt


def hash_value(col: Column, salt: str) -> Column:
    from pyspark.sql import functions as F

    return F.when(col.isNull(), F.lit(None)).otherwise(
        F.concat(F.lit("sha256:"), F.sha2(F.concat(F.lit(salt), col.cast("string")), 256)))


def mask_value(col: Column) -> Column:
    """Keep the first character and the last two (enough to eyeball, not to identify)."""
    from pyspark.sql import functions as F

    text = col.cast("string")
    return (F.when(text.isNull(), F.lit(None))
            .when(F.length(text) <= 3, F.lit("***"))
            .otherwise(F.concat(F.substring(text, 1, 1), F.lit("***"), F.substring(text, -2, 2))))


def apply_pii(df: DataFrame, policies: Mapping[str, str], salt: str) -> DataFrame:
    """Replace every column with a policy by its hashed/masked value (``drop`` -> NULL)."""
    from pyspark.sql import functions as F

    for column, policy in policies.items():
        if column not in df.columns or policy == "none":
            continue
        if policy == "hash":
            df = df.withColumn(column, hash_value(F.col(column), salt))
        elif policy == "mask":
            df = df.withColumn(column, mask_value(F.col(column)))
        elif policy == "drop":
            df = df.withColumn(column, F.lit(None).cast("string"))
    return df
