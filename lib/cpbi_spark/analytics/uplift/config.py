"""Typed settings of the ``uplift`` and ``drivers`` analyses (``conf/base/analysis_uplift.yaml``).

The YAML lives under ``analyses: {uplift: {...}, drivers: {...}}``; the loader keeps ``analyses`` as plain
mappings, so each analysis validates its own block here. Every problem is collected into one
:class:`~cpbi_spark.errors.ConfigError` naming the file and the key path.

Example:
    >>> cfg = UpliftConfig.model_validate({"margin_rate": 0.25, "learners": ["t_learner"],
    ...                                    "policy_learner": "t_learner"})
    >>> cfg.margin_rate, cfg.evaluation.method
    (0.25, 'crossfit')
    >>> UpliftConfig.model_validate({"promotions": "PRM001,PRM002"}).promotions   # as from --set
    ['PRM001', 'PRM002']
    >>> from cpbi_spark.errors import ConfigError
    >>> try:
    ...     parse_block(UpliftConfig, {"margin_rate": 2, "alpah": 0.1}, "uplift", "/conf/base/analysis_uplift.yaml")
    ... except ConfigError as exc:
    ...     print(len(exc.problems))
    2
    >>> try:
    ...     parse_block(UpliftConfig, {"margin_rate": 2, "policy_learner": "x_learner", "learners": ["t_learner"]},
    ...                 "uplift", "f.yaml")
    ... except ConfigError as exc:
    ...     print(exc)
    2 problems in the configuration:
      - f.yaml: analyses.uplift.margin_rate: should be less than or equal to 1 (got 2)
      - f.yaml: analyses.uplift.policy_learner: 'x_learner' must be one of learners ['t_learner']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cpbi_spark.analytics.settings import defining_file, origin_in, validate_section

if TYPE_CHECKING:
    from cpbi_spark.config import CpbiConfig

CONFIG_FILE = "analysis_uplift.yaml"
Share = Annotated[float, Field(gt=0.0, lt=1.0)]
Learner = Literal["t_learner", "x_learner", "dr_learner"]
Correction = Literal["holm", "bonferroni", "sidak", "holm-sidak", "hommel", "fdr_bh", "fdr_by"]  # statsmodels names


def _list_from_text(value: Any) -> Any:
    """``--set key=a,b`` or ``--set key=[a, b]`` arrive as text: read them as a list."""
    if isinstance(value, str):
        import yaml

        text = value.strip()
        parsed = yaml.safe_load(text) if text.startswith("[") else [v.strip() for v in text.split(",") if v.strip()]
        return parsed
    return value


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureSettings(_Block):
    """Pre-period features built in Spark (see :mod:`.features`)."""

    max_departments: Annotated[int, Field(ge=1, le=50)] = 12  # category-mix shares kept (by pre-period spend)
    max_channels: Annotated[int, Field(ge=1, le=20)] = 6
    # dim_customer column (as of exposed_ts) that defines the readout segments
    segment_column: Literal["loyalty_tier", "region", "country"] = "loyalty_tier"


class EvaluationSettings(_Block):
    """How held-out scores are produced: K-fold cross-fitting (every unit scored out of fold) or one split."""

    method: Literal["crossfit", "holdout"] = "crossfit"
    folds: Annotated[int, Field(ge=2, le=20)] = 4
    holdout_share: Share = 0.3


class SparkMlSettings(_Block):
    """The Spark ML T-learner used when the units do not fit the driver (or ``engine: spark``)."""

    model: Literal["logistic", "gbt"] = "logistic"
    reg_param: Annotated[float, Field(ge=0.0)] | None = None  # None: the scikit-learn penalty
    max_iter: Annotated[int, Field(ge=1, le=1000)] = 100
    max_depth: Annotated[int, Field(ge=1, le=12)] = 4
    qini_bins: Annotated[int, Field(ge=10, le=100_000)] = 1000


class ObservationalSettings(_Block):
    """Non-randomised promotions: comparison group and the optional propensity-weighted estimate."""

    adjust: bool = True
    overlap_bounds: tuple[Share, Share] = (0.05, 0.95)
    propensity_clip: tuple[Share, Share] = (0.01, 0.99)
    bootstrap: Annotated[int, Field(ge=0, le=10_000)] = 100
    # comparison units are sampled down to this many per promotion (seeded), to keep the driver small
    max_comparison_units: Annotated[int, Field(ge=100)] = 200_000

    @model_validator(mode="after")
    def _ordered(self) -> ObservationalSettings:
        for name in ("overlap_bounds", "propensity_clip"):
            low, high = getattr(self, name)
            if low >= high:
                raise ValueError(f"{name}: the lower bound must be below the upper bound")
        return self


class CampaignSettings(_Block):
    """Campaign test exports (gold ``fact_campaign_outcomes``): one row per customer with arm and outcomes.

    Their pre-period features arrive as attributes: numeric ones become ``attr__<key>`` features,
    text ones one-hot ``attr__<key>__<value>`` columns of their most frequent values.
    """

    segment_attribute: str | None = None  # attribute key of the readout segments; None: one segment 'unknown'
    max_categories: Annotated[int, Field(ge=1, le=50)] = 10  # one-hot levels kept per text attribute


class UpliftConfig(_Block):
    """``analyses.uplift``: experiment readout, uplift models, evaluation and targeting policy."""

    seed: int = 42
    promotions: list[str] | None = None  # None: every promotion with exposures
    margin_rate: Annotated[float, Field(gt=0.0, le=1.0)] = 0.30  # gross margin on net revenue
    pre_period_days: Annotated[int, Field(ge=7, le=3650)] = 365
    default_response_window_days: Annotated[int, Field(ge=1, le=365)] = 14
    default_cost_per_contact: Annotated[float, Field(ge=0.0)] = 0.0
    cost_per_contact: dict[str, Annotated[float, Field(ge=0.0)]] = Field(default_factory=dict)
    # promotion -> arm -> planned share of the exposures (for the sample-ratio-mismatch test)
    planned_allocation: dict[str, dict[str, Annotated[float, Field(gt=0.0, le=1.0)]]] = Field(default_factory=dict)
    alpha: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.05
    multiple_testing: Correction = "holm"
    srm_alpha: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.001
    balance_smd_threshold: Annotated[float, Field(gt=0.0)] = 0.1
    min_arm_size: Annotated[int, Field(ge=2)] = 20
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    learners: Annotated[list[Learner], Field(min_length=1)] = Field(
        default_factory=lambda: ["t_learner", "x_learner", "dr_learner"])
    base_model: Literal["logistic", "gbt"] = "logistic"
    policy_learner: Learner = "dr_learner"
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    uplift_at: Annotated[list[Annotated[float, Field(gt=0.0, le=1.0)]], Field(min_length=1)] = Field(
        default_factory=lambda: [0.1, 0.2, 0.3])
    revenue_cap_quantile: Annotated[float, Field(gt=0.5, le=1.0)] = 0.99
    min_policy_profit: float = 0.0  # treat only when the expected incremental profit per contact exceeds it
    engine: Literal["auto", "sklearn", "spark"] = "auto"
    driver_max_rows: Annotated[int, Field(ge=1)] = 2_000_000
    spark_ml: SparkMlSettings = Field(default_factory=SparkMlSettings)
    observational: ObservationalSettings = Field(default_factory=ObservationalSettings)
    campaign_outcomes: CampaignSettings = Field(default_factory=CampaignSettings)
    register_models: bool = True

    _lists = field_validator("promotions", "learners", "uplift_at", mode="before")(
        lambda v: _list_from_text(v))

    def cost_for(self, promotion_id: str, from_table: float | None) -> float:
        """Cost per contact: the config override, else ``dim_promotion.cost_per_contact``, else the default."""
        if promotion_id in self.cost_per_contact:
            return float(self.cost_per_contact[promotion_id])
        if from_table is not None and from_table == from_table:  # not None and not NaN
            return float(from_table)
        return float(self.default_cost_per_contact)


class DriversConfig(_Block):
    """``analyses.drivers``: repurchase model and its driver attribution."""

    seed: int = 42
    horizon_months: Annotated[int, Field(ge=1, le=24)] = 3
    test_share: Share = 0.3
    model: Literal["gbt", "logistic"] = "gbt"
    permutation_repeats: Annotated[int, Field(ge=1, le=200)] = 10
    shap_sample: Annotated[int, Field(ge=50)] = 2000
    top_k_partial_dependence: Annotated[int, Field(ge=1, le=20)] = 4
    segment_column: Literal["loyalty_tier", "first_channel", "country"] = "loyalty_tier"
    # features whose contrast comes from a randomised assignment: reported as "randomised", others as associations
    randomized_features: list[str] = Field(default_factory=lambda: ["promo_treatment_in_window"])
    register_model: bool = True

    _lists = field_validator("randomized_features", mode="before")(lambda v: _list_from_text(v))


M = TypeVar("M", bound=BaseModel)


def _cross_problems(data: Any) -> list[tuple[str, str]]:
    """Rules across keys, checked on the raw block so they are reported together with field errors."""
    if not isinstance(data, dict):
        return []
    out = []
    learners = data.get("learners", ["t_learner", "x_learner", "dr_learner"])
    policy = data.get("policy_learner", "dr_learner")
    if isinstance(learners, list) and isinstance(policy, str) and policy not in learners:
        out.append(("policy_learner", f"{policy!r} must be one of learners {learners}"))
    allocation = data.get("planned_allocation") or {}
    if isinstance(allocation, dict):
        for promo, shares in allocation.items():
            if isinstance(shares, dict) and shares and all(isinstance(v, (int, float)) for v in shares.values()):
                total = float(sum(shares.values()))
                if abs(total - 1.0) > 1e-6:
                    out.append((f"planned_allocation.{promo}", f"shares must add up to 1 (got {total:g})"))
    return out


def parse_block(model: type[M], data: Any, name: str, file: str,
                origin: Callable[[tuple[Any, ...]], str] | None = None) -> M:
    """Validate one ``analyses.<name>`` block; every problem goes into one ConfigError naming its file."""
    return validate_section(model, data, name, file, cross_raw=_cross_problems if model is UpliftConfig else None,
                            origin=origin)


def _file(config: CpbiConfig, name: str) -> str:
    return defining_file(config, name, CONFIG_FILE)


def uplift_config(config: CpbiConfig) -> UpliftConfig:
    """The validated ``analyses.uplift`` block (defaults when absent)."""
    file = _file(config, "uplift")
    return parse_block(UpliftConfig, config.analyses.get("uplift"), "uplift", file, origin_in(config, file))


def drivers_config(config: CpbiConfig) -> DriversConfig:
    """The validated ``analyses.drivers`` block (defaults when absent)."""
    file = _file(config, "drivers")
    return parse_block(DriversConfig, config.analyses.get("drivers"), "drivers", file, origin_in(config, file))
