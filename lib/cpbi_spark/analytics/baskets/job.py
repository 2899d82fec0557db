"""``cpbi run baskets``: gold basket lines -> itemsets, rules, recommendations and their evaluation.

The only module of the analysis with I/O: it reads ``fact_basket_lines``, ``dim_customer`` and
``dim_product`` through the lakehouse, calls the pure steps of the package, overwrites the insight
tables of ``conf/base/tables_baskets.yaml`` and tracks the run in MLflow (parameters, counts,
MAP@k against the popularity baseline, the top-rules CSV and a lift/support plot).

Example:
    >>> result = run(RunContext.create(env="local"))        # doctest: +SKIP
    >>> result.tables["basket_rules"]                        # doctest: +SKIP
    5321
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from cpbi_spark.analytics.baskets import encode
from cpbi_spark.analytics.baskets.config import BasketsConfig, baskets_config
from cpbi_spark.analytics.baskets.frequent import FrequentItemsets, MiningSpec, mine_itemsets
from cpbi_spark.analytics.baskets.guard import Limits
from cpbi_spark.analytics.baskets.rules import generate_rules
from cpbi_spark.analytics.baskets.significance import add_significance
from cpbi_spark.analytics.baskets.value import attach_value, rank_rules
from cpbi_spark.errors import AnalysisError
from cpbi_spark.runtime import StageResult

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from cpbi_spark.runtime import RunContext

TABLES = ("basket_scopes", "basket_itemsets", "basket_rules", "basket_recommendations", "basket_recommendation_eval")
KEY_SEP = " | "
PRODUCT_ALL = encode.scope_name("product")


@contextlib.contextmanager
def _timed(ctx: RunContext, timings: dict[str, float], step: str) -> Iterator[None]:
    """Record the seconds of one step (logged, and reported as ``seconds.<step>`` metrics)."""
    t0 = time.perf_counter()
    yield
    timings[step] = round(time.perf_counter() - t0, 2)
    ctx.log.info("baskets: %s took %.1f s", step, timings[step])


def mining_spec(cfg: BasketsConfig) -> MiningSpec:
    """The mining thresholds and guard limits of a configuration."""
    g = cfg.guard
    return MiningSpec(min_support=cfg.min_support, min_count=cfg.min_count, max_len=cfg.max_len,
                      algorithm=cfg.algorithm, partitions=cfg.partitions,
                      limits=Limits(g.max_itemsets, g.max_combinations, g.max_rules))


def rule_id(scope: str, antecedent_key: str, consequent_key: str) -> int:
    """A stable positive 63-bit id of a rule (the same rule has the same id in every run).

    >>> rule_id("product|all|all", "A", "B") == rule_id("product|all|all", "A", "B")
    True
    """
    digest = hashlib.blake2b(f"{scope}\x00{antecedent_key}\x00{consequent_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def build_rules(fi: FrequentItemsets, profile: pd.DataFrame, cfg: BasketsConfig) -> pd.DataFrame:
    """Rules with metrics, significance, returns-aware value, rank and id (pandas, one row per rule)."""
    sig = cfg.significance
    rules = generate_rules(fi, min_confidence=cfg.min_confidence, min_lift=cfg.min_lift)
    rules = add_significance(rules, test=sig.test, correction=sig.correction, alpha=sig.alpha,
                             min_expected_count=sig.min_expected_count)
    rules = attach_value(rules, profile, flag_rate=cfg.returns.flag_rate)
    rules = rank_rules(rules, cfg.rank_by)
    rules["antecedent_key"] = rules["antecedent"].map(KEY_SEP.join)
    rules["consequent_key"] = rules["consequent"].map(KEY_SEP.join)
    rules["rule_id"] = [rule_id(s, a, c) for s, a, c in
                        zip(rules["scope"], rules["antecedent_key"], rules["consequent_key"], strict=True)]
    parsed = [encode.parse_scope(s) for s in rules["scope"]]
    rules["level"] = [p[0] for p in parsed]
    rules["segment_key"] = [p[1] for p in parsed]
    rules["segment_value"] = [p[2] for p in parsed]
    rules["antecedent_size"] = rules["antecedent"].map(len)
    rules["consequent_size"] = rules["consequent"].map(len)
    return rules


def _names(items: tuple[str, ...], level: str, product_names: dict[str, str]) -> str:
    if level != "product":
        return KEY_SEP.join(items)
    return KEY_SEP.join(product_names.get(i) or i for i in items)


def _frame(ctx: RunContext, name: str, pdf: pd.DataFrame) -> DataFrame:
    """A Spark frame of ``pdf`` with the table's declared columns (through Arrow; NaN becomes null)."""
    from cpbi_spark.lakehouse.catalog import declared_schema

    schema = declared_schema(ctx.config.table(name).columns)
    if pdf.empty:
        return ctx.spark.createDataFrame([], schema)
    data = pdf[schema.fieldNames()].copy()
    for f in schema.fields:
        kind = f.dataType.simpleString()
        if kind in ("bigint", "int"):
            data[f.name] = data[f.name].astype("Int64" if kind == "bigint" else "Int32")
        elif kind == "boolean":
            data[f.name] = data[f.name].astype("boolean")
        elif kind == "double":
            data[f.name] = data[f.name].astype("float64")
        elif kind == "timestamp":
            data[f.name] = pd.to_datetime(data[f.name])
        else:
            data[f.name] = data[f.name].astype(object).where(data[f.name].notna(), None)
    return ctx.spark.createDataFrame(data, schema)


