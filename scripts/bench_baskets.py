"""Benchmark the basket job's core (baskets -> frequent itemsets -> rules with metrics) against mlxtend.

For each size, synthetic baskets are generated (Zipf-distributed items, about 5 items per basket) and
written once as parquet lines ``(basket, item)``. Then, in the same run and at the same thresholds:

- cpbi: a local Spark session reads the lines and runs ``mine_itemsets`` (level-wise engine) and
  ``generate_rules`` (all metrics); the time runs from the parquet scan to the rules on the driver;
- mlxtend (in a child process, so a failure or its memory does not touch cpbi's): pandas reads the
  same file and groups it into basket lists (``group_seconds``), then ``TransactionEncoder(sparse)`` +
  ``fpgrowth`` + ``association_rules`` (``core_seconds``: the fair comparison).

Peak memory: the largest resident set of the whole process tree (driver, JVM, Python workers) sampled
every 50 ms for cpbi; ``ru_maxrss`` of the child for mlxtend. Both results are compared (same itemsets,
same counts). The ratio reported is cpbi seconds / mlxtend core seconds. The machine's load average is
recorded before and after: other processes on a shared machine slow both sides.

Usage:
    scripts/bench_baskets                                 # 10k, 100k, 1M baskets
    scripts/bench_baskets --sizes 10000 100000 1000000 10000000 --mlxtend-timeout 3600
Results: bench/results/baskets-<UTC timestamp>.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

MLXTEND_CHILD = r"""
import json, resource, sys, time
import pandas as pd
from mlxtend.frequent_patterns import association_rules, fpgrowth
from mlxtend.preprocessing import TransactionEncoder

