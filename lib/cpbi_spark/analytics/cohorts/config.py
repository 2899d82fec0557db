"""Parameters of the cohorts analysis (``analyses.cohorts`` in ``conf/base/analysis_cohorts.yaml``).

The section is validated once into :class:`CohortsConfig`; every problem (unknown key, wrong type,
value out of range, a rule relating two keys) is collected and raised as one :class:`ConfigError`
naming the file and the key path.

Example:
    >>> cfg = cohorts_config(load_config(env="ci"))                  # doctest: +SKIP
    >>> cfg.cohort_by, cfg.period_grain, cfg.max_age                 # doctest: +SKIP
    ('first_purchase_month', 'month', 13)
    >>> CohortsConfig.model_validate({"max_age": 6}).repeat.windows_days
    [30, 60, 90, 365]
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cpbi_spark.analytics.settings import defining_file, flat_params, origin_in, validate_section

if TYPE_CHECKING:
    from cpbi_spark.config import CpbiConfig

DEFAULT_FILE = "conf/base/analysis_cohorts.yaml"
# The wide table declares one column per period: p00, p01, ... (see conf/base/tables_cohorts.yaml).
WIDE_TABLE = "cohort_retention_wide"

CohortBy = Literal["first_purchase_month", "first_purchase_week", "first_channel", "first_category", "region"]
# Customer attributes fixed at the first purchase; segment filters keep customers whose value is listed.
SegmentKey = Literal["first_channel", "first_category", "region", "country", "loyalty_tier"]
PositiveInt = Annotated[int, Field(ge=1)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ActivityConfig(_Model):
    """When a customer counts as active in a period.

    ``purchase``: at least ``min_orders`` sale baskets in the period. ``net_purchase``: the same and a
    positive net revenue in the period (returns attributed to the sale period), so a customer whose
    only purchase of the period was fully returned is not active.
    """

    measure: Literal["purchase", "net_purchase"] = "purchase"
    min_orders: PositiveInt = 1


class RepeatConfig(_Model):
    """Repeat-purchase windows (days after the first purchase) and the survival curve's horizon."""

    windows_days: Annotated[list[PositiveInt], Field(min_length=1)] = Field(
        default_factory=lambda: [30, 60, 90, 365])
    survival_max_days: PositiveInt = 365


class RfmConfig(_Model):
    """Number of score levels per dimension (1 = worst .. bins = best), see docs/cohorts.md."""

    bins: Annotated[int, Field(ge=2, le=10)] = 5


class ReturnsConfig(_Model):
    """Returns analysis: maturity of a sale line and the serial-returner rule."""

    # A sale line's return window is fully observed when it was posted at least this many days before as_of.
    maturity_days: Annotated[int, Field(ge=0)] = 28
    serial_min_returns: PositiveInt = 3
    serial_min_amount_rate: Annotated[float, Field(gt=0, le=1)] = 0.3
    top_products: PositiveInt = 200


class ClvConfig(_Model):
    """BG/NBD + Gamma-Gamma customer lifetime value: calibration/holdout split and valuation."""

    enabled: bool = True
    time_unit_days: PositiveInt = 7
    holdout_days: PositiveInt = 120
    horizon_days: PositiveInt = 365
    annual_discount_rate: Annotated[float, Field(ge=0, lt=1)] = 0.10
    margin: Annotated[float, Field(gt=0, le=1)] = 1.0
    deciles: Annotated[int, Field(ge=2, le=100)] = 10
    min_customers: PositiveInt = 50
    # Logged as pass/fail of the holdout check; the job does not fail on it.
    max_holdout_error: Annotated[float, Field(gt=0)] = 0.10


class CohortsConfig(_Model):
    """The whole ``analyses.cohorts`` section."""

    cohort_by: CohortBy = "first_purchase_month"
    period_grain: Literal["month", "week"] = "month"
    max_age: Annotated[int, Field(ge=1)] = 13
    include_partial_period: bool = False
    as_of: dt.date | None = None
    activity: ActivityConfig = Field(default_factory=ActivityConfig)
    segment_filters: dict[SegmentKey, Annotated[list[str], Field(min_length=1)]] = Field(default_factory=dict)
    repeat: RepeatConfig = Field(default_factory=RepeatConfig)
    rfm: RfmConfig = Field(default_factory=RfmConfig)
    returns: ReturnsConfig = Field(default_factory=ReturnsConfig)
    clv: ClvConfig = Field(default_factory=ClvConfig)

    @property
    def is_time_cohort(self) -> bool:
        return self.cohort_by.startswith("first_purchase_")

    def params(self) -> dict[str, Any]:
        """Flat ``{dotted.key: value}`` for MLflow."""
        return flat_params(self)


def period_columns(config: CpbiConfig) -> list[str]:
    """The ``pNN`` columns the wide table declares, in order."""
    columns = config.tables[WIDE_TABLE].columns if WIDE_TABLE in config.tables else {}
    return [c for c in columns if len(c) == 3 and c[0] == "p" and c[1:].isdigit()]


def validate_cohorts_section(raw: Any, *, file: str = DEFAULT_FILE, n_period_columns: int | None = None,
                             origin: Callable[[tuple[Any, ...]], str] | None = None) -> CohortsConfig:
    """Validate a raw ``analyses.cohorts`` mapping; raise one ConfigError with every problem.

    >>> validate_cohorts_section({"max_age": 3}).max_age
    3
    """

    def cross(parsed: CohortsConfig) -> list[tuple[str, str]]:
        """Rules relating several keys, reported together with the per-key problems."""
        out: list[tuple[str, str]] = []
        if n_period_columns is not None and parsed.max_age > n_period_columns - 1:
            out.append(("max_age", (
                f"{parsed.max_age} periods do not fit the wide table {WIDE_TABLE}, which declares "
                f"{n_period_columns} period columns (p00..p{n_period_columns - 1:02d}); lower max_age or "
                "declare more pNN columns in conf/base/tables_cohorts.yaml")))
        if parsed.cohort_by == "first_purchase_week" and parsed.period_grain == "month":
            out.append(("period_grain", (
                "weekly cohorts need period_grain: week (a week cohort can start mid-month, so its month 0 "
                "would mix ages)")))
        if parsed.clv.holdout_days < parsed.clv.time_unit_days:
            out.append(("clv.holdout_days", "must be at least one time unit (clv.time_unit_days)"))
        if len(set(parsed.repeat.windows_days)) != len(parsed.repeat.windows_days):
            out.append(("repeat.windows_days", "windows must be distinct"))
        return out

    return validate_section(CohortsConfig, raw, "cohorts", file, cross=cross, origin=origin)


def cohorts_config(config: CpbiConfig) -> CohortsConfig:
    """The validated ``analyses.cohorts`` section of a loaded configuration (defaults when absent)."""
    raw = config.analyses.get("cohorts")
    file = defining_file(config, "cohorts", "analysis_cohorts.yaml")
    return validate_cohorts_section(raw, file=file, n_period_columns=len(period_columns(config)) or None,
                                    origin=origin_in(config, file))
