"""Typed ``platform:`` and ``expectations:`` sections (platform sources A–D: audit, ops, governance, cost).

Kept apart from :mod:`cpbi_spark.config.models` so that module only gains two fields. Rules that relate
several sections (an expectation names a declared table and column, a chargeback rule a cost center) are
checked by :func:`cpbi_spark.platform.settings.check_platform`, which reports every problem at once.

Example:
    >>> cfg = PlatformConfig.model_validate({"enabled": True, "roles": {"analyst": {"layers": ["gold"]}}})
    >>> cfg.roles["analyst"].pii
    False
    >>> check = ExpectationConfig.model_validate({"check": "id_present", "expect": "not_null", "column": "id"})
    >>> check.severity
    'blocking'
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from cpbi_spark.config.field_types import ColumnName, EmptyDictIfNone, EmptyListIfNone, Name, NonEmptyStr

PlatformSource = Literal["A", "B", "C", "D"]
Severity = Literal["low", "medium", "high", "critical"]
LayerName = Literal["bronze", "silver", "gold", "insights", "platform"]
Code = Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9-]*$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceTables(_Model):
    """One platform source: what it answers and its tables (logical names; conformed ones may recur)."""

    name: NonEmptyStr
    description: str = ""
    tables: Annotated[list[Name], Field(min_length=1)]


class RegionConfig(_Model):
    """Where the platform runs (the ``platform`` domain of ``dim_region``; rates are per region)."""

    code: Name = "local"
    name: NonEmptyStr = "local workstation"


class ClassificationConfig(_Model):
    rank: Annotated[int, Field(ge=0)]
    handling: str = ""
    description: str = ""


class OwnerConfig(_Model):
    team: NonEmptyStr
    contact: str = ""


class RoleConfig(_Model):
    """A reader role: the layers (and extra tables) it may read, and whether it sees PII as stored."""

    description: str = ""
    layers: Annotated[list[LayerName], EmptyListIfNone] = Field(default_factory=list)
    tables: Annotated[list[Name], EmptyListIfNone] = Field(default_factory=list)
    pii: bool = False


class RetentionRule(_Model):
    """How long platform records are kept: rows of a table (by ``ts_column``) or the JSON-lines log files."""

    kind: Literal["table", "log_files"] = "table"
    ts_column: ColumnName | None = None
    days: Annotated[int, Field(ge=0)]
    description: str = ""


class ErrorCodeConfig(_Model):
    """Maps a failure to an error code: first rule whose ``exception`` is in the error's class hierarchy
    (and whose ``match`` regex, if any, is found in the message) wins."""

    code: Code
    exception: NonEmptyStr
    match: str | None = None
    severity: Severity = "high"
    description: str = ""
    runbook: str = ""


class PriceItem(_Model):
    """A SKU of the price catalog: list price per unit of one meter."""

    sku: NonEmptyStr
    meter: Name
    unit: NonEmptyStr
    list_price: Annotated[float, Field(ge=0)]
    description: str = ""


class RateCard(_Model):
    """The rate card in force: list prices of the catalog less a negotiated discount per SKU."""

    card: NonEmptyStr = "standard"
    effective_from: date = date(2026, 1, 1)
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] = "USD"
    discount_pct: Annotated[dict[NonEmptyStr, Annotated[float, Field(ge=0, le=1)]], EmptyDictIfNone] = Field(
        default_factory=dict)


class CostCenter(_Model):
    name: NonEmptyStr
    owner: NonEmptyStr
    monthly_budget: Annotated[float, Field(ge=0)]


class ChargebackRule(_Model):
    """Share of a stage's cost charged to a cost center; ``stage`` is a glob (``*`` = every stage)."""

    rule: Name
    stage: NonEmptyStr
    cost_center: Name
    share: Annotated[float, Field(gt=0, le=1)]
    description: str = ""


class PlatformConfig(_Model):
    """The platform recorder: switched on by ``enabled``; everything else has a usable default."""

    enabled: bool = False
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    region: RegionConfig = Field(default_factory=RegionConfig)
    sources: Annotated[dict[PlatformSource, SourceTables], EmptyDictIfNone] = Field(default_factory=dict)
    # canonical column holding each landing source's event time (fact_raw_events.event_ts)
    event_time: Annotated[dict[Name, ColumnName], EmptyDictIfNone] = Field(default_factory=dict)
    classifications: Annotated[dict[Name, ClassificationConfig], EmptyDictIfNone] = Field(default_factory=dict)
    # columns that are personal data wherever they appear (bronze stores them as received)
    pii_columns: Annotated[list[ColumnName], EmptyListIfNone] = Field(default_factory=list)
    owners: Annotated[dict[NonEmptyStr, OwnerConfig], EmptyDictIfNone] = Field(default_factory=dict)
    roles: Annotated[dict[Name, RoleConfig], EmptyDictIfNone] = Field(default_factory=dict)
    retention: Annotated[dict[Name, RetentionRule], EmptyDictIfNone] = Field(default_factory=dict)
    sla_seconds: Annotated[dict[Name, Annotated[float, Field(gt=0)]], EmptyDictIfNone] = Field(default_factory=dict)
    error_codes: Annotated[list[ErrorCodeConfig], EmptyListIfNone] = Field(default_factory=list)
    price_catalog: Annotated[list[PriceItem], EmptyListIfNone] = Field(default_factory=list)
    rates: RateCard = Field(default_factory=RateCard)
    cost_centers: Annotated[dict[Name, CostCenter], EmptyDictIfNone] = Field(default_factory=dict)
    chargeback: Annotated[list[ChargebackRule], EmptyListIfNone] = Field(default_factory=list)
    anomaly_ratio: Annotated[float, Field(gt=1)] = 3.0  # a stage costing this many times its average is flagged
    budget_warning_pct: Annotated[float, Field(gt=0, le=1)] = 0.8
    # a table of at least this many rows that only grew since its last clean validation is validated on its
    # new rows (ctl_dq_watermarks); smaller ones whole, which costs less here (docs/platform.md)
    dq_incremental_min_rows: Annotated[int, Field(ge=0)] = 100_000
    # at most this many validated rows go to GE's pandas engine in the driver (suites whose checks mean the
    # same there); more, or 0, validate on Spark (docs/platform.md)
    dq_local_max_rows: Annotated[int, Field(ge=0)] = 50_000


class ExpectationConfig(_Model):
    """One data-quality check of a table's suite (compiled to a Great Expectations expectation).

    ``expect``: ``not_null`` (column), ``unique`` (columns), ``between`` (column, min and/or max),
    ``in_set`` (column, values), ``references`` (column, table, table_column: every non-null value exists
    in the other table) or ``row_count`` (``sql`` giving the expected count; ``{table}`` names a lakehouse
    table, or min/max bounds).
    """

    check: Name
    expect: Literal["not_null", "unique", "between", "in_set", "references", "row_count"]
    severity: Literal["blocking", "warning"] = "blocking"
    column: ColumnName | None = None
    columns: Annotated[list[ColumnName], EmptyListIfNone] = Field(default_factory=list)
    min: float | None = None
    max: float | None = None
    values: Annotated[list[Any], EmptyListIfNone] = Field(default_factory=list)
    table: Name | None = None
    table_column: ColumnName | None = None
    sql: NonEmptyStr | None = None
    mostly: Annotated[float, Field(gt=0, le=1)] = 1.0
    description: str = ""


class ExpectationSuiteConfig(_Model):
    """The checks of one table, validated as one suite whenever a stage writes the table."""

    description: str = ""
    checks: Annotated[list[ExpectationConfig], Field(min_length=1)]
