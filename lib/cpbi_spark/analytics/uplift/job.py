"""``cpbi run uplift`` and ``cpbi run drivers``: read gold, analyse, write insight tables, track in MLflow.

Uplift (per promotion with exposures):

1. Spark builds one row per study unit (exposed customer, plus the comparison group of observational
   promotions): outcomes in the response window, segment as of exposure, pre-period features; or, for a
   campaign test export (``fact_campaign_outcomes``), the export's outcomes and attributes per customer.
2. Readout from per-arm summaries aggregated by Spark: differences vs control with intervals, adjusted
   p-values, sample-ratio mismatch, covariate balance; observational promotions are labelled as such,
   with a propensity-weighted estimate and its overlap diagnostics.
3. Randomised promotions: uplift learners scored on held-out customers (scikit-learn on the driver while
   the units fit ``driver_max_rows``, else the Spark ML T-learner), Qini/AUUC/uplift@k, targeting policy.
4. Tables ``uplift_*`` (conf/base/tables_uplift.yaml) overwritten; MLflow run ``uplift`` with params,
   metrics, plots and the fitted models (registered with a signature).

Drivers: repurchase model on first-purchase features; permutation importance, SHAP (global and per
segment), partial dependence; tables ``purchase_drivers`` and ``purchase_driver_dependence``.

Example:
    >>> from cpbi_spark.runtime import RunContext
    >>> result = run(RunContext.create(env="local"))     # doctest: +SKIP
    >>> result.tables["uplift_readout"] > 0               # doctest: +SKIP
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cpbi_spark.runtime import StageResult

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from cpbi_spark.analytics.uplift.config import DriversConfig, UpliftConfig
    from cpbi_spark.analytics.uplift.modelling import ModelOutputs
    from cpbi_spark.analytics.uplift.study import Promotion
    from cpbi_spark.runtime import RunContext

# exposures + transactions, or a campaign test export with outcomes per customer
REQUIRED = (("fact_promotion_exposures", "fact_transactions"), ("fact_campaign_outcomes",))
NO_CLEAR_ASSOCIATION = "no clear association (held-out permutation importance within 2 sd of zero)"
SKOPS_TRUSTED = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]


# --------------------------------------------------------------------------- table helpers
def _to_spark(ctx: RunContext, name: str, pdf: pd.DataFrame) -> DataFrame:
    """A pandas frame as a Spark frame of the table's declared schema (run_id and computed_at filled in)."""
    from pyspark.sql.types import BooleanType, DoubleType, IntegerType, LongType, StringType, TimestampType

    schema = ctx.lake.schema(name)
    pdf = pdf.copy()
    if "run_id" in schema.fieldNames():
        pdf["run_id"] = ctx.run_id
    if "computed_at" in schema.fieldNames():
        pdf["computed_at"] = pd.Timestamp(ctx.started_at).tz_convert("UTC") if len(pdf) else None
    out = pd.DataFrame(index=pdf.index)
    for f in schema.fields:
        col = pdf[f.name] if f.name in pdf.columns else pd.Series([None] * len(pdf), index=pdf.index, dtype=object)
        t = f.dataType
        if isinstance(t, StringType):
            out[f.name] = col.astype(object).where(col.notna(), None).map(lambda v: v if v is None else str(v))
        elif isinstance(t, (LongType, IntegerType)):
            out[f.name] = pd.to_numeric(col, errors="coerce").round().astype("Int64")
        elif isinstance(t, DoubleType):
            num = pd.to_numeric(col, errors="coerce").astype(float)
            out[f.name] = num.where(np.isfinite(num), np.nan)
        elif isinstance(t, BooleanType):
            out[f.name] = col.astype("boolean")
        elif isinstance(t, TimestampType):
            out[f.name] = pd.to_datetime(col, utc=True)
        else:
            out[f.name] = col
    if out.empty:
        return ctx.spark.createDataFrame([], schema)
    return ctx.spark.createDataFrame(out.reset_index(drop=True), schema=schema)


