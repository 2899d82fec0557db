"""Sizes derived from ``scale`` and the fixed vocabularies (tiers, channels) shared by all modules.

Example:
    >>> p = SizeParams.from_scale(1.0)
    >>> p.n_customers, p.n_products, p.target_lines_batch1
    (6000, 500, 100000.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GENERATOR_VERSION = "1.0.0"
REPORTING_CURRENCY = "USD"

TIERS: tuple[str, ...] = ("bronze", "silver", "gold", "platinum")
TIER_PROBS: tuple[float, ...] = (0.50, 0.30, 0.15, 0.05)
CHANNELS: tuple[str, ...] = ("store", "online", "mobile")
FIRST_CHANNEL_PROBS: tuple[float, ...] = (0.50, 0.30, 0.20)
# A later basket uses the first-purchase channel with this probability, else a draw from the mix.
STICKY_CHANNEL_PROB = 0.70
FIRST_BASKET_DISCOUNT_SHARE = 0.30
FIRST_BASKET_DISCOUNT_PCT = 20.0
PAYMENT_METHODS: tuple[str, ...] = ("card", "cash", "wallet", "gift_card")
# Per channel (store, online, mobile); nobody pays cash online.
PAYMENT_PROBS: tuple[tuple[float, ...], ...] = (
    (0.55, 0.20, 0.15, 0.10),
    (0.70, 0.00, 0.20, 0.10),
    (0.40, 0.00, 0.55, 0.05),
)
# Local price lists: regular unit price = round(list_price_usd * factor, 2) in the store currency.
LOCAL_PRICE_FACTOR: dict[str, float] = {"USD": 1.0, "EUR": 0.93, "GBP": 0.80}
# Local hour-of-day weights per channel (hour 0..23); stores open 8-21, online/mobile all day.
HOUR_WEIGHTS: tuple[tuple[float, ...], ...] = (
    (0, 0, 0, 0, 0, 0, 0, 0, 2, 4, 6, 8, 10, 10, 8, 7, 8, 10, 11, 9, 6, 3, 0, 0),
    (1, 0.5, 0.3, 0.2, 0.2, 0.3, 1, 2, 3, 4, 5, 6, 7, 6, 5, 5, 6, 7, 8, 10, 12, 12, 9, 4),
    (2, 1, 0.5, 0.3, 0.3, 0.6, 2, 5, 7, 6, 5, 6, 8, 7, 5, 5, 6, 7, 8, 10, 11, 11, 9, 5),
)
DIRTY_SHARE = 0.005  # share of transaction lines that are planted dirty records (all kinds together)
MIN_DIRTY_PER_KIND = 3
TARGET_LINES_PER_BASKET = 3.6
# returned_ts - posted_ts in [1, 28) days: a return lands in the sale month or the next one.
RETURN_DELAY_DAYS = (1, 28)


@dataclass(frozen=True)
class SizeParams:
    """Population and volume targets for one ``scale`` (scale 1 ~ 100k transaction lines in batch 1)."""

    scale: float
    n_customers: int
    n_products: int
    target_lines_batch1: float

    @classmethod
    def from_scale(cls, scale: float) -> SizeParams:
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive number, got {scale!r}")
        return cls(
            scale=float(scale),
            n_customers=max(200, round(6000 * scale)),
            n_products=max(300, round(500 * math.sqrt(scale))),
            target_lines_batch1=100_000.0 * scale,
        )
