"""Returns of valid sale lines (planted truth #4: per-category return probability).

A valid line is returned with probability ``return_prob[category]``; the returned quantity is
uniform on 1..sold quantity, the refund is quantity x unit price in the sale currency, and
``returned_ts - posted_ts`` is uniform on [1, 28) days, so a return lands in the sale month or the next
one. Returns after the end of the last generated batch are never written (right-censoring).

Example:
    >>> from cpbi_spark.synth.world import build_world
    >>> from cpbi_spark.synth.sales import simulate_month
    >>> world = build_world(42, 0.05)
    >>> ret = draw_returns(world, simulate_month(world, 0))
    >>> sorted(ret.records[0])[:3]
    ['amount', 'currency', 'customer_id']
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cpbi_spark.synth.params import RETURN_DELAY_DAYS
from cpbi_spark.synth.reference_data import CURRENCIES, DEPARTMENTS, RETURN_REASONS
from cpbi_spark.synth.sales import MonthSales
from cpbi_spark.synth.seeding import derive_rng
from cpbi_spark.synth.timeline import DAY, iso_with_offset
from cpbi_spark.synth.world import World

RETURN_COLUMNS: tuple[str, ...] = (
    "return_id", "original_txn_id", "customer_id", "product_id", "store_id", "quantity", "amount", "currency",
    "returned_ts", "reason",
)
# Reason mix (RETURN_REASONS order): apparel is mostly about fit, the rest about defects and regret.
_REASON_APPAREL = np.cumsum([0.45, 0.15, 0.15, 0.20, 0.05])
_REASON_OTHER = np.cumsum([0.00, 0.35, 0.25, 0.30, 0.10])
_APPAREL = [d.name for d in DEPARTMENTS].index("Apparel")


@dataclass
class MonthReturns:
    """Valid returns of one sale month: JSON records plus the arrays the manifest needs."""

    records: list[dict]
    returned_ts: np.ndarray
    line: np.ndarray  # index of the returned line in the sale month
    returned_mask: np.ndarray  # per sale line


def draw_returns(world: World, sales: MonthSales) -> MonthReturns:
    """Decide which lines of ``sales`` are returned, how much and when (own random stream)."""
    rng = derive_rng(world.seed, "returns", sales.month.index)
    cat, st, pop = world.catalog, world.stores, world.pop
    n = sales.n_lines
    prob = cat.category_return_prob[cat.category[sales.l_product]]
    returned = rng.random(n) < prob
    qty_u, delay_u, reason_u = rng.random(n), rng.random(n), rng.random(n)
    line = np.flatnonzero(returned)
    qty = 1 + np.floor(qty_u[line] * sales.l_qty[line]).astype(np.int64)
    lo, hi = RETURN_DELAY_DAYS
    ts = sales.l_ts[line] + lo * DAY + np.floor(delay_u[line] * (hi - lo) * DAY).astype(np.int64)
    apparel = cat.department[sales.l_product[line]] == _APPAREL
    reason = np.where(apparel, np.searchsorted(_REASON_APPAREL, reason_u[line], side="right"),
                      np.searchsorted(_REASON_OTHER, reason_u[line], side="right"))
    reason = reason.clip(max=len(RETURN_REASONS) - 1)
    store = sales.l_store[line]
    stamps = iso_with_offset(ts, st.offset_minutes[store])
    amount = qty * sales.l_price_cents[line]
    cust = sales.l_cust[line]
    records = [
        {
            "return_id": f"R{sales.month.yyyymm}{k + 1:07d}",
            "original_txn_id": sales.txn_ids[i],
            "customer_id": pop.customer_id[c],
            "product_id": cat.product_id[p],
            "store_id": st.store_id[s],
            "quantity": q,
            "amount": a / 100,
            "currency": CURRENCIES[cur],
            "returned_ts": stamp,
            "reason": RETURN_REASONS[r],
        }
        for k, (i, c, p, s, q, a, cur, stamp, r) in enumerate(zip(
            line.tolist(), cust.tolist(), sales.l_product[line].tolist(), store.tolist(), qty.tolist(),
            amount.tolist(), st.currency_idx[store].tolist(), stamps, reason.tolist(), strict=True))
    ]
    return MonthReturns(records, ts, line, returned)