def _scopes_frame(fi: FrequentItemsets, rules: pd.DataFrame, cfg: BasketsConfig, run_id: str,
                  start: dt.datetime | None, end: dt.datetime | None, now: dt.datetime) -> pd.DataFrame:
    n_sets = fi.to_frame().groupby("scope").size() if fi.n_itemsets else pd.Series(dtype=np.int64)
    n_rules = rules.groupby("scope").size() if len(rules) else pd.Series(dtype=np.int64)
    n_sig = rules[rules["is_significant"]].groupby("scope").size() if len(rules) else pd.Series(dtype=np.int64)
    rows = []
    for scope, info in sorted(fi.scopes.items()):
        level, key, value = encode.parse_scope(scope)
        rows.append({"run_id": run_id, "level": level, "segment_key": key, "segment_value": value,
                     "n_baskets": info.n_baskets, "min_support": cfg.min_support, "min_count": info.min_count,
                     "n_items": info.n_items, "n_frequent_items": info.n_frequent_items,
                     "n_itemsets": int(n_sets.get(scope, 0)), "n_rules": int(n_rules.get(scope, 0)),
                     "n_significant_rules": int(n_sig.get(scope, 0)), "engine": fi.engine,
                     "returns_policy": cfg.returns.policy, "window_start": start, "window_end": end,
                     "computed_at": now})
    return pd.DataFrame(rows)


def _itemsets_frame(fi: FrequentItemsets, run_id: str, product_names: dict[str, str]) -> pd.DataFrame:
    sets = fi.to_frame()
    if sets.empty:
        return sets
    parsed = [encode.parse_scope(s) for s in sets["scope"]]
    sets["run_id"] = run_id
    sets["level"] = [p[0] for p in parsed]
    sets["segment_key"] = [p[1] for p in parsed]
    sets["segment_value"] = [p[2] for p in parsed]
    sets["itemset_key"] = sets["items"].map(KEY_SEP.join)
    sets["item_names"] = [_names(i, lv, product_names) for i, lv in zip(sets["items"], sets["level"], strict=True)]
    sets["support_count"] = sets["count"]
    sets["support"] = sets["count"] / sets["n_baskets"]
    return sets


def _rules_frame(rules: pd.DataFrame, run_id: str, product_names: dict[str, str]) -> pd.DataFrame:
    out = rules.copy()
    if out.empty:
        return out
    out["run_id"] = run_id
    out["antecedent_names"] = [_names(a, lv, product_names) for a, lv in zip(out["antecedent"], out["level"],
                                                                               strict=True)]
    out["consequent_names"] = [_names(c, lv, product_names) for c, lv in zip(out["consequent"], out["level"],
                                                                               strict=True)]
    return out


