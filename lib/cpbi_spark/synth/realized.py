"""Diagnostics measured on the generated VALID rows while they are produced (never the truths).

The manifest shows them next to each planted truth as ``realized`` so a reader can see sampling
noise; tests compare them (and independent re-parses of the files) with the planted values.

Example:
    >>> from cpbi_spark.synth.world import build_world
    >>> from cpbi_spark.synth.sales import simulate_month
    >>> from cpbi_spark.synth.returns import draw_returns
    >>> world = build_world(42, 0.05)
    >>> real = Realized(world)
    >>> sales = simulate_month(world, 0)
    >>> real.add_month(world, sales, draw_returns(world, sales))
    >>> int(real.active[:, 0].sum()) == int((world.pop.acq_month == 0).sum())
    True
"""

from __future__ import annotations

import numpy as np

from cpbi_spark.synth.params import RETURN_DELAY_DAYS
from cpbi_spark.synth.returns import MonthReturns
from cpbi_spark.synth.sales import MonthSales
from cpbi_spark.synth.timeline import BATCH_MONTHS, DAY
from cpbi_spark.synth.world import World


class Realized:
    """Per-month accumulators; anything "as of batch b" sums the months of batches 1..b."""

    def __init__(self, world: World) -> None:
        n, n_months = world.pop.n, world.timeline.n_months
        self.active = np.zeros((n, n_months), dtype=bool)
        self.pair_counts = np.zeros((n_months, len(world.baskets.pairs), 3), dtype=np.int64)  # a, b, ab
        self.baskets = np.zeros(n_months, dtype=np.int64)
        self.lines = np.zeros(n_months, dtype=np.int64)
        n_cat = len(world.catalog.category_names)
        # Return rates only over lines whose whole return window ends before the batch end.
        self.cat_lines = {b: np.zeros(n_cat, dtype=np.int64) for b in BATCH_MONTHS}
        self.cat_returned = {b: np.zeros(n_cat, dtype=np.int64) for b in BATCH_MONTHS}
        self.converted: dict[str, np.ndarray] = {}
        self.spend_usd = np.zeros(n)

    def add_month(self, world: World, sales: MonthSales, returns: MonthReturns) -> None:
        m = sales.month.index
        n = world.pop.n
        self.active[np.unique(sales.b_cust), m] = True
        self.baskets[m] = sales.n_baskets
        self.lines[m] = sales.n_lines
        for j, (a, b, _q, _spec) in enumerate(world.baskets.pairs):
            in_a = np.unique(sales.l_basket[sales.l_product == a])
            in_b = np.unique(sales.l_basket[sales.l_product == b])
            both = np.intersect1d(in_a, in_b, assume_unique=True)
            self.pair_counts[m, j] = (len(in_a), len(in_b), len(both))
        cat = world.catalog.category[sales.l_product]
        n_cat = len(world.catalog.category_names)
        for b in BATCH_MONTHS:
            observed = sales.l_ts < world.timeline.batch_end(b) - RETURN_DELAY_DAYS[1] * DAY
            self.cat_lines[b] += np.bincount(cat[observed], minlength=n_cat)
            self.cat_returned[b] += np.bincount(cat[observed & returns.returned_mask], minlength=n_cat)
        for exp in world.exposures_in_month(m):
            start = np.full(n, -1, dtype=np.int64)
            start[exp.cust] = exp.exposed_ts
            e = start[sales.b_cust]
            inside = (e >= 0) & (sales.b_ts >= e) & (sales.b_ts < e + exp.window_seconds)
            conv = np.zeros(n, dtype=bool)
            conv[sales.b_cust[inside]] = True
            self.converted[exp.spec.promotion_id] = conv[exp.cust]
        rate = world.fx.rate(world.stores.currency_idx[sales.l_store], sales.l_ts)
        self.spend_usd += np.bincount(sales.l_cust, weights=sales.l_amount_cents / 100 * rate, minlength=n)