def _write(ctx: RunContext, result: StageResult, name: str, frame: pd.DataFrame | DataFrame) -> None:
    from pyspark.sql import functions as F

    if isinstance(frame, pd.DataFrame):
        sdf = _to_spark(ctx, name, frame)
        rows = len(frame)
    else:
        sdf = frame.withColumn("run_id", F.lit(ctx.run_id))
        if "computed_at" in ctx.lake.schema(name).fieldNames():
            sdf = sdf.withColumn("computed_at", F.lit(ctx.started_at).cast("timestamp"))
        rows = None
    ctx.lake.overwrite(name, sdf)
    result.tables[name] = rows if rows is not None else ctx.lake.read(name).count()


def _skip(result: StageResult, ctx: RunContext, reason: str) -> StageResult:
    result.counters["skipped"] = reason
    ctx.log.warning("%s skipped: %s", result.stage, reason)
    return result


# --------------------------------------------------------------------------- uplift
@dataclass
class StudyData:
    frame: DataFrame  # one row per unit (local checkpoint)
    promotions: dict[str, Promotion]
    features: list[str]
    n_units: dict[str, int] = field(default_factory=dict)


def _promotions(ctx: RunContext, cfg: UpliftConfig, units: DataFrame, dim: DataFrame) -> dict[str, Promotion]:
    from pyspark.sql import functions as F

    from cpbi_spark.analytics.uplift.study import classify

    counts = (units.groupBy("promotion_id", "arm", "is_control")
              .agg(F.count("*").alias("n"), F.max(F.col("is_randomized").cast("int")).alias("r"),
                   F.max("window_days").alias("w")).collect())
    meta = {r["promotion_id"]: r.asDict() for r in dim.collect()}
    by_promo: dict[str, dict[str, Any]] = {}
    for r in counts:
        p = by_promo.setdefault(r["promotion_id"], {"arms": {}, "controls": [], "randomized": 0, "window": 0})
        p["arms"][r["arm"]] = int(r["n"])
        if r["is_control"]:
            p["controls"].append(r["arm"])
        p["randomized"] = max(p["randomized"], int(r["r"] or 0))
        p["window"] = int(r["w"] or cfg.default_response_window_days)
    out = {}
    for pid in sorted(by_promo):
        p, m = by_promo[pid], meta.get(pid, {})
        cost = cfg.cost_for(pid, m.get("cost_per_contact"))
        out[pid] = classify(pid, str(m.get("name") or pid), bool(p["randomized"]), p["arms"], p["controls"],
                            p["window"], cost, min_arm_size=cfg.min_arm_size)
    return out


def _campaign_frame(ctx: RunContext, cfg: UpliftConfig, dim: DataFrame) -> DataFrame | None:
    """Units of campaign test exports (``fact_campaign_outcomes``), or None when there are none."""
    from pyspark.sql import functions as F

    from cpbi_spark.analytics.uplift import features as feat

    if not ctx.lake.exists("fact_campaign_outcomes"):
        return None
    outcomes = ctx.lake.read("fact_campaign_outcomes")
    if cfg.promotions:
        outcomes = outcomes.filter(F.col("promotion_id").isin(list(cfg.promotions)))
    if outcomes.limit(1).count() == 0:
        return None
    cs = cfg.campaign_outcomes
    numeric, categories = feat.attribute_profile(outcomes, cs.max_categories)
    return feat.campaign_study_frame(outcomes, dim, cfg.default_response_window_days, numeric=numeric,
                                     categories=categories, segment_attribute=cs.segment_attribute)


