"""``cpbi run cohorts``: cohort tables, repeat purchase, RFM, returns and CLV from the gold tables.

The only module of the analysis that reads or writes: it loads the gold tables, calls the pure
transforms, overwrites the insight tables declared in ``conf/base/tables_cohorts.yaml``, saves the
figures under ``<storage.outputs>/cohorts/`` and logs one MLflow run (parameters, metrics, figures,
CLV deciles and fit). Only one row per customer is ever collected to the driver (KM and CLV inputs).

Example:
    >>> from cpbi_spark.analytics.cohorts.job import run
    >>> result = run(RunContext.create(env="local"))        # doctest: +SKIP
    >>> sorted(result.tables)[:2]                            # doctest: +SKIP
    ['clv_customers', 'clv_deciles']
"""

from __future__ import annotations

import datetime as dt
import json
import math
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cpbi_spark.analytics.cohorts.config import CohortsConfig, cohorts_config, period_columns
from cpbi_spark.errors import AnalysisError
from cpbi_spark.runtime import StageResult

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame

    from cpbi_spark.runtime import RunContext

STAGE = "cohorts"
INPUTS = ("fact_transactions", "fact_returns", "dim_customer", "dim_product")


def _records(pdf: pd.DataFrame) -> list[dict[str, Any]]:
    """Plain Python rows (numpy scalars unboxed, NaN -> None) for ``Lakehouse.frame``."""
    import numpy as np

    out = []
    for row in pdf.to_dict("records"):
        clean = {}
        for k, v in row.items():
            if isinstance(v, np.generic):
                v = v.item()
            if isinstance(v, float) and not math.isfinite(v):
                v = None
            clean[k] = v
        out.append(clean)
    return out


class _Writer:
    """Overwrites insight tables with the as_of column added and keeps the row counts."""

    def __init__(self, ctx: RunContext, as_of: dt.date):
        self.ctx, self.as_of, self.rows = ctx, as_of, {}

    def spark_frame(self, name: str, df: DataFrame) -> None:
        from pyspark.sql import functions as F

        df = df.withColumn("as_of", F.lit(self.as_of))
        info = self.ctx.lake.overwrite(name, df)
        # delta-rs reports the rows it wrote; count only when an engine does not.
        rows = info.metrics.get("num_inserted") if info.metrics else None
        self.rows[name] = int(rows) if rows is not None else self.ctx.lake.read(name).count()

    def pandas_frame(self, name: str, pdf: pd.DataFrame, **extra: Any) -> None:
        rows = [{**r, "as_of": self.as_of, **extra} for r in _records(pdf)]
        self.rows[name] = len(rows)
        self.ctx.lake.overwrite(name, self.ctx.lake.frame(name, rows))


def _as_of(cfg: CohortsConfig, facts: DataFrame) -> dt.date:
    from pyspark.sql import functions as F

    if cfg.as_of is not None:
        return cfg.as_of
    last = facts.filter(F.col("txn_type") == "SALE").agg(F.max("posted_ts")).first()[0]
    if last is None:
        raise AnalysisError("fact_transactions holds no sale: there is nothing to build cohorts from "
                            "(load transactions and run `cpbi run gold` first)")
    return last.date()


def _outputs_dir(ctx: RunContext) -> Path:
    from cpbi_spark.config.models import local_folder

    folder = local_folder(ctx.config.storage.outputs)
    path = Path(folder) / "cohorts" if folder else Path(tempfile.mkdtemp(prefix="cpbi-cohorts-"))
    path.mkdir(parents=True, exist_ok=True)
    # Files of an earlier run (e.g. CLV figures when CLV is now skipped) must not be logged again.
    for old in path.iterdir():
        if old.is_file() and old.suffix in {".png", ".csv", ".json"}:
            old.unlink()
    return path


