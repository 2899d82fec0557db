"""Parameters of the basket analysis (``analyses.baskets`` in ``conf/base/analysis_baskets.yaml``).

The section is validated once into :class:`BasketsConfig`; every problem (unknown key, wrong type,
value out of range, a rule relating two keys) is collected and raised as one :class:`ConfigError`
naming the file and the key path.

Example:
    >>> cfg = validate_baskets_section({"min_support": 0.02, "levels": ["product", "category"]})
    >>> cfg.min_support, cfg.levels, cfg.max_len
    (0.02, ['product', 'category'], 3)
    >>> cfg.min_count_for(1000)          # max(ceil(0.02 * 1000), min_count)
    20
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from fractions import Fraction
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cpbi_spark.analytics.settings import defining_file, flat_params, origin_in, validate_section

if TYPE_CHECKING:
    from cpbi_spark.config import CpbiConfig

DEFAULT_FILE = "conf/base/analysis_baskets.yaml"

Level = Literal["product", "category", "department"]
# Segment keys: channel comes with the basket; region and loyalty_tier from the customer version valid then.
SegmentKey = Literal["channel", "region", "loyalty_tier"]
PositiveInt = Annotated[int, Field(ge=1)]
Share = Annotated[float, Field(gt=0, le=1)]
# statsmodels.stats.multitest.multipletests methods
Correction = Literal["bonferroni", "sidak", "holm-sidak", "holm", "simes-hochberg", "hommel", "fdr_bh",
                     "fdr_by", "fdr_tsbh", "fdr_tsbky", "none"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WindowConfig(_Model):
    """Baskets analysed: ``start`` <= basket date <= ``end`` (either open), or the last ``last_days`` days."""

    start: dt.date | None = None
    end: dt.date | None = None
    last_days: PositiveInt | None = None


class ExcludeConfig(_Model):
    """Lines dropped before baskets are built (bags, postage, gift wrap, ...)."""

    products: list[str] = Field(default_factory=list)
    categories: list[str] = Field(default_factory=list)
    departments: list[str] = Field(default_factory=list)


class ReturnsConfig(_Model):
    """Returned lines and the value of a cross-sell net of expected returns (see docs/baskets.md).

    ``keep_and_flag``: a returned line stays in its basket; rules carry the consequent's return rate and
    are flagged above ``flag_rate``. ``drop_returned``: lines with any returned quantity leave the basket.
    """

    policy: Literal["keep_and_flag", "drop_returned"] = "keep_and_flag"
    handling_cost: Annotated[float, Field(ge=0)] = 4.0      # per returned line, reporting currency
    cost_recovery_rate: Annotated[float, Field(ge=0, le=1)] = 0.8   # share of unit cost recovered on restock
    flag_rate: Share = 0.15
    # Margin rate assumed for products without a unit cost (null: their margin is unknown).
    default_margin_rate: Annotated[float, Field(ge=0, le=1)] | None = None


class SignificanceConfig(_Model):
    """Per-rule test of independence of antecedent and consequent, corrected per run scope."""

    test: Literal["fisher", "chi2"] = "fisher"
    correction: Correction = "fdr_bh"
    alpha: Annotated[float, Field(gt=0, lt=1)] = 0.05
    # A rule is flagged when any expected cell of its 2x2 table is below this (Cochran's rule).
    min_expected_count: Annotated[float, Field(ge=0)] = 5.0


class RecommendConfig(_Model):
    """Cross-sell recommendations from the product-level rules of the whole population."""

    k: PositiveInt = 10
    rank_by: Literal["confidence", "kept_confidence", "lift", "expected_net_value"] = "kept_confidence"
    # Items of the customer's baskets in the last ``context_days`` days before the reference time are
    # the context (rule antecedents must be inside it) and are never recommended again.
    context_days: PositiveInt = 90
    min_lift: Annotated[float, Field(ge=0)] = 1.0
    # Only rules whose test stays significant after the correction: a rule with lift 1.01 from chance
    # would push a random item above a popular one.
    only_significant: bool = True
    backfill_popularity: bool = True

    @property
    def merge(self) -> str:
        """How rule items and popular items mix (see recommend.py): by score when both are probabilities."""
        return "score" if self.rank_by in ("confidence", "kept_confidence") else "rules_first"


class EvaluationConfig(_Model):
    """Time-split evaluation: rules mined before ``cutoff``, judged on what happened after it."""

    enabled: bool = True
    cutoff: dt.date | None = None          # null: last basket date minus test_days
    test_days: PositiveInt = 60
    ks: Annotated[list[PositiveInt], Field(min_length=1)] = Field(default_factory=lambda: [5, 10])
    scenarios: Annotated[list[Literal["basket", "customer"]], Field(min_length=1)] = Field(
        default_factory=lambda: ["basket", "customer"])
    # Basket completion: the first share of a test basket's items (in a seeded random order) is revealed.
    reveal_share: Annotated[float, Field(gt=0, lt=1)] = 0.5
    seed: int = 7


class GuardConfig(_Model):
    """Limits checked before mining (see docs/baskets.md, "Guard rails")."""

    max_itemsets: PositiveInt = 500_000
    max_combinations: PositiveInt = 500_000_000
    max_rules: PositiveInt = 2_000_000


class BasketsConfig(_Model):
    """The whole ``analyses.baskets`` section."""

    levels: Annotated[list[Level], Field(min_length=1)] = Field(default_factory=lambda: ["product"])
    min_support: Share = 0.005
    min_count: PositiveInt = 1
    min_confidence: Annotated[float, Field(ge=0, le=1)] = 0.0
    min_lift: Annotated[float, Field(ge=0)] = 0.0
    max_len: Annotated[int, Field(ge=2, le=10)] = 3
    algorithm: Literal["auto", "levelwise", "fpgrowth"] = "auto"
    # Order of rules within a scope (rule_rank; significant rules first): see docs/baskets.md.
    rank_by: Literal["kept_lift", "lift", "confidence", "kept_confidence", "expected_net_value", "leverage",
                     "zhang", "conviction"] = "kept_lift"
    partitions: PositiveInt | None = None
    window: WindowConfig = Field(default_factory=WindowConfig)
    segments: list[SegmentKey] = Field(default_factory=list)
    segment_filter: dict[SegmentKey, Annotated[list[str], Field(min_length=1)]] = Field(default_factory=dict)
    exclude: ExcludeConfig = Field(default_factory=ExcludeConfig)
    returns: ReturnsConfig = Field(default_factory=ReturnsConfig)
    significance: SignificanceConfig = Field(default_factory=SignificanceConfig)
    recommend: RecommendConfig = Field(default_factory=RecommendConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    guard: GuardConfig = Field(default_factory=GuardConfig)
    top_rules: PositiveInt = 200       # rows of the top-rules CSV artifact

    def min_count_for(self, n_baskets: int) -> int:
        """The absolute support threshold of a scope of ``n_baskets`` baskets (see :func:`min_count_for`).

        >>> BasketsConfig(min_support=0.001, min_count=1).min_count_for(1_000_000)
        1000
        """
        return min_count_for(n_baskets, self.min_support, self.min_count)

    def params(self) -> dict[str, Any]:
        """Flat ``{dotted.key: value}`` for MLflow."""
        return flat_params(self)


def min_count_for(n_baskets: int, min_support: float, min_count: int = 1) -> int:
    """``max(ceil(min_support * n), min_count)``, in exact decimal arithmetic.

    ``min_support`` is read as the decimal it was written as (0.1 is 1/10, not the float just above it),
    so 10% of 30 baskets is 3, not 4.

    >>> min_count_for(30, 0.1), min_count_for(7, 0.5), min_count_for(100, 0.001, 3)
    (3, 4, 3)
    """
    exact = Fraction(repr(float(min_support))) * max(n_baskets, 0)
    return max(math.ceil(exact), min_count, 1)


def validate_baskets_section(raw: Any, *, file: str = DEFAULT_FILE,
                             origin: Callable[[tuple[Any, ...]], str] | None = None) -> BasketsConfig:
    """Validate a raw ``analyses.baskets`` mapping; raise one ConfigError with every problem.

    >>> validate_baskets_section(None).levels
    ['product']
    >>> from cpbi_spark.errors import ConfigError
    >>> try:
    ...     validate_baskets_section({"min_support": 2, "levelz": []})
    ... except ConfigError as exc:
    ...     print(len(exc.problems))
    2
    """
    return validate_section(BasketsConfig, raw, "baskets", file, cross=_cross_problems, origin=origin)


def _cross_problems(parsed: BasketsConfig) -> list[tuple[str, str]]:
    """Rules relating several keys, reported together with the per-key problems."""
    out: list[tuple[str, str]] = []
    w = parsed.window
    if w.last_days is not None and (w.start is not None or w.end is not None):
        out.append(("window.last_days", "use either last_days or start/end, not both"))
    if w.start is not None and w.end is not None and w.start > w.end:
        out.append(("window.start", f"{w.start} is after end {w.end}"))
    if len(set(parsed.levels)) != len(parsed.levels):
        out.append(("levels", "levels must be distinct"))
    if len(set(parsed.segments)) != len(parsed.segments):
        out.append(("segments", "segments must be distinct"))
    if parsed.evaluation.enabled and "product" not in parsed.levels:
        out.append(("evaluation.enabled",
                    "recommendations are products: add product to levels or set evaluation.enabled: false"))
    if len(set(parsed.evaluation.ks)) != len(parsed.evaluation.ks):
        out.append(("evaluation.ks", "k values must be distinct"))
    return out


def baskets_config(config: CpbiConfig) -> BasketsConfig:
    """The validated ``analyses.baskets`` section of a loaded configuration (defaults when absent)."""
    file = defining_file(config, "baskets", "analysis_baskets.yaml")
    return validate_baskets_section(config.analyses.get("baskets"), file=file, origin=origin_in(config, file))
