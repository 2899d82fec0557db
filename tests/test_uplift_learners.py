"""Uplift learners, the Spark ML T-learner and the targeting policy on data simulated in the test.

The simulation mirrors the generator's promotion model (``lib/cpbi_spark/synth/promotions.py``): per
segment a baseline conversion and a planted effect in percentage points; a converter spends a fixed
basket value, a treated converter pays ``1 - discount`` of it. Expected profits are derived here from
those parameters, independently of the code under test.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cpbi_spark.analytics.uplift import learners, modelling, policy
from cpbi_spark.analytics.uplift.config import UpliftConfig
from cpbi_spark.analytics.uplift.study import classify

SEGMENTS = ("bronze", "silver", "gold", "platinum")
SHARES = (0.50, 0.30, 0.15, 0.05)
BASELINE = {"bronze": 0.15, "silver": 0.18, "gold": 0.21, "platinum": 0.27}
PRM001 = {"treatment": {"bronze": 3.0, "silver": 10.0, "gold": 0.0, "platinum": 3.0}}
PRM002 = {"treatment_a": {"bronze": 2.0, "silver": 6.0, "gold": 0.0, "platinum": 2.0},
          "treatment_b": {"bronze": 4.0, "silver": 12.0, "gold": 1.0, "platinum": 4.0}}
NOISE = 3


def simulate(n: int, seed: int, effects: dict[str, dict[str, float]], *, value: float = 100.0,
             discount: float = 0.2, shares: dict[str, float] | None = None) -> pd.DataFrame:
    """Units with one-hot segments, noise features, random arms, conversion and net revenue."""
    rng = np.random.default_rng(seed)
    arms = ["control", *effects]
    shares = shares or {a: 1.0 / len(arms) for a in arms}
    seg = rng.choice(SEGMENTS, n, p=SHARES)
    arm = rng.choice(arms, n, p=[shares[a] for a in arms])
    p = np.array([BASELINE[s] for s in seg]) + np.array(
        [effects[a][s] / 100.0 if a != "control" else 0.0 for a, s in zip(arm, seg, strict=True)])
    converted = (rng.random(n) < p).astype(float)
    paid = np.where(arm == "control", value, value * (1 - discount))
    df = pd.DataFrame({"unit_id": [f"U{i:06d}" for i in range(n)], "promotion_id": "P",
                       "customer_id": [f"C{seed}-{i:06d}" for i in range(n)], "arm": arm, "segment": seg,
                       "converted": converted, "net_revenue": converted * paid})
    for s in SEGMENTS:
        df[f"segment__{s}"] = (seg == s).astype(float)
    for j in range(NOISE):
        df[f"noise_{j}"] = rng.normal(size=n)
    return df


FEATURES = [*[f"segment__{s}" for s in SEGMENTS], *[f"noise_{j}" for j in range(NOISE)]]


def _codes(df: pd.DataFrame, arms: list[str]) -> np.ndarray:
    return df["arm"].map({a: i for i, a in enumerate(arms)}).to_numpy()


@pytest.mark.parametrize("name", ["t_learner", "x_learner", "dr_learner"])
def test_learners_rank_the_planted_responsive_segment_on_top(name):
    df = simulate(12000, 1, PRM001, shares={"control": 0.5, "treatment": 0.5})
    train, test = df.iloc[:8000], df.iloc[8000:]
    arms = ["control", "treatment"]
    model = learners.make_learner(name, "logistic", True, 0)
    model.fit(train[FEATURES].to_numpy(), _codes(train, arms), train["converted"].to_numpy())
    tau = model.predict(test[FEATURES].to_numpy())
    assert tau.shape == (len(test), 1)
    by_segment = pd.Series(tau[:, 0]).groupby(test["segment"].to_numpy()).mean()
    assert by_segment.idxmax() == "silver"
    assert by_segment["silver"] == pytest.approx(0.10, abs=0.04)
    assert by_segment["gold"] < by_segment["bronze"] + 0.02


def test_gbt_base_and_multi_arm_scores():
    df = simulate(12000, 2, PRM002, shares={"control": 0.4, "treatment_a": 0.3, "treatment_b": 0.3})
    arms = ["control", "treatment_a", "treatment_b"]
    with learners.threads_for(0):  # one native thread: the test shares 2 cores with a Spark session
        model = learners.make_learner("t_learner", "gbt", True, 0).fit(df[FEATURES].to_numpy(), _codes(df, arms),
                                                                        df["converted"].to_numpy())
        tau = model.predict(df[FEATURES].to_numpy())
    assert tau.shape == (len(df), 2)
    b = pd.Series(tau[:, 1]).groupby(df["segment"].to_numpy()).mean()
    a = pd.Series(tau[:, 0]).groupby(df["segment"].to_numpy()).mean()
    # platinum (5% of units) is too small for a boosted T-learner to rank reliably; the large segments are
    assert b["silver"] > max(b["bronze"], b["gold"]) + 0.03
    assert b["silver"] > a["silver"]


def test_out_of_fold_scores_never_use_the_scored_rows():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 2))
    arm = rng.integers(0, 2, 400)
    y = rng.normal(size=400)
    fold = learners.fold_ids([f"c{i}" for i in range(400)], 4, 1)
    seen = []

    class Spy(learners.TLearner):
        def fit(self, X, arm, y):
            seen.append(set(map(tuple, X.round(9))))
            return super().fit(X, arm, y)

    out = learners.out_of_fold(lambda: Spy("logistic", False, 0), X, arm, y, fold, range(4))
    assert not np.isnan(out).any()
    for f, train_rows in enumerate(seen):
        scored = set(map(tuple, X[fold == f].round(9)))
        assert not scored & train_rows


def test_spark_t_learner_matches_the_sklearn_t_learner(spark):
    df = simulate(4000, 3, PRM001, shares={"control": 0.5, "treatment": 0.5})
    df["spend"] = np.random.default_rng(3).gamma(2.0, 50.0, len(df))
    feats = [*FEATURES[1:], "spend"]  # drop one one-hot column: a full dummy set has no unique MLE
    arms = ["control", "treatment"]
    sk = learners.TLearner("logistic", True, 0).fit(df[feats].to_numpy(), _codes(df, arms), df["converted"].to_numpy())
    sdf = spark.createDataFrame(df[["unit_id", "arm", "converted", *feats]])
    sp = learners.SparkTLearner(feats, arms, binary=True, label="converted", model="logistic").fit(sdf)
    got = sp.transform(sdf).select("unit_id", "uplift__treatment", "mu__control").toPandas().set_index("unit_id")
    ref_tau = pd.Series(sk.predict(df[feats].to_numpy())[:, 0], index=df["unit_id"])
    ref_mu = pd.Series(sk.outcome(df[feats].to_numpy())[:, 0], index=df["unit_id"])
    assert np.abs(got["uplift__treatment"] - ref_tau.loc[got.index]).max() < 2e-3
    assert np.abs(got["mu__control"] - ref_mu.loc[got.index]).max() < 2e-3


def _config(**extra) -> UpliftConfig:
    base = {"learners": ["t_learner", "dr_learner"], "policy_learner": "dr_learner", "margin_rate": 0.3,
            "revenue_cap_quantile": 1.0, "evaluation": {"method": "crossfit", "folds": 3}}
    return UpliftConfig.model_validate({**base, **extra})


def _expected_profit_per_contact(effect_pp: float, baseline: float, margin: float, value: float, discount: float,
                                 cost: float) -> float:
    """By hand: treated revenue (p0 + tau) v (1 - d) minus untreated revenue p0 v, times margin, minus cost."""
    tau = effect_pp / 100.0
    return margin * value * ((baseline + tau) * (1 - discount) - baseline) - cost


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_policy_beats_treat_all_and_treat_none_when_the_truth_says_so(seed):
    value, discount, cost, margin = 100.0, 0.2, 0.02, 0.3
    truth = {s: _expected_profit_per_contact(PRM001["treatment"][s], BASELINE[s], margin, value, discount, cost)
             for s in SEGMENTS}
    # The planted truth makes targeting worth it: some segments lose money when contacted, others gain.
    assert truth["gold"] < 0 < truth["silver"]
    df = simulate(30000, seed, PRM001, value=value, discount=discount, shares={"control": 0.5, "treatment": 0.5})
    promo = classify("P", "sim", True, df["arm"].value_counts().to_dict(), ["control"], 14, cost, min_arm_size=20)
    out = modelling.model_on_driver(df, promo, FEATURES, _config())
    table = out.policy.set_index(["strategy", "compared_with"])
    policy_value = table.loc[("policy", "treat_none"), "incremental_profit"]
    assert policy_value > 0  # beats treat-none
    assert table.loc[("policy", "treat_all_treatment"), "incremental_profit"] > 0  # beats treat-all (paired)
    assert policy_value > table.loc[("treat_all_treatment", "treat_none"), "incremental_profit"]
    # the policy skips the losing segment and contacts the winning one
    chosen = out.assignments.groupby("segment")["recommended_arm"].apply(lambda s: (s != policy.NO_CONTACT).mean())
    assert chosen["silver"] > 0.9 and chosen["gold"] < 0.3
    # the interval of the policy's profit covers the profit the truth implies for its choices
    implied = sum(truth[s] * ((out.assignments["segment"] == s) & (out.assignments["recommended_arm"] != "no_contact")
                              ).sum() for s in SEGMENTS)
    row = table.loc[("policy", "treat_none")]
    assert row["profit_ci_low"] <= implied <= row["profit_ci_high"]


def test_policy_treats_everyone_when_every_segment_pays():
    effects = {"treatment": {"bronze": 12.0, "silver": 15.0, "gold": 12.0, "platinum": 14.0}}
    value, discount, cost, margin = 100.0, 0.05, 0.02, 0.3
    assert all(_expected_profit_per_contact(effects["treatment"][s], BASELINE[s], margin, value, discount, cost) > 0
               for s in SEGMENTS)
    df = simulate(20000, 8, effects, value=value, discount=discount, shares={"control": 0.5, "treatment": 0.5})
    promo = classify("P", "sim", True, df["arm"].value_counts().to_dict(), ["control"], 14, cost, min_arm_size=20)
    out = modelling.model_on_driver(df, promo, FEATURES, _config())
    row = out.policy.set_index(["strategy", "compared_with"]).loc[("policy", "treat_none")]
    assert row["share_treated"] > 0.95
    assert row["profit_ci_low"] > 0


def test_strategy_value_by_hand():
    # group "t" (the policy sends 300 units to arm t): 150 got t (mean 12, var 9), 150 got control (mean 10, var 4)
    # group "control" (no contact): 100 got t (mean 9, var 1), 100 got control (mean 10, var 1)
    stats = pd.DataFrame({"group": ["t", "t", "control", "control"], "arm": ["t", "control", "t", "control"],
                          "n": [150, 150, 100, 100], "mean": [12.0, 10.0, 9.0, 10.0], "var": [9.0, 4.0, 1.0, 1.0]})
    r = policy.strategy_value(stats, "policy", ["control", "t"], {"t": 0.5}, 0.3)
    assert r["incremental_revenue"] == pytest.approx(300 * 2.0)
    assert r["cost"] == pytest.approx(150.0)
    assert r["incremental_profit"] == pytest.approx(0.3 * 600 - 150)
    se = 300 * np.sqrt(9 / 150 + 4 / 150)
    assert r["revenue_ci_high"] - r["incremental_revenue"] == pytest.approx(1.959964 * se, rel=1e-5)
    # vs treating all 500 with t: the 200 uncontacted would have gained 200 * (9 - 10) = -200, cost 0.5 * 200
    vs = policy.strategy_value(stats, "policy", ["control", "t"], {"t": 0.5}, 0.3, baseline="t")
    assert vs["incremental_revenue"] == pytest.approx(200 * (10.0 - 9.0))
    assert vs["cost"] == pytest.approx(150 - 250)
    assert vs["incremental_profit"] == pytest.approx(0.3 * 200 + 100)


def test_choose_arms_threshold_and_ties():
    profit = np.array([[0.5, 0.7], [-0.1, -0.2], [0.3, 0.3], [0.05, np.nan]])
    assert policy.choose_arms(profit).tolist() == [2, 0, 1, 1]
    assert policy.choose_arms(profit, min_profit=0.1).tolist() == [2, 0, 1, 0]


def test_spark_path_ranks_and_evaluates(spark):
    df = simulate(12000, 9, PRM002, shares={"control": 0.4, "treatment_a": 0.3, "treatment_b": 0.3})
    promo = classify("P", "sim", True, df["arm"].value_counts().to_dict(), ["control"], 14, 0.02, min_arm_size=20)
    cfg = _config(engine="spark", evaluation={"method": "holdout", "holdout_share": 0.4},
                  spark_ml={"qini_bins": 200, "max_iter": 25})
    out = modelling.model_on_spark(spark.createDataFrame(df), promo, FEATURES, cfg)
    scores = out.scores_spark.toPandas()
    assert set(scores["score_arm"]) == {"treatment_a", "treatment_b"}
    assert scores["unit_id"].nunique() == pytest.approx(0.4 * len(df), rel=0.1)
    b = scores[(scores["score_arm"] == "treatment_b") & (scores["outcome"] == "conversion")]
    assert b.groupby("segment")["uplift_score"].mean().idxmax() == "silver"
    ev = out.evaluation.set_index(["score_arm", "outcome", "metric", "at_share"])["value"]
    # the top 30% (mostly silver) gains more than random targeting; the metrics are all defined
    assert ev[("treatment_b", "conversion", "uplift_at", 0.3)] > ev[("treatment_b", "conversion", "ate", 1.0)]
    assert np.isfinite(ev.loc[("treatment_b", "conversion", "qini_normalized", 1.0)])
    assert set(out.policy["strategy"]) == {"policy", "treat_none", "treat_all_treatment_a", "treat_all_treatment_b"}
    assignments = out.assignments_spark.toPandas()
    assert assignments["unit_id"].is_unique and len(assignments) == scores["unit_id"].nunique()
