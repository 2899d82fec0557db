"""The dashboard's pages and sidebar (Streamlit), over :class:`cpbi_spark.dashboard.data.DashboardData`.

Results are cached per server: the context and reader with ``st.cache_resource`` (one Spark session),
pandas results with ``st.cache_data`` keyed by the options, the table's Delta version and the filters, so
a page switch or a repeated filter costs nothing and a new run of the pipeline shows up on the next click.

Example:
    >>> source = dashboard_source('{"env": "local", "role": "analyst"}')      # doctest: +SKIP
    >>> filters = sidebar(source)                                               # doctest: +SKIP
    >>> overview(source, filters)                                               # doctest: +SKIP
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st

from cpbi_spark.dashboard import PAGES, charts
from cpbi_spark.dashboard.data import SEGMENTATIONS, DashboardData, Filters, Options, TableUnavailable
from cpbi_spark.metrics import METRICS, format_metric

# KPI tiles of the overview, one row each for revenue, volume and behaviour (all in cpbi_spark.metrics.METRICS);
# three to a row so that a full currency amount fits its tile next to the sidebar.
KPI_ROWS = [["net_revenue", "gross_revenue", "refunds"], ["orders", "customers", "average_order_value"],
            ["return_rate", "orders_per_customer", "repeat_customer_share"]]
MONTHLY_CHOICES = ["net_revenue", "gross_revenue", "refunds", "orders", "customers", "average_order_value",
                   "return_rate"]
ALL_CUSTOMERS = "all customers"
PLATFORM_HINT = "Start the dashboard with a role that reads the platform layer (for example --role engineer)."


@dataclass
class Source:
    """One server's data access: the options it was started with, as a cache key, and the reads."""

    key: str
    data: DashboardData
    role: str
    pii: bool
    currency: str

    def money(self, value: Any, metric: str) -> str:
        """The metric's format in the reporting currency (:func:`cpbi_spark.metrics.format_metric`)."""
        return format_metric(metric, value, self.currency)


@st.cache_resource(show_spinner="Starting Spark and opening the lakehouse ...")
def dashboard_source(options_json: str) -> Source:
    """The run context, the role's reader and the data access for these options (once per server)."""
    from cpbi_spark.platform.access import SecureReader
    from cpbi_spark.runtime import RunContext

    options = json.loads(options_json)
    ctx = RunContext.create(env=options.get("env"), conf_dir=options.get("conf_dir"),
                            extra_files=options.get("sources") or (), overrides=options.get("overrides") or {})
    role = options.get("role") or "analyst"
    spec = ctx.config.platform.roles.get(role)
    # Whoever opens the page reads as the server's role; the audit trail says the read came through the dashboard.
    reader = SecureReader(ctx, role, user=f"dashboard:{getpass.getuser()}")
    return Source(options_json, DashboardData(reader), role, bool(spec and spec.pii),
                  ctx.config.project.reporting_currency)


# --------------------------------------------------------------------------- cached reads
# The leading underscore keeps Streamlit from hashing the data object; `key` and the versions stand for it.
@st.cache_data(show_spinner=False, max_entries=64)
def _options(_data: DashboardData, key: str, versions: tuple) -> Options:
    return _data.options()


@st.cache_data(show_spinner="Computing the KPIs ...", max_entries=256)
def _kpis(_data: DashboardData, key: str, versions: tuple, filters_key: str, _filters: Filters) -> dict:
    return _data.kpis(_filters)


@st.cache_data(show_spinner=False, max_entries=256)
def _monthly(_data: DashboardData, key: str, versions: tuple, filters_key: str, _filters: Filters) -> pd.DataFrame:
    return _data.monthly(_filters)


@st.cache_data(show_spinner=False, max_entries=256)
def _breakdown(_data: DashboardData, key: str, versions: tuple, filters_key: str, _filters: Filters,
               by: str) -> pd.DataFrame:
    return _data.breakdown(_filters, by)


