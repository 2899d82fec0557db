"""End to end on the generated retailer: planted truths recovered, tables BI-ready, MLflow run logged.

Reads ``cpbi run cohorts`` of the shared ``analysed_world`` (scale 1, seed 42) and checks it against
the generator's manifest: retention per cohort and period (UTC month of the first valid basket), return
rate per category, and the CLV holdout check.
"""

from __future__ import annotations

import math
import os

import pytest

pytestmark = pytest.mark.slow

TABLES = ("cohort_retention", "cohort_retention_wide", "repeat_purchase_rates", "repeat_survival_curve",
          "customer_purchase_profile", "rfm_segments", "return_rates", "customer_returns",
          "returns_revenue_at_risk", "clv_customers", "clv_deciles", "clv_model_fit", "clv_holdout_deciles")


@pytest.fixture(scope="module")
def study(analysed_world):
    import mlflow

    from cpbi_spark.tracking import tracking_uri

    ctx, manifest, results = analysed_world
    result = results["cohorts"]
    mlflow.set_tracking_uri(tracking_uri(ctx.config))      # the world's own store (under its outputs folder)
    run = mlflow.get_run(result.counters["mlflow_run_id"])
    artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "cohorts")]
    return ctx, manifest, result, run, artifacts


def _table(ctx, name):
    return ctx.lake.read(name).toPandas()


def test_retention_recovers_the_planted_curve(study):
    ctx, manifest, *_ = study
    long = _table(ctx, "cohort_retention").set_index(["cohort_key", "period_index"])
    worst_realized, worst_expected, checked = 0.0, 0.0, 0
    for cohort in manifest["truths"]["retention"]["cohorts"]:
        n = cohort["customers"]
        for k, (expected, realized) in enumerate(zip(cohort["expected"], cohort["realized"], strict=True)):
            row = long.loc[(cohort["cohort"], k)]
            assert row["cohort_size"] == n
            got = row["retention_rate"]
            # Same definition as the generator's realized value: equal up to the 2-point bound of the issue.
            assert abs(got - realized) <= 0.02, (cohort["cohort"], k, got, realized)
            # Against the planted probability: 2 points, or 3 binomial standard errors for small cohorts.
            tolerance = max(0.02, 3 * math.sqrt(expected * (1 - expected) / n))
            assert abs(got - expected) <= tolerance, (cohort["cohort"], k, got, expected, tolerance)
            worst_realized = max(worst_realized, abs(got - realized))
            if n >= 900:
                worst_expected = max(worst_expected, abs(got - expected))
            checked += 1
    assert checked >= 100
    print(f"\nretention: max |ours - realized| = {worst_realized:.4f}; "
          f"max |ours - expected| over cohorts >= 900 customers = {worst_expected:.4f} ({checked} cells)")


def test_return_rate_per_category_recovers_the_planted_probability(study):
    ctx, manifest, *_ = study
    rates = _table(ctx, "return_rates")
    cats = rates[rates["dimension"] == "category"].set_index("dimension_value")
    planted = manifest["truths"]["return_rates"]["categories"]
    assert set(planted) <= set(cats.index)
    worst_planted, worst_realized = 0.0, 0.0
    for category, truth in planted.items():
        got = cats.loc[category, "line_return_rate"]
        p, n = truth["return_prob"], cats.loc[category, "sale_lines"]
        assert abs(got - truth["realized"]["rate"]) <= 0.01, (category, got, truth["realized"])
        assert abs(got - p) <= max(0.01, 3 * math.sqrt(p * (1 - p) / n)), (category, got, p, n)
        worst_planted = max(worst_planted, abs(got - p))
        worst_realized = max(worst_realized, abs(got - truth["realized"]["rate"]))
    print(f"\nreturn rates: max |ours - planted| = {worst_planted:.4f}, max |ours - realized| = {worst_realized:.4f}")


def test_clv_holdout_within_ten_percent_and_fit_logged(study):
    ctx, _, _, run, _ = study
    fit = _table(ctx, "clv_model_fit").set_index(["model", "fit_window", "name"])["value"]
    error = fit[("holdout", "calibration", "error")]
    assert abs(error) <= 0.10
    assert fit[("holdout", "calibration", "actual")] > 1000
    assert fit[("bgnbd", "full", "converged")] == 1.0 and fit[("bgnbd", "calibration", "a")] > 1
    assert run.data.metrics["clv_holdout_error"] == pytest.approx(error)
    assert run.data.metrics["bgnbd_log_likelihood"] == pytest.approx(fit[("bgnbd", "full", "log_likelihood")])
    print(f"\nCLV holdout: predicted {fit[('holdout', 'calibration', 'predicted')]:.0f} vs actual "
          f"{fit[('holdout', 'calibration', 'actual')]:.0f} purchase days ({100 * error:+.1f} %)")
    deciles = _table(ctx, "clv_deciles").sort_values("clv_decile")
    assert deciles["clv_mean"].is_monotonic_decreasing and deciles["clv_share"].sum() == pytest.approx(1.0)
    holdout = _table(ctx, "clv_holdout_deciles").sort_values("decile")
    assert holdout["actual"].iloc[0] > 1.2 * holdout["actual"].iloc[-1]  # predicted heavy buyers do buy more


