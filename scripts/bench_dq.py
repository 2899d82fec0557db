"""Data-quality suites for ``scripts/bench``: the whole table against the rows a batch added.

``scripts/bench`` runs this on its lake after the incremental batch. The pipeline validates a table
of ``platform.dq_incremental_min_rows`` rows or more that only grew since its last clean validation
on the new rows, with the whole table's results (``cpbi_spark.platform.quality``). This script
times both ways on the same data in one Spark session. For each table (``--tables``), it validates
the suite ``--repeats`` times per mode, alternating whole / new rows. New-rows validations start
from the table's clean validation before its current version (the full load's, when the batch was
the last run), so their rows are the batch's. The first run of each mode is cold: it compiles and
warms caches.

Prints one line, ``DQ {json}``. Per table it gives each mode's seconds per repeat, the rows it
validated, its ``validation_mode``, and whether the two modes gave the same outcome for every
check (status, unexpected count, observed row count).

Usage:
    .venv/bin/python scripts/bench_dq.py --root LAKE --landing DIR --outputs DIR [--env local]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any


def _outcome(results: list[dict]) -> list[tuple]:
    """What must agree between the two modes: each check's status, unexpected count and, for a row
    count, the observed value (the table's rows either way)."""
    return sorted((r["check_name"], r["check_status"], r["unexpected_count"],
                   r["observed_value"] if r["expectation_type"].endswith("row_count_to_be_between") else None)
                  for r in results)


def bench_suites(root: str, landing: str, outputs: str, env: str, tables: list[str], repeats: int) -> dict[str, Any]:
    from cpbi_spark.platform import quality
    from cpbi_spark.platform.store import PlatformStore
    from cpbi_spark.runtime import RunContext

    ctx = RunContext.create(env=env, overrides={"storage.root": root, "storage.landing": landing,
                                                "storage.outputs": outputs, "platform.enabled": False})
    store = PlatformStore(ctx)
    all_marks = store.rows(quality.WATERMARKS)
    out: dict[str, Any] = {"repeats": repeats, "tables": {}}
    for table in tables:
        suite = ctx.config.expectations.get(table)
        if suite is None or not ctx.lake.exists(table):
            out["tables"][table] = {"skipped": "no suite" if suite is None else "no table"}
            continue
        version = ctx.lake.version(table)
        # The current version's own watermark would leave nothing new: start from the one before it.
        marks = [m for m in all_marks if m["dataset_id"] != table or m["dataset_version"] < version]
        base = quality.last_watermark(marks, table)
        entry: dict[str, Any] = {"rows": ctx.lake.row_count(table), "version": version,
                                 "since_version": None if base is None else base.version}
        outcomes = {}
        for _ in range(repeats):
            for mode, watermarks in (("whole", []), ("new_rows", marks)):
                quality._RESULTS.clear()  # the per-run memo would answer the second call without validating
                t0 = time.perf_counter()
                results = quality.validate_table(store, table, suite, watermarks,
                                                 incremental_min_rows=ctx.config.platform.dq_incremental_min_rows,
                                                 local_max_rows=ctx.config.platform.dq_local_max_rows)
                entry.setdefault(f"{mode}_seconds", []).append(round(time.perf_counter() - t0, 2))
                entry[f"{mode}_validated_rows"] = results[0]["validated_rows"]
                entry[f"{mode}_validation_mode"] = results[0]["validation_mode"]
                entry[f"{mode}_validation_engine"] = results[0]["validation_engine"]
                outcomes[mode] = _outcome(results)
        entry["same_outcome"] = outcomes["whole"] == outcomes["new_rows"]
        out["tables"][table] = entry
    ctx.spark.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="storage.root of the lake")
    parser.add_argument("--landing", required=True)
    parser.add_argument("--outputs", required=True)
    parser.add_argument("--env", default="local")
    parser.add_argument("--tables", default="raw_transactions,stg_transactions")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    result = bench_suites(args.root, args.landing, args.outputs, args.env,
                          [t for t in args.tables.split(",") if t], args.repeats)
    print("DQ " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