@st.cache_data(show_spinner=False, max_entries=512)
def _query(_data: DashboardData, key: str, version: int | None, name: str, equals: tuple, columns: tuple,
           order_by: tuple, descending: bool, limit: int | None) -> pd.DataFrame:
    return _data.query(name, equals=equals, columns=columns, order_by=order_by, descending=descending, limit=limit)


@st.cache_data(show_spinner=False, max_entries=64)
def _recommended_products(_data: DashboardData, key: str, version: int | None) -> pd.DataFrame:
    return _data.recommended_products()


def _versions(source: Source, names: Sequence[str]) -> tuple:
    return tuple(source.data.version(n) for n in names)


def sales_versions(source: Source) -> tuple:
    """Versions of every table the sales filters read (lines and segment sources)."""
    return _versions(source, ["fact_basket_lines", *sorted({s.table for s in SEGMENTATIONS.values()})])


def query(source: Source, name: str, *, equals: Sequence[tuple[str, Any]] = (), columns: Sequence[str] = (),
          order_by: Sequence[str] = (), descending: bool = False, limit: int | None = None) -> pd.DataFrame:
    """Cached :meth:`DashboardData.query`; raises :class:`TableUnavailable` like it."""
    version = source.data.version(name)
    if version is None:
        raise TableUnavailable(name, "missing", source.data.missing_message(name))
    return _query(source.data, source.key, version, name, tuple(equals), tuple(columns), tuple(order_by),
                  descending, limit)


def show_unavailable(exc: TableUnavailable, hint: str = "") -> None:
    """A never-written table is information (what to run); a denied one is a warning naming the grant."""
    if exc.kind == "missing":
        st.info(exc.message)
    else:
        st.warning(f"{exc.message} {hint}".strip())


def section(title: str, body: Callable[[], None], hint: str = "") -> None:
    """A subheader and its body; a table the body cannot read becomes a message, the rest of the page stays."""
    st.subheader(title)
    try:
        body()
    except TableUnavailable as exc:
        show_unavailable(exc, hint)


# --------------------------------------------------------------------------- sidebar
def _reset_segments() -> None:
    # The values of one segmentation are not values of another: clear them when the segmentation changes.
    st.session_state.pop("segment", None)


def sidebar(source: Source) -> Filters:
    """The sales filters (date range, channel, category, customer segment) and who the data are read as.

    Every filter is bound to the page address (``?channel=online&category=...``), so a filtered view can be
    shared as a link.
    """
    side = st.sidebar
    side.caption(f"Reading as role **{source.role}**" + ("" if source.pii else " (personal data masked)"))
    try:
        opts = _options(source.data, source.key, sales_versions(source))
    except TableUnavailable as exc:
        side.warning(exc.message)
        return Filters()
    side.header("Sales filters")
    start, end = opts.first_day, opts.last_day
    if start and end:
        span = side.date_input("Basket date", value=(start, end), min_value=start, max_value=end, key="dates",
                               bind="query-params")
        # While a range is being picked the widget holds one date: keep the other end open until then.
        dates = tuple(span) if isinstance(span, (tuple, list)) else (span,)
        start = dates[0] if dates else None
        end = dates[1] if len(dates) > 1 else None
    channels = side.multiselect("Channel", opts.channels, key="channel", bind="query-params")
    categories = side.multiselect("Category", opts.categories, key="category", bind="query-params")
    # A bound selectbox puts the shown label in the address, so the labels are the options.
    by_label = {SEGMENTATIONS[k].label: k for k in SEGMENTATIONS if k in opts.segments}
    picked = side.selectbox("Customer segment", [ALL_CUSTOMERS, *by_label], key="segment_by", bind="query-params",
                            on_change=_reset_segments,
                            help="Loyalty tier and region are each customer's current ones (dim_customer); "
                                 "the RFM segment is the cohorts analysis' (customer_purchase_profile).")
    segment_by = by_label.get(picked)
    segments: list[str] = []
    if segment_by:
        segments = side.multiselect(SEGMENTATIONS[segment_by].label, opts.segments[segment_by], key="segment",
                                    bind="query-params")
    for why in dict.fromkeys(opts.unavailable.values()):  # one line per reason, naming every segmentation it hides
        labels = [SEGMENTATIONS[k].label for k, w in opts.unavailable.items() if w == why]
        side.caption(f"Not available: {', '.join(labels)} ({why}).")
    side.caption("The sales filters apply to the overview; the analyses' pages say which of them they use.")
    return Filters(start, end, tuple(channels), tuple(categories), segment_by, tuple(segments))


