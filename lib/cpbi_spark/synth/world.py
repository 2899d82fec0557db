"""The static part of the simulated retailer: calendar, catalog, stores, rates, customers, campaigns.

Everything here is a pure function of (seed, scale); the month-by-month sales simulation reads it.

Example:
    >>> w = build_world(seed=42, scale=0.05)
    >>> w.pop.n, w.catalog.n, round(w.lam0, 3) >= 0
    (300, 300, True)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from cpbi_spark.synth.activity import LAMBDA_TIER_MULT, activity_offset, calibrate_lambda0, p_background
from cpbi_spark.synth.baskets import BasketModel
from cpbi_spark.synth.catalog import Catalog, build_catalog
from cpbi_spark.synth.customers import Population, build_population
from cpbi_spark.synth.fx import ExchangeRates
from cpbi_spark.synth.params import TIERS, SizeParams
from cpbi_spark.synth.promotions import PROMOTIONS, ExposureSet, assign_randomized
from cpbi_spark.synth.stores import Stores, build_stores
from cpbi_spark.synth.timeline import Timeline


@dataclass
class World:
    """Static state plus the exposure sets (the targeted one is added during the simulation)."""

    seed: int
    sizes: SizeParams
    timeline: Timeline
    catalog: Catalog
    stores: Stores
    fx: ExchangeRates
    pop: Population
    baskets: BasketModel
    offset: np.ndarray  # activity log-odds offset per customer
    lam0: float
    lines_per_basket: float
    expected_lines_month: np.ndarray  # planning figure per month (drives the dirty-record budget)
    exposures: dict[str, ExposureSet] = field(default_factory=dict)

    def exposures_in_month(self, month: int) -> list[ExposureSet]:
        return [e for e in self.exposures.values() if e.spec.month_index == month]


def build_world(seed: int, scale: float, progress: Callable[[str], None] | None = None) -> World:
    """Build the static world; randomised campaigns are assigned here, the targeted one later."""
    say = progress or (lambda _msg: None)
    sizes = SizeParams.from_scale(scale)
    timeline = Timeline()
    catalog = build_catalog(seed, sizes.n_products, timeline)
    stores = build_stores(seed, timeline)
    fx = ExchangeRates(seed, timeline)
    pop = build_population(seed, sizes.n_customers, timeline, stores)
    say(f"customers: {pop.n:,} customers, {len(pop.versions):,} master rows; products: {catalog.n:,}")
    model = BasketModel(catalog, seed)
    offset = activity_offset(pop.tier0, pop.chan0, pop.first_discount, pop.first_weekend)
    mult = np.array([LAMBDA_TIER_MULT[t] for t in TIERS])[pop.tier0]
    lpb = model.expected_lines_per_basket()
    lam0 = calibrate_lambda0(pop.acq_month, offset, mult, [m.index for m in timeline.batch_months(1)], lpb,
                             sizes.target_lines_batch1)
    pop.lam = lam0 * mult
    expected = np.array([lpb * float((p_background(pop.acq_month, offset, m.index) * (1 + pop.lam)).sum())
                         for m in timeline.months])
    world = World(seed, sizes, timeline, catalog, stores, fx, pop, model, offset, lam0, lpb, expected)
    for spec in PROMOTIONS:
        if spec.is_randomized:
            world.exposures[spec.promotion_id] = assign_randomized(spec, seed, pop, offset, timeline)
    return world
