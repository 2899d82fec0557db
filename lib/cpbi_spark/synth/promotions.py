"""Promotions, exposure assignment and the conversion model (planted truth #3).

Conversion = at least one valid SALE basket of the customer in ``[exposed_ts, exposed_ts + window)``.
For an exposed customer the background baskets inside the window are dropped and replaced by a
response: with probability ``conv_prob`` the customer buys ``1 + Poisson(0.3)`` baskets at uniform
times inside the window. ``conv_prob = baseline + effect`` where ``baseline`` is exactly the
probability that the background process would have put a basket in that window (see
``activity.window_prob``), so the control arm behaves like no promotion at all and the treatment
effect per segment is the planted percentage-point lift.

Example:
    >>> [p.promotion_id for p in PROMOTIONS], PROMOTIONS[1].arm_names
    (['PRM001', 'PRM002', 'PRM003', 'PRM004'], ('control', 'treatment_a', 'treatment_b'))
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cpbi_spark.synth.activity import p_background, window_prob
from cpbi_spark.synth.customers import Population
from cpbi_spark.synth.params import TIERS
from cpbi_spark.synth.seeding import derive_rng
from cpbi_spark.synth.timeline import DAY, Timeline, iso_date

CONVERSION_EXTRA_BASKETS = 0.3  # a converter buys 1 + Poisson(0.3) baskets inside the window


@dataclass(frozen=True)
class PromotionSpec:
    """One campaign; ``effects_pp`` maps arm -> effect in percentage points per tier (TIERS order)."""

    promotion_id: str
    name: str
    promo_type: str
    discount_pct: float
    channel: str
    month_index: int
    start_day: int  # day of month of the first exposure
    exposure_days: int
    response_window_days: int
    cost_per_contact: float
    is_randomized: bool
    arms: tuple[tuple[str, float], ...]  # (arm, planned share)
    audience_share: float  # randomised: share of eligible customers exposed; targeted: top share by spend
    effects_pp: tuple[tuple[str, tuple[float, ...]], ...]

    @property
    def arm_names(self) -> tuple[str, ...]:
        return tuple(a for a, _ in self.arms)

    def effect_matrix(self) -> np.ndarray:
        """(arm, tier) effects as probabilities; control rows are zero."""
        eff = dict(self.effects_pp)
        return np.array([eff.get(a, (0.0,) * len(TIERS)) for a in self.arm_names]) / 100.0


_FLAT = (4.0, 4.0, 4.0, 4.0)
PROMOTIONS: tuple[PromotionSpec, ...] = (
    PromotionSpec("PRM001", "Summer email 10% off", "discount", 10.0, "email", 5, 3, 2, 14, 0.02, True,
                  (("control", 0.5), ("treatment", 0.5)), 0.40,
                  (("treatment", (3.0, 10.0, 0.0, 3.0)),)),
    PromotionSpec("PRM002", "Autumn subject-line A/B", "discount", 15.0, "email", 8, 2, 2, 14, 0.02, True,
                  (("control", 0.4), ("treatment_a", 0.3), ("treatment_b", 0.3)), 0.45,
                  (("treatment_a", (2.0, 6.0, 0.0, 2.0)), ("treatment_b", (4.0, 12.0, 1.0, 4.0)))),
    PromotionSpec("PRM003", "VIP high-spender offer (targeted)", "loyalty_offer", 20.0, "sms", 10, 4, 2, 14,
                  0.10, False, (("treatment", 1.0),), 0.15, (("treatment", _FLAT),)),
    PromotionSpec("PRM004", "Spring app push", "discount", 5.0, "app_push", 14, 3, 2, 14, 0.01, True,
                  (("control", 0.5), ("treatment", 0.5)), 0.40,
                  (("treatment", (8.0, 2.0, 0.0, 0.0)),)),
)


@dataclass
class ExposureSet:
    """The exposed customers of one promotion and their planted conversion probabilities."""

    spec: PromotionSpec
    cust: np.ndarray
    arm: np.ndarray  # index into spec.arm_names
    exposed_ts: np.ndarray
    segment: np.ndarray  # tier index valid at exposed_ts
    p_month: np.ndarray  # background activity probability in the promotion month
    lam: np.ndarray
    f: float  # window share of the month
    baseline: np.ndarray  # P(>=1 background basket in the window): the counterfactual conversion
    conv_prob: np.ndarray
    targeting: dict = field(default_factory=dict)

    @property
    def window_seconds(self) -> int:
        return self.spec.response_window_days * DAY

    def exposure_ids(self) -> list[str]:
        num = self.spec.promotion_id[-3:]
        return [f"E{num}{i + 1:07d}" for i in range(len(self.cust))]


def promotion_record(spec: PromotionSpec, timeline: Timeline) -> dict:
    """JSON-ready row of ``promotions_<batch>.jsonl``."""
    start = timeline.months[spec.month_index].start + (spec.start_day - 1) * DAY
    return {
        "promotion_id": spec.promotion_id, "name": spec.name, "promo_type": spec.promo_type,
        "discount_pct": spec.discount_pct, "channel": spec.channel,
        "start_date": iso_date([start])[0], "end_date": iso_date([start + (spec.exposure_days - 1) * DAY])[0],
        "response_window_days": spec.response_window_days, "cost_per_contact": spec.cost_per_contact,
        "is_randomized": spec.is_randomized,
    }


def _finish(spec: PromotionSpec, rng: np.random.Generator, cust: np.ndarray, arm: np.ndarray,
            pop: Population, offset: np.ndarray, timeline: Timeline, targeting: dict) -> ExposureSet:
    month = timeline.months[spec.month_index]
    start = month.start + (spec.start_day - 1) * DAY
    # Exposures go out between 08:00 and 20:00 UTC on the campaign days.
    ts = (start + rng.integers(0, spec.exposure_days, len(cust)) * DAY + 8 * 3600
          + rng.integers(0, 12 * 3600, len(cust)))
    order = np.lexsort((cust, ts))
    cust, arm, ts = cust[order], arm[order], ts[order]
    if ts.size and ts.max() + spec.response_window_days * DAY > month.end:
        raise AssertionError("a response window must lie inside its month")  # keeps the maths exact
    f = spec.response_window_days / month.days
    p = p_background(pop.acq_month[cust], offset[cust], spec.month_index)
    lam = pop.lam[cust]
    segment = pop.tier_at(cust, ts)
    baseline = window_prob(p, lam, f)
    conv = np.clip(baseline + spec.effect_matrix()[arm, segment], 0.0, 1.0)
    return ExposureSet(spec, cust, arm, ts.astype(np.int64), segment, p, lam, f, baseline, conv, targeting)


def assign_randomized(spec: PromotionSpec, seed: int, pop: Population, offset: np.ndarray,
                      timeline: Timeline) -> ExposureSet:
    """Randomly expose ``audience_share`` of the customers acquired before the campaign month."""
    rng = derive_rng(seed, "promotion", spec.promotion_id)
    eligible = pop.acq_month < spec.month_index
    cust = np.flatnonzero(eligible & (rng.random(pop.n) < spec.audience_share))
    arm = rng.choice(len(spec.arms), len(cust), p=[s for _, s in spec.arms])
    return _finish(spec, rng, cust, arm, pop, offset, timeline,
                   {"rule": "random sample of customers whose first purchase precedes the campaign month",
                    "eligible": int(eligible.sum())})


def assign_targeted(spec: PromotionSpec, seed: int, pop: Population, offset: np.ndarray, timeline: Timeline,
                    prior_spend_usd: np.ndarray) -> ExposureSet:
    """Expose the top ``audience_share`` of eligible customers by USD sales before the campaign month."""
    rng = derive_rng(seed, "promotion", spec.promotion_id)
    eligible = np.flatnonzero(pop.acq_month < spec.month_index)
    n_target = int(np.ceil(spec.audience_share * len(eligible)))
    order = np.lexsort((eligible, -prior_spend_usd[eligible]))  # highest spend first, ties by customer
    cust = np.sort(eligible[order[:n_target]])
    cutoff = timeline.months[spec.month_index].start
    targeting = {
        "rule": (f"top {spec.audience_share:.0%} of customers with a first purchase before "
                 f"{iso_date([cutoff])[0]} by gross valid SALE amount in USD (daily rates) before that date"),
        "eligible": len(eligible), "targeted": len(cust),
        "min_prior_spend_usd": round(float(prior_spend_usd[cust].min()), 2) if len(cust) else None,
    }
    exp = _finish(spec, rng, cust, np.zeros(len(cust), dtype=np.int64), pop, offset, timeline, targeting)
    others = np.setdiff1d(eligible, cust)
    p = p_background(pop.acq_month[others], offset[others], spec.month_index)
    exp.targeting["nontargeted_baseline"] = float(window_prob(p, pop.lam[others], exp.f).mean())
    exp.targeting["nontargeted_n"] = len(others)
    return exp