# --------------------------------------------------------------------------- pages
def overview(source: Source, filters: Filters) -> None:
    """Sales KPIs of the filtered basket lines, their monthly course and the split by channel and category."""
    st.title(PAGES["overview"])
    st.caption(f"{filters.describe()} · from fact_basket_lines, definitions in docs/metrics.md")
    try:
        versions = sales_versions(source)
        kpis = _kpis(source.data, source.key, versions, repr(filters), filters)
    except TableUnavailable as exc:
        show_unavailable(exc)
        return
    for row in KPI_ROWS:
        for column, name in zip(st.columns(len(row)), row, strict=True):
            column.metric(METRICS[name].label, source.money(kpis.get(name), name), help=METRICS[name].definition,
                          border=True)
    chosen = st.selectbox("Monthly", MONTHLY_CHOICES, format_func=lambda n: METRICS[n].label, key="monthly_metric")
    monthly = _monthly(source.data, source.key, versions, repr(filters), filters)
    if monthly.empty:
        st.info("No basket lines match the filters.")
        return
    st.altair_chart(charts.monthly_chart(monthly, chosen, METRICS[chosen].label, METRICS[chosen].unit),
                    width="stretch")
    left, right = st.columns(2)
    for column, by in ((left, "channel"), (right, "category")):
        frame = _breakdown(source.data, source.key, versions, repr(filters), filters, by)
        column.markdown(f"**{METRICS['net_revenue'].label} by {by}**")
        column.altair_chart(charts.breakdown_chart(frame, by, "net_revenue", METRICS["net_revenue"].label,
                                                   "currency"), width="stretch")


