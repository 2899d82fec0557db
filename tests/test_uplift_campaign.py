"""``cpbi run uplift`` on a campaign test export (one row per customer with arm and outcomes).

A Hillstrom-shaped export is simulated here with planted effects and written as the gold tables the
``conf/sources/campaign_test.yaml`` mapping produces (``fact_campaign_outcomes``,
``fact_promotion_exposures`` without exposure time, ``dim_promotion``), then read out. There are no
transaction lines. Expectations come from the simulation's own arrays (pandas, scipy), never from the
analysis' output.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cpbi_spark.runtime import RunContext

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


@pytest.fixture(scope="module")
def campaign_run(spark, tmp_path_factory):
    from cpbi_spark.analytics.uplift.job import run

    root = tmp_path_factory.mktemp("campaign_export")
    sim = simulate()
    ctx = RunContext.create(env="ci", spark=spark, overrides={
        "storage.root": str(root / "lake"), "storage.landing": str(root / "landing"),
        "storage.outputs": str(root / "out"),
        "analyses.uplift.campaign_outcomes.segment_attribute": "channel",
        "analyses.uplift.learners": "t_learner,dr_learner", "analyses.uplift.policy_learner": "dr_learner",
        "analyses.uplift.register_models": "false", "analyses.uplift.cost_per_contact": {"email_test": 0.5}})
    outcomes, exposures, promotion = gold_rows(sim)
    for name, rows in (("fact_campaign_outcomes", outcomes), ("fact_promotion_exposures", exposures),
                       ("dim_promotion", promotion)):
        ctx.lake.overwrite(name, ctx.lake.frame(name, rows))
    assert not ctx.lake.exists("fact_transactions")  # an export without transaction lines
    result = run(ctx)
    tables = {name: ctx.lake.read(name).toPandas() for name in result.tables}
    return ctx, result, tables, sim


def test_export_is_read_out_as_a_randomised_experiment(campaign_run):
    _, result, tables, sim = campaign_run
    assert result.counters["randomized"] == 1 and result.counters["observational"] == 0
    study = tables["uplift_studies"].set_index("promotion_id").loc["email_test"]
    assert study["study_type"] == "RANDOMIZED" and study["causal"]
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
