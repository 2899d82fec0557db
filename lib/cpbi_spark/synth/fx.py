"""Daily exchange rates (random walks) to the reporting currency USD.

``rate_to_usd`` is the USD value of one unit of the currency; ``rate_date`` is a UTC calendar date,
so an amount is converted with the rate of the UTC date of its timestamp.

Example:
    >>> from cpbi_spark.synth.timeline import Timeline
    >>> fx = ExchangeRates(42, Timeline())
    >>> fx.rows(1)[:3]
    [['2024-01-01', 'USD', '1.000000'], ['2024-01-01', 'EUR', '1.090000'], ['2024-01-01', 'GBP', '1.270000']]
"""

from __future__ import annotations

import numpy as np

from cpbi_spark.synth.reference_data import CURRENCIES
from cpbi_spark.synth.seeding import derive_rng
from cpbi_spark.synth.timeline import DAY, Timeline, iso_date

START_RATE: dict[str, float] = {"USD": 1.0, "EUR": 1.09, "GBP": 1.27}
DAILY_LOG_SD = 0.003


class ExchangeRates:
    """One rate per UTC day per currency over the whole horizon, rounded to 6 decimals."""

    def __init__(self, seed: int, timeline: Timeline) -> None:
        rng = derive_rng(seed, "fx")
        self.timeline = timeline
        self.start = timeline.months[0].start
        n_days = (timeline.horizon_end - self.start) // DAY
        rates = np.ones((len(CURRENCIES), n_days))
        for ci, cur in enumerate(CURRENCIES):
            steps = rng.normal(0.0, DAILY_LOG_SD, n_days)
            steps[0] = 0.0  # the walk starts exactly at the documented start rate
            if cur != "USD":
                rates[ci] = START_RATE[cur] * np.exp(np.cumsum(steps))
        # The pipeline sees 6 decimals, so every internal conversion uses the rounded value too.
        self.rates = np.round(rates, 6)

    def rate(self, currency_idx: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Rate to USD of each (currency, UTC date of ``ts``); ``ts`` must lie inside the horizon."""
        day = (np.asarray(ts, dtype=np.int64) - self.start) // DAY
        return self.rates[currency_idx, day]

    def rows(self, batch: int) -> list[list[str]]:
        """CSV rows of ``rates_<batch>.csv``: every UTC date of the batch's months x every currency."""
        start = (self.timeline.batch_start(batch) - self.start) // DAY
        end = (self.timeline.batch_end(batch) - self.start) // DAY
        dates = iso_date(self.start + np.arange(start, end) * DAY)
        return [[d, cur, f"{self.rates[ci, start + i]:.6f}"]
                for i, d in enumerate(dates) for ci, cur in enumerate(CURRENCIES)]
