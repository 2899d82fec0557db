"""Promotions from other sources than the generator: targeted campaigns and a campaign test export.

1. The Complete Journey mapping loads targeted campaigns (arm ``targeted``, no control, ``is_randomized =
   false``, no response window or contact cost); a tiny lakehouse of that shape, written here by hand, must
   give an OBSERVATIONAL readout that refuses the causal reading, and no uplift model.
2. A campaign test export (one row per customer with arm and outcomes, e.g. Hillstrom's e-mail test) is
   simulated here with planted effects and written as the gold tables the ``conf/sources/campaign_test.yaml``
   mapping produces (``fact_campaign_outcomes``, ``fact_promotion_exposures`` without exposure time,
   ``dim_promotion``; the mapping itself is tested in ``tests/test_byod.py``). It must be read out as a
   randomised experiment from the export alone (its customers have no transaction lines).

Both live in one lakehouse and are analysed by one run. Expectations come from the hand-written rows and
the simulation's own arrays (pandas, scipy), never from the analysis' output.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cpbi_spark.analytics.uplift.study import OBSERVATIONAL, RANDOMIZED, classify
from cpbi_spark.runtime import RunContext


def test_design_decisions():
    ok = classify("P1", "ab test", True, {"control": 500, "treatment": 500}, ["control"], 14, 0.02, min_arm_size=20)
    assert (ok.study_type, ok.causal, ok.control_arm, ok.use_comparison) == (RANDOMIZED, True, "control", False)
    targeted = classify("P2", "vip", False, {"treatment": 800}, [], 14, 0.1, min_arm_size=20)
    assert targeted.study_type == OBSERVATIONAL and targeted.use_comparison and "not randomised" in targeted.reason
    no_control = classify("P3", "blast", True, {"treatment": 800}, [], 14, 0.1, min_arm_size=20)
    assert no_control.study_type == OBSERVATIONAL and "no control arm" in no_control.reason
    tiny = classify("P4", "small holdout", True, {"control": 5, "treatment": 800}, ["control"], 14, 0.1,
                    min_arm_size=20)
    assert tiny.study_type == OBSERVATIONAL and "too few" in tiny.reason and tiny.use_comparison
    # a non-random but large holdout is kept as the reference (still observational)
    holdout = classify("P5", "manual holdout", False, {"holdout": 300, "treatment": 800}, ["holdout"], 14, 0.1,
                       min_arm_size=20)
    assert holdout.study_type == OBSERVATIONAL and holdout.control_arm == "holdout" and not holdout.use_comparison


@pytest.fixture(scope="module")
def campaign_lake(spark, tmp_path_factory):
    """Two targeted campaigns and 60 households, 20 of them targeted by campaign 1 (the heavy buyers);
    and the e-mail test export (``simulate()``), analysed by one run of the uplift job."""
    from cpbi_spark.analytics.uplift.job import run

    root = tmp_path_factory.mktemp("cj_shaped")
    ctx = RunContext.create(env="ci", spark=spark, overrides={
        "storage.root": str(root / "lake"), "storage.landing": str(root / "landing"),
        "storage.outputs": str(root / "outputs"), "analyses.uplift.observational.bootstrap": "20",
        "analyses.uplift.campaign_outcomes.segment_attribute": "channel",
        "analyses.uplift.learners": "t_learner,dr_learner", "analyses.uplift.policy_learner": "dr_learner",
        "analyses.uplift.register_models": "false", "analyses.uplift.cost_per_contact": {"email_test": 0.5}})
    start = datetime(2017, 3, 3)
    tx, lines, exposures = [], [], []
    for h in range(60):
        heavy = h < 20
        for k in range(6 if heavy else 2):  # pre-period baskets
            ts = start - timedelta(days=5 + 7 * k + h % 5)
            tx.append({"transaction_id": f"T{h}-{k}", "customer_id": f"{h}", "basket_id": f"B{h}-{k}",
                       "posted_ts": ts, "amount_reporting": 20.0 + h % 7, "txn_type": "SALE", "channel": "store"})
        if h % 3 == 0:  # a purchase inside the window for a third of the households
            tx.append({"transaction_id": f"T{h}-w", "customer_id": f"{h}", "basket_id": f"B{h}-w",
                       "posted_ts": start + timedelta(days=3), "amount_reporting": 15.0, "txn_type": "SALE",
                       "channel": "store"})
        if heavy:
            exposures.append({"exposure_id": f"E1-{h}", "promotion_id": "1", "customer_id": f"{h}", "arm": "targeted",
                              "is_control": False, "exposed_ts": start, "is_randomized": False})
    for t in tx:
        lines.append({"basket_id": t["basket_id"], "product_id": "p", "customer_id": t["customer_id"],
                      "basket_ts": t["posted_ts"], "department": "GROCERY", "amount_reporting": t["amount_reporting"]})
    exposures.append({"exposure_id": "E2-5", "promotion_id": "2", "customer_id": "5", "arm": "targeted",
                      "is_control": False, "exposed_ts": start + timedelta(days=10), "is_randomized": False})
    promos = [{"promotion_id": p, "name": None, "promo_type": "Type A", "start_date": date(2017, 3, 3),
               "end_date": date(2017, 4, 9), "is_randomized": False} for p in ("1", "2")]
    ctx.lake.overwrite("fact_transactions", ctx.lake.frame("fact_transactions", tx))
    ctx.lake.overwrite("fact_basket_lines", ctx.lake.frame("fact_basket_lines", lines))
    sim = simulate()
    outcomes, email_exposures, email_promotion = gold_rows(sim)
    ctx.lake.overwrite("fact_campaign_outcomes", ctx.lake.frame("fact_campaign_outcomes", outcomes))
    ctx.lake.overwrite("fact_promotion_exposures", ctx.lake.frame("fact_promotion_exposures",
                                                                  exposures + email_exposures))
    ctx.lake.overwrite("dim_promotion", ctx.lake.frame("dim_promotion", promos + email_promotion))
    result = run(ctx)
    tables = {name: ctx.lake.read(name).toPandas() for name in result.tables}
    return ctx, result, tables, sim


@pytest.fixture(scope="module")
def campaign_run(campaign_lake):
    return campaign_lake


def test_targeted_campaigns_are_read_out_as_observational(campaign_lake):
    _, result, tables, _ = campaign_lake
    assert result.counters["randomized"] == 1 and result.counters["observational"] == 2  # + the e-mail test
    studies = tables["uplift_studies"].set_index("promotion_id").loc[["1", "2"]]
    assert set(studies["study_type"]) == {OBSERVATIONAL}
    assert not studies["causal"].any()
    assert studies.loc["1", "n_exposed"] == 20 and studies.loc["1", "n_comparison"] == 40
    assert studies.loc["1", "response_window_days"] == 14  # no window in the export: the configured default
    assert studies.loc["1", "cost_per_contact"] == 0.0
    readout = tables["uplift_readout"]
    readout = readout[readout["promotion_id"].isin(["1", "2"])]
    assert len(readout) and not readout["causal"].any()
    naive = readout[(readout["promotion_id"] == "1") & (readout["estimate"] == "unadjusted")
                    & (readout["metric"] == "conversion") & (readout["segment"] == "all")].iloc[0]
    # by hand: households 0..19 targeted, a third of all households (h % 3 == 0) bought in the window
    targeted_rate = sum(h % 3 == 0 for h in range(20)) / 20
    others_rate = sum(h % 3 == 0 for h in range(20, 60)) / 40
    assert naive["difference"] == pytest.approx(targeted_rate - others_rate)
    assert "NOT a causal effect" in naive["interpretation"]
    # nothing randomised: no uplift model, no policy
    for name in ("uplift_scores", "uplift_policy"):
        assert not tables[name]["promotion_id"].isin(["1", "2"]).any(), name


# --------------------------------------------------------------------------- campaign test export
N = 3000
BASELINE = 0.10
# planted conversion effects (absolute) by arm and channel; "No E-Mail" is the control
EFFECT = {"Mens E-Mail": {"Web": 0.10, "Phone": 0.0, "Multichannel": 0.02},
          "Womens E-Mail": {"Web": 0.03, "Phone": 0.03, "Multichannel": 0.03}}
ARMS = ("No E-Mail", "Mens E-Mail", "Womens E-Mail")
CHANNELS = ("Web", "Phone", "Multichannel")


def simulate(seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    arm = rng.choice(ARMS, N)
    channel = rng.choice(CHANNELS, N, p=[0.45, 0.4, 0.15])
    p = BASELINE + np.array([EFFECT.get(a, {}).get(c, 0.0) for a, c in zip(arm, channel, strict=True)])
    conversion = (rng.random(N) < p).astype(int)
    spend = np.where(conversion == 1, np.round(rng.gamma(3.0, 40.0, N), 2), 0.0)
    history = np.round(rng.gamma(2.0, 120.0, N), 2)
    return pd.DataFrame({
        "recency": rng.integers(1, 13, N), "history_segment": np.where(history < 200, "1) $0 - $200", "2) $200+"),
        "history": history, "mens": rng.integers(0, 2, N), "womens": rng.integers(0, 2, N),
        "zip_code": rng.choice(["Urban", "Surburban", "Rural"], N), "newbie": rng.integers(0, 2, N),
        "channel": channel, "segment": arm, "visit": np.maximum(conversion, rng.integers(0, 2, N)),
        "conversion": conversion, "spend": spend})


def gold_rows(sim: pd.DataFrame) -> tuple[list[dict], list[dict], list[dict]]:
    """The gold rows the ``campaign_test.yaml`` mapping lands for ``sim`` (silver ``campaign_results``; the
    mapping itself is tested in ``tests/test_byod.py``): outcomes with the attributes as JSON text, exposures
    without a time (arm lower-cased, ``promotion:customer`` ids), one randomised promotion."""
    attributes = ["recency", "history_segment", "history", "mens", "womens", "zip_code", "newbie", "channel"]
    outcomes, exposures = [], []
    for i, r in enumerate(sim.to_dict("records")):
        customer, control = f"r{i:05d}", r["segment"] == "No E-Mail"
        outcomes.append({"customer_id": customer, "promotion_id": "email_test", "arm": r["segment"],
                         "is_control": control, "visited": bool(r["visit"]), "converted": bool(r["conversion"]),
                         "spend": float(r["spend"]), "batch_id": "b1",
                         "attributes": json.dumps({k: str(r[k]) for k in attributes}, separators=(",", ":"))})
        exposures.append({"exposure_id": f"email_test:{customer}", "promotion_id": "email_test",
                          "customer_id": customer, "arm": r["segment"].lower(), "is_control": control,
                          "exposed_ts": None, "is_randomized": True})
    promotion = [{"promotion_id": "email_test", "name": "email_test", "promo_type": "campaign_test",
                  "is_randomized": True}]
    return outcomes, exposures, promotion


def test_export_is_read_out_as_a_randomised_experiment(campaign_run):
    _, _, tables, sim = campaign_run
    study = tables["uplift_studies"].set_index("promotion_id").loc["email_test"]
    assert study["study_type"] == RANDOMIZED and study["causal"]
    assert study["n_exposed"] == N
    assert study["srm_basis"] == "assumed_equal"
    counts = sim["segment"].value_counts()
    expected = np.full(3, N / 3)
    assert study["srm_p_value"] == pytest.approx(stats.chisquare(counts.to_numpy(), expected).pvalue, rel=1e-9)


def test_readout_matches_the_export_and_covers_the_planted_effects(campaign_run):
    _, _, tables, sim = campaign_run
    r = tables["uplift_readout"]
    r = r[(r["promotion_id"] == "email_test") & (r["estimate"] == "unadjusted")]
    assert set(r["arm"]) == {"mens e-mail", "womens e-mail"}
    control = sim[sim["segment"] == "No E-Mail"]
    for arm, arm_lower in (("Mens E-Mail", "mens e-mail"), ("Womens E-Mail", "womens e-mail")):
        treated = sim[sim["segment"] == arm]
        row = r[(r["arm"] == arm_lower) & (r["segment"] == "all") & (r["metric"] == "conversion")].iloc[0]
        assert row["difference"] == pytest.approx(treated["conversion"].mean() - control["conversion"].mean())
        assert row["n"] == len(treated) and row["control_n"] == len(control)
        # the planted overall effect: channel effects weighted by the channel mix of the treated arm
        mix = treated["channel"].value_counts(normalize=True)
        planted = sum(EFFECT[arm][c] * mix[c] for c in CHANNELS)
        assert row["ci_low"] <= planted <= row["ci_high"]
        money = r[(r["arm"] == arm_lower) & (r["segment"] == "all") & (r["metric"] == "revenue_per_customer")]
        ref = stats.ttest_ind(treated["spend"], control["spend"], equal_var=False)
        assert money["p_value"].iloc[0] == pytest.approx(ref.pvalue, rel=1e-6)
        for channel in CHANNELS:
            seg = r[(r["arm"] == arm_lower) & (r["segment"] == channel) & (r["metric"] == "conversion")].iloc[0]
            t, c = treated[treated["channel"] == channel], control[control["channel"] == channel]
            assert seg["n"] == len(t)
            assert seg["difference"] == pytest.approx(t["conversion"].mean() - c["conversion"].mean())


def test_models_rank_the_planted_responsive_channel_on_top(campaign_run):
    _, _, tables, _ = campaign_run
    s = tables["uplift_scores"]
    mens = s[(s["score_arm"] == "mens e-mail") & (s["outcome"] == "conversion")]
    assert len(mens) and set(mens["learner"]) == {"t_learner", "dr_learner"}
    for learner, g in mens.groupby("learner"):
        # Web (+10 pp planted) over Phone (0 pp); Multichannel (+2 pp, 15% of customers, ~150 per arm) is too
        # small to be ranked reliably
        means = g.groupby("segment")["uplift_score"].mean()
        assert means["Web"] > means["Phone"] + 0.04, (learner, means.to_dict())
        assert means["Web"] == pytest.approx(EFFECT["Mens E-Mail"]["Web"], abs=0.05), learner
    policy = tables["uplift_policy"]
    assert {"policy", "treat_none", "treat_all_mens e-mail", "treat_all_womens e-mail"} <= set(policy["strategy"])
    # the pre-period attributes are the model features and are checked for balance
    balance = tables["uplift_balance"]
    assert {"attr__history", "attr__recency", "attr__channel__web"} <= set(balance["covariate"])
