"""Validate one table or source for the cross-field checks, tolerating errors they do not use.

pydantic has already reported every error of the whole config. This second pass builds the
item again with harmless stand-ins for values the cross-field rules never look at (a bad column
type, a bad description, an unknown key), so a typo in one type does not hide that a key column
is undeclared. When an error touches what the rules read (layer, keys, scd_type, ...), the item
is skipped: its rules would be checked against guesses.

Example:
    >>> raw = {"layer": "silver", "description": "d", "grain": "g", "keys": ["id"],
    ...        "columns": {"id": "varchar"}, "colums": {}}
    >>> table_for_checks(raw).columns
    {'id': 'string'}
    >>> table_for_checks({**raw, "layer": "diamond"}) is None
    True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from cpbi_spark.config.models import SCD2_COLUMN_TYPES, SourceConfig, TableConfig

ModelT = TypeVar("ModelT", bound=BaseModel)

# Valid stand-ins for fields the cross-field checks never read.
_TABLE_STAND_INS: dict[str, Any] = {"description": "", "grain": "-", "owner": None, "tags": []}
_SOURCE_STAND_INS: dict[str, Any] = {
    "format": "csv",
    "path": "-",
    "options": {},
    "timestamp_format": None,
    "timezone": "UTC",
    "on_new_columns": "reject",
    "required": True,
}


def table_for_checks(raw: Any) -> TableConfig | None:
    """The table as the cross-field checks should see it, or None if they cannot trust it."""
    # An SCD2 column with a bad type gets a type SCD2 accepts: its type error is already reported.
    return _validate_with_stand_ins(
        TableConfig, raw, _TABLE_STAND_INS, lambda column: SCD2_COLUMN_TYPES.get(column, ("string",))[0]
    )


def source_for_checks(raw: Any) -> SourceConfig | None:
    """The source as the cross-field checks should see it, or None if they cannot trust it."""
    return _validate_with_stand_ins(SourceConfig, raw, _SOURCE_STAND_INS, lambda column: column)


def _validate_with_stand_ins(
    model: type[ModelT], raw: Any, stand_ins: Mapping[str, Any], column_stand_in: Callable[[str], str]
) -> ModelT | None:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
    if not isinstance(raw, dict):
        return None
    data = dict(raw)
    columns = dict(raw["columns"]) if isinstance(raw.get("columns"), dict) else None
    for error in errors:
        loc = error["loc"]
        if len(loc) == 1 and error["type"] == "extra_forbidden":
            data.pop(loc[0], None)
        elif loc and loc[0] in stand_ins:
            data[loc[0]] = stand_ins[loc[0]]
        elif len(loc) == 2 and loc[0] == "columns" and columns is not None and loc[1] in columns:
            columns[loc[1]] = column_stand_in(str(loc[1]))  # the column is declared; only its value is bad
        else:
            return None
    if columns is not None:
        data["columns"] = columns
    try:
        return model.model_validate(data)
    except ValidationError:
        return None
