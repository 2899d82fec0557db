"""What the insight report shows, read through the access-controlled reader.

:func:`gather` returns plain pandas frames and numbers per section; every section names the tables and
runs its numbers come from (``sources``), so each figure in the report can be traced. Sales KPIs come
from :func:`cpbi_spark.metrics.sales_kpis` (one definition for report, dashboard and notebooks).

Example:
    >>> data = gather(SecureReader(ctx, "analyst"))        # doctest: +SKIP
    >>> data.kpis["net_revenue"], data.sections["baskets"].sources   # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from cpbi_spark.errors import AccessDenied

if TYPE_CHECKING:
    from cpbi_spark.platform.access import SecureReader


@dataclass
class Section:
    """One report section: its frames, headline numbers, and the (table, run id) pairs they come from."""

    key: str
    title: str
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    numbers: dict[str, Any] = field(default_factory=dict)
    sources: list[tuple[str, str]] = field(default_factory=list)
    missing: str | None = None  # why the section is empty (analysis not run, no grant)


@dataclass
class ReportData:
    kpis: dict[str, Any]
    monthly: pd.DataFrame
    period: tuple[Any, Any]
    sections: dict[str, Section]


def _run_ids(df: pd.DataFrame) -> str:
    if "run_id" in df.columns and len(df):
        return ", ".join(sorted(df["run_id"].dropna().astype(str).unique())) or "-"
    if "as_of" in df.columns and len(df):
        return f"as of {df['as_of'].max()}"
    return "-"


class _Tables:
    """Reads tables once as the reader's role; a missing table or a denied read is recorded, not raised."""

    def __init__(self, reader: SecureReader):
        self.reader, self.problems = reader, {}

    def get(self, name: str, where: str | None = None, columns: list[str] | None = None) -> pd.DataFrame | None:
        if not self.reader.ctx.lake.exists(name):
            self.problems[name] = "not written yet"
            return None
        try:
            df = self.reader.read(name)
        except AccessDenied as exc:
            self.problems[name] = str(exc)
            return None
        if where:
            df = df.filter(where)
        if columns:
            df = df.select(*columns)
        return df.toPandas()


def _section(key: str, title: str, tables: _Tables, frames: dict[str, tuple[str, pd.DataFrame | None]]) -> Section:
    s = Section(key, title)
    for label, (table, df) in frames.items():
        if df is None:
            s.missing = s.missing or f"{table}: {tables.problems.get(table, 'not available')}"
            continue
        s.frames[label] = df
        s.sources.append((table, _run_ids(df)))
    return s


def gather(reader: SecureReader, top: int = 10) -> ReportData:
    """Everything the report shows, as pandas, read as ``reader``'s role."""
    from pyspark.sql import functions as F

    from cpbi_spark.metrics import monthly_kpis, sales_kpis

    t = _Tables(reader)
    sections: dict[str, Section] = {}
    kpis: dict[str, Any] = {}
    monthly, period = pd.DataFrame(), (None, None)
    if reader.ctx.lake.exists("fact_basket_lines"):
        lines = reader.read("fact_basket_lines")
        kpis = sales_kpis(lines).toPandas().iloc[0].to_dict()
        monthly = monthly_kpis(lines).orderBy("month").toPandas()
        bounds = lines.agg(F.min(F.to_date("basket_ts")), F.max(F.to_date("basket_ts"))).first()
        period = (bounds[0], bounds[1])

    inter = t.get("recommended_interventions")
    s = _section("interventions", "Recommended interventions", t,
                 {"interventions": ("recommended_interventions",
                                    inter.sort_values("rank").head(top) if inter is not None else None)})
    if inter is not None:
        s.numbers = {"count": len(inter), "expected_value_total": float(inter["expected_value"].sum()),
                     "by_type": inter.groupby("intervention_type")["expected_value"].sum().to_dict()}
    sections["interventions"] = s

    retention = t.get("cohort_retention")
    s = _section("cohorts", "Cohorts and repeat purchase", t, {
        "retention": ("cohort_retention", retention),
        "repeat": ("repeat_purchase_rates", t.get("repeat_purchase_rates", "cohort_key = 'ALL'")),
        "survival": ("repeat_survival_curve", t.get("repeat_survival_curve")),
        "rfm": ("rfm_segments", t.get("rfm_segments"))})
    if "repeat" in s.frames:
        rep = s.frames["repeat"].set_index("window_days")
        s.numbers["repeat_rate"] = {int(w): float(r) for w, r in rep["repeat_rate"].items()}
    if retention is not None and len(retention):
        month1 = retention[retention["period_index"] == 1]
        if len(month1):
            w = month1["cohort_size"].astype(float)
            s.numbers["month1_retention"] = float((month1["retention_rate"] * w).sum() / w.sum())
    sections["cohorts"] = s

    rules = t.get("basket_rules", "segment_key = 'all' AND level = 'product'")
    s = _section("baskets", "Market baskets and cross-sell", t, {"all_rules": ("basket_rules", rules)})
    if rules is not None:
        sig = rules[rules["is_significant"].fillna(False)].sort_values("rule_rank")
        s.frames["rules"] = sig.head(top)
        s.numbers = {"rules": len(rules), "significant_rules": len(sig)}
    sections["baskets"] = s

    readout = t.get("uplift_readout", "segment = 'all'")
    s = _section("uplift", "Promotions and uplift", t, {
        "studies": ("uplift_studies", t.get("uplift_studies")),
        "readout": ("uplift_readout", readout),
        "qini": ("uplift_qini_curve", t.get("uplift_qini_curve")),
        "policy": ("uplift_policy", t.get("uplift_policy"))})
    sections["uplift"] = s

    sections["drivers"] = _section("drivers", "What drives repeat purchase", t, {
        "drivers": ("purchase_drivers", t.get("purchase_drivers", "segment = 'all' AND method = 'permutation'"))})

    rates = t.get("return_rates", "dimension = 'category'")
    s = _section("returns", "Returns by category", t, {"rates": ("return_rates", rates)})
    if rates is not None and len(rates):
        s.frames["rates"] = rates.sort_values("amount_return_rate", ascending=False)
        s.numbers["overall_rate"] = float(rates["returned_amount"].sum() / rates["sold_amount"].sum())
    sections["returns"] = s

    s = _section("health", "Data quality and cost of the runs", t, {
        "recon": ("audit_recon", t.get("audit_recon")),
        "quality": ("fact_data_quality", t.get("fact_data_quality")),
        "costs": ("fact_run_costs", t.get("fact_run_costs")),
        "runs": ("fact_job_runs", t.get("fact_job_runs"))})
    if "quality" in s.frames:
        q = s.frames["quality"]
        s.numbers["checks"] = len(q)
        s.numbers["failed_checks"] = int((q["check_status"] != "passed").sum())
    if "recon" in s.frames:
        s.numbers["unbalanced"] = int((s.frames["recon"]["status"] != "balanced").sum())
    sections["health"] = s
    return ReportData(kpis=kpis, monthly=monthly, period=period, sections=sections)
