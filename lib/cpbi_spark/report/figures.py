"""The report's plots, drawn with matplotlib (the analyses' own plot functions where they exist) and
embedded as PNG data URIs so the report is one self-contained file.

Example:
    >>> uri = to_data_uri(monthly_revenue(monthly))          # doctest: +SKIP
    >>> uri[:22]                                             # doctest: +SKIP
    'data:image/png;base64,'
"""

from __future__ import annotations

import base64
import io
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # no display: the report is written by jobs and tests
    import matplotlib.pyplot as plt

    return plt


def to_data_uri(fig: Any, dpi: int = 100) -> str:
    """PNG of ``fig`` as a ``data:`` URI; the figure is closed."""
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def png_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def monthly_revenue(monthly: pd.DataFrame) -> Any:
    """Gross revenue, refunds and net revenue per month (from :func:`cpbi_spark.metrics.monthly_kpis`)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 3.6))
    x = pd.to_datetime(monthly["month"])
    ax.bar(x, monthly["gross_revenue"], width=20, color="#9ecae1", label="gross revenue")
    ax.bar(x, -monthly["refunds"], width=20, color="#fc9272", label="refunds")
    ax.plot(x, monthly["net_revenue"], "k.-", label="net revenue")
    ax.axhline(0, color="k", lw=0.6)
    ax.set(title="Revenue per month", ylabel="reporting currency")
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def retention_heatmap(retention: pd.DataFrame) -> Any:
    from cpbi_spark.analytics.cohorts.plots import retention_heatmap as draw

    return draw(retention)


def survival_curve(curve: pd.DataFrame) -> Any:
    from cpbi_spark.analytics.cohorts.plots import survival_curve as draw

    return draw(curve)


def lift_support(rules: pd.DataFrame) -> str:
    """The baskets analysis' lift/support scatter, as a data URI."""
    from cpbi_spark.analytics.baskets.artifacts import lift_support_plot

    with tempfile.TemporaryDirectory() as tmp:
        path = lift_support_plot(rules, Path(tmp) / "lift.png", title="Product rules: lift against support")
        return png_uri(path)


def qini(curves: pd.DataFrame) -> list[tuple[str, str]]:
    """One Qini/uplift figure per promotion and outcome (learners overlaid): ``(caption, data URI)``."""
    from cpbi_spark.analytics.uplift.plots import qini_figure

    out = []
    for (promotion, arm, outcome), part in curves.groupby(["promotion_id", "score_arm", "outcome"], sort=True):
        per_learner = {name: c.sort_values("point") for name, c in part.groupby("learner")}
        caption = f"{promotion} ({arm}), {outcome}"
        out.append((caption, to_data_uri(qini_figure(per_learner, caption))))
    return out


def uplift_forest(readout: pd.DataFrame) -> Any:
    """Conversion uplift per promotion and arm with its 95% interval."""
    from cpbi_spark.analytics.uplift.plots import forest_figure

    conv = readout[(readout["metric"] == "conversion") & readout["difference"].notna()].copy()
    if "estimate" in conv:
        conv = conv[conv["estimate"] == "unadjusted"]
    conv["label"] = conv["promotion_id"] + " " + conv["arm"] + conv["causal"].map(
        lambda c: "" if c else " (observational)")
    return forest_figure(conv.sort_values("label"), "Conversion uplift vs control, 95% interval")


def drivers(table: pd.DataFrame, top: int = 12) -> Any:
    plt = _plt()
    d = table.sort_values("importance", ascending=False).head(top).iloc[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.32 * max(len(d), 4) + 1))
    ax.barh(d["feature"], d["importance"], xerr=d.get("importance_std"), color="#6baed6")
    ax.set(title="Drivers of repeat purchase (permutation importance)", xlabel="drop in held-out ROC AUC")
    fig.tight_layout()
    return fig


def returns_by_category(rates: pd.DataFrame, overall: float) -> Any:
    plt = _plt()
    d = rates.sort_values("amount_return_rate")
    fig, ax = plt.subplots(figsize=(7, 0.3 * max(len(d), 4) + 1))
    ax.barh(d["dimension_value"], d["amount_return_rate"] * 100, color="#fdae6b")
    ax.axvline(overall * 100, color="k", ls="--", lw=0.8, label=f"overall {overall:.1%}")
    ax.set(title="Returned share of sold value by category", xlabel="% of sold value returned")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
