"""`cpbi run interventions` on the shared analysed world, judged against the generator's planted truths.

Truths (manifest["truths"]): promotion_effects (planted conversion effect per promotion, arm and loyalty
tier), basket_pairs (planted and independent pairs), return_rates (planted return probability per
category). Value formulas are checked by recomputing one row of each kind from its source table by hand.
"""

from __future__ import annotations

import pandas as pd
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def interventions(analysed_world):
    ctx, manifest, results = analysed_world
    table = ctx.lake.read("recommended_interventions").toPandas().sort_values("rank").reset_index(drop=True)
    return ctx, manifest, results, table


def test_table_is_ranked_by_expected_value_with_unique_keys_and_sane_intervals(interventions):
    ctx, _, results, t = interventions
    assert len(t) == results["interventions"].tables["recommended_interventions"] > 0
    assert not t.duplicated(ctx.config.table("recommended_interventions").keys).any()
    assert t["rank"].tolist() == list(range(1, len(t) + 1))
    assert t["expected_value"].is_monotonic_decreasing
    assert ((t["ci_low"] <= t["expected_value"] + 1e-9) & (t["expected_value"] <= t["ci_high"] + 1e-9)).all()
    assert set(t["intervention_type"]) >= {"cross_sell", "win_back", "promotion_target", "return_reduction"}
    assert t["action"].str.len().gt(10).all() and t["evidence"].str.len().gt(20).all()
    assert t["audience"].notna().all() and t["confidence"].isin(["high", "medium", "low"]).all()


def test_every_row_names_the_analysis_run_and_mlflow_run_it_comes_from(interventions):
    ctx, _, results, t = interventions
    for analysis, part in t.groupby("source_analysis"):
        assert (part["source_run_id"] == ctx.run_id).all(), analysis        # the analyses ran in this context
        assert (part["mlflow_run_id"] == results[analysis].counters["mlflow_run_id"]).all(), analysis
    assert (t["run_id"] == ctx.run_id).all()


def test_top_promotion_target_is_the_planted_responsive_segment(interventions):
    _, manifest, _, t = interventions
    promos = manifest["truths"]["promotion_effects"]["promotions"]
    # The planted responsive segment: the (randomised promotion, arm, tier) with the largest planted effect.
    effects = [(arm["planted_effect_pp"], pid, name, tier) for pid, p in promos.items() if p["is_randomized"]
               for tier, seg in p["segments"].items() for name, arm in seg["arms"].items()]
    _, best_pid, best_arm, best_tier = max(effects)
    targets = t[t["intervention_type"] == "promotion_target"]
    assert len(targets) > 0
    top = targets.iloc[0]
    assert top["audience"] == f"segment {best_tier}"
    assert top["action"] == f"Send {best_pid} ({best_arm}) to {best_tier} customers"
    assert top["rank"] == 1, "the largest planted effect is also the most valuable action on this world"
    # No segment whose planted effect is zero in every arm is targeted.
    dead = {tier for tier in ("bronze", "silver", "gold", "platinum")
            if all(arm["planted_effect_pp"] == 0 for p in promos.values() if p["is_randomized"]
                   for arm in p["segments"][tier]["arms"].values())}
    assert not targets["audience"].isin([f"segment {d}" for d in dead]).any()


def test_cross_sell_rows_are_exactly_the_planted_pairs(interventions):
    _, manifest, _, t = interventions
    pairs = manifest["truths"]["basket_pairs"]["pairs"]
    planted = {frozenset((p["product_a"], p["product_b"])) for p in pairs if p["kind"] == "planted"}
    independent = {frozenset((p["product_a"], p["product_b"])) for p in pairs if p["kind"] == "independent"}
    rows = t[t["intervention_type"] == "cross_sell"]
    found = {frozenset(e.split(":")[0].removeprefix("rule ").split(" -> ")) for e in rows["evidence"]}
    assert found == planted
    assert not found & independent


def test_cross_sell_value_follows_its_stated_formula(interventions):
    ctx, _, _, t = interventions
    row = t[t["intervention_type"] == "cross_sell"].iloc[0]
    a, c = row["evidence"].split(":")[0].removeprefix("rule ").split(" -> ")
    rules = ctx.lake.read("basket_rules").toPandas()
    r = rules[(rules["level"] == "product") & (rules["segment_key"] == "all") & (rules["antecedent_key"] == a)
              & (rules["consequent_key"] == c)].iloc[0]
    lines = ctx.lake.read("fact_basket_lines").select("basket_ts").toPandas()["basket_ts"]
    days = (lines.max() - lines.min()).total_seconds() / 86400        # no window is configured: the data's span
    # baskets with A but not C, scaled to 90 days, x take rate 5% x net value per unit of C
    expected = (r["antecedent_count"] - r["support_count"]) * 90 / days * 0.05 * r["consequent_net_value"]
    assert row["expected_value"] == pytest.approx(expected, rel=1e-9)