def _rec_rules(ctx: RunContext, rules: pd.DataFrame, cfg: BasketsConfig) -> DataFrame:
    from cpbi_spark.analytics.baskets.recommend import rules_frame

    product = rules[rules["scope"] == PRODUCT_ALL] if len(rules) else rules
    if product.empty:
        return ctx.spark.createDataFrame([], "rule_id bigint, antecedent array<string>, consequent array<string>, "
                                             "score double")
    rc = cfg.recommend
    return rules_frame(ctx.spark, product, score=rc.rank_by, min_lift=rc.min_lift,
                       only_significant=rc.only_significant)


def _backfill(popularity: DataFrame, product_units: DataFrame, cfg: BasketsConfig) -> DataFrame:
    """Popularity scores for the backfill: the share of baskets, times the share kept when ranking by kept
    confidence (so a rule's kept confidence and a popular item's kept share compare like for like)."""
    from pyspark.sql import functions as F

    if cfg.recommend.rank_by != "kept_confidence":
        return popularity
    rates = encode.item_value_profile(product_units).select("item", "return_rate")
    return (popularity.join(rates, "item", "left")
            .select("item", (F.col("score") * (1 - F.coalesce("return_rate", F.lit(0.0)))).alias("score")))


def _n_rec_rules(rules: pd.DataFrame, cfg: BasketsConfig) -> int:
    """How many product rules the recommendations may use (as :func:`_rec_rules` selects them)."""
    if rules.empty:
        return 0
    rc = cfg.recommend
    sel = (rules["scope"] == PRODUCT_ALL) & (rules["lift"] >= rc.min_lift) & rules[rc.rank_by].notna()
    if rc.only_significant:
        sel &= rules["is_significant"].astype(bool)
    return int(sel.sum())


