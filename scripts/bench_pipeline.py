"""Benchmark the full pipeline and an incremental batch at several data scales.

For every scale, on fresh temporary storage:

1. ``cpbi generate --scale S --seed 42`` (batch 1; timed separately, not part of the pipeline time),
2. ``cpbi run pipeline`` on it (the full load),
3. ``cpbi generate --batch 2`` into the same folder (timed separately),
4. ``cpbi run pipeline`` again (the incremental run: only the new files go through).

Each pipeline run is a subprocess (``.venv/bin/cpbi run pipeline --env ENV --set storage.root=...
--set storage.landing=... --set storage.outputs=...``) whose process tree (the Python driver, its
JVM and the JVM's Python workers) is sampled every 0.5 s for the peak resident memory. Per-stage
seconds come from the ``[stage] done in X s`` lines the CLI prints, row counts from its table
summary. The result, with a description of the machine, goes to
``bench/results/pipeline-<UTC timestamp>.json`` and to stdout.

Usage (from the repository root; ``scripts/bench_pipeline`` runs setup first):
    scripts/bench_pipeline                    # scales 1 and 10 (scale 1 ~ 100k transaction lines)
    scripts/bench_pipeline --scales 0.05      # a quick check (a few minutes)
    scripts/bench_pipeline --scales 1 --keep  # keep the generated data and lakehouse
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
CPBI = str(VENV_BIN / "cpbi")
SAMPLE_SECONDS = 0.5
STAGE_DONE = re.compile(r"^\[(?P<stage>\w+)\] done in (?P<seconds>[0-9.]+) s")
ENGINE = re.compile(r"^cpbi run \w+: .*engine=(?P<engine>[\w-]+)")
# "bronze    raw_transactions     123,456       1" (rows and version are "-" for a missing table)
SUMMARY_ROW = re.compile(r"^(?P<layer>[a-z]+)\s+(?P<table>[a-z][a-z0-9_]*)\s+(?P<rows>[0-9,]+|-)\s+(?P<version>\d+|-)$")
REPORTED_TABLES = ("raw_transactions", "fact_transactions")


def _tree_rss(proc: psutil.Process) -> int:
    """Resident bytes of a process and all its descendants (processes may exit while we look)."""
    return sum(_rss_by_role(proc).values())


def _rss_by_role(proc: psutil.Process) -> dict[str, int]:
    """Resident bytes of the tree by role: the Python driver (the root and Python processes that are not
    under a JVM), the JVMs (Spark's driver, or a local-cluster's master/workers/executors) and the Python
    workers the JVMs start for UDFs and Arrow (``pyspark.daemon``). Other children of a JVM are not
    counted: they are short-lived helpers (``jspawnhelper``, ``chmod``) that can show the JVM's own pages
    for a moment between fork and exec (one sample read 4 GB for one)."""
    roles = {"driver_python": 0, "jvm": 0, "python_workers": 0}
    try:
        members = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return roles
    jvms: set[int] = set()
    for member in members:
        with contextlib.suppress(psutil.Error):
            rss = member.memory_info().rss
            name = member.name().lower()
            if "java" in name:
                jvms.add(member.pid)
                roles["jvm"] += rss
            elif any(p.pid in jvms for p in member.parents()):
                if "python" in name:
                    roles["python_workers"] += rss
            else:
                roles["driver_python"] += rss
    return roles


def run_measured(cmd: list[str], env: dict[str, str], echo: bool, label: str) -> dict[str, Any]:
    """Run ``cmd``, stream its output, sample the process tree's RSS; return output, seconds, peaks.

    ``peak_rss_mb`` is the peak of the whole tree; ``peak_rss_mb_by_role`` the peak of each role
    (see :func:`_rss_by_role`; the peaks of different roles may come from different moments).
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if echo:
                print(f"  [{label}] {line}", end="", flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    peak = 0
    peaks = {"driver_python": 0, "jvm": 0, "python_workers": 0}
    ps = psutil.Process(proc.pid)
    while proc.poll() is None:
        roles = _rss_by_role(ps)
        peak = max(peak, sum(roles.values()))
        peaks = {k: max(v, roles[k]) for k, v in peaks.items()}
        time.sleep(SAMPLE_SECONDS)
    reader.join()
    return {"returncode": proc.returncode, "seconds": round(time.perf_counter() - t0, 2),
            "peak_rss_mb": round(peak / 2**20, 1),
            "peak_rss_mb_by_role": {k: round(v / 2**20, 1) for k, v in peaks.items()}, "output": lines}


def parse_run(lines: list[str]) -> dict[str, Any]:
    """Stage seconds, engine and the table summary printed by ``cpbi run pipeline``."""
    stages: dict[str, float] = {}
    tables: dict[str, dict[str, int | None]] = {}
    engine = None
    in_summary = False
    for line in lines:
        if m := STAGE_DONE.match(line):
            stages[m["stage"]] = float(m["seconds"])
        elif m := ENGINE.match(line):
            engine = m["engine"]
        elif line.startswith("Tables (rows, Delta version)"):
            in_summary = True
        elif in_summary and (m := SUMMARY_ROW.match(line.strip())):
            tables[m["table"]] = {
                "layer": m["layer"],
                "rows": None if m["rows"] == "-" else int(m["rows"].replace(",", "")),
                "version": None if m["version"] == "-" else int(m["version"]),
            }
        elif in_summary and not line.strip():
            in_summary = False
    return {"engine": engine, "stage_seconds": stages, "tables": tables}


def _java_version() -> str | None:
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not java:
        return None
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stderr or out.stdout).strip().splitlines()[0] if (out.stderr or out.stdout) else None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def machine() -> dict[str, Any]:
    vm = psutil.virtual_memory()
    status = _git("status", "--porcelain")
    return {
        "hostname": platform.node(),
        "os": platform.platform(),
        "cpu_model": _cpu_model(),
        "cores_logical": psutil.cpu_count(logical=True),
        "cores_physical": psutil.cpu_count(logical=False),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": round(vm.total / 2**30, 1),
        # Other work on the machine distorts the timings: the load when the benchmark starts says so.
        "load_avg_1_5_15_at_start": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "java": _java_version(),
        "versions": {p: _version(p) for p in ("cpbi-spark", "pyspark", "deltalake", "delta-spark", "pyarrow",
                                              "pandas", "mlflow")},
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
    }