def baskets(source: Source, filters: Filters) -> None:
    """Association rules per level and scope, top rules by lift, and the cross-sell recommendations."""
    st.title(PAGES["baskets"])
    st.caption("From basket_rules and basket_recommendations (the baskets analysis over all baskets). "
               "With one channel picked in the sidebar, the rules of that channel's scope are shown first.")

    def rules() -> None:
        scopes = query(source, "basket_rules", columns=("level", "segment_key", "segment_value"))
        scopes = scopes.drop_duplicates().sort_values(["level", "segment_key", "segment_value"])
        levels = list(dict.fromkeys(scopes["level"]))
        level = st.radio("Level", levels, horizontal=True, key="rules_level",
                         index=levels.index("product") if "product" in levels else 0)
        here = scopes[scopes["level"] == level]
        labels = [f"{k} = {v}" if k != v else str(k) for k, v in zip(here["segment_key"], here["segment_value"],
                                                                   strict=True)]
        pairs = list(zip(here["segment_key"], here["segment_value"], strict=True))
        default = 0
        if len(filters.channels) == 1 and ("channel", filters.channels[0]) in pairs:
            default = pairs.index(("channel", filters.channels[0]))
        c1, c2, c3 = st.columns([2, 1, 1])
        scope = c1.selectbox("Scope (segment)", range(len(pairs)), index=default, format_func=labels.__getitem__,
                             key=f"rules_scope_{level}")
        min_lift = c2.number_input("Minimum lift", min_value=0.0, value=1.0, step=0.5, key="rules_min_lift")
        significant = c3.checkbox("Significant only", value=True, key="rules_significant")
        key, value = pairs[scope]
        frame = query(source, "basket_rules", equals=(("level", level), ("segment_key", key), ("segment_value", value)),
                      order_by=("lift",), descending=True)
        frame = frame[frame["lift"] >= min_lift]
        if significant:
            frame = frame[frame["is_significant"].fillna(False).astype(bool)]
        if frame.empty:
            st.info("No rule of this scope passes the filters.")
            return
        top = frame.head(15)
        st.altair_chart(charts.rules_chart(top), width="stretch")
        st.dataframe(frame[["rule_rank", "antecedent_names", "consequent_names", "support", "confidence", "lift",
                            "p_adjusted", "consequent_return_rate", "support_count"]], hide_index=True,
                     column_config={"support": st.column_config.NumberColumn(format="percent"),
                                    "confidence": st.column_config.NumberColumn(format="percent"),
                                    "lift": st.column_config.NumberColumn(format="%.2f"),
                                    "p_adjusted": st.column_config.NumberColumn(format="%.1e"),
                                    "consequent_return_rate": st.column_config.NumberColumn(format="percent")})

    def recommendations() -> None:
        version = source.data.version("basket_recommendations")
        if version is None:
            raise TableUnavailable("basket_recommendations", "missing",
                                   source.data.missing_message("basket_recommendations"))
        products = _recommended_products(source.data, source.key, version)
        st.markdown("**Products recommended to the most customers**")
        st.dataframe(products, hide_index=True)
        customer = st.text_input("Recommendations for one customer id", key="recs_customer").strip()
        if customer:
            recs = query(source, "basket_recommendations", equals=(("customer_id", customer),), order_by=("rank",))
            if recs.empty:
                st.info(f"No recommendation for customer {customer} (not active in the context window).")
            else:
                st.dataframe(recs[["rank", "product_id", "product_name", "score", "source", "confidence", "lift",
                                   "expected_net_value"]], hide_index=True)

    def evaluation() -> None:
        st.dataframe(query(source, "basket_recommendation_eval", order_by=("scenario", "k", "model")), hide_index=True)

    section("Top rules by lift", rules)
    section("Cross-sell recommendations", recommendations)
    section("How well the recommendations did on later purchases", evaluation)


def cohorts(source: Source, filters: Filters) -> None:
    """Retention heatmap, repeat-purchase rates and the time-to-second-purchase curve."""
    st.title(PAGES["cohorts"])
    st.caption("From cohort_retention, repeat_purchase_rates and repeat_survival_curve (the cohorts analysis). "
               "The sidebar's date range picks the cohorts; its channels pick the survival curves.")

    def heatmap() -> None:
        frame = query(source, "cohort_retention")
        if filters.start:
            frame = frame[pd.to_datetime(frame["cohort_start"]) >= pd.Timestamp(filters.start)]
        if filters.end:
            frame = frame[pd.to_datetime(frame["cohort_start"]) <= pd.Timestamp(filters.end)]
        if frame.empty:
            st.info("No cohort starts in the chosen date range.")
            return
        st.altair_chart(charts.retention_heatmap(frame), width="stretch")
        st.caption(f"{METRICS['retention_rate'].label}: {METRICS['retention_rate'].definition}")

    def repeat() -> None:
        frame = query(source, "repeat_purchase_rates")
        keys = sorted(frame["cohort_key"].unique(), key=lambda k: (k != "ALL", k))
        cohort = st.selectbox("Cohort", keys, key="repeat_cohort")
        chosen = frame[frame["cohort_key"] == cohort].sort_values("window_days")
        st.altair_chart(charts.repeat_rates_chart(chosen), width="stretch")
        st.caption(f"{METRICS['repeat_rate'].label}: {METRICS['repeat_rate'].definition} Points and whiskers: "
                   "the Kaplan-Meier estimate, which also counts customers whose window is not over, with its "
                   "95% band.")

    def survival() -> None:
        frame = query(source, "repeat_survival_curve")
        segments = ["ALL", *filters.channels] if filters.channels else sorted(frame["segment"].unique())
        frame = frame[frame["segment"].isin(segments)]
        st.altair_chart(charts.survival_chart(frame), width="stretch")

    section("Retention by cohort", heatmap)
    section("Repeat-purchase rate", repeat)
    section("Days to the second purchase", survival)