def _exposure_frame(ctx: RunContext, cfg: UpliftConfig, dim: DataFrame, exclude: list[str]
                    ) -> tuple[DataFrame, dict[str, Promotion], list[DataFrame]] | None:
    """Units of exposures + transactions (outcomes in the response window, pre-period features).

    Returns the frame, its promotions and the frames to unpersist once the frame is materialised; None
    when there are no exposures with a time or no transactions.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from cpbi_spark.analytics.uplift import features as feat

    if not (ctx.lake.exists("fact_promotion_exposures") and ctx.lake.exists("fact_transactions")):
        return None
    exposures = ctx.lake.read("fact_promotion_exposures")
    if exclude:  # promotions read from campaign test exports
        exposures = exposures.filter(~F.col("promotion_id").isin(exclude))
    sales, returns = feat.sale_and_return_lines(ctx.lake.read("fact_transactions"))
    every_unit = feat.study_units(exposures, dim, cfg.default_response_window_days)
    units = every_unit
    if cfg.promotions:
        units = units.filter(F.col("promotion_id").isin(list(cfg.promotions)))
    promotions = _promotions(ctx, cfg, units, dim)
    if not promotions:
        return None
    sales = sales.persist(StorageLevel.MEMORY_AND_DISK)
    comparison = feat.comparison_units(units, sales, [p for p, v in promotions.items() if v.use_comparison],
                                       seed=cfg.seed, max_per_promotion=cfg.observational.max_comparison_units)
    # Persisted because every feature branch joins them (the comparison sample would be redrawn otherwise).
    study_units = units.unionByName(comparison).persist(StorageLevel.MEMORY_AND_DISK)
    outcomes = feat.unit_outcomes(study_units, sales, returns).persist(StorageLevel.MEMORY_AND_DISK)
    if cfg.promotions:
        # Previous responses count exposures to every promotion, not only the studied ones.
        exposed_outcomes = every_unit.join(feat.unit_outcomes(every_unit, sales, returns), "unit_id")
    else:
        exposed_outcomes = study_units.filter("is_exposed").join(outcomes, "unit_id")
    lines = ctx.lake.read_or_empty("fact_basket_lines")
    customers = ctx.lake.read_or_empty("dim_customer")
    fs = cfg.features
    departments = feat.top_values(lines, "department", "amount_reporting", fs.max_departments)
    channels = feat.top_values(sales, "channel", None, fs.max_channels)
    segments = feat.top_values(customers, fs.segment_column, None, 50)
    frame = feat.build_study_frame(
        study_units, sales, returns, lines, customers, departments=departments, channels=channels,
        segments=segments, pre_period_days=cfg.pre_period_days, segment_column=fs.segment_column,
        outcomes=outcomes, exposed_outcomes=exposed_outcomes,
    )
    return frame, promotions, [sales, study_units, outcomes]


def prepare(ctx: RunContext, cfg: UpliftConfig) -> StudyData | str:
    """Study units with outcomes and features (Spark, checkpointed) and the promotions' design; or a skip reason.

    Units come from exposures + transactions and from campaign test exports (``fact_campaign_outcomes``,
    outcomes per customer); a promotion found in an export is read from the export only.
    """
    from pyspark.sql import functions as F

    from cpbi_spark.analytics.uplift import features as feat

    dim = ctx.lake.read_or_empty("dim_promotion")
    campaign = _campaign_frame(ctx, cfg, dim)
    promotions: dict[str, Promotion] = {}
    frames, cached = [], []
    if campaign is not None:
        promotions.update(_promotions(ctx, cfg, campaign, dim))
        frames.append(campaign)
    exposed = _exposure_frame(ctx, cfg, dim, sorted(promotions))
    if exposed is not None:
        promotions.update(exposed[1])
        frames.append(exposed[0])
        cached = exposed[2]
    if not promotions:
        return "no promotion exposures" + (f" for promotions {cfg.promotions}" if cfg.promotions else "")
    frame = frames[0]
    for other in frames[1:]:
        frame = frame.unionByName(other, allowMissingColumns=True)
    features = feat.feature_columns(frame.columns)
    if len(frames) > 1:  # a feature of one source is absent (zero) for the units of the other
        frame = frame.fillna(0.0, subset=features)
    # A local checkpoint materialises the units and cuts their lineage (a dozen joins): every later query
    # (summaries, model transforms, unions of scores) would otherwise re-plan it, and the plans grow to
    # megabytes on the Spark ML path.
    frame = frame.localCheckpoint(eager=True)
    n_units = {r["promotion_id"]: int(r["n"]) for r in frame.groupBy("promotion_id").agg(
        F.count("*").alias("n")).collect()}
    for c in cached:
        c.unpersist()
    return StudyData(frame, promotions, features, n_units)


@dataclass
class UpliftOutputs:
    studies: pd.DataFrame
    readout: pd.DataFrame
    balance: pd.DataFrame
    models: dict[str, ModelOutputs]
    overlap: dict[str, dict]
    engine: str


def analyse(ctx: RunContext, cfg: UpliftConfig, data: StudyData) -> UpliftOutputs:
    """Readout, balance, observational adjustment and (randomised promotions) the uplift models."""
    from pyspark.sql import functions as F

    from cpbi_spark.analytics.uplift import modelling, readout, study
    from cpbi_spark.analytics.uplift.features import OUTCOMES
    from cpbi_spark.analytics.uplift.learners import threads_for

    promos = data.promotions
    outcome_cols = [c for c in OUTCOMES if c in ("converted", "revenue", "net_revenue")]
    overall = readout.summarize_spark(data.frame, ["promotion_id", "arm", "is_control"], outcome_cols + data.features)
    by_segment = readout.summarize_spark(data.frame, ["promotion_id", "segment", "arm", "is_control"], outcome_cols)
    rows = study.build_readout(overall, by_segment, promos, alpha=cfg.alpha, correction=cfg.multiple_testing)
    bal = readout.balance(study.mark_reference(overall, promos), data.features, group=["promotion_id"],
                          threshold=cfg.balance_smd_threshold)
    if not bal.empty:
        bal["weighting"] = "none"
    randomized = [p for p in promos.values() if p.causal]
    n_random = sum(data.n_units.get(p.promotion_id, 0) for p in randomized)
    engine = cfg.engine if cfg.engine != "auto" else ("sklearn" if n_random <= cfg.driver_max_rows else "spark")
    ctx.log.info("uplift: %d promotions (%d randomised, %d units), engine %s", len(promos), len(randomized),
                 n_random, engine)
    # One collect for every unit the driver needs: all units on the sklearn path, else the observational ones
    # (bounded by observational.max_comparison_units per promotion).
    need = [p.promotion_id for p in promos.values()
            if (engine == "sklearn" and p.causal) or (not p.causal and cfg.observational.adjust)]
    local = (data.frame.filter(F.col("promotion_id").isin(need)).toPandas() if need else pd.DataFrame())
    models: dict[str, ModelOutputs] = {}
    for p in randomized:
        # Arms too small to be split into training folds are read out but not modelled.
        p = replace(p, arm_counts={a: n for a, n in p.arm_counts.items()
                                   if a in p.control_arms or n >= cfg.min_arm_size})
        if not p.treatment_arms:
            continue
        if engine == "sklearn":
            units = local[local["promotion_id"] == p.promotion_id]
            with threads_for(len(units)):
                models[p.promotion_id] = modelling.model_on_driver(units, p, data.features, cfg)
        else:
            units_sdf = data.frame.filter(F.col("promotion_id") == p.promotion_id)
            models[p.promotion_id] = modelling.model_on_spark(units_sdf, p, data.features, cfg)
    overlap: dict[str, dict] = {}
    extra_rows, extra_balance = [], []
    for p in promos.values():
        if p.causal or not cfg.observational.adjust:
            continue
        units = local[local["promotion_id"] == p.promotion_id]
        with threads_for(len(units)):
            adj, adj_bal, ov = study.adjusted_rows(p, units, data.features, alpha=cfg.alpha, settings=cfg.observational,
                                                   seed=cfg.seed, smd_threshold=cfg.balance_smd_threshold)
        overlap[p.promotion_id] = ov
        extra_rows.append(adj)
        extra_balance.append(adj_bal)
    readout_rows = pd.concat([rows, *[r for r in extra_rows if not r.empty]], ignore_index=True)
    bal = pd.concat([bal, *[b for b in extra_balance if not b.empty]], ignore_index=True)
    studies = pd.DataFrame([
        study.study_row(p, study.srm_row(p, cfg.planned_allocation.get(p.promotion_id), cfg.srm_alpha), bal,
                        overlap.get(p.promotion_id, {}), data.n_units.get(p.promotion_id, 0))
        for p in promos.values()])
    return UpliftOutputs(studies, readout_rows, bal, models, overlap, engine)


def run(ctx: RunContext) -> StageResult:
    """The ``uplift`` analysis (see the module docstring)."""
    import time

    from cpbi_spark.analytics.uplift.config import uplift_config

    cfg = uplift_config(ctx.config)
    result = StageResult("uplift")
    if not any(all(ctx.lake.exists(t) for t in tables) for tables in REQUIRED):
        return _skip(result, ctx, "missing input tables: fact_promotion_exposures and fact_transactions, or "
                                  "fact_campaign_outcomes (run the gold stage first)")
    clock = [time.perf_counter()]

    def lap(name: str) -> None:
        now = time.perf_counter()
        result.counters[f"{name}_seconds"] = round(now - clock[0], 1)
        clock[0] = now

    data = prepare(ctx, cfg)
    if isinstance(data, str):
        return _skip(result, ctx, data)
    lap("prepare")
    out = analyse(ctx, cfg, data)
    lap("analyse")
    result.counters.update({"promotions": len(data.promotions), "engine": out.engine,
                            "randomized": int(out.studies["causal"].sum()),
                            "observational": int((~out.studies["causal"].astype(bool)).sum()),
                            "units": int(sum(data.n_units.values()))})
    _write(ctx, result, "uplift_studies", out.studies)
    _write(ctx, result, "uplift_readout", out.readout)
    _write(ctx, result, "uplift_balance", out.balance)
    _write_models(ctx, result, out)
    data.frame.unpersist()
    lap("write")
    _track_uplift(ctx, cfg, out, result)
    lap("mlflow")
    return result


def _write_models(ctx: RunContext, result: StageResult, out: UpliftOutputs) -> None:
    from cpbi_spark.analytics.uplift.evaluate import resample_curve

    models = out.models.values()
    evaluation = pd.concat([m.evaluation for m in models], ignore_index=True) if models else pd.DataFrame()
    policy_rows = pd.concat([m.policy for m in models], ignore_index=True) if models else pd.DataFrame()
    curves = []
    for pid, m in out.models.items():
        for (arm, learner, outcome), c in m.curves.items():
            r = resample_curve(c)
            r.insert(0, "point", range(len(r)))
            curves.append(r.assign(promotion_id=pid, score_arm=arm, learner=learner, outcome=outcome))
    _write(ctx, result, "uplift_evaluation", evaluation)
    _write(ctx, result, "uplift_qini_curve", pd.concat(curves, ignore_index=True) if curves else pd.DataFrame())
    _write(ctx, result, "uplift_policy", policy_rows)
    if out.engine == "sklearn":
        scores = [m.scores for m in models if m.scores is not None]
        assignments = [m.assignments for m in models if m.assignments is not None]
        _write(ctx, result, "uplift_scores", pd.concat(scores, ignore_index=True) if scores else pd.DataFrame())
        _write(ctx, result, "uplift_policy_assignments",
               pd.concat(assignments, ignore_index=True) if assignments else pd.DataFrame())
        return
    parts = [m.scores_spark for m in models if m.scores_spark is not None]
    apart = [m.assignments_spark for m in models if m.assignments_spark is not None]
    for name, frames in (("uplift_scores", parts), ("uplift_policy_assignments", apart)):
        if not frames:
            _write(ctx, result, name, pd.DataFrame())
            continue
        sdf = frames[0]
        for f in frames[1:]:
            sdf = sdf.unionByName(f)
        _write(ctx, result, name, sdf)


def _metric_key(*parts: object) -> str:
    # MLflow keys allow letters, digits, _ - . / and spaces only.
    import re

    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", ".".join(str(p) for p in parts))


def _track_uplift(ctx: RunContext, cfg: UpliftConfig, out: UpliftOutputs, result: StageResult) -> None:
    import mlflow

    from cpbi_spark.analytics.uplift import plots
    from cpbi_spark.tracking import tracked_run

    params = {"engine": out.engine, "margin_rate": cfg.margin_rate, "pre_period_days": cfg.pre_period_days,
              "learners": ",".join(cfg.learners), "base_model": cfg.base_model, "policy_learner": cfg.policy_learner,
              "evaluation": f"{cfg.evaluation.method}:{cfg.evaluation.folds}", "alpha": cfg.alpha,
              "multiple_testing": cfg.multiple_testing, "seed": cfg.seed, "run_id": ctx.run_id,
              "revenue_cap_quantile": cfg.revenue_cap_quantile, "promotions": ",".join(out.studies["promotion_id"])}
    with tracked_run(ctx.config, "uplift", params=params, tags={"analysis": "uplift"}) as run:
        metrics: dict[str, float] = {}
        r = out.readout
        for row in r[r["segment"] == "all"].to_dict("records"):
            base = _metric_key(row["promotion_id"], row["estimate"], row["arm"], row["metric"])
            for k in ("difference", "ci_low", "ci_high", "p_adjusted"):
                if row.get(k) is not None and not pd.isna(row[k]):
                    metrics[f"{base}.{k}"] = float(row[k])
        for row in out.studies.to_dict("records"):
            if row.get("srm_p_value") is not None and not pd.isna(row["srm_p_value"]):
                metrics[_metric_key(row["promotion_id"], "srm_p_value")] = float(row["srm_p_value"])
        for pid, m in out.models.items():
            for row in m.evaluation.to_dict("records"):
                if row["metric"] in ("qini_coefficient", "qini_normalized", "auuc"):
                    metrics[_metric_key(pid, row["score_arm"], row["learner"], row["outcome"], row["metric"])] = \
                        float(row["value"])
            for row in m.policy[m.policy["compared_with"] == "treat_none"].to_dict("records"):
                metrics[_metric_key(pid, "policy", row["strategy"], "incremental_profit")] = \
                    float(row["incremental_profit"])
        mlflow.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)})
        mlflow.log_dict({"counters": result.counters, "tables": result.tables,
                         "studies": out.studies.astype(object).where(out.studies.notna(), None).to_dict("records")},
                        "uplift/summary.json")
        _log_figures(out, cfg, plots)
        if out.engine == "sklearn":
            _log_models(out, cfg)
        else:
            _log_spark_models(out)
        result.counters["mlflow_run_id"] = run.info.run_id


def _log_figures(out: UpliftOutputs, cfg: UpliftConfig, plots: Any) -> None:
    import mlflow

    r = out.readout
    for pid in out.studies["promotion_id"]:
        seg = r[(r["promotion_id"] == pid) & (r["metric"] == "conversion") & (r["estimate"] == "unadjusted")]
        if len(seg):
            seg = seg.assign(label=seg["segment"] + " / " + seg["arm"])
            fig = plots.forest_figure(seg, f"{pid}: conversion difference vs control")
            mlflow.log_figure(fig, f"uplift/{pid}/readout_conversion.png")
            plots.close(fig)
        b = out.balance[(out.balance["promotion_id"] == pid)] if not out.balance.empty else out.balance
        if len(b):
            before = b[b["weighting"] == "none"].groupby("covariate", as_index=False)["smd"].max()
            after = b[b["weighting"] != "none"][["covariate", "smd"]].rename(columns={"smd": "smd_after"})
            if len(after):
                before = before.merge(after, on="covariate", how="left")
            fig = plots.balance_figure(before, f"{pid}: pre-period balance", cfg.balance_smd_threshold)
            mlflow.log_figure(fig, f"uplift/{pid}/balance.png")
            plots.close(fig)
    for pid, m in out.models.items():
        for arm in sorted({k[0] for k in m.curves}):
            for outcome in ("conversion", "net_revenue"):
                curves = {learner: c for (a, learner, o), c in m.curves.items() if a == arm and o == outcome}
                if curves:
                    fig = plots.qini_figure(curves, f"{pid} {arm} ({outcome})")
                    mlflow.log_figure(fig, f"uplift/{pid}/qini_{arm}_{outcome}.png")
                    plots.close(fig)
        if len(m.policy):
            fig = plots.policy_figure(m.policy, f"{pid}: incremental profit vs contacting nobody")
            mlflow.log_figure(fig, f"uplift/{pid}/policy.png")
            plots.close(fig)


def _log_models(out: UpliftOutputs, cfg: UpliftConfig) -> None:
    import mlflow
    from mlflow.models import infer_signature

    from cpbi_spark.analytics.uplift.mlflow_model import UpliftPolicyModel, pip_requirements

    for pid, m in out.models.items():
        f = m.final_model
        if not f:
            continue
        model = UpliftPolicyModel(f["features"], f["arms"], f["conversion"], f["revenue"], f["costs"],
                                  f["margin_rate"], f["min_profit"])
        sample = m.feature_sample
        signature = infer_signature(sample, model.predict(None, sample))
        mlflow.pyfunc.log_model(
            name=f"uplift_{_metric_key(pid)}", python_model=model, signature=signature, input_example=sample,
            pip_requirements=pip_requirements(),
            registered_model_name=f"cpbi_uplift_{_metric_key(pid)}" if cfg.register_models else None)


def _log_spark_models(out: UpliftOutputs) -> None:
    """Spark ML models are saved in their native format as run artifacts (one folder per arm)."""
    import tempfile
    from pathlib import Path

    import mlflow

    for pid, m in out.models.items():
        with tempfile.TemporaryDirectory() as tmp:
            for kind in ("spark_conversion", "spark_revenue"):
                learner = m.final_model.get(kind) if m.final_model else None
                if learner is None:
                    continue
                for arm, model in learner.models_.items():
                    model.write().overwrite().save(str(Path(tmp) / kind / arm))
            mlflow.log_artifacts(tmp, f"uplift/{pid}/spark_models")


# --------------------------------------------------------------------------- drivers
def run_drivers(ctx: RunContext) -> StageResult:
    """The ``drivers`` analysis: repurchase model and its attribution (see :mod:`.drivers`)."""
    from cpbi_spark.analytics.uplift import drivers as drv
    from cpbi_spark.analytics.uplift.config import drivers_config
    from cpbi_spark.analytics.uplift.learners import threads_for

    cfg = drivers_config(ctx.config)
    result = StageResult("drivers")
    if not ctx.lake.exists("fact_transactions"):
        return _skip(result, ctx, "missing input table fact_transactions: run the gold stage first")
    frame = drv.repurchase_frame(
        ctx.lake.read("fact_transactions"), ctx.lake.read_or_empty("fact_basket_lines"),
        ctx.lake.read_or_empty("dim_customer"), ctx.lake.read_or_empty("fact_promotion_exposures"),
        cfg.horizon_months).toPandas()
    if len(frame) < 100 or frame[drv.OUTCOME].nunique() < 2:
        return _skip(result, ctx, f"{len(frame)} customers with a complete {cfg.horizon_months}-month horizon "
                                  "(need >= 100 with both outcomes)")
    with threads_for(len(frame)):
        fitted = drv.fit_driver_model(frame, model=cfg.model, test_share=cfg.test_share, seed=cfg.seed)
        perm = drv.permutation_drivers(fitted, repeats=cfg.permutation_repeats, seed=cfg.seed)
        values, X = drv.shap_values(fitted, sample=cfg.shap_sample, seed=cfg.seed)
        shap_table = drv.shap_drivers(fitted, values, X, cfg.segment_column)
        top = perm.sort_values("rank")["feature"].head(cfg.top_k_partial_dependence).tolist()
        dependence = drv.partial_dependence(fitted, top, seed=cfg.seed)
    # A feature whose held-out importance is within two standard deviations of zero has no direction to report.
    noise = set(perm.loc[perm["importance"] <= 2 * perm["importance_std"], "feature"])
    shap_table.loc[shap_table["feature"].isin(noise), "direction"] = NO_CLEAR_ASSOCIATION
    directions = shap_table[shap_table["segment"] == "all"].set_index("feature")["direction"]
    perm = perm.assign(method="permutation", segment="all", metric="roc_auc_drop", n=len(fitted.X_test),
                       direction=perm["feature"].map(directions))
    shap_table = shap_table.assign(method="shap", metric="mean_abs_shap_logodds")
    table = pd.concat([perm, shap_table], ignore_index=True)
    table["evidence"] = table["feature"].map(lambda f: drv.evidence(f, cfg.randomized_features))
    table["model"] = cfg.model
    table["outcome"] = f"repurchase_{cfg.horizon_months}m"
    table["test_auc"] = fitted.test_auc
    dependence["evidence"] = dependence["feature"].map(lambda f: drv.evidence(f, cfg.randomized_features))
    result.counters.update({"customers": len(frame), "test_auc": round(fitted.test_auc, 4),
                            "repurchase_rate": round(float(frame[drv.OUTCOME].mean()), 4), "top_drivers": top})
    _write(ctx, result, "purchase_drivers", table)
    _write(ctx, result, "purchase_driver_dependence", dependence)
    _track_drivers(ctx, cfg, fitted, table, dependence, result)
    return result


def _track_drivers(ctx: RunContext, cfg: DriversConfig, fitted: Any, table: pd.DataFrame, dependence: pd.DataFrame,
                   result: StageResult) -> None:
    import mlflow
    from mlflow.models import infer_signature

    from cpbi_spark.analytics.uplift import plots
    from cpbi_spark.analytics.uplift.mlflow_model import pip_requirements
    from cpbi_spark.tracking import tracked_run

    params = {"model": cfg.model, "horizon_months": cfg.horizon_months, "test_share": cfg.test_share,
              "seed": cfg.seed, "features": ",".join(fitted.features), "run_id": ctx.run_id}
    with tracked_run(ctx.config, "drivers", params=params, tags={"analysis": "drivers"}) as run:
        mlflow.log_metric("test_auc", fitted.test_auc)
        perm = table[table["method"] == "permutation"]
        mlflow.log_metrics({_metric_key("permutation", f): float(v)
                            for f, v in zip(perm["feature"], perm["importance"], strict=True)})
        fig = plots.importance_figure(perm, "Permutation importance (held out)", "ROC AUC drop")
        mlflow.log_figure(fig, "drivers/permutation_importance.png")
        plots.close(fig)
        glob = table[(table["method"] == "shap") & (table["segment"] == "all")]
        fig = plots.importance_figure(glob.drop(columns=["importance_std"]), "SHAP (all customers)",
                                      "mean |SHAP| (log-odds)")
        mlflow.log_figure(fig, "drivers/shap_global.png")
        plots.close(fig)
        fig = plots.dependence_figure(dependence, "Partial dependence (associations)")
        mlflow.log_figure(fig, "drivers/partial_dependence.png")
        plots.close(fig)
        sample = fitted.X_test.head(5)
        signature = infer_signature(sample, fitted.pipeline.predict_proba(sample)[:, 1])
        # skops serialisation (no pickle); the boosted trees' node arrays are our own, hence trusted.
        mlflow.sklearn.log_model(fitted.pipeline, name="repurchase_model", signature=signature,
                                 input_example=sample, pip_requirements=pip_requirements(),
                                 skops_trusted_types=SKOPS_TRUSTED,
                                 registered_model_name="cpbi_repurchase_drivers" if cfg.register_model else None)
        result.counters["mlflow_run_id"] = run.info.run_id
