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


def _cross(cfg: InterventionsConfig):
    c = cfg.cross_sell
    if not c.take_rate_low <= c.take_rate <= c.take_rate_high:
        yield "cross_sell.take_rate", (f"must lie in [take_rate_low, take_rate_high] = "
                                       f"[{c.take_rate_low}, {c.take_rate_high}], got {c.take_rate}")


def interventions_config(config: CpbiConfig) -> InterventionsConfig:
    """The validated ``analyses.interventions`` block (defaults when absent); one error lists every problem."""
    file = defining_file(config, "interventions", DEFAULT_FILE)
    cfg = validate_section(InterventionsConfig, config.analyses.get("interventions"), "interventions", file,
                           cross=_cross, origin=origin_in(config, file))
    if cfg.margin_rate is None:  # one margin for every estimate: the uplift policy's, unless set here
        uplift = config.analyses.get("uplift") or {}
        cfg = cfg.model_copy(update={"margin_rate": float(uplift.get("margin_rate", 0.3))})
    return cfg
