"""Cross-field rules that pydantic field types cannot express, each reported separately.

Each check takes models that validated on their own and returns ``(key path, reason)`` issues;
the loader adds the file that set the key. A table with three mistakes yields three issues.
Checks get items from :mod:`cpbi_spark.config.partial_validation`: an item with errors the
rules do not depend on (a bad column type, an unknown key) is still checked.

Example:
    >>> from cpbi_spark.config.merge import format_key_path
    >>> table = TableConfig(layer="silver", description="", grain="one row per customer",
    ...                     keys=["customer_id"], columns={"id": "string"}, pii={"email": "hash"})
    >>> for path, reason in check_table("dim_customer", table):
    ...     print(format_key_path(path), "-", reason)
    tables.dim_customer.keys[0] - column 'customer_id' is not declared in columns
    tables.dim_customer.pii.email - column 'email' is not declared in columns
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Mapping, Sequence

from cpbi_spark.config.merge import KeyPath
from cpbi_spark.config.models import (
    DEFAULT_MLFLOW_NEEDS_LOCAL_OUTPUTS,
    ENTITIES,
    SCD2_COLUMN_TYPES,
    SCD2_COLUMNS,
    MlflowConfig,
    SourceConfig,
    StorageConfig,
    TableConfig,
    local_folder,
)

Issue = tuple[KeyPath, str]


def check_table(name: str, table: TableConfig) -> list[Issue]:
    """Keys, tracked, pii and partition columns are declared; SCD2 has what it needs."""
    where = ("tables", name)
    issues: list[Issue] = []
    declared = table.columns
    if not declared and table.layer != "bronze":
        issues.append(
            ((*where, "columns"), "must declare the columns; only bronze tables may be {} (as received)")
        )
    for field in ("keys", "tracked", "partition_by"):
        issues += _list_issues((*where, field), getattr(table, field), declared, "columns", table.as_received)
    if table.partition_by:  # refused rather than ignored: a user who sets it expects partitioned files
        issues.append(((*where, "partition_by"), "partitioning is not applied by the table engines yet; remove "
                                                 "it (tables are unpartitioned, see the README's 'Table upkeep')"))
    if not table.as_received:
        issues += [
            ((*where, "pii", column), f"column {column!r} is not declared in columns")
            for column in table.pii
            if column not in declared
        ]
    if table.scd_type == 2:
        for column, types in SCD2_COLUMN_TYPES.items():
            if column not in declared:
                issues.append(
                    ((*where, "columns"), f"scd_type 2 needs a column {column!r} ({' or '.join(types)})")
                )
            elif declared[column] not in types:
                reason = f"SCD2 column {column!r} must be {' or '.join(types)}, not {declared[column]}"
                issues.append(((*where, "columns", column), reason))
        if not table.tracked:
            issues.append(
                ((*where, "tracked"), "scd_type 2 needs the columns whose change creates a new version")
            )
        issues += [
            ((*where, "tracked", index), f"{column!r} is maintained by SCD2 itself and cannot be tracked")
            for index, column in enumerate(table.tracked)
            if column in SCD2_COLUMNS
        ]
    elif table.tracked:
        issues.append(
            ((*where, "tracked"), f"only used with scd_type 2 (this table has scd_type {table.scd_type})")
        )
    return issues


def check_source(
    name: str, source: SourceConfig, table_names: Collection[str] | None, tables: Mapping[str, TableConfig]
) -> list[Issue]:
    """The bronze table exists and is bronze; the record key uses canonical column names.

    ``table_names`` are all declared names (None when unknown: existence is then not checked),
    ``tables`` those that validated (a broken table is reported on its own, so its layer is not
    checked here).
    """
    where = ("sources", name)
    issues: list[Issue] = []
    target = source.bronze_table
    if table_names is not None and target not in table_names:
        hint = difflib.get_close_matches(target, list(table_names), n=1)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        issues.append(((*where, "bronze_table"), f"table {target!r} is not declared in tables{suggestion}"))
    elif target in tables and tables[target].layer != "bronze":
        reason = f"must be a bronze table; {target!r} is in layer {tables[target].layer!r}"
        issues.append(((*where, "bronze_table"), reason))
    issues += _list_issues(
        (*where, "record_key"), source.record_key, source.columns, "the keys of columns", False
    )
    issues += _list_issues((*where, "not_null"), source.not_null, source.columns, "the keys of columns", False)
    entity = source.entity_of(name)
    if entity not in ENTITIES:
        issues.append(((*where, "entity"), f"unknown entity {entity!r} (the source name is used when entity is "
                                           f"not given); choose one of {', '.join(ENTITIES)}"))
    if entity == "table":
        if source.target_table is None:
            issues.append(((*where, "target_table"), "entity 'table' needs target_table (a declared table)"))
        elif table_names is not None and source.target_table not in table_names:
            issues.append(((*where, "target_table"), f"table {source.target_table!r} is not declared in tables"))
    elif source.target_table is not None:
        issues.append(((*where, "target_table"), "only an entity 'table' source has a target_table"))
    if source.header is not None:
        issues += _header_issues(where, entity, source, table_names, tables)
    if source.format == "basket_lines" and set(source.columns) - {"items"}:
        issues.append(((*where, "columns"), "a basket_lines file has one column per line: map only 'items'"))
    for i, rule in enumerate(source.exclude):
        if rule.column not in source.columns and rule.column not in source.fixed:
            issues.append(((*where, "exclude", i, "column"), f"{rule.column!r} is not a mapped column"))
        if not rule.values and rule.pattern is None:
            issues.append(((*where, "exclude", i), "give values or a pattern"))
        if rule.pattern is not None:
            try:
                re.compile(rule.pattern)
            except re.error as exc:
                issues.append(((*where, "exclude", i, "pattern"), f"not a regular expression: {exc}"))
    for column in source.returns.id_prefix:
        if column not in source.columns:
            issues.append(((*where, "returns", "id_prefix", column), f"{column!r} is not a mapped column"))
    return issues


HEADER_COLUMNS = ("customer_id", "account_id", "posted_ts", "store_id", "channel", "payment_method", "country")


def _header_issues(where: tuple, entity: str, source: SourceConfig, table_names: Collection[str] | None,
                   tables: Mapping[str, TableConfig]) -> list[Issue]:
    """A header join: on transaction lines, from a declared table keyed on basket_id, of header-level columns."""
    header = source.header
    at = (*where, "header")
    issues: list[Issue] = []
    if entity != "transactions":
        issues.append((at, f"only transaction lines take columns from order headers (this source is {entity!r})"))
    if "basket_id" not in source.columns:
        issues.append((at, "the lines need basket_id mapped: it is how a line finds its order header"))
    if table_names is not None and header.table not in table_names:
        issues.append(((*at, "table"), f"table {header.table!r} is not declared in tables"))
    elif header.table in tables and list(tables[header.table].keys) != ["basket_id"]:
        issues.append(((*at, "table"), f"table {header.table!r} must have keys [basket_id] (one header per "
                                       f"order), not {list(tables[header.table].keys)}"))
    declared = tables[header.table].columns if header.table in tables else None
    for i, column in enumerate(header.columns):
        if column not in HEADER_COLUMNS:
            issues.append(((*at, "columns", i), f"{column!r} cannot come from an order header; choose from "
                                                f"{', '.join(HEADER_COLUMNS)}"))
        elif column in source.columns:
            issues.append(((*at, "columns", i), f"{column!r} is mapped on the lines too: take it from one place"))
        elif declared is not None and column not in declared:
            issues.append(((*at, "columns", i), f"{column!r} is not a column of table {header.table!r}"))
    return issues


def check_mlflow(storage: StorageConfig, mlflow: MlflowConfig) -> list[Issue]:
    """The default sqlite tracking store needs a local outputs folder."""
    if mlflow.tracking_uri is None and local_folder(storage.outputs) is None:
        return [(("mlflow", "tracking_uri"), DEFAULT_MLFLOW_NEEDS_LOCAL_OUTPUTS)]
    return []


def _list_issues(
    where: KeyPath, names: Sequence[str], declared: Collection[str], declared_in: str, skip_declared: bool
) -> list[Issue]:
    issues: list[Issue] = []
    seen: set[str] = set()
    for index, column in enumerate(names):
        if column in seen:
            issues.append(((*where, index), f"{column!r} is listed twice"))
        seen.add(column)
        if not skip_declared and column not in declared:
            issues.append(((*where, index), f"column {column!r} is not declared in {declared_in}"))
    return issues