def run(ctx: RunContext) -> StageResult:
    """Run the whole study and write its tables; raises AnalysisError when the data cannot support it."""
    import mlflow

    from cpbi_spark.tracking import tracked_run

    cfg = cohorts_config(ctx.config)
    missing = [name for name in INPUTS if not ctx.lake.exists(name)]
    if missing:
        raise AnalysisError(f"cohorts needs the gold tables {missing}; run `cpbi run gold` first")
    facts = ctx.lake.read("fact_transactions")
    as_of = _as_of(cfg, facts)
    params = {**cfg.params(), "as_of_resolved": as_of.isoformat(), "run_id": ctx.run_id}
    with tracked_run(ctx.config, STAGE, params=params, tags={"analysis": STAGE}) as active:
        result = _study(ctx, cfg, facts, as_of)
        mlflow.log_metrics({key: float(value) for key, value in result.counters.items()
                            if isinstance(value, (int, float)) and not isinstance(value, bool)
                            and math.isfinite(value)})
        folder = Path(result.counters.pop("_outputs"))
        mlflow.log_artifacts(str(folder), artifact_path="cohorts")
        result.counters["mlflow_run_id"] = active.info.run_id
        result.counters["outputs"] = str(folder)
    return result


def _study(ctx: RunContext, cfg: CohortsConfig, facts: DataFrame, as_of: dt.date) -> StageResult:
    from pyspark.sql import functions as F

    from cpbi_spark.analytics.cohorts import cohorts, plots, repeat, returns, rfm, survival
    from cpbi_spark.analytics.cohorts.population import (
        as_of_end,
        first_purchases,
        last_observed_period,
        return_lines,
        sale_lines,
        study_population,
    )

    lake, log = ctx.lake, ctx.log
    end = as_of_end(as_of)
    writer = _Writer(ctx, as_of)
    counters: dict[str, Any] = {}
    out_dir = _outputs_dir(ctx)
    cached: list[DataFrame] = []
    clock = [time.perf_counter()]

    def _lap() -> float:
        now = time.perf_counter()
        spent, clock[0] = round(now - clock[0], 2), now
        return spent

    def keep(df: DataFrame) -> DataFrame:
        cached.append(df.cache())
        return df

    try:
        sales = keep(sale_lines(facts, lake.read("dim_product"), lake.read("dim_customer"), end))
        refunds = keep(return_lines(lake.read("fact_returns"), end))
        people = keep(study_population(first_purchases(sales), cfg))
        n_people = people.count()
        if n_people == 0:
            raise AnalysisError(f"no customer with a sale up to {as_of} passes the segment filters "
                                f"{cfg.segment_filters or '{}'}; widen analyses.cohorts.segment_filters")
        # Lines of customers outside the study (segment filters) take no part in any output.
        sales = keep(sales.join(people.select("customer_id"), "customer_id", "left_semi"))
        refunds = keep(refunds.join(people.select("customer_id"), "customer_id", "left_semi"))
        counters.update(customers=n_people, sale_lines=sales.count(), returns=refunds.count())

        counters["seconds_prepare"] = _lap()
        # ------------------------------------------------------------------ cohort tables
        last_period = last_observed_period(as_of, cfg.period_grain, cfg.include_partial_period)
        long = keep(cohorts.cohort_table(people, sales, refunds, cfg, last_period))
        writer.spark_frame("cohort_retention", long)
        writer.spark_frame("cohort_retention_wide", cohorts.cohort_wide(long, len(period_columns(ctx.config))))
        long_pdf = long.toPandas()  # one row per cohort and period: small
        counters["cohorts"] = int(long_pdf["cohort_key"].nunique())
        for k in (1, 3, 6, 12):
            part = long_pdf[long_pdf["period_index"] == k]
            if len(part) and part["customers_observable"].sum():
                counters[f"retention_p{k}"] = float(part["active_customers"].sum() / part["customers_observable"].sum())
        plots.retention_heatmap(long_pdf, title=f"Retention by {cfg.cohort_by} ({cfg.period_grain}s), as of {as_of}"
                                ).savefig(out_dir / "retention_heatmap.png", dpi=130)
        long_pdf.to_csv(out_dir / "cohort_retention.csv", index=False)

        counters["seconds_cohort_tables"] = _lap()
        # ------------------------------------------------------------------ repeat purchase, survival, RFM
        orders = keep(repeat.customer_orders(sales, refunds))
        profile = keep(rfm.rfm_scores(repeat.repeat_profile(orders, people, end), cfg.rfm.bins))
        writer.spark_frame("customer_purchase_profile", profile)
        writer.spark_frame("rfm_segments", rfm.rfm_summary(profile))
        km_input = (profile.join(people.select("customer_id", "first_channel"), "customer_id")
                    .select("customer_id", "cohort_key", "first_channel", "survival_duration_days", "repeated")
                    .toPandas())  # one row per customer
        windows = list(cfg.repeat.windows_days)
        km_rates = survival.km_repeat_rates(km_input, windows)
        km_df = ctx.spark.createDataFrame(km_rates, "cohort_key string, window_days int, km_repeat_rate double, "
                                          "km_ci_lower double, km_ci_upper double, median_days_to_second double")
        rates = repeat.repeat_rates(profile, windows, end).join(km_df, ["cohort_key", "window_days"], "left")
        writer.spark_frame("repeat_purchase_rates", rates)
        curve = survival.km_curve(km_input, cfg.repeat.survival_max_days, group="first_channel")
        writer.pandas_frame("repeat_survival_curve", curve)
        plots.survival_curve(curve, marks=windows).savefig(out_dir / "survival_curve.png", dpi=130)
        rates_pdf = rates.filter(F.col("cohort_key") == repeat.ALL).toPandas()
        rates_pdf.to_csv(out_dir / "repeat_purchase_rates.csv", index=False)
        for row in rates_pdf.itertuples():
            counters[f"repeat_rate_{row.window_days}d"] = float(row.repeat_rate)
            counters[f"km_repeat_rate_{row.window_days}d"] = float(row.km_repeat_rate)
        median = km_rates.loc[km_rates["cohort_key"] == survival.ALL, "median_days_to_second"].dropna()
        if len(median):
            counters["km_median_days_to_second"] = float(median.iloc[0])

        counters["seconds_repeat"] = _lap()
        # ------------------------------------------------------------------ returns
        rc = cfg.returns
        lines = keep(returns.line_returns(sales, refunds, end, rc.maturity_days))
        rates_by = keep(returns.return_rates(lines, rc.top_products))
        writer.spark_frame("return_rates", rates_by)
        per_customer = keep(returns.customer_returns(lines, rc.serial_min_returns, rc.serial_min_amount_rate))
        writer.spark_frame("customer_returns", per_customer)
        at_risk = returns.revenue_at_risk(lines, returns.delay_cdf(lines, max(rc.maturity_days, 1) + 60))
        writer.spark_frame("returns_revenue_at_risk", at_risk)
        overall = rates_by.filter(F.col("dimension") == "all").first()
        if overall is not None:
            counters["line_return_rate"] = float(overall["line_return_rate"])
            counters["amount_return_rate"] = float(overall["amount_return_rate"] or 0.0)
        serial = per_customer.agg(F.sum(F.col("is_serial_returner").cast("int")).alias("n"),
                                  F.sum(F.when(F.col("is_serial_returner"), F.col("returned_amount"))).alias("refunds"),
                                  F.sum("returned_amount").alias("all_refunds")).first()
        counters["serial_returners"] = int(serial["n"] or 0)
        counters["serial_returner_refund_share"] = float((serial["refunds"] or 0.0) / serial["all_refunds"]
                                                         if serial["all_refunds"] else 0.0)
        risk_all = at_risk.filter(F.col("category") == returns.ALL).first()
        counters["expected_refunds_at_risk"] = float(risk_all["expected_refunds"] or 0.0) if risk_all else 0.0

        counters["seconds_returns"] = _lap()
        # ------------------------------------------------------------------ CLV
        counters.update(_clv(ctx, cfg, orders, people, end, as_of, writer, out_dir))
        counters["seconds_clv"] = _lap()
    finally:
        for df in cached:
            df.unpersist()
    counters["_outputs"] = str(out_dir)
    log.info("cohorts: %s customers, as_of %s, outputs in %s", counters.get("customers"), as_of, out_dir)
    return StageResult(STAGE, tables=dict(writer.rows), counters=counters)


