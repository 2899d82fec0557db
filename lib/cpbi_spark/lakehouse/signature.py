"""Order-independent content signature of a frame: are two frames the same multiset of rows?

One row: ``rows`` (the count) and ``h64``/``h32``, exact sums (as ``decimal(38,0)``, so they never
overflow) of a 64-bit (xxhash64) and a 32-bit (murmur3) hash of each row. Equal frames always have
equal signatures; two different frames share one only if both sums collide at the same row count
(about 2^-96 for a change). Each column is hashed together with its null flag, because Spark's row
hashes skip nulls and would otherwise not tell ``(null, 1)`` from ``(1, null)``. Maps have no row hash
in Spark: they are hashed as JSON, so two equal maps built in different key orders count as a change
(an unneeded rewrite, never a missed one).

Example:
    >>> a = spark.createDataFrame([(1, "x"), (2, None)], "k int, v string")   # doctest: +SKIP
    >>> content_signature(a).first() == content_signature(a.orderBy("k", ascending=False)).first()
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame


def _hash_inputs(df: DataFrame) -> list[Column]:
    from pyspark.sql import functions as F
    from pyspark.sql.types import MapType

    cols = []
    for field in df.schema.fields:
        col = F.col(f"`{field.name}`")
        cols += [F.to_json(col) if isinstance(field.dataType, MapType) else col, col.isNull()]
    return cols


def content_signature(df: DataFrame) -> DataFrame:
    """One row ``(rows, h64, h32)`` describing ``df``'s rows whatever their order (pure)."""
    from pyspark.sql import functions as F

    inputs = _hash_inputs(df)
    return df.agg(F.count(F.lit(1)).alias("rows"),
                  F.coalesce(F.sum(F.xxhash64(*inputs).cast("decimal(38,0)")), F.lit(0)).alias("h64"),
                  F.coalesce(F.sum(F.hash(*inputs).cast("decimal(38,0)")), F.lit(0)).alias("h32"))