def promotions(source: Source, filters: Filters) -> None:
    """Study verdicts, the experiment readout with intervals, Qini curves and the targeting policy."""
    st.title(PAGES["promotions"])
    st.caption("From uplift_studies, uplift_readout, uplift_qini_curve and uplift_policy (the uplift analysis). "
               "Observational studies are not causal: their estimates are labelled so.")
    try:
        studies = query(source, "uplift_studies", order_by=("promotion_id",))
    except TableUnavailable as exc:
        show_unavailable(exc)
        return
    st.dataframe(studies[["promotion_id", "promotion_name", "study_type", "causal", "label", "n_units", "arms",
                          "srm_flag", "balance_max_abs_smd", "reason"]], hide_index=True)
    names = dict(zip(studies["promotion_id"], studies["promotion_name"].fillna(""), strict=True))
    promotion = st.selectbox("Promotion", list(names), format_func=lambda p: f"{p} {names[p]}".strip(),
                             key="promotion")
    study = studies[studies["promotion_id"] == promotion].iloc[0]
    if not bool(study["causal"]):
        st.warning(f"{promotion} is an observational study: {study['reason']}")

    def readout() -> None:
        frame = query(source, "uplift_readout", equals=(("promotion_id", promotion),))
        frame = frame[frame["control_arm"].notna() & frame["difference"].notna()]
        if frame.empty:
            st.info("No comparison with a control group for this promotion.")
            return
        c1, c2 = st.columns(2)
        metric = c1.selectbox("Outcome", sorted(frame["metric"].unique()), key=f"readout_metric_{promotion}")
        estimate = c2.selectbox("Estimate", sorted(frame["estimate"].unique()), key=f"readout_estimate_{promotion}")
        rows = frame[(frame["metric"] == metric) & (frame["estimate"] == estimate)].copy()
        rows["comparison"] = rows["arm"] + " vs " + rows["control_arm"] + " · " + rows["segment"]
        rows = rows.sort_values(["segment", "arm"])
        st.altair_chart(charts.interval_chart(rows, "comparison", "difference", "ci_low", "ci_high",
                                              f"Difference in {metric} vs control (95% interval)", color="arm"),
                        width="stretch")
        st.dataframe(rows[["arm", "control_arm", "segment", "n", "value", "control_value", "difference", "ci_low",
                           "ci_high", "ci_method", "p_adjusted", "significant", "causal", "interpretation"]],
                     hide_index=True)

    def qini() -> None:
        frame = query(source, "uplift_qini_curve", equals=(("promotion_id", promotion),))
        if frame.empty:
            st.info("No uplift model was evaluated for this promotion (it needs a randomised control group).")
            return
        c1, c2 = st.columns(2)
        arm = c1.selectbox("Treatment arm", sorted(frame["score_arm"].unique()), key=f"qini_arm_{promotion}")
        outcome = c2.selectbox("Outcome", sorted(frame["outcome"].unique()), key=f"qini_outcome_{promotion}")
        chosen = frame[(frame["score_arm"] == arm) & (frame["outcome"] == outcome)].sort_values(["learner", "point"])
        st.altair_chart(charts.qini_chart(chosen), width="stretch")

    def policy() -> None:
        frame = query(source, "uplift_policy", equals=(("promotion_id", promotion),))
        if frame.empty:
            st.info("No targeting policy for this promotion (it needs a randomised control group).")
            return
        frame = frame.assign(comparison=frame["strategy"] + " vs " + frame["compared_with"])
        st.altair_chart(charts.interval_chart(frame, "comparison", "incremental_profit", "profit_ci_low",
                                              "profit_ci_high", "Incremental profit (95% interval)", fmt=",.0f"),
                        width="stretch")
        st.dataframe(frame[["strategy", "compared_with", "learner", "treated", "share_treated", "incremental_revenue",
                            "cost", "incremental_profit", "profit_ci_low", "profit_ci_high", "per_customer_profit"]],
                     hide_index=True)

    section("Readout: difference to control", readout)
    section("Qini curve of the uplift models", qini)
    section("Targeting policy", policy)