def _evaluate(ctx: RunContext, cfg: BasketsConfig, product_units: DataFrame, last_ts: dt.datetime,
              run_id: str) -> tuple[pd.DataFrame, dict[str, float]]:
    """Mine the baskets before the cut-off, recommend, and score both scenarios against popularity."""
    from pyspark.sql import functions as F

    from cpbi_spark.analytics.baskets.evaluate import basket_completion, customer_next_purchases, ranking_metrics
    from cpbi_spark.analytics.baskets.recommend import largest_context, popularity_scores, recommend

    ev = cfg.evaluation
    cutoff = (dt.datetime.combine(ev.cutoff, dt.time()) if ev.cutoff else
              dt.datetime.combine(last_ts.date() + dt.timedelta(days=1), dt.time()) - dt.timedelta(days=ev.test_days))
    test_end = cutoff + dt.timedelta(days=ev.test_days)
    train_units = product_units.filter(F.col("basket_ts") < F.lit(cutoff))
    train_tx = encode.transactions(train_units)
    timings: dict[str, float] = {}
    with _timed(ctx, timings, "evaluate.mine"):
        fi = mine_itemsets(train_tx, mining_spec(cfg))
        n_train = fi.scopes[PRODUCT_ALL].n_baskets if PRODUCT_ALL in fi.scopes else 0
        profile = encode.item_value_profile(train_units).toPandas()
        rules = build_rules(fi, profile, cfg) if n_train else pd.DataFrame()
    rec_rules = _rec_rules(ctx, rules, cfg)
    n_rules = _n_rec_rules(rules, cfg)
    popularity = popularity_scores(train_tx).cache()
    kept = product_units.filter("kept")
    scenarios: dict[str, tuple[DataFrame, DataFrame]] = {}
    if "basket" in ev.scenarios:
        test = kept.filter((F.col("basket_ts") >= F.lit(cutoff)) & (F.col("basket_ts") < F.lit(test_end)))
        scenarios["basket"] = basket_completion(test, reveal_share=ev.reveal_share, seed=ev.seed)
    if "customer" in ev.scenarios:
        scenarios["customer"] = customer_next_purchases(kept, cutoff=cutoff, context_days=cfg.recommend.context_days,
                                                        test_days=ev.test_days)
    k_max = max(ev.ks)
    rows, metrics = [], {}
    backfill = _backfill(popularity, train_units, cfg) if cfg.recommend.backfill_popularity else None
    # Every scenario and model in one metrics job (users are baskets or customers, told apart by scenario).
    contexts = [c.withColumn("scenario", F.lit(name)) for name, (c, _) in scenarios.items()]
    truths = [t.withColumn("scenario", F.lit(name)) for name, (_, t) in scenarios.items()]
    recs_all, truth_all = [], truths[0]
    for t in truths[1:]:
        truth_all = truth_all.unionByName(t)
    with _timed(ctx, timings, "evaluate.recommend"):
        cached = []
        for name, context in zip(scenarios, contexts, strict=True):
            context = context.drop("scenario").cache()
            cached.append(context)
            longest = largest_context(context)
            recs_all.append(
                recommend(context, rec_rules, backfill, k_max, merge=cfg.recommend.merge, max_context=longest)
                .withColumn("model", F.lit("rules")).withColumn("scenario", F.lit(name)))
            recs_all.append(recommend(context, None, popularity, k_max, max_context=longest)
                            .withColumn("model", F.lit("popularity")).withColumn("scenario", F.lit(name)))
        recs = recs_all[0]
        for part in recs_all[1:]:
            recs = recs.unionByName(part)
        table = ranking_metrics(recs, truth_all, ev.ks, by=["scenario", "model"]) if scenarios else pd.DataFrame()
        for c in cached:
            c.unpersist()
    for r in table.to_dict("records"):
        scenario = r["scenario"]
        rows.append({"run_id": run_id, "scenario": scenario, "model": r["model"], "k": r["k"],
                     "n_users": r["n_users"], "precision_at_k": r["precision"], "recall_at_k": r["recall"],
                     "map_at_k": r["map"], "hit_rate": r["hit_rate"], "rule_coverage": r["rule_coverage"],
                     "cutoff": cutoff, "test_end": test_end, "n_train_baskets": n_train,
                     "n_rules": n_rules if r["model"] == "rules" else 0})
        for name in ("precision", "recall", "map", "hit_rate"):
            metrics[f"eval.{scenario}.{r['model']}.{name}_at_{r['k']}"] = r[name]
        if r["model"] == "rules":
            metrics[f"eval.{scenario}.rule_coverage"] = r["rule_coverage"]
    for scenario in scenarios:
        for k in ev.ks:
            base = metrics.get(f"eval.{scenario}.popularity.map_at_{k}", 0.0)
            metrics[f"eval.{scenario}.map_at_{k}_lift_vs_baseline"] = (
                metrics.get(f"eval.{scenario}.rules.map_at_{k}", 0.0) / base if base > 0 else float("nan"))
    popularity.unpersist()
    metrics.update({f"seconds.{k}": v for k, v in timings.items()})
    return pd.DataFrame(rows), metrics