def bench_scale(scale: float, args: argparse.Namespace, work: Path, env: dict[str, str]) -> dict[str, Any]:
    folder = work / f"scale-{scale:g}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    storage = ["--set", f"storage.root={folder / 'lakehouse'}", "--set", f"storage.landing={folder / 'landing'}",
               "--set", f"storage.outputs={folder / 'outputs'}"]
    result: dict[str, Any] = {"scale": scale, "seed": args.seed, "env": args.env, "storage": str(folder)}

    def generate(batch: int) -> dict[str, Any]:
        print(f"scale {scale:g}: generating batch {batch} ...", flush=True)
        gen = run_measured([CPBI, "generate", "--scale", str(scale), "--seed", str(args.seed), "--batch", str(batch),
                            "--out", str(folder)], env, echo=False, label=f"generate b{batch}")
        if gen["returncode"] != 0:
            raise RuntimeError(f"cpbi generate --batch {batch} failed:\n" + "\n".join(gen["output"][-30:]))
        return {"seconds": gen["seconds"], "peak_rss_mb": gen["peak_rss_mb"]}

    def pipeline(kind: str) -> dict[str, Any]:
        print(f"scale {scale:g}: cpbi run pipeline ({kind}) ...", flush=True)
        cmd = [CPBI, "run", "pipeline", "--env", args.env, *storage]
        run = run_measured(cmd, env, echo=not args.quiet, label=f"{scale:g} {kind}")
        parsed = parse_run(run["output"])
        out = {
            "command": " ".join(cmd),
            "returncode": run["returncode"],
            "total_seconds": run["seconds"],
            "stage_seconds": parsed["stage_seconds"],
            "peak_driver_rss_mb": run["peak_rss_mb"],
            "engine": parsed["engine"],
            **{f"rows_{t}": (parsed["tables"].get(t) or {}).get("rows") for t in REPORTED_TABLES},
            "tables": parsed["tables"],
        }
        if run["returncode"] != 0:
            out["output_tail"] = run["output"][-40:]
            raise RuntimeError(f"cpbi run pipeline ({kind}) failed with exit code {run['returncode']}:\n"
                               + "\n".join(run["output"][-40:]))
        return out

    try:
        result["generate_batch1"] = generate(1)
        result["full"] = pipeline("full")
        result["generate_batch2"] = generate(2)
        result["incremental"] = pipeline("incremental")
        result["incremental_over_full"] = round(
            result["incremental"]["total_seconds"] / result["full"]["total_seconds"], 3)
        stage_ratio = {}
        for stage, seconds in result["full"]["stage_seconds"].items():
            inc = result["incremental"]["stage_seconds"].get(stage)
            if inc is not None and seconds > 0:
                stage_ratio[stage] = round(inc / seconds, 3)
        result["incremental_over_full_by_stage"] = stage_ratio
    except RuntimeError as exc:
        result["error"] = str(exc)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
            result["storage"] = f"{folder} (removed; use --keep to keep it)"
    return result


