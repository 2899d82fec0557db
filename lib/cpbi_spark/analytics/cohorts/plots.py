"""Figures of the cohorts study (matplotlib, Agg backend): retention heatmap, survival curve, CLV deciles.

Functions take small pandas frames (the insight tables, already aggregated) and return a Figure; the
job saves them. Nothing here reads or writes tables.

Example:
    >>> fig = retention_heatmap(long_pdf)          # doctest: +SKIP
    >>> fig.savefig("retention_heatmap.png", dpi=120)   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure


def _figure(width: float, height: float) -> Figure:
    # A bare Figure renders with the Agg canvas: no pyplot, no GUI backend, no global state.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def retention_heatmap(long: pd.DataFrame, title: str = "Retention by cohort") -> Figure:
    """Cohorts (rows, with their size) x periods since the first purchase (columns), in percent.

    The colour scale spans 0 to the highest retention from period 1 on: period 0 is 100 % by definition
    and would otherwise flatten every other cell into one colour, so it is drawn grey.
    """
    import numpy as np
    from matplotlib import colormaps, ticker

    table = long.pivot_table(index="cohort_key", columns="period_index", values="retention_rate", aggfunc="first")
    table = table.sort_index()
    sizes = long.groupby("cohort_key")["cohort_size"].first().reindex(table.index)
    values = table.to_numpy(dtype=float)
    later = values[:, 1:] if values.shape[1] > 1 else values
    vmax = float(np.nanmax(later)) if np.isfinite(later).any() else 1.0
    vmax = max(vmax, 0.05)
    n_rows, n_cols = values.shape
    fig = _figure(max(6.0, 0.62 * n_cols + 2.8), max(3.0, 0.42 * n_rows + 1.6))
    ax = fig.add_subplot()
    shown = np.ma.masked_invalid(values.copy())
    if n_cols > 1:
        shown[:, 0] = np.ma.masked
    cmap = colormaps["YlGnBu"].with_extremes(bad="#f0f0f0")
    image = ax.imshow(shown, aspect="auto", cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest")
    for i in range(n_rows):
        for j in range(n_cols):
            v = values[i, j]
            if np.isfinite(v):
                dark = j > 0 and v > 0.6 * vmax
                ax.text(j, i, f"{100 * v:.0f}%", ha="center", va="center", fontsize=7,
                        color="white" if dark else "#222222")
    ax.set_xticks(range(n_cols), [str(c) for c in table.columns])
    ax.set_yticks(range(n_rows), [f"{k}  (n={int(s):,})" for k, s in zip(table.index, sizes, strict=True)])
    ax.set_xlabel("periods since first purchase")
    ax.set_ylabel("cohort (size)")
    ax.set_title(title)
    bar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    bar.set_label("retention (period 1 on)")
    bar.ax.yaxis.set_major_formatter(ticker.PercentFormatter(1.0))
    return fig


def survival_curve(curve: pd.DataFrame, marks: Sequence[int] = (30, 60, 90, 365),
                   title: str = "Time to second purchase (Kaplan-Meier)") -> Figure:
    """S(t) = share without a second purchase t days after the first, with the 95 % band of ``ALL``."""
    from matplotlib import ticker

    fig = _figure(8.0, 4.8)
    ax = fig.add_subplot()
    for name, part in curve.groupby("segment", sort=False):
        part = part.sort_values("day")
        main = name == "ALL"
        ax.step(part["day"], part["survival"], where="post", label=str(name), linewidth=2.2 if main else 1.1,
                color="black" if main else None)
        if main:
            ax.fill_between(part["day"], part["ci_lower"], part["ci_upper"], step="post", alpha=0.2, color="grey")
    top = int(curve["day"].max()) if len(curve) else 0
    for m in marks:
        if m <= top:
            ax.axvline(m, color="grey", linestyle=":", linewidth=0.8)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("days since first purchase")
    ax.set_ylabel("share without a second purchase")
    ax.yaxis.set_major_formatter(ticker.PercentFormatter(1.0))
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8, title="first channel", title_fontsize=8)
    return fig


def clv_deciles_chart(deciles: pd.DataFrame, title: str = "Customer lifetime value by decile") -> Figure:
    """Mean CLV per decile (bars) and the cumulative share of total CLV (line)."""
    from matplotlib import ticker

    fig = _figure(7.5, 4.2)
    ax = fig.add_subplot()
    positions = list(range(len(deciles)))
    ax.bar(positions, deciles["clv_mean"], color="#2c7fb8")
    ax.set_xticks(positions, [str(d) for d in deciles["clv_decile"]])
    ax.set_xlabel("CLV decile (1 = highest)")
    ax.set_ylabel("mean CLV (reporting currency)")
    share = ax.twinx()
    share.plot(positions, deciles["cumulative_clv_share"], color="#d95f0e", marker="o")
    share.set_ylim(0, 1.05)
    share.set_ylabel("cumulative share of total CLV")
    share.yaxis.set_major_formatter(ticker.PercentFormatter(1.0))
    ax.set_title(title)
    return fig