def _recommendations(ctx: RunContext, cfg: BasketsConfig, rules: pd.DataFrame, product_units: DataFrame,
                     end: dt.datetime | None, run_id: str, product_names: dict[str, str]) -> DataFrame:
    from pyspark.sql import functions as F

    from cpbi_spark.analytics.baskets.recommend import popularity_scores, recommend

    rc = cfg.recommend
    kept = product_units.filter("kept")
    recent = F.col("customer_id").isNotNull()
    start = None
    if end is not None:  # lines without times: the context is the customer's whole history
        start = end - dt.timedelta(days=rc.context_days)
        recent &= (F.col("basket_ts") >= F.lit(start)) & (F.col("basket_ts") < F.lit(end))
    context = kept.filter(recent).select(F.col("customer_id").alias("user"), "item")
    popularity = (_backfill(popularity_scores(encode.transactions(kept)), product_units, cfg)
                  if rc.backfill_popularity else None)
    recs = recommend(context, _rec_rules(ctx, rules, cfg), popularity, rc.k, merge=rc.merge)
    product = rules[rules["scope"] == PRODUCT_ALL] if len(rules) else pd.DataFrame()
    info_cols = "rule_id bigint, antecedent_key string, confidence double, lift double, expected_net_value double"
    info = ctx.spark.createDataFrame(
        [] if product.empty else
        [(int(r), a, float(c), float(li), None if pd.isna(v) else float(v)) for r, a, c, li, v in zip(
            product["rule_id"], product["antecedent_key"], product["confidence"], product["lift"],
            product["expected_net_value"], strict=True)], info_cols)
    names = ctx.spark.createDataFrame(list(product_names.items()) or [("", "")], "item string, product_name string")
    return (recs.join(F.broadcast(info), "rule_id", "left").join(F.broadcast(names), "item", "left")
            .select(F.lit(run_id).alias("run_id"), F.col("user").alias("customer_id"), "rank",
                    F.col("item").alias("product_id"), "product_name", "score", "source", "rule_id",
                    "antecedent_key", "confidence", "lift", "expected_net_value",
                    F.lit(start).cast("timestamp").alias("context_start"),
                    F.lit(end).cast("timestamp").alias("context_end")))