def test_promotion_value_follows_the_readout(interventions):
    ctx, _, _, t = interventions
    row = t[t["intervention_type"] == "promotion_target"].iloc[0]
    readout = ctx.lake.read("uplift_readout").toPandas()
    pid, rest = row["action"].removeprefix("Send ").split(" (", 1)
    arm = rest.split(")")[0]
    seg = row["audience"].removeprefix("segment ")
    r = readout[(readout["promotion_id"] == pid) & (readout["arm"] == arm) & (readout["segment"] == seg)
                & (readout["metric"] == "net_revenue_per_customer") & (readout["estimate"] == "unadjusted")].iloc[0]
    studies = ctx.lake.read("uplift_studies").toPandas().set_index("promotion_id")
    cost = studies.loc[pid, "cost_per_contact"]
    n = r["n"] + r["control_n"]
    margin = ctx.config.analyses["uplift"]["margin_rate"]
    assert row["audience_size"] == n
    assert row["expected_value"] == pytest.approx(n * (margin * r["difference"] - cost), rel=1e-9)
    assert row["ci_low"] == pytest.approx(n * (margin * r["ci_low"] - cost), rel=1e-9)
    assert row["ci_high"] == pytest.approx(n * (margin * r["ci_high"] - cost), rel=1e-9)


def test_return_reduction_picks_the_planted_high_return_categories(interventions):
    _, manifest, _, t = interventions
    cats = manifest["truths"]["return_rates"]["categories"]
    planted = pd.Series({name: c["return_prob"] for name, c in cats.items()})
    lines = pd.Series({name: c["realized"]["lines"] for name, c in cats.items()})
    overall = float((planted * lines).sum() / lines.sum())
    chosen = t.loc[t["intervention_type"] == "return_reduction", "audience"].str.removeprefix("buyers of category ")
    assert planted.idxmax() in set(chosen), "the category with the highest planted return probability"
    # Every chosen category's planted probability is well above the overall planted rate.
    assert (planted[list(chosen)] > 1.3 * overall).all(), planted[list(chosen)]


def test_mlflow_run_logs_counts_and_the_ranked_table(interventions):
    import mlflow

    from cpbi_spark.tracking import tracking_uri

    ctx, _, results, t = interventions
    mlflow.set_tracking_uri(tracking_uri(ctx.config))
    run = mlflow.get_run(results["interventions"].counters["mlflow_run_id"])
    assert run.data.metrics["interventions"] == len(t)
    assert run.data.metrics["expected_value_total"] == pytest.approx(t["expected_value"].sum())
    assert run.data.params["horizon_days"] == "90"
    arts = [a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "interventions")]
    assert arts == ["interventions/recommended_interventions.csv"]


def test_without_insight_tables_the_analysis_is_skipped_with_the_reason(spark, tmp_path):
    from cpbi_spark.pipeline import run_stages
    from cpbi_spark.runtime import RunContext

    ctx = RunContext.create(env="ci", spark=spark, overrides={
        "storage.root": str(tmp_path / "lake"), "storage.landing": str(tmp_path / "landing"),
        "storage.outputs": str(tmp_path / "outputs"), "platform.enabled": "false"})
    (result,) = run_stages(ctx, ["interventions"])
    assert "run those analyses first" in result.counters["skipped"]
    assert not ctx.lake.exists("recommended_interventions")


def test_bad_settings_name_the_file_and_key():
    from cpbi_spark.analytics.interventions.config import interventions_config
    from cpbi_spark.config import load_config
    from cpbi_spark.errors import ConfigError

    config = load_config(env="ci", overrides={"analyses.interventions.cross_sell.take_rate": "0.5",
                                              "analyses.interventions.horizon_days": "0"})
    with pytest.raises(ConfigError) as err:
        interventions_config(config)
    keys = {p.key for p in err.value.problems}
    assert {"analyses.interventions.horizon_days", "analyses.interventions.cross_sell.take_rate"} <= keys


def test_cross_sell_without_basket_times_uses_the_observed_volume():
    # A basket-per-line export has no times: no per-day projection, the observed volume once, no horizon.
    from cpbi_spark.analytics.interventions.candidates import cross_sell
    from cpbi_spark.analytics.interventions.config import InterventionsConfig

    rule = {"level": "product", "segment_key": "all", "is_significant": True, "high_return_flag": False,
            "low_expected_count": False, "lift": 3.0, "consequent_size": 1, "consequent_net_value": 2.0,
            "antecedent_key": "milk", "consequent_key": "bread", "antecedent_names": None, "consequent_names": None,
            "antecedent_count": 500, "support_count": 100, "confidence": 0.2, "p_adjusted": 1e-6,
            "consequent_return_rate": 0.0}
    scopes = pd.DataFrame([{"level": "product", "segment_key": "all", "window_start": None, "window_end": None}])
    rows = cross_sell(pd.DataFrame([rule]), scopes, InterventionsConfig(), "r1", (None, None))
    (row,) = rows.to_dict("records")
    assert row["expected_value"] == pytest.approx(400 * 0.05 * 2.0)
    assert row["horizon_days"] is None and "no basket times" in row["assumptions"]
    assert row["ci_low"] < row["expected_value"] < row["ci_high"]
