"""Delta tables behind one interface: engines (delta-rs, delta-spark), merge specs, the Lakehouse facade."""

from cpbi_spark.lakehouse.catalog import Lakehouse, declared_schema
from cpbi_spark.lakehouse.engine import CHANGE_COLUMN, CommitInfo, HistoryEntry, TableEngine
from cpbi_spark.lakehouse.merge_spec import (
    MatchedClause,
    MergeSpec,
    NotMatchedBySourceClause,
    NotMatchedClause,
)

__all__ = [
    "CHANGE_COLUMN",
    "CommitInfo",
    "HistoryEntry",
    "Lakehouse",
    "MatchedClause",
    "MergeSpec",
    "NotMatchedBySourceClause",
    "NotMatchedClause",
    "TableEngine",
    "declared_schema",
]
