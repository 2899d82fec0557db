"""Known-answer tests of the uplift statistics: every expectation is computed by hand, taken from the
literature or computed by scipy/statsmodels here in the test - never by the code under test."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cpbi_spark.analytics.uplift import evaluate, readout
from cpbi_spark.analytics.uplift.config import UpliftConfig, parse_block
from cpbi_spark.errors import ConfigError

A = [12.1, 9.8, 11.4, 10.2, 13.5, 12.0, 9.1]
B = [8.9, 10.1, 9.5, 7.8, 10.7, 9.0]


def test_welch_matches_scipy_computed_independently():
    ref = stats.ttest_ind(A, B, equal_var=False)
    ci = ref.confidence_interval(0.95)
    r = readout.welch_test(np.mean(A), np.var(A, ddof=1), len(A), np.mean(B), np.var(B, ddof=1), len(B))
    assert r.difference == pytest.approx(np.mean(A) - np.mean(B), abs=1e-12)
    assert r.statistic == pytest.approx(ref.statistic, rel=1e-10)
    assert r.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert (r.ci_low, r.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert r.df == pytest.approx(ref.df, rel=1e-9)


def test_welch_by_hand_formula():
    # Welch-Satterthwaite by hand: se^2 = 1/50 + 2/60; df = se^4 / ((1/50)^2/49 + (2/60)^2/59)
    a, b = 1.0 / 50, 2.0 / 60
    df = (a + b) ** 2 / (a * a / 49 + b * b / 59)
    r = readout.welch_test(1.2, 1.0, 50, 1.0, 2.0, 60)
    assert r.se == pytest.approx(math.sqrt(a + b), rel=1e-12)
    assert r.df == pytest.approx(df, rel=1e-12)
    assert r.statistic == pytest.approx(0.2 / math.sqrt(a + b), rel=1e-9)


def test_newcombe_interval_matches_newcombe_1998_and_statsmodels():
    from statsmodels.stats.proportion import confint_proportions_2indep

    # Newcombe (1998), Stat Med 17:873, Table II example (a): 56/70 - 48/80, method 10: 0.0524 to 0.3339.
    low, high = readout.newcombe_interval(56, 70, 48, 80)
    assert (round(low, 4), round(high, 4)) == (0.0524, 0.3339)
    for x1, n1, x2, n2 in [(30, 100, 20, 100), (5, 57, 9, 55), (0, 40, 3, 41), (217, 1057, 196, 1062)]:
        ref = confint_proportions_2indep(x1, n1, x2, n2, method="newcomb", compare="diff")
        assert readout.newcombe_interval(x1, n1, x2, n2) == pytest.approx(tuple(ref), abs=1e-10)


def test_wilson_and_two_proportion_test_match_statsmodels():
    from statsmodels.stats.proportion import proportion_confint, proportions_ztest

    assert readout.wilson_interval(30, 100) == pytest.approx(proportion_confint(30, 100, method="wilson"), abs=1e-12)
    r = readout.two_proportion_test(217, 1057, 196, 1062)
    z, p = proportions_ztest([217, 196], [1057, 1062])
    assert r.statistic == pytest.approx(z, rel=1e-10)
    assert r.p_value == pytest.approx(p, rel=1e-9)
    assert r.difference == pytest.approx(217 / 1057 - 196 / 1062)


def test_srm_chi_square_by_hand():
    # expected 1059.5 each: chi2 = 2 * 2.5^2 / 1059.5
    chi2, df, p = readout.srm_test({"control": 1062, "treatment": 1057}, {"control": 0.5, "treatment": 0.5})
    assert chi2 == pytest.approx(12.5 / 1059.5, rel=1e-12)
    assert df == 1
    assert p == pytest.approx(stats.chi2.sf(12.5 / 1059.5, 1), rel=1e-9)
    # 600/400 against 50/50: chi2 = (100^2 + 100^2) / 500 = 40 -> a mismatch
    chi2, _, p = readout.srm_test({"control": 600, "treatment": 400}, {"control": 0.5, "treatment": 0.5})
    assert chi2 == pytest.approx(40.0)
    assert p < 1e-9
    # three arms 0.4/0.3/0.3 with exactly planned counts: no mismatch
    chi2, df, p = readout.srm_test({"c": 400, "a": 300, "b": 300}, {"c": 0.4, "a": 0.3, "b": 0.3})
    assert (chi2, df, p) == (0.0, 2, 1.0)
    # an arm that was never planned is a certain mismatch
    assert readout.srm_test({"c": 10, "x": 5}, {"c": 1.0})[2] == 0.0


def test_smd_and_holm_by_hand():
    assert readout.smd(3.0, 4.0, 1.0, 4.0) == pytest.approx(1.0)  # (3-1)/sqrt((4+4)/2)
    assert readout.smd(1.0, 1.0, 1.5, 3.0) == pytest.approx(-0.5 / math.sqrt(2.0))
    # Holm: sorted 0.01*3 = 0.03, 0.03*2 = 0.06, max(0.04*1, 0.06) = 0.06
    assert readout.adjust_pvalues([0.01, 0.04, 0.03], "holm") == pytest.approx([0.03, 0.06, 0.06])
    assert np.isnan(readout.adjust_pvalues([0.01, float("nan")], "holm")[1])


def test_compare_to_control_on_a_small_table():
    units = pd.DataFrame({
        "promotion_id": "P", "segment": "all",
        "arm": ["treatment"] * len(A) + ["control"] * len(B),
        "is_control": [False] * len(A) + [True] * len(B),
        "converted": [1, 0, 1, 1, 0, 1, 0, 0, 1, 0, 0, 0, 1],  # 4/7 treated, 2/6 control
        "revenue": A + B, "net_revenue": A + B,
    })
    summary = readout.summarize(units, ["promotion_id", "segment", "arm", "is_control"],
                                ["converted", "revenue", "net_revenue"])
    out = readout.compare_to_control(summary, group=["promotion_id", "segment"]).set_index("metric")
    ref = stats.ttest_ind(A, B, equal_var=False)
    assert out.loc["revenue_per_customer", "p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert out.loc["conversion", "difference"] == pytest.approx(4 / 7 - 2 / 6)
    assert out.loc["conversion", "n"] == 7 and out.loc["conversion", "control_n"] == 6
    assert out.loc["conversion", "ci_method"] == "newcombe_hybrid_score"


def test_spark_and_pandas_summaries_agree(spark):
    rng = np.random.default_rng(3)
    df = pd.DataFrame({"p": rng.choice(["a", "b"], 300), "arm": rng.choice(["c", "t"], 300),
                       "y": rng.normal(size=300), "z": rng.integers(0, 2, 300).astype(float)})
    local = readout.summarize(df, ["p", "arm"], ["y", "z"])
    remote = readout.summarize_spark(spark.createDataFrame(df), ["p", "arm"], ["y", "z"])
    pd.testing.assert_frame_equal(local.reset_index(drop=True), remote, check_dtype=False, atol=1e-12)


# --------------------------------------------------------------------------- Qini / AUUC / uplift@k
# score, treated, y - the curve values below are computed by hand in the comments.
TINY = pd.DataFrame({"score": [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2],
                     "t": [1, 0, 1, 0, 1, 0, 1, 0], "y": [1, 0, 1, 1, 0, 0, 0, 1]})


def test_qini_and_auuc_computed_by_hand():
    r = evaluate.evaluate_scores(TINY["score"].to_numpy(), TINY["t"].to_numpy(), TINY["y"].to_numpy(), [0.25, 0.5])
    # N_T = 4, ATE = 2/4 - 2/4 = 0.
    # Qini Q(k) = Y_t - Y_c N_t/N_c for k = 1..8: 0 (N_c=0), 1, 2, 1, 0.5, 1, 2/3, 0; divided by N_T = 4.
    q = np.array([0, 0, 1, 2, 1, 0.5, 1, 2 / 3, 0]) / 4
    assert r["curve"]["qini"].to_numpy() == pytest.approx(q)
    # trapezoids with dx = 1/8: (0 + .25 + .75 + .75 + .375 + .375 + 5/12 + 1/6) / 2 / 8 = 37/192
    assert r["qini_coefficient"] == pytest.approx(37 / 192)
    assert r["ate"] == 0.0
    # uplift curve (rate_t - rate_c) k/N: 0, .25, .375, .25, 5/48, .25, 7/48, 0 -> area 11/64
    assert r["auuc"] == pytest.approx(11 / 64)
    assert r["auuc_random"] == 0.0
    assert r["uplift_at"][0.25] == pytest.approx(1.0)  # top 2: a treated buyer, a control non-buyer
    assert r["uplift_at"][0.5] == pytest.approx(0.5)  # top 4: treated 2/2, control 1/2


def test_ties_are_order_independent_and_prorated():
    # one tie group of three at 0.5; top half = unit 1 + 2/3 of the group:
    # n_t = 1 + 2/3, y_t = 1, n_c = 4/3, y_c = 2/3 -> 0.6 - 0.5 = 0.1
    base = pd.DataFrame({"score": [0.9, 0.5, 0.5, 0.5, 0.1, 0.1], "t": [1, 0, 1, 0, 1, 0],
                         "y": [1, 0, 0, 1, 0, 0]})
    results = []
    for seed in range(5):
        d = base.sample(frac=1.0, random_state=seed)
        results.append(evaluate.evaluate_scores(d["score"].to_numpy(), d["t"].to_numpy(), d["y"].to_numpy(), [0.5]))
    assert all(r["uplift_at"][0.5] == pytest.approx(0.1) for r in results)
    assert len({round(r["qini_coefficient"], 12) for r in results}) == 1
    # points only at the ends of tie groups: 0, 1/6, 4/6, 1
    assert results[0]["curve"]["share"].to_numpy() == pytest.approx([0, 1 / 6, 4 / 6, 1])


def test_perfect_ranking_normalises_to_one_and_random_scores_to_about_zero():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 2, 4000)
    y = (rng.random(4000) < 0.2 + 0.1 * t).astype(float)
    perfect = evaluate.evaluate_scores(np.where(t == 1, y, -y), t, y, [0.1])
    assert perfect["qini_normalized"] == pytest.approx(1.0)
    noise = [evaluate.evaluate_scores(rng.random(4000), t, y, [0.1])["qini_normalized"] for _ in range(20)]
    assert abs(np.mean(noise)) < 0.05


def test_spark_bins_reproduce_exact_groups_when_scores_are_few(spark):
    rng = np.random.default_rng(1)
    d = pd.DataFrame({"s": rng.integers(0, 20, 2000) / 20.0, "t": rng.integers(0, 2, 2000),
                      "y": rng.integers(0, 2, 2000).astype(float)})
    exact = evaluate.evaluate_groups(evaluate.tie_groups(d["s"], d["t"], d["y"]), [0.2])
    binned = evaluate.evaluate_groups(evaluate.spark_groups(spark.createDataFrame(d), "s", "t", "y", bins=100), [0.2])
    assert binned["qini_coefficient"] == pytest.approx(exact["qini_coefficient"], abs=1e-12)
    assert binned["uplift_at"][0.2] == pytest.approx(exact["uplift_at"][0.2], abs=1e-12)


# --------------------------------------------------------------------------- config
def test_config_reports_every_problem_with_file_and_key():
    with pytest.raises(ConfigError) as err:
        parse_block(UpliftConfig, {"margin_rate": 1.5, "evaluation": {"folds": 1}, "learnrs": ["t_learner"],
                                   "learners": ["t_learner"], "policy_learner": "dr_learner",
                                   "planned_allocation": {"P1": {"control": 0.5, "treatment": 0.4}}},
                    "uplift", "conf/base/analysis_uplift.yaml")
    keys = {p.key for p in err.value.problems}
    assert keys == {"analyses.uplift.margin_rate", "analyses.uplift.evaluation.folds", "analyses.uplift.learnrs",
                    "analyses.uplift.policy_learner", "analyses.uplift.planned_allocation.P1"}
    assert all(p.file == "conf/base/analysis_uplift.yaml" for p in err.value.problems)


def test_repository_config_is_valid():
    from cpbi_spark.analytics.uplift.config import drivers_config, uplift_config
    from cpbi_spark.config import load_config

    cfg = load_config(env="ci")
    assert uplift_config(cfg).planned_allocation["PRM002"] == {"control": 0.4, "treatment_a": 0.3, "treatment_b": 0.3}
    assert drivers_config(cfg).horizon_months == 3
    for name in ("uplift_readout", "uplift_scores", "uplift_policy", "purchase_drivers"):
        assert cfg.table(name).layer == "insights"
