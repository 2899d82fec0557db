"""Matplotlib figures for MLflow (Agg backend; each function returns a Figure the caller closes).

Example:
    >>> import pandas as pd
    >>> curve = pd.DataFrame({"share": [0, 0.5, 1], "qini": [0, 0.04, 0.05], "uplift": [0, 0.03, 0.05],
    ...                       "random_qini": [0, 0.025, 0.05], "random_uplift": [0, 0.025, 0.05]})
    >>> fig = qini_figure({"t_learner": curve}, "PRM001 treatment")
    >>> len(fig.axes)
    2
    >>> close(fig)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def close(fig: Any) -> None:
    _plt().close(fig)


def qini_figure(curves: Mapping[str, pd.DataFrame], title: str) -> Any:
    """Qini curves (left) and uplift curves (right) of several learners, with the random baseline."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, c in curves.items():
        a.plot(c["share"], c["qini"], label=name)
        b.plot(c["share"], c["uplift"], label=name)
    if curves:
        c = next(iter(curves.values()))
        a.plot(c["share"], c["random_qini"], "k--", label="random")
        b.plot(c["share"], c["random_uplift"], "k--", label="random")
    a.set(title=f"Qini curve - {title}", xlabel="share of customers targeted (by score)",
          ylabel="incremental outcome / treated customers")
    b.set(title=f"Uplift curve - {title}", xlabel="share of customers targeted (by score)",
          ylabel="uplift x share")
    a.legend(fontsize=8)
    b.legend(fontsize=8)
    fig.tight_layout()
    return fig


def forest_figure(readout: pd.DataFrame, title: str, scale: float = 100.0, unit: str = "pp") -> Any:
    """Effects with confidence intervals, one line per row (``label, difference, ci_low, ci_high``)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.35 * max(len(readout), 3) + 1))
    y = range(len(readout))
    d = readout["difference"].to_numpy() * scale
    lo = readout["ci_low"].to_numpy() * scale
    hi = readout["ci_high"].to_numpy() * scale
    ax.errorbar(d, list(y), xerr=[d - lo, hi - d], fmt="o", capsize=3)
    if "planted" in readout.columns:
        ax.plot(readout["planted"].to_numpy() * scale, list(y), "rx", label="planted")
        ax.legend(fontsize=8)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(list(y))
    ax.set_yticklabels(readout["label"].tolist(), fontsize=8)
    ax.set(title=title, xlabel=f"difference vs control ({unit})")
    fig.tight_layout()
    return fig


def balance_figure(balance: pd.DataFrame, title: str, threshold: float = 0.1) -> Any:
    """Love plot: standardised mean differences per covariate (``covariate, smd`` and optional ``smd_after``)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.25 * max(len(balance), 4) + 1))
    y = list(range(len(balance)))
    ax.plot(balance["smd"], y, "o", label="before")
    if "smd_after" in balance.columns:
        ax.plot(balance["smd_after"], y, "s", label="after weighting")
    for t in (-threshold, threshold):
        ax.axvline(t, color="grey", ls="--", lw=0.8)
    ax.set_yticks(y)
    ax.set_yticklabels(balance["covariate"].tolist(), fontsize=7)
    ax.set(title=title, xlabel="standardised mean difference")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def policy_figure(policy: pd.DataFrame, title: str) -> Any:
    """Incremental profit (vs contacting nobody) with its interval, per strategy."""
    plt = _plt()
    rows = policy[policy["compared_with"] == "treat_none"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    x = list(range(len(rows)))
    p = rows["incremental_profit"].to_numpy()
    ax.bar(x, p, yerr=[p - rows["profit_ci_low"].to_numpy(), rows["profit_ci_high"].to_numpy() - p], capsize=4)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels(rows["strategy"].tolist(), rotation=20, fontsize=8)
    ax.set(title=title, ylabel="incremental profit on held-out customers (USD)")
    fig.tight_layout()
    return fig


def importance_figure(table: pd.DataFrame, title: str, xlabel: str) -> Any:
    """Horizontal bars of ``importance`` (with ``importance_std`` whiskers when present) per ``feature``."""
    plt = _plt()
    t = table.sort_values("importance")
    fig, ax = plt.subplots(figsize=(7, 0.3 * max(len(t), 4) + 1))
    err = t["importance_std"].to_numpy() if "importance_std" in t.columns else None
    ax.barh(t["feature"].tolist(), t["importance"].to_numpy(), xerr=err, capsize=3)
    ax.set(title=title, xlabel=xlabel)
    fig.tight_layout()
    return fig


def dependence_figure(pd_table: pd.DataFrame, title: str) -> Any:
    """Partial dependence: one panel per feature (points for categorical grids, lines for numeric ones)."""
    plt = _plt()
    features = list(dict.fromkeys(pd_table["feature"]))
    fig, axes = plt.subplots(1, max(len(features), 1), figsize=(3.6 * max(len(features), 1), 3.2), squeeze=False)
    for ax, f in zip(axes[0], features, strict=False):
        t = pd_table[pd_table["feature"] == f]
        if t["value_numeric"].notna().all():
            ax.plot(t["value_numeric"], t["average_prediction"], "o-")
        else:
            ax.plot(t["value"], t["average_prediction"], "o")
            ax.tick_params(axis="x", labelrotation=30, labelsize=7)
        ax.set(title=f, ylabel="mean predicted repurchase")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
