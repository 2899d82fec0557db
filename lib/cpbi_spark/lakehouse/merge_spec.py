"""A declarative MERGE: one typed object that both table engines execute.

The clauses are SQL expression strings over the source alias (``s``) and the target
alias (``t``), the form both delta-spark and the delta-rs backend accept, so a job
builds a merge once and never concatenates SQL by hand.

Example:
    >>> spec = MergeSpec.upsert(["customer_id"])
    >>> spec.predicate
    't.customer_id <=> s.customer_id'
    >>> spec = MergeSpec.insert_new(["txn_id"])
    >>> [c.action for c in spec.when_not_matched]
    ['insert']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal


def changed_condition(columns: Sequence[str]) -> str:
    """SQL that is true when any of ``columns`` differs between ``t`` and ``s`` (NULL-safe).

    Example:
        >>> changed_condition(["status", "reason"])
        'NOT (t.`status` <=> s.`status`) OR NOT (t.`reason` <=> s.`reason`)'
    """
    return " OR ".join(f"NOT (t.`{c}` <=> s.`{c}`)" for c in columns)


@dataclass(frozen=True)
class MatchedClause:
    """WHEN MATCHED [AND condition] THEN UPDATE SET ... | DELETE.

    ``set`` maps target columns to SQL expressions; ``None`` means every target column
    from the source column of the same name (``UPDATE SET *``).
    """

    action: Literal["update", "delete"]
    condition: str | None = None
    set: Mapping[str, str] | None = None


@dataclass(frozen=True)
class NotMatchedClause:
    """WHEN NOT MATCHED [AND condition] THEN INSERT (values); ``values=None`` is ``INSERT *``."""

    condition: str | None = None
    values: Mapping[str, str] | None = None
    action: Literal["insert"] = "insert"


@dataclass(frozen=True)
class NotMatchedBySourceClause:
    """WHEN NOT MATCHED BY SOURCE [AND condition] THEN UPDATE SET ... | DELETE (target-only rows)."""

    action: Literal["update", "delete"]
    condition: str | None = None
    set: Mapping[str, str] | None = None


@dataclass(frozen=True)
class MergeSpec:
    """A full MERGE statement: join predicate plus ordered clauses (first match wins, as in SQL)."""

    predicate: str
    when_matched: Sequence[MatchedClause] = field(default_factory=tuple)
    when_not_matched: Sequence[NotMatchedClause] = field(default_factory=tuple)
    when_not_matched_by_source: Sequence[NotMatchedBySourceClause] = field(default_factory=tuple)
    source_alias: str = "s"
    target_alias: str = "t"

    def __post_init__(self) -> None:
        if not self.predicate.strip():
            raise ValueError("MergeSpec.predicate must not be empty")
        if not (self.when_matched or self.when_not_matched or self.when_not_matched_by_source):
            raise ValueError("MergeSpec needs at least one clause")

    @staticmethod
    def key_predicate(keys: Sequence[str], source_alias: str = "s", target_alias: str = "t") -> str:
        """Null-safe equality on every key column (a null key matches a null key, as a dedup would)."""
        if not keys:
            raise ValueError("at least one key column is needed")
        return " AND ".join(f"{target_alias}.{k} <=> {source_alias}.{k}" for k in keys)

    @classmethod
    def upsert(cls, keys: Sequence[str], *, only_if_changed: str | None = None) -> MergeSpec:
        """Update matching rows (optionally only when ``only_if_changed`` holds), insert new ones."""
        return cls(
            predicate=cls.key_predicate(keys),
            when_matched=(MatchedClause("update", condition=only_if_changed),),
            when_not_matched=(NotMatchedClause(),),
        )

    @classmethod
    def insert_new(cls, keys: Sequence[str]) -> MergeSpec:
        """Insert rows whose keys are not in the table yet; rerunning the same input changes nothing."""
        return cls(predicate=cls.key_predicate(keys), when_not_matched=(NotMatchedClause(),))
