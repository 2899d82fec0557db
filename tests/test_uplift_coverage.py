"""Coverage of the readout's confidence intervals over many seeds, without the Spark pipeline.

1. The generator (pure numpy, ~2 s per world) is run for several seeds; the test computes each exposure's
   conversion and segment itself from the raw landing files with pandas (the definitions of
   ``lib/cpbi_spark/synth/README.md``: any valid SALE line in ``[exposed_ts, exposed_ts + 14 days)``, tier of
   the customer version valid at ``exposed_ts``), then the code under test (``summarize`` +
   ``compare_to_control``) gives the per-segment intervals, which must cover the manifest's planted effects
   about as often as a 95% interval should.
2. A pure simulation with the manifest's per-segment baselines and effects checks the calibration of the
   Newcombe interval and the Welch interval on many more cells.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cpbi_spark.analytics.uplift import readout

SEEDS = (3, 11, 19, 27, 35, 43)
WINDOW = pd.Timedelta(days=14)


def _world(root: Path, seed: int) -> tuple[pd.DataFrame, dict]:
    """Per exposure of the randomised promotions: promotion, arm, segment, converted (pandas, from raw files)."""
    from cpbi_spark.synth import generate

    manifest = generate(root, scale=1.0, seed=seed, batch=1)
    landing = root / "landing"
    exposures = pd.concat([pd.read_parquet(p) for p in sorted((landing / "promotion_exposures").glob("*.parquet"))])
    exposures = exposures[exposures["promotion_id"].isin(["PRM001", "PRM002"])].copy()
    exposures["exposed_ts"] = pd.to_datetime(exposures["exposed_ts"], utc=True).astype("datetime64[ns, UTC]")
    dirty = {i for ids in manifest["dirty_ids"].get("transactions", {}).values() for i in ids}
    months = sorted({ts.strftime("%Y-%m") for ts in exposures["exposed_ts"]})
    tx = pd.concat([pd.read_csv(landing / "transactions" / f"transactions_{m}.csv", dtype=str) for m in months])
    tx = tx[tx["txn_id"].notna() & ~tx["txn_id"].isin(dirty) & (tx["txn_type"] == "SALE")]
    tx["ts"] = pd.to_datetime(tx["posted_ts"], utc=True, format="ISO8601")
    joined = exposures.merge(tx[["customer_id", "ts"]], on="customer_id", how="left")
    hit = (joined["ts"] >= joined["exposed_ts"]) & (joined["ts"] < joined["exposed_ts"] + WINDOW)
    converted = joined.assign(hit=hit).groupby("exposure_id")["hit"].any()
    exposures["converted"] = exposures["exposure_id"].map(converted).astype(float)
    customers = pd.read_csv(landing / "customers" / "customers_1.csv", dtype=str)
    customers["updated_at"] = pd.to_datetime(customers["updated_at"], utc=True).astype("datetime64[ns, UTC]")
    versions = customers.sort_values("updated_at")[["customer_id", "loyalty_tier", "updated_at"]]
    asof = pd.merge_asof(exposures.sort_values("exposed_ts"), versions, left_on="exposed_ts", right_on="updated_at",
                         by="customer_id", direction="backward")
    first = versions.groupby("customer_id")["loyalty_tier"].first()
    asof["segment"] = asof["loyalty_tier"].fillna(asof["customer_id"].map(first))
    asof["is_control"] = asof["arm"] == "control"
    return asof, manifest


def test_segment_intervals_cover_the_planted_effects_over_seeds(tmp_path):
    covered, cells, overall_covered, overall_cells = 0, 0, 0, 0
    for seed in SEEDS:
        units, manifest = _world(tmp_path / f"s{seed}", seed)
        truths = manifest["truths"]["promotion_effects"]["promotions"]
        # The test's own parsing reproduces the generator's realized conversions (a check of the harness).
        realized = units.groupby(["promotion_id", "segment", "arm"])["converted"].mean()
        for (promo, seg, arm), value in realized.items():
            assert value == pytest.approx(truths[promo]["segments"][seg]["arms"][arm]["realized_conversion"], abs=2e-6)
        by_segment = readout.summarize(units, ["promotion_id", "segment", "arm", "is_control"], ["converted"])
        result = readout.compare_to_control(by_segment, group=["promotion_id", "segment"],
                                            metrics={"conversion": ("converted", "rate")})
        assert len(result) == 12  # PRM001: 4 segments x 1 arm, PRM002: 4 x 2
        for row in result.to_dict("records"):
            planted = truths[row["promotion_id"]]["segments"][row["segment"]]["arms"][row["arm"]]["planted_effect_pp"]
            cells += 1
            covered += row["ci_low"] <= planted / 100.0 <= row["ci_high"]
        overall = readout.summarize(units, ["promotion_id", "arm", "is_control"], ["converted"]).assign(segment="all")
        for row in readout.compare_to_control(overall, group=["promotion_id", "segment"],
                                              metrics={"conversion": ("converted", "rate")}).to_dict("records"):
            o = truths[row["promotion_id"]]["overall"][row["arm"]]
            truth = o["expected_conversion"] - o["expected_counterfactual"]
            overall_cells += 1
            overall_covered += row["ci_low"] <= truth <= row["ci_high"]
    # 72 cells at 95%: ~68.4 expected; <= 62 would happen with probability < 0.5% for a calibrated interval.
    assert covered / cells >= 0.87, (covered, cells)
    assert overall_covered >= overall_cells - 2, (overall_covered, overall_cells)


def test_interval_calibration_on_simulated_cells(gold_world_manifest_like):
    """Newcombe (rates) and Welch (means) intervals cover the truth ~95% of the time."""
    rng = np.random.default_rng(2024)
    cells = gold_world_manifest_like
    hits_rate, hits_mean, total = 0, 0, 0
    for _ in range(40):
        for baseline, effect, n_c, n_t in cells:
            x_c = rng.binomial(n_c, baseline)
            x_t = rng.binomial(n_t, baseline + effect)
            r = readout.two_proportion_test(x_t, n_t, x_c, n_c)
            hits_rate += r.ci_low <= effect <= r.ci_high
            # money: lognormal basket value per converter, the effect is the difference of expected revenue
            yc = rng.binomial(1, baseline, n_c) * rng.lognormal(5.0, 0.8, n_c)
            yt = rng.binomial(1, baseline + effect, n_t) * rng.lognormal(5.0, 0.8, n_t)
            truth = effect * np.exp(5.0 + 0.8 ** 2 / 2)
            m = readout.welch_test(yt.mean(), yt.var(ddof=1), n_t, yc.mean(), yc.var(ddof=1), n_c)
            hits_mean += m.ci_low <= truth <= m.ci_high
            total += 1
    assert 0.93 <= hits_rate / total <= 0.97, hits_rate / total
    assert 0.92 <= hits_mean / total <= 0.97, hits_mean / total


@pytest.fixture(scope="module")
def gold_world_manifest_like(tmp_path_factory) -> list[tuple[float, float, int, int]]:
    """(baseline, effect, n_control, n_treatment) per promotion, segment and arm from a generated manifest."""
    from cpbi_spark.synth import generate

    root = tmp_path_factory.mktemp("manifest_like")
    manifest_path = root / "manifest.json"
    manifest = generate(root, scale=1.0, seed=42, batch=1) if not manifest_path.exists() else \
        json.loads(manifest_path.read_text())
    out = []
    for promo in ("PRM001", "PRM002"):
        for seg in manifest["truths"]["promotion_effects"]["promotions"][promo]["segments"].values():
            arms = seg["arms"]
            for arm, a in arms.items():
                if arm != "control":
                    effect = a["planted_effect_pp"] / 100.0
                    out.append((seg["baseline_conversion"], effect, arms["control"]["n"], a["n"]))
    return out
