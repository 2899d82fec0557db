"""Kaplan-Meier curve of the time to the second purchase (lifelines), non-repeaters censored.

Input is one row per customer (pandas, collected from the per-customer profile: never lines):
``survival_duration_days`` (days to the second purchase, or to the end of data when there is none)
and ``repeated`` (the event was observed). The curve S(t) is the probability of *not* having made a
second purchase t days after the first; ``1 - S(w)`` is the censoring-aware repeat rate at w days.

Example:
    >>> curve = km_curve(profile_pdf, max_days=365)           # doctest: +SKIP
    >>> km_repeat_rates(profile_pdf, [30, 90])                # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

ALL = "ALL"


def fit_km(durations: pd.Series, events: pd.Series, label: str = "km"):
    """A fitted ``lifelines.KaplanMeierFitter`` (95 % pointwise confidence band, Greenwood/exp-log)."""
    from lifelines import KaplanMeierFitter

    return KaplanMeierFitter(label=label).fit(durations.astype(float), events.astype(bool))


def _at(fitter, days: Sequence[float]) -> tuple[list[float], list[float], list[float]]:
    """S(t), lower and upper band at given days (step function: last value at or before t)."""
    surv = fitter.survival_function_at_times(list(days)).tolist()
    band = fitter.confidence_interval_survival_function_
    band = band.reindex(band.index.union(list(days))).sort_index().ffill().loc[list(days)]
    return surv, band.iloc[:, 0].tolist(), band.iloc[:, 1].tolist()


def km_curve(profile: pd.DataFrame, max_days: int, group: str | None = None) -> pd.DataFrame:
    """The survival curve at every whole day 0..max_days, per group value and for ``ALL``.

    Columns: segment, day, at_risk (duration >= day), events (second purchases in (day-1, day]),
    censored (censored in (day-1, day]), survival, ci_lower, ci_upper.
    """
    import numpy as np
    import pandas as pd

    days = list(range(max_days + 1))
    parts = [(ALL, profile)]
    if group:
        parts += [(str(k), g) for k, g in profile.groupby(group, dropna=False)]
    frames = []
    for name, data in parts:
        if data.empty:
            continue
        dur = data["survival_duration_days"].to_numpy(dtype=float)
        ev = data["repeated"].to_numpy(dtype=bool)
        fitter = fit_km(data["survival_duration_days"], data["repeated"], label=name)
        surv, lo, hi = _at(fitter, days)
        bucket = np.ceil(dur).astype(int)  # duration in (d-1, d] falls on day d
        grid = np.arange(max_days + 1)
        frames.append(pd.DataFrame({
            "segment": name, "day": grid,
            "at_risk": [(dur >= d).sum() for d in grid],
            "events": np.bincount(bucket[ev], minlength=max_days + 2)[: max_days + 1] if ev.any() else 0,
            "censored": np.bincount(bucket[~ev], minlength=max_days + 2)[: max_days + 1] if (~ev).any() else 0,
            "survival": surv, "ci_lower": lo, "ci_upper": hi}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["segment", "day", "at_risk", "events", "censored", "survival", "ci_lower", "ci_upper"])


def km_repeat_rates(profile: pd.DataFrame, windows_days: Sequence[int], group: str = "cohort_key"
                    ) -> pd.DataFrame:
    """``1 - S(w)`` with its 95 % band for each window, per ``group`` value and for ``ALL``.

    Columns: cohort_key, window_days, km_repeat_rate, km_ci_lower, km_ci_upper, median_days_to_second.
    """
    import math

    import pandas as pd

    rows = []
    parts = [(ALL, profile)] + [(str(k), g) for k, g in profile.groupby(group, dropna=False)]
    for name, data in parts:
        if data.empty:
            continue
        fitter = fit_km(data["survival_duration_days"], data["repeated"], label=name)
        surv, lo, hi = _at(fitter, [float(w) for w in windows_days])
        median = float(fitter.median_survival_time_)
        for w, s, lo_s, hi_s in zip(windows_days, surv, lo, hi, strict=True):
            rows.append({"cohort_key": name, "window_days": int(w), "km_repeat_rate": 1.0 - s,
                         "km_ci_lower": 1.0 - hi_s, "km_ci_upper": 1.0 - lo_s,
                         "median_days_to_second": median if math.isfinite(median) else None})
    return pd.DataFrame(rows)
