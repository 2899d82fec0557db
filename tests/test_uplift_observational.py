"""Promotions without a randomised control group: design decisions and a Complete-Journey-shaped run.

The Complete Journey mapping loads targeted campaigns (arm ``targeted``, no control, ``is_randomized =
false``, no response window or contact cost); a tiny lakehouse of that shape, written here by hand, must
give an OBSERVATIONAL readout that refuses the causal reading, and no uplift model.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest

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
    """Two targeted campaigns and 60 households, 20 of them targeted by campaign 1 (the heavy buyers)."""
    root = tmp_path_factory.mktemp("cj_shaped")
    ctx = RunContext.create(env="ci", spark=spark, overrides={
        "storage.root": str(root / "lake"), "storage.landing": str(root / "landing"),
        "storage.outputs": str(root / "outputs"), "analyses.uplift.observational.bootstrap": "20"})
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
    ctx.lake.overwrite("fact_promotion_exposures", ctx.lake.frame("fact_promotion_exposures", exposures))
    ctx.lake.overwrite("dim_promotion", ctx.lake.frame("dim_promotion", promos))
    return ctx


def test_targeted_campaigns_are_read_out_as_observational(campaign_lake):
    from cpbi_spark.analytics.uplift.job import run

    ctx = campaign_lake
    result = run(ctx)
    assert result.counters["randomized"] == 0 and result.counters["observational"] == 2
    studies = ctx.lake.read("uplift_studies").toPandas().set_index("promotion_id")
    assert set(studies["study_type"]) == {OBSERVATIONAL}
    assert not studies["causal"].any()
    assert studies.loc["1", "n_exposed"] == 20 and studies.loc["1", "n_comparison"] == 40
    assert studies.loc["1", "response_window_days"] == 14  # no window in the export: the configured default
    assert studies.loc["1", "cost_per_contact"] == 0.0
    readout = ctx.lake.read("uplift_readout").toPandas()
    assert len(readout) and not readout["causal"].any()
    naive = readout[(readout["promotion_id"] == "1") & (readout["estimate"] == "unadjusted")
                    & (readout["metric"] == "conversion") & (readout["segment"] == "all")].iloc[0]
    # by hand: households 0..19 targeted, a third of all households (h % 3 == 0) bought in the window
    targeted_rate = sum(h % 3 == 0 for h in range(20)) / 20
    others_rate = sum(h % 3 == 0 for h in range(20, 60)) / 40
    assert naive["difference"] == pytest.approx(targeted_rate - others_rate)
    assert "NOT a causal effect" in naive["interpretation"]
    # nothing randomised: no uplift model, no policy
    assert ctx.lake.read("uplift_scores").count() == 0 and ctx.lake.read("uplift_policy").count() == 0
