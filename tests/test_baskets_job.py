"""`cpbi run baskets` end to end on the generated retailer, judged against the generator's planted truths.

Truths (manifest["truths"]): basket_pairs (planted pairs with their lift; pairs planted as independent),
return_rates (per category). Tolerances are stated at each assertion.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from conftest import ANALYSIS_OVERRIDES

pytestmark = pytest.mark.slow

PRODUCT_ALL = ("product", "all", "all")


@pytest.fixture(scope="module")
def baskets_run(analysed_world):
    # The shared world analysed once (tests/conftest.py: segment keys channel and loyalty_tier).
    ctx, manifest, results = analysed_world
    return ctx, manifest, results["baskets"]


def _table(ctx, name):
    return ctx.lake.read(name).toPandas()


def _product_rules(ctx):
    rules = _table(ctx, "basket_rules")
    sel = ((rules["level"] == "product") & (rules["segment_key"] == "all"))
    return rules[sel].set_index(["antecedent_key", "consequent_key"])


def test_insight_tables_have_unique_keys(baskets_run):
    ctx, _, result = baskets_run
    for name in ("basket_scopes", "basket_itemsets", "basket_rules", "basket_recommendations",
                 "basket_recommendation_eval"):
        df = _table(ctx, name)
        keys = ctx.config.table(name).keys
        assert len(df) > 0, name
        assert not df.duplicated(keys).any(), f"{name}: keys {keys} are not unique"
        assert result.tables[name] == len(df)
        assert (df["run_id"] == ctx.run_id).all()


def test_planted_pairs_are_recovered_and_independent_pairs_are_not(baskets_run):
    ctx, manifest, _ = baskets_run
    rules = _product_rules(ctx)
    pairs = manifest["truths"]["basket_pairs"]["pairs"]
    planted = [p for p in pairs if p["kind"] == "planted"]
    top = 2 * len(planted)                 # both directions of every planted pair
    assert planted and any(p["kind"] == "independent" for p in pairs)
    for p in pairs:
        a, b = p["product_a"], p["product_b"]
        both = [rules.loc[(a, b)], rules.loc[(b, a)]]
        for r in both:
            # Our baskets are the manifest's (valid sale baskets): its realized lift exactly (rounded to 1e-6)...
            assert r["lift"] == pytest.approx(p["realized"]["lift"], abs=2e-6)
            assert r["support_count"] == p["realized"]["baskets_ab"]
            assert r["n_baskets"] == p["realized"]["baskets"]
            if p["kind"] == "planted":
                # ... and within 10% of the lift the generator planted; significant and among the top rules.
                assert r["lift"] == pytest.approx(p["lift"], rel=0.10)
                assert r["is_significant"] and r["rule_rank"] <= top
            else:
                assert not r["is_significant"] and r["rule_rank"] > top
                assert r["lift"] == pytest.approx(1.0, abs=0.1)


METRICS = (("support", "support"), ("confidence", "confidence"), ("lift", "lift"), ("leverage", "leverage"),
           ("conviction", "conviction"), ("zhang", "zhangs_metric"), ("jaccard", "jaccard"),
           ("antecedent_support", "antecedent support"), ("consequent_support", "consequent support"))


@pytest.mark.filterwarnings("ignore:Allowing arbitrary scalar fill_value:FutureWarning")
@pytest.mark.parametrize("level,column", [("product", "product_id"), ("category", "category")])
def test_itemsets_and_rule_metrics_equal_mlxtend_on_generated_data(baskets_run, level, column):
    import math

    import numpy as np
    import pandas as pd
    from mlxtend.frequent_patterns import association_rules, fpgrowth
    from mlxtend.preprocessing import TransactionEncoder

    ctx, _, _ = baskets_run
    # Reference baskets straight from the gold lines (shipped config: no window, no exclusion, returned
    # lines kept): one basket per basket_id, its distinct items at the level.
    lines = ctx.lake.read("fact_basket_lines").select("basket_id", column).toPandas().dropna()
    baskets = lines.groupby("basket_id")[column].apply(lambda s: sorted(set(s))).tolist()
    n = len(baskets)
    cfg = ctx.config.analyses["baskets"]
    min_count = max(math.ceil(cfg["min_support"] * n), cfg["min_count"])
    te = TransactionEncoder()
    onehot = pd.DataFrame.sparse.from_spmatrix(te.fit(baskets).transform(baskets, sparse=True), columns=te.columns_)
    # Half a basket below min_count: mlxtend's float comparison keeps exactly the sets with count >= min_count.
    fi = fpgrowth(onehot, min_support=(min_count - 0.5) / n, use_colnames=True, max_len=cfg["max_len"])
    ref_sets = {" | ".join(sorted(s)): round(sup * n) for s, sup in zip(fi["itemsets"], fi["support"], strict=True)}
    ref_rules = association_rules(fi, num_itemsets=n, metric="confidence", min_threshold=0.0)

    sets = _table(ctx, "basket_itemsets")
    sets = sets[(sets["level"] == level) & (sets["segment_key"] == "all")]
    assert dict(zip(sets["itemset_key"], sets["support_count"], strict=True)) == ref_sets
    assert (sets["n_baskets"] == n).all() and (sets["size"] >= 2).sum() > 5
    rules = _table(ctx, "basket_rules")
    rules = rules[(rules["level"] == level) & (rules["segment_key"] == "all")].set_index(
        ["antecedent_key", "consequent_key"])
    ref_rules.index = pd.MultiIndex.from_arrays([ref_rules["antecedents"].map(lambda s: " | ".join(sorted(s))),
                                                 ref_rules["consequents"].map(lambda s: " | ".join(sorted(s)))])
    assert set(rules.index) == set(ref_rules.index) and len(rules) > 10
    for ours_col, ref_col in METRICS:
        ours = rules.loc[ref_rules.index, ours_col].to_numpy(dtype=float)
        ref = ref_rules[ref_col].to_numpy(dtype=float)
        finite = np.isfinite(ref)
        assert (np.abs(ours[finite] - ref[finite]) <= 1e-9 * (1 + np.abs(ref[finite]))).all(), ours_col
        assert (np.isinf(ours[np.isinf(ref)])).all() and (np.isnan(ours[np.isnan(ref)])).all(), ours_col


def test_consequent_return_rates_match_the_planted_rates_and_rank_rules_down(baskets_run):
    ctx, manifest, _ = baskets_run
    rules = _table(ctx, "basket_rules")
    cat = rules[(rules["level"] == "category") & (rules["segment_key"] == "all") & (rules["consequent_size"] == 1)]
    observed = cat.groupby("consequent_key")["consequent_return_rate"].first()
    for name, truth in manifest["truths"]["return_rates"]["categories"].items():
        # Unit = one category of one basket (returned when any of its lines was): within 0.01 of the line rate.
        assert observed[name] == pytest.approx(truth["realized"]["rate"], abs=0.01), name
    flag = ctx.config.analyses["baskets"]["returns"]["flag_rate"]
    assert cat.loc[cat["consequent_key"] == "Dresses", "high_return_flag"].all()          # ~24% returned
    assert not cat.loc[cat["consequent_key"] == "Dairy", "high_return_flag"].any()        # ~1.5%
    assert (cat["high_return_flag"] == (cat["consequent_return_rate"] > flag)).all()
    # Same lift both ways: the direction whose consequent comes back more often ranks lower.
    prod = _product_rules(ctx)
    for p in manifest["truths"]["basket_pairs"]["pairs"]:
        if p["kind"] != "planted":
            continue
        ab, ba = prod.loc[(p["product_a"], p["product_b"])], prod.loc[(p["product_b"], p["product_a"])]
        worse, better = (ab, ba) if ab["consequent_return_rate"] > ba["consequent_return_rate"] else (ba, ab)
        assert worse["rule_rank"] > better["rule_rank"]
        assert worse["kept_lift"] < better["kept_lift"]


def test_levels_and_segments_are_separate_runs(baskets_run):
    ctx, manifest, _ = baskets_run
    scopes = _table(ctx, "basket_scopes").set_index(["level", "segment_key", "segment_value"])
    n_total = manifest["truths"]["basket_pairs"]["pairs"][0]["realized"]["baskets"]
    for level in ("product", "category", "department"):
        assert scopes.loc[(level, "all", "all"), "n_baskets"] == n_total
        for key in ANALYSIS_OVERRIDES["analyses.baskets.segments"]:
            part = scopes.xs((level, key), level=("level", "segment_key"))
            assert part["n_baskets"].sum() == n_total, (level, key)      # every basket in exactly one segment
    assert set(scopes.xs(("product", "channel"), level=("level", "segment_key")).index) == {"store", "online",
                                                                                               "mobile"}
    sets = _table(ctx, "basket_itemsets")
    assert set(sets["level"]) == {"product", "category", "department"} and sets["size"].max() == 3
    # A scope's threshold follows its own size: max(ceil(0.005 n), 10).
    small = scopes.loc[("product", "loyalty_tier", "platinum")]
    assert small["min_count"] == max(-(-small["n_baskets"] * 5 // 1000), 10)


def test_recommendations_beat_popularity_on_open_baskets(baskets_run):
    ctx, _, result = baskets_run
    ev = _table(ctx, "basket_recommendation_eval").set_index(["scenario", "model", "k"])
    for k in (5, 10):
        rules, pop = ev.loc[("basket", "rules", k)], ev.loc[("basket", "popularity", k)]
        assert rules["n_users"] == pop["n_users"] > 1000
        # Planted pairs make the open-basket scenario predictable: MAP@k at least 5% above popularity.
        assert rules["map_at_k"] > 1.05 * pop["map_at_k"], k
        assert rules["hit_rate"] >= pop["hit_rate"]
    for metric in ("precision_at_k", "recall_at_k", "map_at_k", "hit_rate"):
        assert ev[metric].between(0, 1).all()
    assert ev.loc[("customer", "rules", 5), "n_users"] > 100          # reported, whatever the outcome
    assert result.counters["basket_map_at_5"] == pytest.approx(ev.loc[("basket", "rules", 5), "map_at_k"], abs=1e-4)


def test_recommendations_exclude_what_the_customer_just_bought(baskets_run):
    from pyspark.sql import functions as F

    ctx, _, _ = baskets_run
    recs = ctx.lake.read("basket_recommendations")
    k = ctx.config.analyses["baskets"]["recommend"]["k"]
    per_customer = recs.groupBy("customer_id").agg(F.count("*").alias("n"), F.max("rank").alias("top"))
    assert per_customer.filter((F.col("n") != F.col("top")) | (F.col("n") > k)).count() == 0
    start, end = recs.select("context_start", "context_end").first()
    bought = (ctx.lake.read("fact_basket_lines")
              .filter((F.col("basket_ts") >= F.lit(start)) & (F.col("basket_ts") < F.lit(end)))
              .select("customer_id", F.col("product_id")).distinct())
    assert recs.join(bought, ["customer_id", "product_id"]).count() == 0
    assert recs.filter("source = 'rule'").count() > 0


def test_mlflow_run_has_params_metrics_and_artifacts(baskets_run):
    import mlflow

    from cpbi_spark.tracking import tracking_uri

    ctx, _, result = baskets_run
    client = mlflow.tracking.MlflowClient(tracking_uri(ctx.config))
    run = client.get_run(result.counters["mlflow_run_id"])
    assert run.data.params["min_support"] == "0.005" and run.data.params["max_len"] == "3"
    metrics = run.data.metrics
    assert metrics["rules"] == result.counters["rules"] > 0
    assert "eval.basket.rules.map_at_5" in metrics and "eval.basket.popularity.map_at_5" in metrics
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"top_rules.csv", "lift_support.png", "evaluation.csv"} <= names
    folder = Path(result.counters["artifacts"])
    csv = (folder / "top_rules.csv").read_text().splitlines()
    assert csv[0].startswith("level,segment_key,segment_value,rule_rank") and len(csv) > 10
    assert (folder / "lift_support.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_reports_an_explosion_as_an_analysis_error(baskets_run, tmp_path, repo_root, capsys):
    from cpbi_spark.cli import main

    ctx, _, _ = baskets_run
    conf = tmp_path / "conf"
    shutil.copytree(repo_root / "conf", conf)
    (conf / "base" / "analysis_baskets.yaml").write_text(yaml.safe_dump({"analyses": {"baskets": {
        "levels": ["department"], "segments": [], "evaluation": {"enabled": False},
        "min_count": 1, "guard": {"max_itemsets": 5}}}}))
    storage = ctx.config.storage
    code = main(["run", "baskets", "--env", "ci", "--conf-dir", str(conf),
                 "--set", f"storage.root={storage.root}", "--set", f"storage.landing={storage.landing}",
                 "--set", f"storage.outputs={tmp_path / 'outputs'}"])
    err = capsys.readouterr().err
    assert code == 2
    assert "basket analysis stopped before mining" in err and "guard.max_itemsets = 5" in err
