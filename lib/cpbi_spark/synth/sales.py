"""One month of valid SALE baskets and lines: who buys, when, where, what, at which price.

Example:
    >>> from cpbi_spark.synth.world import build_world
    >>> world = build_world(42, 0.05)
    >>> sales = simulate_month(world, 0)
    >>> sales.rows(world)[0][:2], sales.rows(world)[0][10]
    (['T2024010000001', 'B00000001'], 'SALE')
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cpbi_spark.synth.activity import p_background
from cpbi_spark.synth.params import (
    CHANNELS,
    FIRST_BASKET_DISCOUNT_PCT,
    FIRST_CHANNEL_PROBS,
    LOCAL_PRICE_FACTOR,
    PAYMENT_METHODS,
    PAYMENT_PROBS,
    STICKY_CHANNEL_PROB,
)
from cpbi_spark.synth.promotions import CONVERSION_EXTRA_BASKETS
from cpbi_spark.synth.reference_data import CURRENCIES
from cpbi_spark.synth.seeding import derive_rng
from cpbi_spark.synth.stores import NEW_STORE_SHARE
from cpbi_spark.synth.timeline import DAY, Month, draw_time_of_day, iso_with_offset
from cpbi_spark.synth.world import World

TRANSACTION_COLUMNS: tuple[str, ...] = (
    "txn_id", "basket_id", "account_id", "customer_id", "product_id", "store_id", "quantity", "unit_price",
    "amount", "currency", "txn_type", "payment_method", "posted_ts",
)
_FACTOR = np.array([LOCAL_PRICE_FACTOR[c] for c in CURRENCIES])
_PAY_CDF = np.cumsum(np.array(PAYMENT_PROBS), axis=1)


def cents_str(cents: np.ndarray) -> list[str]:
    """Integer cents as fixed two-decimal strings (``-1250`` -> ``-12.50``); exact, no float rounding."""
    return [f"{'-' if c < 0 else ''}{abs(c) // 100}.{abs(c) % 100:02d}" for c in np.asarray(cents).tolist()]


@dataclass
class MonthSales:
    """Baskets (``b_*``, sorted by time) and lines (``l_*``, sorted by basket) of one month."""

    month: Month
    basket_ids: list[str]
    b_cust: np.ndarray
    b_ts: np.ndarray
    b_store: np.ndarray
    b_payment: np.ndarray
    b_discount_pct: np.ndarray
    b_promo: np.ndarray  # index into ``promo_ids`` of the conversion basket, -1 for background
    promo_ids: list[str]
    l_basket: np.ndarray
    l_product: np.ndarray
    l_qty: np.ndarray
    l_price_cents: np.ndarray  # unit price in the store currency
    l_amount_cents: np.ndarray
    txn_ids: list[str]

    @property
    def n_lines(self) -> int:
        return len(self.l_basket)

    @property
    def n_baskets(self) -> int:
        return len(self.b_ts)

    @property
    def l_cust(self) -> np.ndarray:
        return self.b_cust[self.l_basket]

    @property
    def l_ts(self) -> np.ndarray:
        return self.b_ts[self.l_basket]

    @property
    def l_store(self) -> np.ndarray:
        return self.b_store[self.l_basket]

    def rows(self, world: World) -> list[list[str]]:
        """The month's valid lines as CSV fields in TRANSACTION_COLUMNS order."""
        pop, cat, st = world.pop, world.catalog, world.stores
        cust, store = self.l_cust.tolist(), self.l_store
        currency = [CURRENCIES[c] for c in st.currency_idx[store].tolist()]
        posted = iso_with_offset(self.l_ts, st.offset_minutes[store])
        payment = [PAYMENT_METHODS[p] for p in self.b_payment[self.l_basket].tolist()]
        cols = zip(
            self.txn_ids, [self.basket_ids[b] for b in self.l_basket.tolist()],
            [pop.account_id[c] for c in cust], [pop.customer_id[c] for c in cust],
            [cat.product_id[p] for p in self.l_product.tolist()], [st.store_id[s] for s in store.tolist()],
            [str(q) for q in self.l_qty.tolist()], cents_str(self.l_price_cents),
            cents_str(self.l_amount_cents),
            currency, payment, posted, strict=True,
        )
        return [[t, b, a, c, p, s, q, u, am, cur, "SALE", pay, ts]
                for t, b, a, c, p, s, q, u, am, cur, pay, ts in cols]


def _pick_channel(rng: np.random.Generator, chan0: np.ndarray) -> np.ndarray:
    sticky = rng.random(len(chan0)) < STICKY_CHANNEL_PROB
    mix = rng.choice(len(CHANNELS), len(chan0), p=FIRST_CHANNEL_PROBS)
    return np.where(sticky, chan0, mix)


