"""The generator's calendar: 16 UTC months split into two delivery batches, and timestamp formatting.

Batch 1 covers 2024-01 .. 2025-02 (14 months), batch 2 continues with 2025-03 .. 2025-04.
Every month/day boundary used by the planted truths is a UTC boundary.

Example:
    >>> tl = Timeline()
    >>> [m.label for m in tl.batch_months(2)]
    ['2025-03', '2025-04']
    >>> iso_utc(np.array([tl.months[0].start]))[0]
    '2024-01-01T00:00:00Z'
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, datetime, timezone

import numpy as np

from cpbi_spark.synth.params import HOUR_WEIGHTS

DAY = 86_400
WINDOW_START = date(2024, 1, 1)
BATCH_MONTHS: dict[int, int] = {1: 14, 2: 2}  # months delivered per batch, in order
MAX_BATCH = max(BATCH_MONTHS)


def epoch(d: date) -> int:
    """Epoch seconds of midnight UTC of ``d``."""
    return int(datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp())


@dataclass(frozen=True)
class Month:
    """One UTC calendar month of the horizon; ``start`` inclusive, ``end`` exclusive (epoch seconds)."""

    index: int
    year: int
    month: int
    start: int
    end: int
    batch: int

    @property
    def label(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def yyyymm(self) -> str:
        return f"{self.year:04d}{self.month:02d}"

    @property
    def days(self) -> int:
        return (self.end - self.start) // DAY


class Timeline:
    """All months of all batches; batch ``b`` owns a contiguous run of months."""

    def __init__(self) -> None:
        months: list[Month] = []
        year, month = WINDOW_START.year, WINDOW_START.month
        for batch, count in sorted(BATCH_MONTHS.items()):
            for _ in range(count):
                ndays = calendar.monthrange(year, month)[1]
                start = epoch(date(year, month, 1))
                months.append(Month(len(months), year, month, start, start + ndays * DAY, batch))
                year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        self.months: tuple[Month, ...] = tuple(months)

    @property
    def n_months(self) -> int:
        return len(self.months)

    def batch_months(self, batch: int) -> list[Month]:
        """The months whose transactions are delivered in ``batch``."""
        if batch not in BATCH_MONTHS:
            raise ValueError(f"batch must be one of {sorted(BATCH_MONTHS)}, got {batch}")
        return [m for m in self.months if m.batch == batch]

    def batch_start(self, batch: int) -> int:
        return self.batch_months(batch)[0].start

    def batch_end(self, batch: int) -> int:
        """Exclusive end (epoch seconds) of ``batch``."""
        return self.batch_months(batch)[-1].end

    @property
    def horizon_end(self) -> int:
        return self.months[-1].end

    def month_starts(self) -> np.ndarray:
        return np.array([m.start for m in self.months], dtype=np.int64)

    def month_of(self, ts: np.ndarray) -> np.ndarray:
        """Month index of each epoch second (``-1`` before the window, ``n_months`` after it)."""
        starts = self.month_starts()
        idx = np.searchsorted(starts, ts, side="right") - 1
        return np.where(ts >= self.horizon_end, self.n_months, idx)

    def batch_of(self, ts: np.ndarray) -> np.ndarray:
        """Batch whose window contains each epoch second (anything before the window is batch 1)."""
        out = np.ones(len(ts), dtype=np.int64)
        for batch in sorted(BATCH_MONTHS)[1:]:
            out[ts >= self.batch_start(batch)] = batch
        return out


def _offset_suffix(minutes: int) -> str:
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def iso_with_offset(ts: np.ndarray, offset_minutes: np.ndarray) -> list[str]:
    """ISO-8601 local wall-clock time with its offset, e.g. ``2024-03-05T09:22:10-05:00``."""
    ts = np.asarray(ts, dtype=np.int64)
    offset_minutes = np.asarray(offset_minutes, dtype=np.int64)
    body = np.datetime_as_string((ts + offset_minutes * 60).astype("datetime64[s]"), unit="s").tolist()
    suffix = {int(o): _offset_suffix(int(o)) for o in np.unique(offset_minutes)}
    return [b + suffix[o] for b, o in zip(body, offset_minutes.tolist(), strict=True)]


def iso_utc(ts: np.ndarray) -> list[str]:
    """ISO-8601 UTC with a ``Z`` suffix, e.g. ``2024-01-05T10:00:00Z``."""
    body = np.datetime_as_string(np.asarray(ts, dtype=np.int64).astype("datetime64[s]"), unit="s")
    return [b + "Z" for b in body.tolist()]


def iso_date(ts: np.ndarray) -> list[str]:
    """UTC calendar date ``YYYY-MM-DD`` of each epoch second."""
    days = np.asarray(ts, dtype=np.int64).astype("datetime64[s]").astype("datetime64[D]")
    return np.datetime_as_string(days, unit="D").tolist()


def utc_weekday(ts: np.ndarray) -> np.ndarray:
    """Monday=0 .. Sunday=6 of the UTC date (1970-01-01 was a Thursday)."""
    return (np.asarray(ts, dtype=np.int64) // DAY + 3) % 7


_HOUR_CDF = np.cumsum(np.array(HOUR_WEIGHTS, dtype=np.float64), axis=1)
_HOUR_CDF /= _HOUR_CDF[:, -1:]


def draw_time_of_day(rng: np.random.Generator, channel: np.ndarray, offset_minutes: np.ndarray) -> np.ndarray:
    """UTC second-of-day (0..86399) whose *local* hour follows the channel's hour-of-day profile.

    Staying inside the UTC day keeps "uniform day of month x time of day" exact for window maths.
    """
    channel = np.asarray(channel, dtype=np.int64)
    u = rng.random(len(channel))
    hour = (_HOUR_CDF[channel] < u[:, None]).sum(axis=1)
    local = hour * 3600 + rng.integers(0, 3600, len(channel))
    return (local - np.asarray(offset_minutes, dtype=np.int64) * 60) % DAY
