"""Parameters of the interventions analysis (``analyses.interventions``, conf/base/analysis_interventions.yaml).

Example:
    >>> cfg = InterventionsConfig.model_validate({"horizon_days": 30})
    >>> cfg.horizon_days, cfg.cross_sell.take_rate
    (30, 0.05)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cpbi_spark.analytics.settings import defining_file, flat_params, origin_in, validate_section

if TYPE_CHECKING:
    from cpbi_spark.config import CpbiConfig

DEFAULT_FILE = "analysis_interventions.yaml"
Share = Annotated[float, Field(ge=0, le=1)]
PositiveInt = Annotated[int, Field(ge=1)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CrossSellConfig(_Model):
    min_lift: Annotated[float, Field(gt=1)] = 1.2
    level: Literal["product", "category", "department"] = "product"
    take_rate: Share = 0.05
    take_rate_low: Share = 0.02
    take_rate_high: Share = 0.10
    max_rules: PositiveInt = 10


class WinBackConfig(_Model):
    segments: list[str] = Field(default_factory=lambda: ["at_risk", "hibernating"])
    assumed_response_rate: Share = 0.02


class PromotionsConfig(_Model):
    min_segment_customers: PositiveInt = 100


class ReturnsConfig(_Model):
    min_rate_ratio: Annotated[float, Field(gt=1)] = 1.5
    reduction_share: Share = 0.25
    handling_cost_rate: Annotated[float, Field(ge=0)] = 0.10
    max_categories: PositiveInt = 5


class InterventionsConfig(_Model):
    horizon_days: PositiveInt = 90
    margin_rate: Share | None = None
    top_n: PositiveInt = 50
    cross_sell: CrossSellConfig = CrossSellConfig()
    win_back: WinBackConfig = WinBackConfig()
    promotions: PromotionsConfig = PromotionsConfig()
    returns: ReturnsConfig = ReturnsConfig()

    def params(self) -> dict[str, Any]:
        return flat_params(self)


def _cross_raw(raw: Any):
    """take_rate inside its range, checked on the raw block so it is reported with every per-key problem."""
    block = (raw or {}).get("cross_sell") if isinstance(raw, dict) else None
    block = block if isinstance(block, dict) else {}
    defaults = CrossSellConfig()
    try:
        low, rate, high = (float(block.get(k, getattr(defaults, k)))
                           for k in ("take_rate_low", "take_rate", "take_rate_high"))
    except (TypeError, ValueError):
        return  # a non-number is reported by the per-key validation
    if not low <= rate <= high:
        yield "cross_sell.take_rate", f"must lie in [take_rate_low, take_rate_high] = [{low}, {high}], got {rate}"


def interventions_config(config: CpbiConfig) -> InterventionsConfig:
    """The validated ``analyses.interventions`` block (defaults when absent); one error lists every problem."""
    file = defining_file(config, "interventions", DEFAULT_FILE)
    cfg = validate_section(InterventionsConfig, config.analyses.get("interventions"), "interventions", file,
                           cross_raw=_cross_raw, origin=origin_in(config, file))
    if cfg.margin_rate is None:  # one margin for every estimate: the uplift policy's, unless set here
        uplift = config.analyses.get("uplift") or {}
        cfg = cfg.model_copy(update={"margin_rate": float(uplift.get("margin_rate", 0.3))})
    return cfg