def run(ctx: RunContext) -> StageResult:
    """Run the basket analysis of the configuration and overwrite its insight tables."""
    import mlflow
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from cpbi_spark.analytics.baskets.artifacts import write_artifacts
    from cpbi_spark.tracking import tracked_run

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    cfg = baskets_config(ctx.config)
    result = StageResult("baskets")
    lake = ctx.lake
    if not lake.exists("fact_basket_lines"):
        result.counters["skipped"] = "fact_basket_lines does not exist: run the gold stage first"
        return result
    lines = lake.read("fact_basket_lines")
    seen = lines.agg(F.max("basket_ts").alias("last"), F.count(F.lit(1)).alias("n")).first()
    if seen["n"] == 0:
        result.counters["skipped"] = "fact_basket_lines holds no basket"
        return result
    last_ts = seen["last"]
    if last_ts is not None:
        start, end = encode.window_bounds(cfg, last_ts)
        end = end or dt.datetime.combine(last_ts.date() + dt.timedelta(days=1), dt.time())
    else:
        # An export without times (one basket per line, order-product lists): every basket is mined; what
        # needs a time (a window, the time-split evaluation, recent-purchase contexts) cannot be done.
        w = cfg.window
        if w.start or w.end or w.last_days is not None:
            raise AnalysisError("analyses.baskets.window selects baskets by time, but no basket line has a time: "
                                "remove the window or map the export's timestamp column (posted_ts)")
        start = end = None
        ctx.log.warning("baskets: no basket line has a time: every basket is mined, the time-split "
                        "evaluation is skipped and recommendations use each customer's whole history")
    customers = lake.read("dim_customer") if lake.exists("dim_customer") else None
    products = lake.read("dim_product") if lake.exists("dim_product") else None
    product_names: dict[str, str] = {}
    if products is not None:
        rows = (products.filter(F.col("is_current")).groupBy("product_id")
                .agg(F.max("product_name").alias("name")).collect())
        product_names = {r["product_id"]: r["name"] for r in rows if r["name"]}
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    with tracked_run(ctx.config, "baskets", params={**cfg.params(), "run_id": ctx.run_id}) as run_:
        units = (lines.transform(encode.filter_lines(cfg, start, end))
                 .transform(encode.with_segments(customers, cfg.segments))
                 .transform(encode.segment_filter(cfg.segment_filter))
                 .transform(encode.with_unit_cost(products, cfg.returns.default_margin_rate))
                 .transform(encode.scoped_units(cfg.levels, cfg.segments, cfg.returns.policy, cfg.returns))
                 .persist(StorageLevel.MEMORY_AND_DISK))
        try:
            with _timed(ctx, timings, "units"):
                n_units = units.count()
            with _timed(ctx, timings, "mine"):
                fi = mine_itemsets(encode.transactions(units), mining_spec(cfg), rows=n_units)
            with _timed(ctx, timings, "rules"):
                profile = encode.item_value_profile(units).toPandas()
                rules = build_rules(fi, profile, cfg)
            product_units = units.filter(F.col("scope") == PRODUCT_ALL)
            eval_rows, eval_metrics = (pd.DataFrame(), {})
            if cfg.evaluation.enabled and last_ts is None:
                result.counters["evaluation"] = "skipped: no basket line has a time (the evaluation splits by time)"
            elif cfg.evaluation.enabled:
                with _timed(ctx, timings, "evaluate"):
                    eval_rows, eval_metrics = _evaluate(ctx, cfg, product_units, last_ts, ctx.run_id)
            with _timed(ctx, timings, "write"):
                frames = {
                    "basket_scopes": _frame(ctx, "basket_scopes", _scopes_frame(fi, rules, cfg, ctx.run_id, start,
                                                                                end, now)),
                    "basket_itemsets": _frame(ctx, "basket_itemsets",
                                              _itemsets_frame(fi, ctx.run_id, product_names)),
                    "basket_rules": _frame(ctx, "basket_rules", _rules_frame(rules, ctx.run_id, product_names)),
                    "basket_recommendations": _recommendations(ctx, cfg, rules, product_units, end, ctx.run_id,
                                                               product_names),
                    "basket_recommendation_eval": _frame(ctx, "basket_recommendation_eval", eval_rows),
                }
                for name, frame in frames.items():
                    info = lake.overwrite(name, frame)
                    rows = info.metrics.get("num_inserted")
                    result.tables[name] = int(rows if rows is not None else lake.read(name).count())
        finally:
            units.unpersist()
        main = fi.scopes.get(PRODUCT_ALL)
        metrics: dict[str, float] = {
            "units": n_units, "scopes": len(fi.scopes), "itemsets": fi.n_itemsets, "rules": len(rules),
            "significant_rules": int(rules["is_significant"].sum()) if len(rules) else 0,
            "low_expected_count_rules": int(rules["low_expected_count"].sum()) if len(rules) else 0,
            "high_return_rules": int(rules["high_return_flag"].sum()) if len(rules) else 0,
            "itemsets_bound": fi.estimate.itemsets_bound, "seconds": round(time.perf_counter() - t0, 2),
            **{f"seconds.{k}": v for k, v in timings.items()}, **eval_metrics}
        if main is not None:
            metrics["product_baskets"] = main.n_baskets
            metrics["product_min_count"] = main.min_count
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v == v})   # NaN is not logged
        outputs = ctx.config.storage.outputs
        out_dir = (Path(outputs) / "baskets" / ctx.run_id if "://" not in outputs
                   else Path(tempfile.mkdtemp(prefix="cpbi-baskets-")))
        rules_out = _rules_frame(rules, ctx.run_id, product_names) if len(rules) else rules
        paths = write_artifacts(rules_out, out_dir, top=cfg.top_rules,
                                plot_scope=PRODUCT_ALL if PRODUCT_ALL in fi.scopes else None)
        if len(eval_rows):
            eval_path = out_dir / "evaluation.csv"
            eval_rows.to_csv(eval_path, index=False)
            paths.append(eval_path)
        for p in paths:
            mlflow.log_artifact(str(p))
        result.counters.update({k: v for k, v in metrics.items() if not k.startswith("eval.")})
        result.counters.update({"engine": fi.engine, "mlflow_run_id": run_.info.run_id, "artifacts": str(out_dir)})
        for key in ("basket", "customer"):
            for k in cfg.evaluation.ks:
                if f"eval.{key}.rules.map_at_{k}" in eval_metrics:
                    result.counters[f"{key}_map_at_{k}"] = round(eval_metrics[f"eval.{key}.rules.map_at_{k}"], 4)
                    result.counters[f"{key}_baseline_map_at_{k}"] = round(
                        eval_metrics[f"eval.{key}.popularity.map_at_{k}"], 4)
    return result
