"""The dashboard's figures: Altair charts built from the pandas frames of :mod:`cpbi_spark.dashboard.data`.

Each function takes a frame with the columns of the table it is named after and returns a chart; none of
them computes a metric (the numbers come from the tables or from :mod:`cpbi_spark.metrics`).

Example:
    >>> import pandas as pd
    >>> monthly = pd.DataFrame({"month": pd.to_datetime(["2024-01-01", "2024-02-01"]), "net_revenue": [10.0, 12.0]})
    >>> monthly_chart(monthly, "net_revenue", "Net revenue", "currency").mark
    'bar'
"""

from __future__ import annotations

import altair as alt
import pandas as pd

# d3 number formats per metric unit (the units of cpbi_spark.metrics.Metric)
AXIS_FORMAT = {"currency": ",.0f", "share": ".0%", "points": "+.1%", "count": ",.0f", "ratio": ",.2f",
               "days": ",.1f"}
LABEL_LIMIT = 360  # pixels of a category label (rules, actions) before it is cut with an ellipsis


def monthly_chart(monthly: pd.DataFrame, column: str, label: str, unit: str) -> alt.Chart:
    """One bar per month of ``column`` (a column of :func:`cpbi_spark.metrics.monthly_kpis`)."""
    fmt = AXIS_FORMAT.get(unit, ",.2f")
    return alt.Chart(monthly).mark_bar().encode(
        x=alt.X("yearmonth(month):T", title="Month"),
        y=alt.Y(f"{column}:Q", title=label, axis=alt.Axis(format=fmt)),
        tooltip=[alt.Tooltip("yearmonth(month):T", title="Month"), alt.Tooltip(f"{column}:Q", title=label, format=fmt)],
    ).properties(height=280)


def breakdown_chart(frame: pd.DataFrame, by: str, column: str, label: str, unit: str) -> alt.Chart:
    """Horizontal bars of ``column`` per value of ``by``, largest first."""
    fmt = AXIS_FORMAT.get(unit, ",.2f")
    return alt.Chart(frame).mark_bar().encode(
        y=alt.Y(f"{by}:N", sort="-x", title=by.replace("_", " ").capitalize()),
        x=alt.X(f"{column}:Q", title=label, axis=alt.Axis(format=fmt)),
        tooltip=[f"{by}:N", alt.Tooltip(f"{column}:Q", title=label, format=fmt)],
    ).properties(height=alt.Step(22))


def rules_chart(rules: pd.DataFrame) -> alt.Chart:
    """Lift of the given ``basket_rules`` rows, one bar per rule (antecedent -> consequent)."""
    frame = rules.assign(rule=rules["antecedent_names"].astype(str) + " → " + rules["consequent_names"].astype(str))
    return alt.Chart(frame).mark_bar().encode(
        y=alt.Y("rule:N", sort="-x", title=None, axis=alt.Axis(labelLimit=LABEL_LIMIT)),
        x=alt.X("lift:Q", title="Lift"),
        color=alt.Color("confidence:Q", title="Confidence", scale=alt.Scale(scheme="blues")),
        tooltip=["rule:N", alt.Tooltip("lift:Q", format=".2f"), alt.Tooltip("confidence:Q", format=".1%"),
                 alt.Tooltip("support:Q", format=".2%"), "support_count:Q"],
    ).properties(height=alt.Step(20))


def retention_heatmap(retention: pd.DataFrame) -> alt.Chart:
    """``cohort_retention`` as a cohort x period grid coloured and labelled by retention rate."""
    base = alt.Chart(retention).encode(
        x=alt.X("period_index:O", title="Periods since first purchase"),
        y=alt.Y("cohort_key:O", title="Cohort"),
    )
    cells = base.mark_rect().encode(
        color=alt.Color("retention_rate:Q", title="Retention", scale=alt.Scale(scheme="greens"),
                        legend=alt.Legend(format=".0%")),
        tooltip=["cohort_key:O", "period_index:O", "cohort_size:Q", "active_customers:Q",
                 alt.Tooltip("retention_rate:Q", format=".1%")],
    )
    labels = base.mark_text(fontSize=9).encode(
        text=alt.Text("retention_rate:Q", format=".0%"),
        color=alt.condition("datum.retention_rate > 0.5", alt.value("white"), alt.value("black")),
    )
    return (cells + labels).properties(height=alt.Step(24))


def repeat_rates_chart(rates: pd.DataFrame) -> alt.Chart:
    """``repeat_purchase_rates`` per window: the observed rate (bars) and Kaplan-Meier estimate with its band."""
    frame = rates.assign(window=rates["window_days"].astype(str) + " days")
    bars = alt.Chart(frame).mark_bar(opacity=0.6).encode(
        x=alt.X("window:N", sort=None, title="Window after the first purchase"),
        y=alt.Y("repeat_rate:Q", title="Bought again", axis=alt.Axis(format=".0%")),
        tooltip=["window:N", "eligible_customers:Q", "repeaters:Q", alt.Tooltip("repeat_rate:Q", format=".1%"),
                 alt.Tooltip("km_repeat_rate:Q", format=".1%")],
    )
    band = alt.Chart(frame).mark_errorbar(color="black").encode(
        x=alt.X("window:N", sort=None), y=alt.Y("km_ci_lower:Q", title=""), y2="km_ci_upper:Q")
    point = alt.Chart(frame).mark_point(color="black", filled=True).encode(x=alt.X("window:N", sort=None),
                                                                          y="km_repeat_rate:Q")
    return (bars + band + point).properties(height=260)


