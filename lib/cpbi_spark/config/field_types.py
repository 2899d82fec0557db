"""Annotated field types shared by the config models: names, Spark SQL types, locations.

Each type validates one value and says what is wrong in words a config author understands;
pydantic attaches the key path, so the loader can name the file and key of every problem.

Example:
    >>> from pydantic import TypeAdapter
    >>> TypeAdapter(SparkSqlType).validate_python("Decimal(18, 2)")
    'decimal(18,2)'
    >>> TypeAdapter(ConfValue).validate_python(True)
    'true'
"""

from __future__ import annotations

import os
import re
import zoneinfo
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, StringConstraints

NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
# Column names end up in Spark SQL and Delta schemas: keep them plain identifiers.
COLUMN_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
SIMPLE_SPARK_TYPES = ("string", "int", "bigint", "double", "boolean", "date", "timestamp")
_DECIMAL = re.compile(r"^decimal\((\d+),(\d+)\)$")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(value: str) -> bool:
    """True for ``s3://...``, ``abfss://...``, ``file://...``: locations that are not local paths."""
    return bool(_URI.match(value))


def _spark_sql_type(value: str) -> str:
    normalized = re.sub(r"\s+", "", value).lower()
    if normalized in SIMPLE_SPARK_TYPES:
        return normalized
    match = _DECIMAL.match(normalized)
    if not match and normalized.startswith("decimal(") and ")" not in normalized:
        # `{amount: decimal(18,2)}` is split at the comma by YAML's flow style.
        raise ValueError(f"incomplete type {value!r}: inside {{...}} quote it, e.g. 'decimal(18,2)'")
    if not match:
        allowed = ", ".join(SIMPLE_SPARK_TYPES)
        raise ValueError(f"unsupported type {value!r}: use one of {allowed} or decimal(p,s)")
    precision, scale = int(match.group(1)), int(match.group(2))
    if not 1 <= precision <= 38:
        raise ValueError(f"decimal precision must be between 1 and 38, got {precision}")
    if not 0 <= scale <= precision:
        raise ValueError(f"decimal scale must be between 0 and the precision ({precision}), got {scale}")
    return f"decimal({precision},{scale})"


def _conf_value(value: Any) -> Any:
    # Spark and reader options are strings; YAML booleans must read "true", not Python's "True".
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return value  # str passes; anything else is rejected by the str schema


def _spark_key(value: str) -> str:
    if not value.startswith("spark.") or value == "spark.":
        raise ValueError(f"Spark settings must start with 'spark.', got {value!r}")
    return value


def _timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError
        raise ValueError(
            f"unknown time zone {value!r}: use an IANA name such as 'UTC' or 'Europe/Paris'"
        ) from None
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _location(value: str) -> str:
    # Relative paths are pinned at load time, so a job that changes directory later still agrees.
    if is_uri(value):
        return value.rstrip("/") or value
    return os.path.abspath(os.path.expanduser(value))


def _none_as_empty(factory: type) -> BeforeValidator:
    # `columns:` with every line commented out is YAML null; read it as an empty section.
    return BeforeValidator(lambda value: factory() if value is None else value)


Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
ColumnName = Annotated[str, StringConstraints(pattern=COLUMN_PATTERN)]
NonEmptyStr = Annotated[str, AfterValidator(_not_blank)]
SparkSqlType = Annotated[str, AfterValidator(_spark_sql_type)]
ConfValue = Annotated[str, BeforeValidator(_conf_value)]
SparkKey = Annotated[str, AfterValidator(_spark_key)]
TimeZone = Annotated[str, AfterValidator(_timezone)]
Location = Annotated[str, AfterValidator(_not_blank), AfterValidator(_location)]
EmptyDictIfNone = _none_as_empty(dict)
EmptyListIfNone = _none_as_empty(list)