path, min_support, max_len, out = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
max_len = None if max_len == "none" else int(max_len)
t0 = time.perf_counter()
lines = pd.read_parquet(path)
baskets = lines.groupby("basket", sort=False)["item"].agg(list).tolist()
del lines
t1 = time.perf_counter()
te = TransactionEncoder()
onehot = pd.DataFrame.sparse.from_spmatrix(te.fit(baskets).transform(baskets, sparse=True), columns=te.columns_)
n = len(baskets)
del baskets
t2 = time.perf_counter()
fi = fpgrowth(onehot, min_support=min_support, use_colnames=True, max_len=max_len)
t3 = time.perf_counter()
rules = association_rules(fi, num_itemsets=n, metric="confidence", min_threshold=0.0)
t4 = time.perf_counter()
sets = {"|".join(sorted(s)): round(sup * n) for s, sup in zip(fi["itemsets"], fi["support"])}
json.dump({"group_seconds": t1 - t0, "encode_seconds": t2 - t1, "fpgrowth_seconds": t3 - t2,
           "rules_seconds": t4 - t3, "core_seconds": t4 - t1, "total_seconds": t4 - t0,
           "itemsets": len(fi), "rules": len(rules),
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "sets": sets}, open(out, "w"))
"""


def generate(path: Path, n: int, *, n_items: int, mean_items: float, zipf: float, seed: int) -> int:
    """Write ``n`` baskets as parquet lines (basket bigint, item string); returns the number of lines."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    w = 1.0 / np.arange(1, n_items + 1) ** zipf
    w /= w.sum()
    names = np.array([f"I{i:05d}" for i in range(n_items)], dtype=object)
    writer, total, chunk = None, 0, 1_000_000
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        sizes = 1 + rng.poisson(mean_items - 1, m)
        basket = np.repeat(np.arange(start, start + m, dtype=np.int64), sizes)
        item = rng.choice(n_items, size=int(sizes.sum()), p=w)
        key = np.unique(basket * n_items + item)          # an item once per basket
        table = pa.table({"basket": key // n_items, "item": pa.array(names[key % n_items], type=pa.string())})
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
        total += table.num_rows
    writer.close()
    return total


class PeakRss:
    """Largest resident set of this process and its children, sampled in a thread."""

    def __init__(self, interval: float = 0.05):
        import psutil

        self.proc, self.interval, self.peak, self._stop = psutil.Process(), interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        import psutil

        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRss:
        self.peak = self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_cpbi(spark, path: Path, min_support: float, max_len: int) -> dict:
    from pyspark.sql import functions as F

    from cpbi_spark.analytics.baskets.frequent import MiningSpec, mine_itemsets
    from cpbi_spark.analytics.baskets.rules import generate_rules

    with PeakRss() as mem:
        t0 = time.perf_counter()
        lines = spark.read.parquet(str(path)).select(F.lit("bench").alias("scope"), "basket", "item")
        res = mine_itemsets(lines, MiningSpec(min_support=min_support, max_len=max_len, algorithm="levelwise"))
        t1 = time.perf_counter()
        rules = generate_rules(res)
        t2 = time.perf_counter()
    frame = res.to_frame()
    sets = {"|".join(sorted(i)): int(c) for i, c in zip(frame["items"], frame["count"], strict=True)}
    return {"seconds": t2 - t0, "mine_seconds": t1 - t0, "pack_seconds": res.counters["pack_seconds"],
            "rules_seconds": t2 - t1, "itemsets": res.n_itemsets, "rules": len(rules),
            "by_length": {int(k): len(v[1]) for k, v in res.levels.items()},
            "peak_rss_mb": mem.peak / 2**20, "sets": sets}


def run_cpbi_bounded(spark, path: Path, min_support: float, max_len: int, timeout: int | None) -> dict:
    """:func:`run_cpbi`, its Spark jobs cancelled after ``timeout`` seconds; a failure is returned, not raised."""
    from cpbi_spark.errors import AnalysisError

    timer = threading.Timer(timeout, spark.sparkContext.cancelAllJobs) if timeout else None
    t0 = time.perf_counter()
    if timer:
        timer.start()
    try:
        return {"completed": True, **run_cpbi(spark, path, min_support, max_len)}
    except AnalysisError as exc:
        return {"completed": False, "failure": f"AnalysisError: {exc}",
                "seconds_until_failure": time.perf_counter() - t0}
    except Exception as exc:  # a cancelled or failed Spark job: record it and go on with the report
        cancelled = timer is not None and not timer.is_alive()
        reason = f"cancelled after {timeout} s" if cancelled else f"{type(exc).__name__}: {str(exc)[:300]}"
        return {"completed": False, "failure": reason, "seconds_until_failure": time.perf_counter() - t0}
    finally:
        if timer:
            timer.cancel()


def _write(report: dict, target: Path) -> None:
    target.write_text(json.dumps(report, indent=2))


def run_mlxtend(path: Path, min_support: float, max_len: int | None, timeout: int) -> dict:
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    cmd = [sys.executable, "-c", MLXTEND_CHILD, str(path), str(min_support), str(max_len or "none"), str(out)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"completed": False, "failure": f"timed out after {timeout} s"}
    if proc.returncode != 0:
        tail = (proc.stderr or "").strip().splitlines()[-3:]
        return {"completed": False, "failure": f"exit {proc.returncode}: " + " | ".join(tail),
                "seconds_until_failure": time.perf_counter() - t0}
    result = json.loads(out.read_text())
    out.unlink()
    return {"completed": True, **result}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--min-support", type=float, default=0.001)
    p.add_argument("--max-len", type=int, default=10, help="longest itemset (mlxtend gets the same)")
    p.add_argument("--items", type=int, default=2000)
    p.add_argument("--mean-items", type=float, default=5.0)
    p.add_argument("--zipf", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--mlxtend-timeout", type=int, default=1800)
    p.add_argument("--cpbi-timeout", type=int, default=None,
                   help="cancel cpbi's Spark jobs after this many seconds (recorded as not completed)")
    p.add_argument("--skip-mlxtend-above", type=int, default=None, help="no mlxtend run above this many baskets")
    p.add_argument("--driver-memory", default="6g")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = p.parse_args(argv)

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from cpbi_spark.session import get_spark

    spark = get_spark({"spark.driver.memory": args.driver_memory, "spark.sql.shuffle.partitions": "4",
                       "spark.default.parallelism": "2"}, app_name="bench-baskets", master="local[2]")
    spark.sparkContext.setLogLevel("ERROR")
    import mlxtend
    import pyspark

    report = {"benchmark": "baskets", "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                          "spark_master": "local[2]", "driver_memory": args.driver_memory},
              "versions": {"pyspark": pyspark.__version__, "mlxtend": mlxtend.__version__},
              "params": {"min_support": args.min_support, "max_len": args.max_len, "items": args.items,
                         "mean_items_per_basket": args.mean_items, "zipf_exponent": args.zipf, "seed": args.seed,
                         "engine": "levelwise", "cpbi_timeout_seconds": args.cpbi_timeout,
                         "skip_mlxtend_above": args.skip_mlxtend_above,
                         "mlxtend_timeout_seconds": args.mlxtend_timeout},
              "results": []}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"baskets-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.json"
    with tempfile.TemporaryDirectory(prefix="bench-baskets-") as tmp:
        # A warm-up on a tiny input, so the first size does not pay for JVM and Python worker start-up.
        warm = Path(tmp) / "warm.parquet"
        generate(warm, 2000, n_items=args.items, mean_items=args.mean_items, zipf=args.zipf, seed=1)
        run_cpbi(spark, warm, args.min_support, args.max_len)
        for n in args.sizes:
            path = Path(tmp) / f"lines-{n}.parquet"
            t0 = time.perf_counter()
            lines = generate(path, n, n_items=args.items, mean_items=args.mean_items, zipf=args.zipf, seed=args.seed)
            row = {"baskets": n, "lines": lines, "generate_seconds": round(time.perf_counter() - t0, 2),
                   "load_average_before": os.getloadavg()}
            print(f"[{n:,} baskets, {lines:,} lines] cpbi ...", flush=True)
            cpbi = run_cpbi_bounded(spark, path, args.min_support, args.max_len, args.cpbi_timeout)
            if not cpbi.get("completed", True):
                # Recorded as it happened (guard stop, cancellation or error); mlxtend is not run then.
                row["cpbi"], row["mlxtend"] = cpbi, {"completed": False, "failure": "not run (cpbi did not complete)"}
                row["load_average_after"] = os.getloadavg()
                print(json.dumps(row), flush=True)
                report["results"].append(row)
                _write(report, target)
                path.unlink()
                continue
            skip = args.skip_mlxtend_above is not None and n > args.skip_mlxtend_above
            if skip:
                ml = {"completed": False, "failure": f"not run (--skip-mlxtend-above {args.skip_mlxtend_above})"}
            else:
                print(f"[{n:,}] mlxtend ...", flush=True)
                ml = run_mlxtend(path, args.min_support, args.max_len, args.mlxtend_timeout)
            row["load_average_after"] = os.getloadavg()
            cpbi_sets = cpbi.pop("sets")
            ml_sets = ml.pop("sets", None)
            row["cpbi"] = {k: round(v, 3) if isinstance(v, float) else v for k, v in cpbi.items()}
            row["mlxtend"] = {k: round(v, 3) if isinstance(v, float) else v for k, v in ml.items()}
            if ml.get("completed"):
                row["same_itemsets_and_counts"] = cpbi_sets == ml_sets
                row["ratio_cpbi_to_mlxtend_core"] = round(cpbi["seconds"] / ml["core_seconds"], 3)
                row["ratio_cpbi_to_mlxtend_total"] = round(cpbi["seconds"] / ml["total_seconds"], 3)
            print(json.dumps(row), flush=True)
            report["results"].append(row)
            _write(report, target)        # after every size: a later failure keeps what was measured
            path.unlink()
    report["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    _write(report, target)
    print(f"wrote {target}")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