def survival_chart(curve: pd.DataFrame) -> alt.Chart:
    """``repeat_survival_curve``: share not yet back after each day, per segment, with the 95% band."""
    base = alt.Chart(curve).encode(x=alt.X("day:Q", title="Days since the first purchase"),
                                   color=alt.Color("segment:N", title="Segment"))
    band = base.mark_area(opacity=0.15).encode(y=alt.Y("ci_lower:Q", title="Not yet bought again",
                                                       axis=alt.Axis(format=".0%")), y2="ci_upper:Q")
    line = base.mark_line(interpolate="step-after").encode(
        y="survival:Q", tooltip=["segment:N", "day:Q", "at_risk:Q", alt.Tooltip("survival:Q", format=".1%")])
    return (band + line).properties(height=300)


def interval_chart(frame: pd.DataFrame, category: str, value: str, low: str, high: str, title: str,
                   fmt: str = ",.2f", color: str | None = None) -> alt.Chart:
    """A point per ``category`` at ``value`` with its interval [low, high] and a zero line."""
    enc_color = alt.Color(f"{color}:N") if color else alt.value("#1f77b4")
    base = alt.Chart(frame).encode(y=alt.Y(f"{category}:N", title=None, sort=None,
                                           axis=alt.Axis(labelLimit=LABEL_LIMIT)), color=enc_color)
    bars = base.mark_errorbar(thickness=2).encode(x=alt.X(f"{low}:Q", title=title, axis=alt.Axis(format=fmt)),
                                                  x2=f"{high}:Q")
    points = base.mark_point(filled=True, size=70).encode(
        x=f"{value}:Q", tooltip=[f"{category}:N", alt.Tooltip(f"{value}:Q", format=fmt),
                                 alt.Tooltip(f"{low}:Q", format=fmt), alt.Tooltip(f"{high}:Q", format=fmt)])
    zero = alt.Chart(pd.DataFrame({"x": [0.0]})).mark_rule(strokeDash=[4, 4], color="gray").encode(x="x:Q")
    return (bars + points + zero).properties(height=alt.Step(26))


def qini_chart(curve: pd.DataFrame) -> alt.Chart:
    """``uplift_qini_curve``: the Qini curve of each learner against random targeting."""
    model = curve[["share", "qini", "learner"]]
    rnd = curve.drop_duplicates("point")[["share", "random_qini"]].rename(columns={"random_qini": "qini"})
    frame = pd.concat([model, rnd.assign(learner="random targeting")], ignore_index=True)
    return alt.Chart(frame).mark_line().encode(
        x=alt.X("share:Q", title="Share of customers targeted (highest score first)", axis=alt.Axis(format=".0%")),
        y=alt.Y("qini:Q", title="Incremental conversions (Qini)"),
        color=alt.Color("learner:N", title="Model"),
        strokeDash=alt.condition("datum.learner == 'random targeting'", alt.value([4, 4]), alt.value([1, 0])),
        tooltip=["learner:N", alt.Tooltip("share:Q", format=".0%"), alt.Tooltip("qini:Q", format=",.1f")],
    ).properties(height=300)


def job_runs_chart(runs: pd.DataFrame) -> alt.Chart:
    """``fact_job_runs``: seconds per stage attempt over time, coloured by stage, shaped by status."""
    return alt.Chart(runs).mark_point(size=70, filled=True).encode(
        x=alt.X("started_ts:T", title="Started"), y=alt.Y("seconds:Q", title="Seconds"),
        color=alt.Color("stage:N", title="Stage"), shape=alt.Shape("status:N", title="Status"),
        tooltip=["run_id:N", "stage:N", "status:N", alt.Tooltip("seconds:Q", format=",.1f"), "rows_written:Q"],
    ).properties(height=260)


def run_costs_chart(costs: pd.DataFrame) -> alt.Chart:
    """``fact_run_costs``: cost of each run, oldest first (one bar per run id, also when there is one run)."""
    currency = str(costs["currency"].dropna().iloc[0]) if costs["currency"].notna().any() else ""
    return alt.Chart(costs).mark_bar(size=24).encode(
        x=alt.X("run_id:N", sort=alt.SortField("started_ts"), title="Run", axis=alt.Axis(labelAngle=-30)),
        y=alt.Y("cost:Q", title=f"Cost {currency}".strip()),
        tooltip=["run_id:N", alt.Tooltip("cost:Q", format=",.4f"), "currency:N",
                 alt.Tooltip("wall_seconds:Q", format=",.0f")],
    ).properties(height=220)
