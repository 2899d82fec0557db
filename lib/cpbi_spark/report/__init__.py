"""The insight report: one self-contained HTML file (``cpbi report --out DIR``).

It is rendered from a Jinja2 template (``templates/report.html.j2``) with matplotlib figures embedded
as PNG data URIs, over the gold and insight tables read through the access-controlled reader. Every
figure names the table and run it comes from, and every headline number carries ``data-metric`` and
``data-value`` attributes with its unrounded value, so it can be checked against the tables.

Example:
    >>> path = write_report(RunContext.create(env="local"), Path("report"))    # doctest: +SKIP
    >>> path.name                                                              # doctest: +SKIP
    'cpbi-report.html'
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cpbi_spark.report.data import ReportData
    from cpbi_spark.runtime import RunContext

log = logging.getLogger(__name__)
REPORT_FILE = "cpbi-report.html"


def _formatter(currency: str):
    from cpbi_spark.metrics import format_metric

    def fmt(value: Any, metric: str) -> str:
        try:
            return format_metric(metric, value, currency)
        except (TypeError, ValueError):
            return "n/a"

    return fmt


def summary_sentences(data: ReportData, fmt) -> list[str]:
    """The executive summary in plain words, from the same numbers the sections show."""
    k, out = data.kpis, []
    if k:
        out.append(f"From {data.period[0]} to {data.period[1]}, {fmt(k.get('customers'), 'customers')} customers "
                   f"placed {fmt(k.get('orders'), 'orders')} orders worth {fmt(k.get('net_revenue'), 'net_revenue')} "
                   f"after refunds; {fmt(k.get('return_rate'), 'return_rate')} of the sold value came back.")
    rep = data.sections["cohorts"].numbers.get("repeat_rate", {})
    if 90 in rep:
        out.append(f"{fmt(rep[90], 'repeat_rate')} of new customers bought again within 90 days "
                   f"({fmt(rep.get(365), 'repeat_rate')} within a year).")
    inter = data.sections["interventions"]
    if "interventions" in inter.frames and len(inter.frames["interventions"]):
        top = inter.frames["interventions"].iloc[0]
        days = top["horizon_days"]
        over = f" over {int(days)} days" if days == days and days is not None else ""
        out.append(f"The most valuable recommended action: {top['action']} - an expected "
                   f"{fmt(top['expected_value'], 'expected_value')}{over} "
                   f"(95% interval {fmt(top['ci_low'], 'expected_value')} to {fmt(top['ci_high'], 'expected_value')}). "
                   f"The {inter.numbers['count']} recommended actions add up to "
                   f"{fmt(inter.numbers['expected_value_total'], 'expected_value')}.")
    up = data.sections["uplift"].frames.get("readout")
    if up is not None and len(up):
        conv = up[(up["metric"] == "conversion") & up["causal"].fillna(False) & up["difference"].notna()]
        if "estimate" in conv:
            conv = conv[conv["estimate"] == "unadjusted"]
        if len(conv):
            best = conv.sort_values("difference", ascending=False).iloc[0]
            out.append(f"Of the randomised promotions, {best['promotion_id']} ({best['arm']}) lifted conversion most: "
                       f"{fmt(best['difference'], 'uplift')} (95% interval {fmt(best['ci_low'], 'uplift')} to "
                       f"{fmt(best['ci_high'], 'uplift')}).")
    rules = data.sections["baskets"].frames.get("rules")
    if rules is not None and len(rules):
        r = rules.iloc[0]
        out.append(f"Strongest cross-sell: shoppers buying {r['antecedent_names'] or r['antecedent_key']} also take "
                   f"{r['consequent_names'] or r['consequent_key']} {r['lift']:.1f} times as often as others.")
    rates = data.sections["returns"].frames.get("rates")
    if rates is not None and len(rates):
        r = rates.iloc[0]
        out.append(f"Returns are highest in {r['dimension_value']}: {fmt(r['amount_return_rate'], 'return_rate')} of "
                   f"its sold value vs {fmt(data.sections['returns'].numbers['overall_rate'], 'return_rate')} overall.")
    return out


def _figures(data: ReportData) -> dict[str, Any]:
    from cpbi_spark.report import figures as fg

    s = data.sections
    # every figure the template may show; None when its data are missing (not run, or no grant)
    figs: dict[str, Any] = dict.fromkeys(["monthly", "retention", "survival", "lift", "forest", "qini", "drivers",
                                          "returns"])
    if len(data.monthly):
        figs["monthly"] = fg.to_data_uri(fg.monthly_revenue(data.monthly))
    if "retention" in s["cohorts"].frames and len(s["cohorts"].frames["retention"]):
        figs["retention"] = fg.to_data_uri(fg.retention_heatmap(s["cohorts"].frames["retention"]))
    if "survival" in s["cohorts"].frames and len(s["cohorts"].frames["survival"]):
        figs["survival"] = fg.to_data_uri(fg.survival_curve(s["cohorts"].frames["survival"]))
    if "all_rules" in s["baskets"].frames:
        figs["lift"] = fg.lift_support(s["baskets"].frames["all_rules"])
    if "readout" in s["uplift"].frames and len(s["uplift"].frames["readout"]):
        figs["forest"] = fg.to_data_uri(fg.uplift_forest(s["uplift"].frames["readout"]))
    if "qini" in s["uplift"].frames and len(s["uplift"].frames["qini"]):
        figs["qini"] = fg.qini(s["uplift"].frames["qini"])
    if "drivers" in s["drivers"].frames and len(s["drivers"].frames["drivers"]):
        figs["drivers"] = fg.to_data_uri(fg.drivers(s["drivers"].frames["drivers"]))
    if "rates" in s["returns"].frames and len(s["returns"].frames["rates"]):
        figs["returns"] = fg.to_data_uri(fg.returns_by_category(s["returns"].frames["rates"],
                                                                s["returns"].numbers["overall_rate"]))
    return figs


def render(ctx: RunContext, data: ReportData, role: str) -> str:
    """The report's HTML from ``data`` (no I/O besides loading the template)."""
    import jinja2

    from cpbi_spark.metrics import METRICS

    env = jinja2.Environment(loader=jinja2.PackageLoader("cpbi_spark.report", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.StrictUndefined)
    fmt = _formatter(ctx.config.project.reporting_currency)
    env.filters["fmt"] = fmt
    env.filters["pct"] = lambda v: "n/a" if v is None or v != v else f"{100 * float(v):.1f}%"
    env.filters["num"] = lambda v, d=2: "n/a" if v is None or v != v else f"{float(v):,.{d}f}"
    return env.get_template("report.html.j2").render(
        project=ctx.config.project.name, run_id=ctx.run_id, role=role,
        generated=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        currency=ctx.config.project.reporting_currency, data=data, s=data.sections, kpis=data.kpis,
        summary=summary_sentences(data, fmt), figs=_figures(data), metrics=METRICS,
        kpi_names=["net_revenue", "gross_revenue", "refunds", "orders", "customers", "average_order_value",
                   "return_rate", "orders_per_customer", "repeat_customer_share"])


def write_report(ctx: RunContext, out_dir: Path | None = None, role: str = "engineer") -> Path:
    """Write ``cpbi-report.html`` into ``out_dir`` (default ``<storage.outputs>/report``); returns its path."""
    from cpbi_spark.platform.access import SecureReader
    from cpbi_spark.report.data import gather

    out_dir = Path(out_dir) if out_dir else Path(ctx.config.storage.outputs) / "report"
    log.info("report: reading the gold and insight tables as role %s", role)
    data = gather(SecureReader(ctx, role))
    html = render(ctx, data, role)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / REPORT_FILE
    path.write_text(html, encoding="utf-8")
    log.info("report: wrote %s (%.0f kB)", path, path.stat().st_size / 1024)
    return path
