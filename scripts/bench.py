"""The benchmark suite: scaling, an incremental 1% batch against a full refresh, memory, baselines.

For every scale (``--scales``), on fresh temporary storage:

1. ``cpbi generate --scale S`` (batch 1, timed apart) and ``cpbi run pipeline``: the full load;
2. ``cpbi generate --batch 2 --batch-fraction F`` (default 0.01: about 1% of the history's lines,
   with the batch's customer, product, store and rate changes) and ``cpbi run pipeline``: the
   incremental run;
3. ``cpbi run pipeline --full-refresh`` on the same data: everything recomputed, the yardstick of
   the incremental run;
4. the data-quality suites of the transaction tables on the lake after the batch, validated whole
   and on the batch's new rows (``scripts/bench_dq.py``), alternating, in one session;
5. baselines over the same landing files (``scripts/bench_baselines.py``): a plain Spark read ->
   cast -> hash -> parquet write, and a simplified pandas bronze -> silver -> gold (its docstring
   says what it covers).

Each run is a subprocess whose process tree is sampled every 0.5 s for resident memory, split into
the Python driver, the JVM and the JVM's Python workers (``scripts/bench_pipeline.py`` measures and
parses the runs; this script reuses it). Rows per second per stage = rows the stage wrote to its main
table (raw_transactions, stg_transactions, fact_transactions; for the incremental run the rows it
added) / the stage's seconds.

Results: ``bench/results/bench-<UTC>.json``, ``bench/results/bench-<UTC>.md`` (summary tables) and
``bench/results/bench-<UTC>/*.png`` (plots), with the machine description.

Usage (from the repository root; ``scripts/bench`` runs setup first):
    scripts/bench                          # scales 1, 5, 20 (long: the lead's run)
    scripts/bench --scales 0.05,0.1        # a quick check
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import (
    CPBI,
    ROOT,
    SAMPLE_SECONDS,
    VENV_BIN,
    add_common_arguments,
    machine,
    parse_run,
    parse_scales,
    run_measured,
)

PYTHON = str(VENV_BIN / "python")
STAGE_TABLE = {"bronze": "raw_transactions", "silver": "stg_transactions", "gold": "fact_transactions"}


def _rows_per_second(run: dict[str, Any], before: dict[str, Any] | None,
                     skip: tuple[str, ...] = ()) -> dict[str, float | None]:
    """Rows each stage wrote to its main table per second (rows added when ``before`` is given)."""
    out: dict[str, float | None] = {stage: None for stage in skip}
    for stage, table in STAGE_TABLE.items():
        if stage in skip:
            continue
        seconds = run["stage_seconds"].get(stage)
        rows = (run["tables"].get(table) or {}).get("rows")
        if before is not None and rows is not None:
            rows -= (before["tables"].get(table) or {}).get("rows") or 0
        out[stage] = round(rows / seconds, 1) if rows and seconds else None
    return out


def bench_scale(scale: float, args: argparse.Namespace, work: Path, env: dict[str, str]) -> dict[str, Any]:
    folder = work / f"scale-{scale:g}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    storage = ["--set", f"storage.root={folder / 'lakehouse'}", "--set", f"storage.landing={folder / 'landing'}",
               "--set", f"storage.outputs={folder / 'outputs'}"]
    result: dict[str, Any] = {"scale": scale, "seed": args.seed, "batch_fraction": args.batch_fraction}

    def measured(cmd: list[str], label: str, echo: bool = False) -> dict[str, Any]:
        print(f"scale {scale:g}: {label} ...", flush=True)
        run = run_measured(cmd, env, echo=echo, label=f"{scale:g} {label}")
        if run["returncode"] != 0:
            raise RuntimeError(f"{label} failed ({' '.join(cmd)}):\n" + "\n".join(run["output"][-40:]))
        return run

    def pipeline(label: str, *extra: str) -> dict[str, Any]:
        cmd = [CPBI, "run", "pipeline", "--env", args.env, *storage, *extra]
        run = measured(cmd, label, echo=not args.quiet)
        parsed = parse_run(run["output"])
        return {"command": " ".join(cmd), "total_seconds": run["seconds"], "stage_seconds": parsed["stage_seconds"],
                "peak_rss_mb": run["peak_rss_mb"], "peak_rss_mb_by_role": run["peak_rss_mb_by_role"],
                "engine": parsed["engine"], "tables": parsed["tables"]}

    def generate(*extra: str) -> dict[str, Any]:
        run = measured([CPBI, "generate", "--scale", str(scale), "--seed", str(args.seed), "--out", str(folder),
                        *extra], "generate " + " ".join(extra))
        return {"seconds": run["seconds"]}

    def baseline(kind: str) -> dict[str, Any]:
        out = folder / f"baseline-{kind}"
        run = measured([PYTHON, str(ROOT / "scripts" / "bench_baselines.py"), kind, "--landing",
                        str(folder / "landing"), "--out", str(out), "--env", args.env], f"{kind} baseline")
        shutil.rmtree(out, ignore_errors=True)
        line = next(x for x in reversed(run["output"]) if x.startswith("BASELINE "))
        return {**json.loads(line[len("BASELINE "):]), "total_seconds": run["seconds"],
                "peak_rss_mb": run["peak_rss_mb"], "peak_rss_mb_by_role": run["peak_rss_mb_by_role"]}

    def dq_suites() -> dict[str, Any]:
        try:  # a side measurement: its failure is recorded, the scale's other results are kept
            run = measured([PYTHON, str(ROOT / "scripts" / "bench_dq.py"), "--root", str(folder / "lakehouse"),
                            "--landing", str(folder / "landing"), "--outputs", str(folder / "outputs"),
                            "--env", args.env], "data-quality suites, whole vs new rows")
        except RuntimeError as exc:
            return {"error": str(exc)[-2000:]}
        line = next(x for x in reversed(run["output"]) if x.startswith("DQ "))
        return {**json.loads(line[len("DQ "):]), "total_seconds": run["seconds"]}

    try:
        result["generate_batch1"] = generate("--batch", "1")
        full = result["full"] = pipeline("full load")
        full["rows_per_second"] = _rows_per_second(full, None)
        result["generate_batch2"] = generate("--batch", "2", "--batch-fraction", str(args.batch_fraction))
        inc = result["incremental"] = pipeline("incremental batch")
        inc["rows_per_second"] = _rows_per_second(inc, full)
        inc["rows_added"] = {t: ((inc["tables"].get(t) or {}).get("rows") or 0)
                             - ((full["tables"].get(t) or {}).get("rows") or 0) for t in STAGE_TABLE.values()}
        result["dq_suites"] = dq_suites()
        # The same run again with nothing new: the fixed cost every scheduled run pays (session, stage and
        # platform bookkeeping, data-quality records), which no incremental batch can go below.
        result["rerun_nothing_new"] = pipeline("rerun, nothing new")
        refresh = result["full_refresh"] = pipeline("full refresh", "--full-refresh")
        # A full refresh reprocesses every bronze batch in silver and recomputes gold; bronze lands each file
        # once (by checksum), so it has nothing to redo and no throughput to report.
        refresh["rows_per_second"] = _rows_per_second(refresh, None, skip=("bronze",))
        result["incremental_over_full_refresh"] = round(inc["total_seconds"] / refresh["total_seconds"], 3)
        floor = result["rerun_nothing_new"]["total_seconds"]
        result["incremental_over_full_refresh_above_rerun"] = round(
            (inc["total_seconds"] - floor) / max(refresh["total_seconds"] - floor, 1e-9), 3)
        result["incremental_over_full_refresh_by_stage"] = {
            s: round(inc["stage_seconds"][s] / refresh["stage_seconds"][s], 3)
            for s in refresh["stage_seconds"] if s in inc["stage_seconds"] and refresh["stage_seconds"][s] > 0}
        result["spark_baseline"] = baseline("spark")
        result["pandas_baseline"] = baseline("pandas")
        # Like for like: the stages of the full load (bronze, silver, gold; no JVM start, MLflow or summary)
        # against the baselines' own timings (no session start either).
        stages = sum(full["stage_seconds"].get(s, 0) for s in STAGE_TABLE)
        result["full_load_stage_seconds"] = round(stages, 2)
        result["full_load_over_spark_baseline"] = round(stages / result["spark_baseline"]["seconds"], 2)
        result["full_load_over_pandas_baseline"] = round(stages / result["pandas_baseline"]["seconds"], 2)
    except RuntimeError as exc:
        result["error"] = str(exc)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return result


# --------------------------------------------------------------------------------------------- report
def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def markdown(report: dict[str, Any], plots: list[str]) -> str:
    m = report["machine"]
    runs = [r for r in report["runs"] if "error" not in r]
    lines = [f"# cpbi benchmark {report['created_utc']}", "",
             f"Machine: {m['cpu_model']}, {m['cpus_available']} CPUs available, {m['memory_gb']} GiB, "
             f"{m['os']}; Python {m['python']}, {m['java']}; pyspark {m['versions'].get('pyspark')}, "
             f"deltalake {m['versions'].get('deltalake')}; load average at start {m['load_avg_1_5_15_at_start']}; "
             f"commit {m['git_commit']}{' (dirty)' if m['git_dirty'] else ''}.", "",
             report["notes"], "", "## Full pipeline and incremental batch", "",
             "| scale | fact lines | full load s | incremental s | rerun, nothing new s | full refresh s "
             "| incremental / full refresh | same, above the rerun | gold incremental / full refresh "
             "| peak MB (driver py / JVM / py workers) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in runs:
        roles = r["full_refresh"]["peak_rss_mb_by_role"]
        lines.append(
            f"| {r['scale']:g} | {_fmt((r['full_refresh']['tables'].get('fact_transactions') or {}).get('rows'))} "
            f"| {_fmt(r['full']['total_seconds'])} | {_fmt(r['incremental']['total_seconds'])} "
            f"| {_fmt((r.get('rerun_nothing_new') or {}).get('total_seconds'))} "
            f"| {_fmt(r['full_refresh']['total_seconds'])} | {_fmt(r['incremental_over_full_refresh'])} "
            f"| {_fmt(r.get('incremental_over_full_refresh_above_rerun'))} "
            f"| {_fmt(r['incremental_over_full_refresh_by_stage'].get('gold'))} "
            f"| {roles['driver_python']:,.0f} / {roles['jvm']:,.0f} / {roles['python_workers']:,.0f} |")
    lines += ["", "## Stages (seconds; rows/s of the stage's main table)", "",
              "Incremental rows/s count the rows the run added; a full refresh has no bronze work (files land once).",
              "",
              "| scale | run | bronze s | silver s | gold s | bronze rows/s | silver rows/s | gold rows/s |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in runs:
        for kind in ("full", "incremental", "full_refresh"):
            run = r[kind]
            st, rps = run["stage_seconds"], run["rows_per_second"]
            lines.append(f"| {r['scale']:g} | {kind} | {_fmt(st.get('bronze'))} | {_fmt(st.get('silver'))} "
                         f"| {_fmt(st.get('gold'))} | {_fmt(rps.get('bronze'))} | {_fmt(rps.get('silver'))} "
                         f"| {_fmt(rps.get('gold'))} |")
    lines += ["", "## Baselines over the same landing files", "",
              "| scale | full load stages s | Spark read-cast-hash-parquet s (rows) | pandas bronze-silver-gold s "
              "| full load / Spark baseline | full load / pandas |", "| --- | --- | --- | --- | --- | --- |"]
    for r in runs:
        sb, pb = r["spark_baseline"], r["pandas_baseline"]
        lines.append(f"| {r['scale']:g} | {_fmt(r['full_load_stage_seconds'])} | {_fmt(sb['seconds'])} "
                     f"({_fmt(sb['rows'])}) | {_fmt(pb['seconds'])} | {_fmt(r['full_load_over_spark_baseline'])} "
                     f"| {_fmt(r['full_load_over_pandas_baseline'])} |")
    dq = [(r["scale"], t, e) for r in runs for t, e in (r.get("dq_suites") or {}).get("tables", {}).items()
          if "skipped" not in e]
    if dq:
        lines += ["", "## Data-quality suites: whole table vs the batch's new rows", "",
                  "Same lake after the incremental batch, one session, modes alternated; seconds of each repeat "
                  "(the first of each mode is cold).", "",
                  "| scale | table | rows | whole s | new rows s | rows validated (new rows) | same outcome |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for scale, table, e in dq:
            lines.append(f"| {scale:g} | {table} | {_fmt(e['rows'])} | {' / '.join(map(_fmt, e['whole_seconds']))} "
                         f"| {' / '.join(map(_fmt, e['new_rows_seconds']))} | {_fmt(e['new_rows_validated_rows'])} "
                         f"({e['new_rows_validation_mode']}) | {'yes' if e['same_outcome'] else 'NO'} |")
    failed = [r for r in report["runs"] if "error" in r]
    if failed:
        lines += ["", "## Failed scales", ""] + [f"- scale {r['scale']:g}: {r['error'].splitlines()[0]}"
                                                 for r in failed]
    lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], folder: Path) -> list[str]:
    """PNG plots next to the Markdown summary; returns their paths relative to the results folder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in report["runs"] if "error" not in r]
    if not runs:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    scales = [r["scale"] for r in runs]
    labels = [f"{s:g}" for s in scales]
    out = []

    fig, ax = plt.subplots(figsize=(6, 4))
    bottom = [0.0] * len(runs)
    for stage in ("bronze", "silver", "gold"):
        vals = [r["full_refresh"]["stage_seconds"].get(stage, 0) for r in runs]
        ax.bar(labels, vals, bottom=bottom, label=stage)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.plot(labels, [r["spark_baseline"]["seconds"] for r in runs], "k^--", label="Spark read-cast-hash-write")
    ax.plot(labels, [r["pandas_baseline"]["seconds"] for r in runs], "ms:", label="pandas baseline")
    ax.set(xlabel="scale", ylabel="seconds", title="Full refresh by stage, and baselines")
    ax.legend()
    out.append(_save(fig, folder / "full_refresh_stages.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    width = 0.4
    xs = range(len(runs))
    ax.bar([x - width / 2 for x in xs], [r["full_refresh"]["total_seconds"] for r in runs], width, label="full refresh")
    ax.bar([x + width / 2 for x in xs], [r["incremental"]["total_seconds"] for r in runs], width,
           label=f"incremental ({runs[0]['batch_fraction']:.0%} batch)")
    ax.set_xticks(list(xs), labels)
    ax.set(xlabel="scale", ylabel="seconds", title="Incremental batch vs full refresh")
    ax.legend()
    out.append(_save(fig, folder / "incremental_vs_full.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    for role in ("driver_python", "jvm", "python_workers"):
        ax.plot(labels, [max(r[k]["peak_rss_mb_by_role"][role] for k in ("full", "incremental", "full_refresh"))
                         for r in runs], "o-", label=role)
    ax.set(xlabel="scale", ylabel="peak resident MB", title="Peak memory by process role")
    ax.legend()
    out.append(_save(fig, folder / "peak_memory.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    for stage in ("bronze", "silver", "gold"):
        ax.plot(labels, [r["full"]["rows_per_second"].get(stage) or 0 for r in runs], "o-", label=stage)
    ax.set(xlabel="scale", ylabel="rows / s", title="Throughput per stage (full load)")
    ax.legend()
    out.append(_save(fig, folder / "rows_per_second.png"))
    return [str(Path(folder.name) / Path(p).name) for p in out]


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="cpbi benchmark suite (see the module docstring).")
    add_common_arguments(parser, "1,5,20")
    parser.add_argument("--batch-fraction", type=float, default=0.01, help="size of the incremental batch")
    args = parser.parse_args(argv)
    scales = parse_scales(parser, args)
    if not Path(CPBI).exists():
        print(f"{CPBI} not found: run `bash scripts/setup.sh` first", file=sys.stderr)
        return 2
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    work = Path(args.workdir) if args.workdir else results / f"bench-{stamp}" / "tmp"  # gitignored
    env = {**os.environ, "PYSPARK_PYTHON": PYTHON}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("CPBI_ENV", None)
    report: dict[str, Any] = {
        "benchmark": "cpbi: full load, incremental batch vs full refresh, memory, rows/s, Spark and pandas baselines",
        "created_utc": stamp, "script": "scripts/bench.py", "argv": sys.argv[1:] if argv is None else list(argv),
        "machine": machine(),
        "notes": ("Seconds are wall clock of each subprocess (JVM start and the table summary included) unless "
                  "named stage seconds ('[stage] done in X s'); the baselines' seconds exclude their session start. "
                  f"Peak memory is sampled every {SAMPLE_SECONDS} s per role (Python driver, JVM, Python workers). "
                  "Generation is timed apart and not part of any pipeline time."),
        "runs": [],
    }
    failed = False

    def write() -> None:
        plots = plot(report, results / f"bench-{stamp}")
        (results / f"bench-{stamp}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        (results / f"bench-{stamp}.md").write_text(markdown(report, plots), encoding="utf-8")

    try:
        for scale in scales:
            run = bench_scale(scale, args, work, env)
            report["runs"].append(run)
            failed = failed or "error" in run
            write()  # after every scale: an interrupted long run keeps the scales it finished
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    write()
    with contextlib.suppress(OSError):
        print((results / f"bench-{stamp}.md").read_text(encoding="utf-8"))
    print(f"wrote {results / f'bench-{stamp}.json'} and {results / f'bench-{stamp}.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
