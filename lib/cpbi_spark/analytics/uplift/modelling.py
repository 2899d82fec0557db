"""Uplift modelling of one randomised promotion: held-out scores, evaluation, policy, final models.

Two paths with the same outputs (long pandas frames for the insight tables):

* :func:`model_on_driver` — the promotion's units fit on the driver (``engine: sklearn``, or ``auto`` with
  at most ``driver_max_rows`` units): every configured learner, for conversion and net revenue, scored
  out of fold (K-fold cross-fitting) or on a holdout split;
* :func:`model_on_spark` — the units stay in Spark: the Spark ML T-learner trained on the non-holdout
  part, scored on the holdout part; evaluation groups are score-quantile bins aggregated by Spark.

Outcomes: ``conversion`` (``converted``, binary) and ``net_revenue`` (USD; winsorised at
``revenue_cap_quantile`` of the promotion's units for training only - evaluation and policy values use the
raw net revenue).

Example:
    >>> out = model_on_driver(units, promo, features, cfg)        # doctest: +SKIP
    >>> sorted(out.evaluation["metric"].unique())                  # doctest: +SKIP
    ['ate', 'auuc', 'qini_coefficient', 'qini_normalized', 'uplift_at']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cpbi_spark.analytics.uplift import evaluate, learners, policy

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from cpbi_spark.analytics.uplift.config import UpliftConfig
    from cpbi_spark.analytics.uplift.study import Promotion

OUTCOMES: dict[str, tuple[str, bool]] = {"conversion": ("converted", True), "net_revenue": ("net_revenue", False)}


@dataclass
class ModelOutputs:
    """Everything the job writes or logs for one promotion."""

    engine: str
    scores: pd.DataFrame | None = None  # None on the Spark path (``scores_spark`` instead)
    scores_spark: Any = None
    evaluation: pd.DataFrame = field(default_factory=pd.DataFrame)
    curves: dict[tuple[str, str, str], pd.DataFrame] = field(default_factory=dict)  # (arm, learner, outcome)
    policy: pd.DataFrame = field(default_factory=pd.DataFrame)
    assignments: pd.DataFrame | None = None
    assignments_spark: Any = None
    final_model: Any = None  # UpliftPolicyModel inputs: dict for mlflow_model
    feature_sample: pd.DataFrame | None = None


def _evaluation_rows(pid: str, arm: str, learner: str, outcome: str, engine: str, r: dict) -> list[dict]:
    base = {"promotion_id": pid, "score_arm": arm, "learner": learner, "outcome": outcome, "engine": engine,
            "n_evaluated": int(r["n"])}
    rows = [
        {**base, "metric": "ate", "at_share": 1.0, "value": r["ate"], "random_baseline": r["ate"]},
        {**base, "metric": "qini_coefficient", "at_share": 1.0, "value": r["qini_coefficient"], "random_baseline": 0.0},
        {**base, "metric": "qini_normalized", "at_share": 1.0, "value": r["qini_normalized"], "random_baseline": 0.0},
        {**base, "metric": "auuc", "at_share": 1.0, "value": r["auuc"], "random_baseline": r["auuc_random"]},
    ]
    rows += [{**base, "metric": "uplift_at", "at_share": s, "value": v, "random_baseline": r["ate"]}
             for s, v in r["uplift_at"].items()]
    return rows


def _folds(keys: Sequence[str], cfg: UpliftConfig) -> tuple[np.ndarray, list[int]]:
    ev = cfg.evaluation
    if ev.method == "crossfit":
        return learners.fold_ids(keys, ev.folds, cfg.seed), list(range(ev.folds))
    # Holdout: fold 1 = held out (scored), fold 0 = training only.
    return learners.holdout_mask(keys, ev.holdout_share, cfg.seed).astype(np.int64), [1]


def training_outcome(y: np.ndarray, binary: bool, cap_quantile: float) -> np.ndarray:
    """The outcome the learners see: binary as is; money winsorised at the cap quantile (heavy right tail)."""
    if binary or cap_quantile >= 1.0 or len(y) == 0:
        return y
    return np.minimum(y, np.quantile(y, cap_quantile))


def model_on_driver(units: pd.DataFrame, promo: Promotion, features: Sequence[str], cfg: UpliftConfig
                    ) -> ModelOutputs:
    """All learners x outcomes on the driver for one randomised promotion (see module docstring)."""
    arms = promo.arms
    units = units[units["arm"].isin(arms)].reset_index(drop=True)
    code = units["arm"].map({a: i for i, a in enumerate(arms)}).to_numpy()
    X = units[list(features)].to_numpy(dtype=float)
    fold, scored_folds = _folds(units["customer_id"].astype(str).tolist(), cfg)
    scored = np.isin(fold, scored_folds)
    score_frames, eval_rows, curves = [], [], {}
    predictions: dict[tuple[str, str], np.ndarray] = {}
    for outcome, (col, binary) in OUTCOMES.items():
        y_raw = units[col].to_numpy(dtype=float)
        y_fit = training_outcome(y_raw, binary, cfg.revenue_cap_quantile)
        for name in cfg.learners:
            factory = lambda name=name, binary=binary: learners.make_learner(  # noqa: E731
                name, cfg.base_model, binary, cfg.seed)
            tau = learners.out_of_fold(factory, X, code, y_fit, fold, scored_folds)
            predictions[(name, outcome)] = tau
            for k, arm in enumerate(arms[1:], start=1):
                score_frames.append(pd.DataFrame({
                    "promotion_id": promo.promotion_id, "unit_id": units["unit_id"][scored],
                    "customer_id": units["customer_id"][scored], "observed_arm": units["arm"][scored],
                    "segment": units["segment"][scored], "score_arm": arm, "learner": name, "outcome": outcome,
                    "uplift_score": tau[scored, k - 1], "fold": fold[scored], "engine": "sklearn"}))
                m = scored & ((code == 0) | (code == k))
                r = evaluate.evaluate_scores(tau[m, k - 1], code[m] == k, y_raw[m], cfg.uplift_at)
                eval_rows += _evaluation_rows(promo.promotion_id, arm, name, outcome, "sklearn", r)
                curves[(arm, name, outcome)] = r["curve"]
    costs = [promo.cost] * (len(arms) - 1)
    tau_rev = predictions[(cfg.policy_learner, "net_revenue")]
    out = ModelOutputs("sklearn", scores=pd.concat(score_frames, ignore_index=True),
                       evaluation=pd.DataFrame(eval_rows), curves=curves)
    out.policy, out.assignments = _policy_on_driver(units[scored].reset_index(drop=True), tau_rev[scored],
                                                    promo, costs, cfg)
    # Final models on every unit: what the registry serves for new customers (not used for evaluation).
    y_conv = units["converted"].to_numpy(dtype=float)
    y_rev = training_outcome(units["net_revenue"].to_numpy(dtype=float), False, cfg.revenue_cap_quantile)
    out.final_model = {
        "features": list(features), "arms": arms, "costs": costs, "margin_rate": cfg.margin_rate,
        "min_profit": cfg.min_policy_profit,
        "conversion": learners.make_learner(cfg.policy_learner, cfg.base_model, True, cfg.seed).fit(X, code, y_conv),
        "revenue": learners.make_learner(cfg.policy_learner, cfg.base_model, False, cfg.seed).fit(X, code, y_rev),
    }
    out.feature_sample = units[list(features)].head(5).astype(float)
    return out


def _policy_on_driver(units: pd.DataFrame, tau_rev: np.ndarray, promo: Promotion, costs: Sequence[float],
                      cfg: UpliftConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    arms = promo.arms
    profit = policy.expected_profit(tau_rev, costs, cfg.margin_rate)
    choice = policy.choose_arms(profit, cfg.min_policy_profit)
    chosen = [arms[c] for c in choice]
    strategies = policy.standard_strategies(chosen, arms)
    table = policy.evaluate_strategies(strategies, units["arm"].tolist(), units["net_revenue"].to_numpy(dtype=float),
                                       arms, dict(zip(arms[1:], costs, strict=True)), cfg.margin_rate, cfg.alpha)
    expected = {"policy": float(np.where(choice > 0, profit[np.arange(len(choice)), np.maximum(choice, 1) - 1],
                                         0.0).sum()),
                "treat_none": 0.0}
    for k, a in enumerate(arms[1:]):
        expected[f"treat_all_{a}"] = float(profit[:, k].sum())
    table["expected_profit_model"] = [expected[s] if c == "treat_none" else None
                                      for s, c in zip(table["strategy"], table["compared_with"], strict=True)]
    table["promotion_id"] = promo.promotion_id
    table["learner"] = cfg.policy_learner
    table["margin_rate"] = cfg.margin_rate
    idx = np.arange(len(choice))
    pick = np.maximum(choice, 1) - 1
    assignments = pd.DataFrame({
        "promotion_id": promo.promotion_id, "unit_id": units["unit_id"], "customer_id": units["customer_id"],
        "segment": units["segment"], "observed_arm": units["arm"],
        "recommended_arm": [policy.NO_CONTACT if c == 0 else arms[c] for c in choice],
        "expected_incremental_revenue": np.where(choice > 0, tau_rev[idx, pick], 0.0),
        "expected_incremental_profit": np.where(choice > 0, profit[idx, pick], 0.0),
        "learner": cfg.policy_learner,
    })
    return table, assignments


# --------------------------------------------------------------------------- Spark ML path
def model_on_spark(units: DataFrame, promo: Promotion, features: Sequence[str], cfg: UpliftConfig) -> ModelOutputs:
    """Spark ML T-learner (conversion and net revenue) trained on the non-holdout units, scored on the holdout."""
    from pyspark.sql import functions as F

    arms = promo.arms
    seed = cfg.seed
    draw = (F.abs(F.xxhash64(F.lit(seed), F.col("customer_id").cast("string"))) % 1_000_000) / 1_000_000.0
    data = (units.filter(F.col("arm").isin(arms))
            .withColumn("_holdout", draw < F.lit(cfg.evaluation.holdout_share)).persist())
    train = data.filter(~F.col("_holdout"))
    cap = train.approxQuantile("net_revenue", [cfg.revenue_cap_quantile], 1e-4)
    cap_value = cap[0] if cap else None
    train = train.withColumn("_net_fit", F.least(F.col("net_revenue"), F.lit(cap_value))
                             if cap_value is not None and cfg.revenue_cap_quantile < 1 else F.col("net_revenue"))
    sm = cfg.spark_ml
    common = {"model": sm.model, "reg_param": sm.reg_param, "max_iter": sm.max_iter, "max_depth": sm.max_depth,
              "seed": seed}
    conv = learners.SparkTLearner(features, arms, binary=True, label="converted", **common).fit(train)
    rev = learners.SparkTLearner(features, arms, binary=False, label="_net_fit", **common).fit(train)
    holdout = data.filter(F.col("_holdout"))
    # Checkpointed: the scored units feed several aggregations and unions; their lineage holds every model.
    scored = rev.transform(conv.transform(holdout, prefix="conv_"), prefix="rev_").localCheckpoint(eager=True)
    name = learners.SparkTLearner.name
    eval_rows, curves, score_parts = [], {}, []
    for outcome, (col, _binary) in OUTCOMES.items():
        prefix = "conv_" if outcome == "conversion" else "rev_"
        for arm in arms[1:]:
            pair = (scored.filter(F.col("arm").isin(arms[0], arm)).withColumn("_t", F.col("arm") == arm)
                    .withColumn("_perfect", F.when(F.col("_t"), F.col(col)).otherwise(-F.col(col))))
            groups = evaluate.spark_groups(pair, f"{prefix}uplift__{arm}", "_t", col, sm.qini_bins)
            perfect = evaluate.spark_groups(pair, "_perfect", "_t", col, sm.qini_bins)
            r = evaluate.evaluate_groups(groups, cfg.uplift_at, perfect)
            eval_rows += _evaluation_rows(promo.promotion_id, arm, name, outcome, "spark", r)
            curves[(arm, name, outcome)] = r["curve"]
            score_parts.append(scored.select(
                F.lit(promo.promotion_id).alias("promotion_id"), "unit_id", "customer_id",
                F.col("arm").alias("observed_arm"), "segment", F.lit(arm).alias("score_arm"),
                F.lit(name).alias("learner"), F.lit(outcome).alias("outcome"),
                F.col(f"{prefix}uplift__{arm}").alias("uplift_score"), F.lit(1).alias("fold"),
                F.lit("spark").alias("engine")))
    scores = score_parts[0]
    for part in score_parts[1:]:
        scores = scores.unionByName(part)
    out = ModelOutputs("spark", scores_spark=scores, evaluation=pd.DataFrame(eval_rows), curves=curves)
    out.policy, out.assignments_spark = _policy_on_spark(scored, promo, cfg, name)
    out.final_model = {"spark_conversion": conv, "spark_revenue": rev}
    data.unpersist()
    return out


def _policy_on_spark(scored: DataFrame, promo: Promotion, cfg: UpliftConfig, learner: str
                     ) -> tuple[pd.DataFrame, DataFrame]:
    from pyspark.sql import functions as F

    arms = promo.arms
    costs = {a: promo.cost for a in arms[1:]}
    profit_cols = {a: F.lit(cfg.margin_rate) * F.col(f"rev_uplift__{a}") - F.lit(costs[a]) for a in arms[1:]}
    df = scored.select("unit_id", "customer_id", "segment", "arm", "net_revenue",
                       *[profit_cols[a].alias(f"_profit__{a}") for a in arms[1:]],
                       *[F.col(f"rev_uplift__{a}").alias(f"_rev__{a}") for a in arms[1:]])
    best_profit = F.greatest(*[F.col(f"_profit__{a}") for a in arms[1:]]) if len(arms) > 2 \
        else F.col(f"_profit__{arms[1]}")
    # First arm reaching the best profit wins ties (same rule as policy.choose_arms).
    best_arm = None
    for a in reversed(arms[1:]):
        best_arm = F.when(F.col(f"_profit__{a}") == best_profit, F.lit(a)) if best_arm is None else \
            F.when(F.col(f"_profit__{a}") == best_profit, F.lit(a)).otherwise(best_arm)
    chosen = F.when(best_profit > F.lit(cfg.min_policy_profit), best_arm).otherwise(F.lit(arms[0]))
    df = df.withColumn("_group", chosen).withColumn("_best_profit", best_profit).persist()
    strategy_groups = {"policy": F.col("_group"), "treat_none": F.lit(arms[0])}
    for a in arms[1:]:
        strategy_groups[f"treat_all_{a}"] = F.lit(a)
    rows = []
    expected = {"policy": df.agg(F.sum(F.when(F.col("_group") != arms[0], F.col("_best_profit"))
                                       .otherwise(0.0))).first()[0] or 0.0, "treat_none": 0.0}
    for a in arms[1:]:
        expected[f"treat_all_{a}"] = df.agg(F.sum(f"_profit__{a}")).first()[0] or 0.0
    for strategy, group in strategy_groups.items():
        stats = (df.groupBy(group.alias("group"), "arm")
                 .agg(F.count(F.lit(1)).alias("n"), F.avg("net_revenue").alias("mean"),
                      F.var_samp("net_revenue").alias("var")).toPandas())
        rows.append(policy.strategy_value(stats, strategy, arms, costs, cfg.margin_rate, alpha=cfg.alpha))
        for b in arms[1:]:
            rows.append(policy.strategy_value(stats, strategy, arms, costs, cfg.margin_rate, baseline=b,
                                              alpha=cfg.alpha))
    table = pd.DataFrame(rows)
    table["expected_profit_model"] = [expected[s] if c == "treat_none" else None
                                      for s, c in zip(table["strategy"], table["compared_with"], strict=True)]
    table["promotion_id"] = promo.promotion_id
    table["learner"] = learner
    table["margin_rate"] = cfg.margin_rate
    treated = F.col("_group") != F.lit(arms[0])
    rev_of_group = None
    for a in arms[1:]:
        rev_of_group = F.when(F.col("_group") == a, F.col(f"_rev__{a}")) if rev_of_group is None else \
            rev_of_group.when(F.col("_group") == a, F.col(f"_rev__{a}"))
    assignments = df.select(
        F.lit(promo.promotion_id).alias("promotion_id"), "unit_id", "customer_id", "segment",
        F.col("arm").alias("observed_arm"),
        F.when(treated, F.col("_group")).otherwise(F.lit(policy.NO_CONTACT)).alias("recommended_arm"),
        F.when(treated, rev_of_group).otherwise(0.0).alias("expected_incremental_revenue"),
        F.when(treated, F.col("_best_profit")).otherwise(0.0).alias("expected_incremental_profit"),
        F.lit(learner).alias("learner"))
    return table, assignments