def simulate_month(world: World, m: int) -> MonthSales:
    """Draw every valid basket and line of month ``m`` from its own random stream."""
    rng = derive_rng(world.seed, "sales", m)
    month = world.timeline.months[m]
    pop, st = world.pop, world.stores
    n = pop.n
    p = p_background(pop.acq_month, world.offset, m)
    # Draw for every customer (not only the active ones) so the stream layout never depends on data.
    active = rng.random(n) < p
    n_bg = np.where(active, 1 + rng.poisson(pop.lam), 0)
    cust = np.repeat(np.arange(n), n_bg)
    rank = np.arange(len(cust)) - np.repeat(np.cumsum(n_bg) - n_bg, n_bg)
    is_new = pop.acq_month[cust] == m
    first = is_new & (rank == 0)
    chan = _pick_channel(rng, pop.chan0[cust])
    chan[first] = pop.chan0[cust[first]]
    store = pop.home_store[cust, chan]
    tod = draw_time_of_day(rng, chan, st.offset_minutes[store])
    ts = month.start + rng.integers(0, month.days, len(cust)) * DAY + tod
    # The acquisition month starts with the planted first basket; the others follow it.
    tf = pop.t_first[cust]
    after = tf + 1 + np.floor(rng.random(len(cust)) * (month.end - tf - 1)).astype(np.int64)
    ts = np.where(first, tf, np.where(is_new, after, ts))
    discount = np.where(first & pop.first_discount[cust], FIRST_BASKET_DISCOUNT_PCT, 0.0)
    promo = np.full(len(cust), -1)

    promo_ids: list[str] = []
    keep = np.ones(len(cust), dtype=bool)
    parts = []
    for exp in world.exposures_in_month(m):
        promo_ids.append(exp.spec.promotion_id)
        start = np.full(n, -1, dtype=np.int64)
        start[exp.cust] = exp.exposed_ts
        e = start[cust]
        keep &= ~((e >= 0) & (ts >= e) & (ts < e + exp.window_seconds))  # window: replaced by the response
        conv = rng.random(len(exp.cust)) < exp.conv_prob
        n_c = np.where(conv, 1 + rng.poisson(CONVERSION_EXTRA_BASKETS, len(exp.cust)), 0)
        c_cust = np.repeat(exp.cust, n_c)
        c_ts = np.repeat(exp.exposed_ts, n_c) + np.floor(rng.random(len(c_cust)) * exp.window_seconds
                                                         ).astype(np.int64)
        c_chan = _pick_channel(rng, pop.chan0[c_cust])
        treated = np.repeat(np.array(exp.spec.arm_names)[exp.arm] != "control", n_c)
        parts.append((c_cust, c_ts, c_chan, np.where(treated, exp.spec.discount_pct, 0.0),
                      np.full(len(c_cust), len(promo_ids) - 1)))
    cust, ts, chan, discount, promo = cust[keep], ts[keep], chan[keep], discount[keep], promo[keep]
    for c_cust, c_ts, c_chan, c_disc, c_promo in parts:
        cust, ts = np.concatenate([cust, c_cust]), np.concatenate([ts, c_ts])
        chan, discount = np.concatenate([chan, c_chan]), np.concatenate([discount, c_disc])
        promo = np.concatenate([promo, c_promo])
    store = pop.home_store[cust, chan]
    if month.batch >= int(st.batch[st.new_store]):
        moved = (chan == 0) & (pop.home_region[cust] == st.new_store_region)
        store = np.where(moved & (rng.random(len(cust)) < NEW_STORE_SHARE), st.new_store, store)
    payment = (_PAY_CDF[chan] < rng.random(len(cust))[:, None]).sum(axis=1)

    order = np.lexsort((cust, ts))
    cust, ts, store, payment = cust[order], ts[order], store[order], payment[order]
    discount, promo = discount[order], promo[order]
    n_b = len(cust)
    width = max(6, len(str(n_b)))
    basket_ids = [f"B{m:02d}{i + 1:0{width}d}" for i in range(n_b)]

    l_basket, l_product = world.baskets.draw(rng, n_b)
    cat = world.catalog
    qty = 1 + rng.poisson(cat.department_extra_units[cat.department[l_product]])
    l_ts = ts[l_basket]
    currency = st.currency_idx[store[l_basket]]
    regular = np.rint(cat.list_price_at(l_product, l_ts) * _FACTOR[currency]).astype(np.int64)
    price = np.rint(regular * (1.0 - discount[l_basket] / 100.0)).astype(np.int64)
    txn_ids = [f"T{month.yyyymm}{i + 1:07d}" for i in range(len(l_basket))]
    return MonthSales(month, basket_ids, cust, ts, store, payment, discount, promo, promo_ids,
                      l_basket, l_product, qty, price, qty * price, txn_ids)
