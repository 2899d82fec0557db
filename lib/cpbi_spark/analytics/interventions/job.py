"""``cpbi run interventions``: rank actions from the latest cohorts, baskets and uplift results.

1. Read the insight tables each candidate type needs (a type whose tables are missing is skipped and
   the reason recorded; with none available the analysis is skipped).
2. Build the candidates (:mod:`cpbi_spark.analytics.interventions.candidates`), rank them by expected
   value, and attach to every row the cpbi run and the MLflow run of the analysis it comes from.
3. Overwrite ``recommended_interventions``; MLflow run ``interventions`` with parameters, counts and
   value per type, and the ranked table as a CSV artifact.

Example:
    >>> run(RunContext.create(env="local")).tables             # doctest: +SKIP
    {'recommended_interventions': 14}
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from cpbi_spark.analytics.interventions import candidates as cand
from cpbi_spark.analytics.interventions.config import InterventionsConfig, interventions_config
from cpbi_spark.runtime import StageResult

if TYPE_CHECKING:
    from cpbi_spark.runtime import RunContext

STAGE = "interventions"
TABLE = "recommended_interventions"
# candidate type -> the insight tables it reads
NEEDS: dict[str, tuple[str, ...]] = {
    "cross_sell": ("basket_rules", "basket_scopes", "fact_basket_lines"),
    "win_back": ("customer_purchase_profile",),
    "promotion_target": ("uplift_readout", "uplift_studies"),
    "promotion_stop": ("uplift_readout", "uplift_studies"),
    "return_reduction": ("return_rates", "fact_basket_lines"),
}


def source_runs(config, analyses: list[str]) -> dict[str, tuple[str | None, str | None]]:
    """analysis -> (cpbi run id, MLflow run id) of its latest finished MLflow run, (None, None) if none."""
    import mlflow

    from cpbi_spark.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri(config))
    out: dict[str, tuple[str | None, str | None]] = {a: (None, None) for a in analyses}
    experiment = mlflow.get_experiment_by_name(config.mlflow.experiment)
    if experiment is None:
        return out
    for name in analyses:
        runs = mlflow.search_runs([experiment.experiment_id], filter_string=(
            f"attributes.run_name = '{name}' and attributes.status = 'FINISHED'"),
            order_by=["attributes.start_time DESC"], max_results=1, output_format="list")
        if runs:
            out[name] = (runs[0].data.params.get("run_id"), runs[0].info.run_id)
    return out


def _data_span(ctx: RunContext) -> tuple[object, object]:
    """First and last basket time of ``fact_basket_lines``."""
    from pyspark.sql import functions as F

    row = ctx.lake.read("fact_basket_lines").agg(F.min("basket_ts"), F.max("basket_ts")).first()
    return row[0], row[1]


def _window_days(ctx: RunContext, as_of: object, maturity_days: int) -> float:
    """Days of sales whose returns are fully observed: first basket to ``as_of - maturity``."""
    first = _data_span(ctx)[0]
    if first is None or as_of is None:
        return 1.0
    end = pd.Timestamp(as_of) - pd.Timedelta(days=maturity_days)
    return max((end - pd.Timestamp(first)).total_seconds() / 86400.0, 1.0)


def build(ctx: RunContext, cfg: InterventionsConfig, runs: dict[str, tuple[str | None, str | None]],
          skipped: dict[str, str]) -> pd.DataFrame:
    """The ranked candidates from whatever insight tables exist (the reason for each skipped type in ``skipped``)."""
    from cpbi_spark.analytics.cohorts.config import cohorts_config

    lake = ctx.lake
    cache: dict[str, pd.DataFrame] = {}

    def table(name: str) -> pd.DataFrame:
        if name not in cache:
            cache[name] = lake.read(name).toPandas()
        return cache[name]

    def ready(kind: str) -> bool:
        missing = [t for t in NEEDS[kind] if not lake.exists(t)]
        if missing:
            skipped[kind] = f"missing table(s) {', '.join(missing)}: run the analysis that writes them first"
        return not missing

    found: list[pd.DataFrame] = []
    run_of = {name: runs.get(name, (None, None))[0] or "" for name in ("baskets", "cohorts", "uplift")}
    if ready("cross_sell"):
        found.append(cand.cross_sell(table("basket_rules"), table("basket_scopes"), cfg, run_of["baskets"],
                                     _data_span(ctx)))
    readout = table("uplift_readout") if lake.exists("uplift_readout") else pd.DataFrame()
    studies = table("uplift_studies") if lake.exists("uplift_studies") else pd.DataFrame()
    if ready("win_back"):
        profile = lake.read("customer_purchase_profile").select(
            "customer_id", "rfm_segment", "orders", "net_revenue", "recency_days").toPandas()
        found.append(cand.win_back(profile, readout, studies, cfg, run_of["cohorts"]))
    if ready("promotion_target"):
        found.append(cand.promotion_targeting(readout, studies, cfg, run_of["uplift"]))
    if ready("promotion_stop"):
        found.append(cand.promotion_stop(readout, studies, cfg, run_of["uplift"]))
    if ready("return_reduction"):
        rates = table("return_rates")
        as_of = rates["as_of"].max() if len(rates) else None
        days = _window_days(ctx, as_of, cohorts_config(ctx.config).returns.maturity_days)
        found.append(cand.return_reduction(rates, cfg, days, run_of["cohorts"]))
    for kind in NEEDS:
        if kind not in skipped and not any((f["intervention_type"] == kind).any() for f in found):
            skipped[kind] = "no candidate passed the thresholds (see analyses.interventions)"
    return cand.rank(found, cfg.top_n)


def _records(df: pd.DataFrame) -> list[dict]:
    """Rows as plain Python values (numpy scalars unwrapped, NaN as None) for ``lake.frame``."""
    def plain(v):
        if v is None or (isinstance(v, float) and v != v):
            return None
        if isinstance(v, pd.Timestamp):
            return v.to_pydatetime()
        return v.item() if hasattr(v, "item") else v

    return [{k: plain(v) for k, v in r.items()} for r in df.to_dict("records")]


def run(ctx: RunContext) -> StageResult:
    """Build, rank and write the recommended interventions; track the run in MLflow."""
    import mlflow

    from cpbi_spark.tracking import tracked_run

    cfg = interventions_config(ctx.config)
    result = StageResult(STAGE)
    sources = [t for need in NEEDS.values() for t in need]
    if not any(ctx.lake.exists(t) for t in sources if t != "fact_basket_lines"):
        result.counters["skipped"] = ("no insight table of cohorts, baskets or uplift exists: run those analyses "
                                      "first (cpbi run cohorts,baskets,uplift)")
        return result
    runs = source_runs(ctx.config, ["cohorts", "baskets", "uplift"])
    skipped: dict[str, str] = {}
    with tracked_run(ctx.config, STAGE, params={**cfg.params(), "run_id": ctx.run_id},
                     tags={"analysis": STAGE}) as active:
        ranked = build(ctx, cfg, runs, skipped)
        ranked["mlflow_run_id"] = ranked["source_analysis"].map(lambda a: runs.get(a, (None, None))[1])
        ranked["run_id"] = ctx.run_id
        ranked["created_at"] = ctx.started_at
        frame = ctx.lake.frame(TABLE, _records(ranked))
        ctx.lake.overwrite(TABLE, frame)
        result.tables[TABLE] = len(ranked)
        metrics = {"interventions": len(ranked), "expected_value_total": float(ranked["expected_value"].sum())}
        for kind, part in ranked.groupby("intervention_type"):
            metrics[f"{kind}.count"] = len(part)
            metrics[f"{kind}.expected_value"] = float(part["expected_value"].sum())
        mlflow.log_metrics(metrics)
        if skipped:
            mlflow.set_tag("skipped_types", "; ".join(f"{k}: {v}" for k, v in sorted(skipped.items())))
        outputs = ctx.config.storage.outputs
        out_dir = (Path(outputs) / STAGE / ctx.run_id if "://" not in outputs
                   else Path(tempfile.mkdtemp(prefix="cpbi-interventions-")))
        out_dir.mkdir(parents=True, exist_ok=True)
        csv = out_dir / "recommended_interventions.csv"
        ranked.to_csv(csv, index=False)
        mlflow.log_artifact(str(csv), STAGE)
        result.counters.update({k: round(v, 2) for k, v in metrics.items()})
        result.counters.update({"mlflow_run_id": active.info.run_id, "artifacts": str(out_dir),
                                **{f"skipped.{k}": v for k, v in skipped.items()}})
    return result

