"""Benchmark uplift training and scoring at 100k and 1M customers (synthetic features made here).

For each size, one table of customers is simulated with numpy (seeded): 4 one-hot segments and
``--features`` continuous pre-period features, a 50/50 randomised arm, conversion with a segment- and
feature-dependent planted effect, and net revenue. Then, timed separately:

* driver path (scikit-learn, what ``cpbi run uplift`` uses while the units fit ``driver_max_rows``): one fit and
  one scoring pass of each learner (T, X, DR) with the ``logistic`` base, and of the T-learner with the ``gbt``
  base, plus the Qini/AUUC evaluation of the scores (exact tie groups);
* Spark path (``engine: spark``): the table is written to parquet first (so Spark reads it like a gold table),
  then the Spark ML T-learner (logistic) is fitted and the table scored (``count`` of the scored frame forces it),
  plus the evaluation from score-quantile bins; the Spark GBT T-learner only up to ``--spark-gbt-max`` rows.

Nothing is asserted: the JSON (stdout and ``bench/results/uplift-<UTC timestamp>.json``) records the seconds,
the rows, the machine and the library versions. A job run does ``folds + 1`` fits per learner and outcome
(cross-fitting plus the final model), so multiply the fit times accordingly.

Usage (from the repository root; ``scripts/bench_uplift`` runs setup first):
    scripts/bench_uplift                               # 100k and 1M customers
    scripts/bench_uplift --sizes 20000                 # a quick check
    scripts/bench_uplift --sizes 100000 --skip-spark   # driver path only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
# OpenMP threads that spin while waiting burn the cores Spark's JVM needs on a small machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from cpbi_spark.analytics.uplift import evaluate, learners  # noqa: E402

SEGMENTS = ("bronze", "silver", "gold", "platinum")
SEGMENT_SHARES = (0.5, 0.3, 0.15, 0.05)
SEGMENT_EFFECT = (0.03, 0.10, 0.0, 0.03)
BASELINE = (0.15, 0.18, 0.21, 0.27)


def simulate(n: int, n_features: int, seed: int) -> pd.DataFrame:
    """Customers with features, a random arm, conversion and net revenue (planted heterogeneous effect)."""
    rng = np.random.default_rng(seed)
    seg = rng.choice(len(SEGMENTS), n, p=SEGMENT_SHARES)
    X = rng.normal(size=(n, n_features)).astype(np.float64)
    treated = rng.random(n) < 0.5
    effect = np.asarray(SEGMENT_EFFECT)[seg] + 0.02 * np.tanh(X[:, 0])
    p = np.clip(np.asarray(BASELINE)[seg] + 0.03 * np.tanh(X[:, 1]) + treated * effect, 0, 1)
    converted = (rng.random(n) < p).astype(np.float64)
    value = rng.lognormal(5.0, 0.8, n) * np.where(treated, 0.9, 1.0)
    df = pd.DataFrame(X, columns=[f"f{j:02d}" for j in range(n_features)])
    for i, s in enumerate(SEGMENTS):
        df[f"segment__{s}"] = (seg == i).astype(np.float64)
    df["arm"] = np.where(treated, "treatment", "control")
    df["converted"] = converted
    df["net_revenue"] = converted * value
    df["customer_id"] = np.arange(n).astype(str)
    return df


def timed(fn: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, round(time.perf_counter() - t0, 3)


def bench_driver(df: pd.DataFrame, features: list[str]) -> list[dict]:
    X = df[features].to_numpy()
    arm = (df["arm"] == "treatment").to_numpy().astype(int)
    y = df["converted"].to_numpy()
    rows = []
    for name, base in (("t_learner", "logistic"), ("x_learner", "logistic"), ("dr_learner", "logistic"),
                       ("t_learner", "gbt")):
        model, fit_s = timed(lambda name=name, base=base: learners.make_learner(name, base, True, 0).fit(X, arm, y))
        tau, score_s = timed(lambda model=model: model.predict(X))
        ev, eval_s = timed(lambda tau=tau: evaluate.evaluate_scores(tau[:, 0], arm, y, [0.1, 0.2, 0.3]))
        rows.append({"engine": "sklearn", "learner": name, "base": base, "rows": len(df), "fit_seconds": fit_s,
                     "score_seconds": score_s, "evaluate_seconds": eval_s,
                     "qini_coefficient_in_sample": round(ev["qini_coefficient"], 6)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def bench_spark(df: pd.DataFrame, features: list[str], tmp: Path, gbt_max: int) -> list[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyspark.sql import functions as F

    from cpbi_spark.session import get_spark

    spark = get_spark({"spark.sql.shuffle.partitions": "4", "spark.driver.memory": "6g"}, app_name="bench-uplift")
    path = tmp / "units.parquet"
    pq.write_table(pa.Table.from_pandas(df[[*features, "arm", "converted", "customer_id"]], preserve_index=False),
                   path, row_group_size=100_000)
    sdf = spark.read.parquet(str(path))
    rows = []
    for model in ("logistic", "gbt"):
        if model == "gbt" and len(df) > gbt_max:
            continue
        t = learners.SparkTLearner(features, ["control", "treatment"], binary=True, label="converted", model=model,
                                   max_iter=100 if model == "logistic" else 50)
        _, fit_s = timed(lambda t=t: t.fit(sdf))
        scored = t.transform(sdf).select("uplift__treatment", "arm", "converted")
        _, score_s = timed(lambda scored=scored: scored.write.mode("overwrite").parquet(str(tmp / "scores")))
        scores = spark.read.parquet(str(tmp / "scores")).withColumn("_t", F.col("arm") == "treatment")
        ev, eval_s = timed(lambda scores=scores: evaluate.evaluate_groups(
            evaluate.spark_groups(scores, "uplift__treatment", "_t", "converted", 1000), [0.1, 0.2, 0.3]))
        rows.append({"engine": "spark", "learner": "t_learner_spark", "base": model, "rows": len(df),
                     "fit_seconds": fit_s, "score_seconds": score_s, "evaluate_seconds": eval_s,
                     "qini_coefficient_in_sample": round(ev["qini_coefficient"], 6)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def machine() -> dict:
    import psutil

    return {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2 ** 30, 1),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "versions": {p: metadata.version(p) for p in ("pyspark", "scikit-learn", "numpy", "pandas")}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--features", type=int, default=20, help="continuous features (plus 4 segment columns)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--skip-spark", action="store_true")
    ap.add_argument("--skip-driver", action="store_true")
    ap.add_argument("--spark-gbt-max", type=int, default=100_000, help="largest size for the Spark GBT T-learner")
    args = ap.parse_args(argv)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    started = datetime.now(timezone.utc)
    result: dict[str, Any] = {"benchmark": "uplift", "started_at": started.isoformat(), "machine": machine(),
                              "features": args.features + len(SEGMENTS), "runs": []}
    tmp = Path(tempfile.mkdtemp(prefix="bench_uplift_"))
    try:
        for n in args.sizes:
            df, sim_s = timed(lambda n=n: simulate(n, args.features, args.seed))
            features = [c for c in df.columns if c.startswith(("f", "segment__"))]
            print(json.dumps({"rows": n, "simulate_seconds": sim_s}), flush=True)
            if not args.skip_driver:
                result["runs"] += bench_driver(df, features)
            if not args.skip_spark:
                result["runs"] += bench_spark(df, features, tmp, args.spark_gbt_max)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["finished_at"] = datetime.now(timezone.utc).isoformat()
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"uplift-{started:%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