def _clv(ctx: RunContext, cfg: CohortsConfig, orders: DataFrame, people: DataFrame, end: dt.datetime,
         as_of: dt.date, writer: _Writer, out_dir: Path) -> dict[str, Any]:
    """Calibration fit + holdout check, then the full-history fit that scores customers."""
    import pandas as pd

    from cpbi_spark.analytics.cohorts import plots
    from cpbi_spark.analytics.cohorts.clv.bgnbd import fit_bgnbd
    from cpbi_spark.analytics.cohorts.clv.model import (
        clv_deciles,
        clv_summary,
        fit_spend,
        holdout_check,
        score_customers,
    )

    c = cfg.clv
    if not c.enabled:
        return {"clv_skipped": "disabled in analyses.cohorts.clv.enabled"}
    unit = c.time_unit_days
    cal_end = end - dt.timedelta(days=c.holdout_days)
    cal = clv_summary(orders, people, cal_end, end, unit).toPandas()  # one row per customer
    full = clv_summary(orders, people, end, end, unit).toPandas()
    if len(cal) < c.min_customers:
        ctx.log.warning("cohorts: CLV skipped: %s customers in the calibration window (< %s)", len(cal),
                        c.min_customers)
        return {"clv_skipped": f"{len(cal)} customers before the calibration end (< clv.min_customers)"}
    bg_cal = fit_bgnbd(cal["x"], cal["t_x"], cal["T"])
    bg = fit_bgnbd(full["x"], full["t_x"], full["T"])
    for label, fit in (("calibration", bg_cal), ("full-history", bg)):
        if fit.a <= 1:
            # The other outputs stay valid: skip CLV with the reason rather than fail the whole study.
            reason = (f"BG/NBD {label} fit gives a={fit.a:.3f} <= 1 (unbounded expected purchases); lengthen the "
                      "history or change analyses.cohorts.clv.time_unit_days")
            ctx.log.warning("cohorts: CLV skipped: %s", reason)
            return {"clv_skipped": reason}
    check = holdout_check(cal, bg_cal, c.holdout_days / unit, c.deciles)
    gg = fit_spend(full)
    scored = score_customers(full, bg, gg, horizon_days=c.horizon_days, unit_days=unit,
                             annual_discount_rate=c.annual_discount_rate, margin=c.margin)
    deciles, decile_of = clv_deciles(scored, c.deciles)
    scored["clv_decile"] = decile_of
    gg_cal = fit_spend(cal)

    fit_rows: list[dict[str, Any]] = []
    for model, window, fit in (("bgnbd", "calibration", bg_cal), ("bgnbd", "full", bg),
                               ("gamma_gamma", "calibration", gg_cal), ("gamma_gamma", "full", gg)):
        if fit is not None:
            fit_rows += [{"model": model, "fit_window": window, "name": k, "value": v}
                         for k, v in fit.as_dict().items()]
            fit_rows.append({"model": model, "fit_window": window, "name": "converged", "value": float(fit.converged)})
    holdout = {"customers": float(check.customers), "holdout_units": check.holdout_units,
               "predicted": check.predicted, "actual": check.actual, "error": check.error,
               "passed": float(abs(check.error) <= c.max_holdout_error)}
    fit_rows += [{"model": "holdout", "fit_window": "calibration", "name": k, "value": v} for k, v in holdout.items()]
    extra = {"calibration_end": cal_end.date()}
    writer.pandas_frame("clv_model_fit", pd.DataFrame(fit_rows), **extra)
    writer.pandas_frame("clv_holdout_deciles", check.by_decile, **extra)
    writer.pandas_frame("clv_deciles", deciles)
    clv_df = ctx.spark.createDataFrame(scored)
    writer.spark_frame("clv_customers", clv_df)

    deciles.to_csv(out_dir / "clv_deciles.csv", index=False)
    check.by_decile.to_csv(out_dir / "clv_holdout_deciles.csv", index=False)
    (out_dir / "clv_fit.json").write_text(json.dumps({
        "calibration_end": cal_end.date().isoformat(), "as_of": as_of.isoformat(), "time_unit_days": unit,
        "bgnbd": {"calibration": bg_cal.as_dict(), "full": bg.as_dict()},
        "gamma_gamma": {"calibration": gg_cal.as_dict() if gg_cal else None, "full": gg.as_dict() if gg else None},
        "holdout": holdout}, indent=2))
    plots.clv_deciles_chart(deciles).savefig(out_dir / "clv_deciles.png", dpi=130)

    out = {f"bgnbd_{k}": v for k, v in bg.as_dict().items()}
    out.update({f"bgnbd_cal_{k}": v for k, v in bg_cal.as_dict().items()})
    if gg is not None:
        out.update({f"gamma_gamma_{k}": v for k, v in gg.as_dict().items()})
    out.update({"clv_holdout_predicted": check.predicted, "clv_holdout_actual": check.actual,
                "clv_holdout_error": check.error, "clv_holdout_abs_error": abs(check.error),
                "clv_holdout_passed": holdout["passed"], "clv_total": float(scored["clv"].sum()),
                "clv_top_decile_share": float(deciles["clv_share"].iloc[0]) if len(deciles) else 0.0})
    return out