def test_mlflow_run_has_params_metrics_and_figures(study):
    _, _, result, run, artifacts = study
    assert run.data.params["cohort_by"] == "first_purchase_month"
    assert run.data.params["clv.holdout_days"] == "120"
    for metric in ("customers", "retention_p1", "km_repeat_rate_30d", "line_return_rate", "clv_holdout_error"):
        assert metric in run.data.metrics
    names = {os.path.basename(a) for a in artifacts}
    assert {"retention_heatmap.png", "survival_curve.png", "clv_deciles.png", "clv_deciles.csv",
            "clv_fit.json"} <= names
    folder = result.counters["outputs"]
    for png in ("retention_heatmap.png", "survival_curve.png", "clv_deciles.png"):
        with open(os.path.join(folder, png), "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_every_table_is_written_with_unique_keys(study):
    ctx, _, result, *_ = study
    from pyspark.sql import functions as F

    for name in TABLES:
        keys = ctx.config.table(name).keys
        df = ctx.lake.read(name)
        rows = df.count()
        assert rows > 0 and rows == result.tables[name], name
        assert df.select(*keys).distinct().count() == rows, name
        assert df.select(F.countDistinct("as_of")).first()[0] == 1


def test_cohort_money_reconciles_with_the_gold_facts(study):
    ctx, *_ = study
    from pyspark.sql import functions as F

    long = ctx.lake.read("cohort_retention").agg(
        F.sum("gross_revenue"), F.sum("returns_sale_period"), F.sum("returns_return_period"), F.sum("orders")).first()
    facts = ctx.lake.read("fact_transactions").filter("txn_type = 'SALE'").agg(
        F.sum("amount_reporting"), F.countDistinct("basket_id")).first()
    refunds = ctx.lake.read("fact_returns").agg(F.sum("amount_reporting")).first()[0]
    # 14 months of data and max_age 13: every sale and refund falls in a reported period.
    assert long[0] == facts[0] and long[3] == facts[1]
    assert long[1] == refunds and long[2] == refunds


def test_wide_table_matches_the_long_table(study):
    ctx, *_ = study
    long = _table(ctx, "cohort_retention").set_index(["cohort_key", "period_index"])
    wide = _table(ctx, "cohort_retention_wide")
    retention = wide[wide["metric"] == "retention_rate"].set_index("cohort_key")
    assert set(retention.index) == set(long.index.get_level_values(0))
    jan = retention.loc["2024-01"]
    assert [jan[f"p{k:02d}"] for k in range(14)] == pytest.approx(
        [long.loc[("2024-01", k), "retention_rate"] for k in range(14)])
    assert math.isnan(jan["p14"]) and math.isnan(retention.loc["2025-02", "p01"])


def test_repeat_and_rfm_outputs_are_consistent(study):
    ctx, *_ = study
    rates = _table(ctx, "repeat_purchase_rates")
    overall = rates[rates["cohort_key"] == "ALL"].sort_values("window_days")
    assert list(overall["window_days"]) == [30, 60, 90, 365]
    assert overall["repeat_rate"].is_monotonic_increasing and overall["km_repeat_rate"].is_monotonic_increasing
    # With most windows fully observed, the censoring-aware estimate agrees with the plain rate.
    assert (overall["km_repeat_rate"] - overall["repeat_rate"]).abs().max() < 0.02
    profile = _table(ctx, "customer_purchase_profile")
    assert profile["customer_id"].is_unique
    assert (profile.loc[~profile["repeated"], "days_to_second_purchase"].isna()).all()
    assert (profile["survival_duration_days"] > 0).all()
    assert profile[["r_score", "f_score", "m_score"]].stack().between(1, 5).all()
    segments = _table(ctx, "rfm_segments")
    assert segments["customers"].sum() == len(profile)
    serial = _table(ctx, "customer_returns")
    flagged = serial[serial["is_serial_returner"]]
    assert ((flagged["returned_lines"] >= 3) & (flagged["amount_return_rate"] >= 0.3)).all()
    risk = _table(ctx, "returns_revenue_at_risk").set_index("category")
    assert risk.loc["ALL", "expected_refunds"] > 0
    assert risk.loc["ALL", "expected_refunds"] == pytest.approx(risk.drop("ALL")["expected_refunds"].sum())