def add_common_arguments(parser: argparse.ArgumentParser, default_scales: str) -> None:
    """The options every pipeline benchmark takes (scales, seed, env, folders, keep, quiet)."""
    parser.add_argument("--scales", default=default_scales,
                        help=f"comma-separated generator scales (default {default_scales})")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--env", default="local", help="configuration environment of the runs (default local)")
    parser.add_argument("--results", default=str(ROOT / "bench" / "results"), help="folder of the results")
    parser.add_argument("--workdir", help="folder for the temporary storage (default under the run's results)")
    parser.add_argument("--keep", action="store_true", help="keep the generated data and lakehouses")
    parser.add_argument("--quiet", action="store_true", help="do not echo the pipeline output")


def parse_scales(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[float]:
    """``--scales`` as numbers; a usage error names what is wrong."""
    try:
        scales = [float(s) for s in args.scales.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--scales expects numbers separated by commas, got {args.scales!r}")
    if not scales or any(s <= 0 for s in scales):
        parser.error("--scales needs at least one positive number")
    return scales


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Time cpbi run pipeline (full and incremental) at several scales.")
    add_common_arguments(parser, "1,10")
    args = parser.parse_args(argv)
    scales = parse_scales(parser, args)
    if not Path(CPBI).exists():
        print(f"{CPBI} not found: run `bash scripts/setup.sh` first", file=sys.stderr)
        return 2

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    results_dir = Path(args.results)
    results_dir.mkdir(parents=True, exist_ok=True)
    run_dir = results_dir / f"pipeline-{stamp}"
    work = Path(args.workdir) if args.workdir else run_dir / "tmp"
    # Same interpreter for Spark's Python workers; the MLflow store stays in the temporary outputs.
    env = {**os.environ, "PYSPARK_PYTHON": str(VENV_BIN / "python")}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("CPBI_ENV", None)

    report: dict[str, Any] = {
        "benchmark": "cpbi pipeline: full load (batch 1) then incremental (batch 2)",
        "created_utc": stamp,
        "script": "scripts/bench_pipeline.py",
        "argv": sys.argv[1:] if argv is None else list(argv),
        "machine": machine(),
        "notes": ("total_seconds = wall clock of the `cpbi run pipeline` subprocess (JVM start, MLflow and the table "
                  "summary included); stage_seconds from its '[stage] done in X s' lines; peak_driver_rss_mb = "
                  f"peak resident memory of its process tree (python driver + JVM + python workers) sampled every "
                  f"{SAMPLE_SECONDS} s; generation is timed separately and not part of the pipeline times."),
        "runs": [],
    }
    failed = False
    try:
        for scale in scales:
            result = bench_scale(scale, args, work, env)
            report["runs"].append(result)
            failed = failed or "error" in result
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
            with contextlib.suppress(OSError):
                run_dir.rmdir()  # only when empty
    out = results_dir / f"pipeline-{stamp}.json"
    text = json.dumps(report, indent=2)
    out.write_text(text + "\n", encoding="utf-8")
    print(text)
    print(f"\nwrote {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