def interventions(source: Source, filters: Filters) -> None:
    """The recommended actions ranked by expected incremental net revenue, with their intervals."""
    st.title(PAGES["interventions"])
    try:
        frame = query(source, "recommended_interventions", order_by=("rank",))
    except TableUnavailable as exc:
        show_unavailable(exc)
        return
    if frame.empty:
        st.info("The interventions analysis found nothing to recommend on these data.")
        return
    types = st.multiselect("Type", sorted(frame["intervention_type"].dropna().unique()), key="intervention_type")
    if types:
        frame = frame[frame["intervention_type"].isin(types)]
    top = frame.head(20).assign(label=lambda f: f["rank"].astype(str) + ". " + f["action"].astype(str).str[:70])
    st.altair_chart(charts.interval_chart(top, "label", "expected_value", "ci_low", "ci_high",
                                          f"{METRICS['expected_value'].label} (interval)", fmt=",.0f",
                                          color="intervention_type"), width="stretch")
    st.caption(f"{METRICS['expected_value'].label}: {METRICS['expected_value'].definition}")
    st.dataframe(frame[["rank", "intervention_type", "action", "audience", "audience_size", "expected_value",
                        "ci_low", "ci_high", "horizon_days", "confidence", "evidence", "source_analysis",
                        "source_run_id"]], hide_index=True)


def health(source: Source, filters: Filters) -> None:
    """Platform records: job runs, data-quality checks, reconciliation and run cost."""
    st.title(PAGES["health"])
    st.caption("From the platform tables fact_job_runs, fact_data_quality, audit_recon and fact_run_costs.")

    def runs() -> None:
        frame = query(source, "fact_job_runs", order_by=("started_ts",), descending=True, limit=500)
        st.altair_chart(charts.job_runs_chart(frame), width="stretch")
        st.dataframe(frame[["run_id", "stage", "attempt", "status", "started_ts", "seconds", "tables_written",
                            "rows_written", "error_code", "message"]].head(50), hide_index=True)

    def quality() -> None:
        frame = query(source, "fact_data_quality", order_by=("checked_ts",), descending=True, limit=5000)
        last = frame[frame["run_id"] == frame["run_id"].iloc[0]] if len(frame) else frame
        st.caption(f"Checks of the latest run with results ({last['run_id'].iloc[0] if len(last) else 'none'})")
        counts = last.groupby(["check_status", "severity"], dropna=False).size().reset_index(name="checks")
        st.dataframe(counts, hide_index=True)
        failed = last[last["check_status"].astype(str).str.lower() != "passed"]
        if len(failed):
            st.dataframe(failed[["stage", "dataset_id", "check_name", "column_name", "severity", "check_status",
                                 "observed_value", "unexpected_count", "element_count"]], hide_index=True)

    def recon() -> None:
        frame = query(source, "audit_recon", order_by=("domain", "check_name"))
        bad = frame[frame["status"] != "balanced"]
        (st.warning if len(bad) else st.success)(f"{len(frame) - len(bad)} of {len(frame)} checks balanced")
        st.dataframe(frame, hide_index=True)

    def costs() -> None:
        frame = query(source, "fact_run_costs", order_by=("started_ts",), descending=True, limit=200)
        st.altair_chart(charts.run_costs_chart(frame), width="stretch")

    section("Job runs", runs, PLATFORM_HINT)
    section("Data quality", quality, PLATFORM_HINT)
    section("Reconciliation raw → gold", recon, PLATFORM_HINT)
    section("Run cost", costs, PLATFORM_HINT)


PAGE_FUNCTIONS: dict[str, Callable[[Source, Filters], None]] = {
    "overview": overview, "baskets": baskets, "cohorts": cohorts, "promotions": promotions,
    "interventions": interventions, "health": health,
}
