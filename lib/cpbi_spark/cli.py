"""The ``cpbi`` command line.

Examples:
    cpbi generate --scale 1 --seed 42 --out ./cpbi-data
    cpbi config validate --env ci
    cpbi run all --env local
    cpbi run silver --full-refresh
    cpbi tables
    cpbi status --last 3
    cpbi maintain --dry-run
    cpbi sql "SELECT channel, count(*) AS lines FROM fact_transactions GROUP BY channel" --role analyst
    cpbi run interventions
    cpbi report --out ./report
    cpbi dashboard --role analyst
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from cpbi_spark.errors import CpbiError

log = logging.getLogger("cpbi")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", help="configuration environment (local, ci, prod); default $CPBI_ENV or local")
    p.add_argument("--conf-dir", help="configuration folder (default $CPBI_CONF_DIR or ./conf)")
    p.add_argument("--source", action="append", default=[], metavar="MAPPING.yaml",
                   help="extra YAML overlay, e.g. a source mapping for your own export (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. --set storage.root=/tmp/lake (repeatable)")


def parse_overrides(pairs: Sequence[str]) -> dict[str, object]:
    """``--set KEY=VALUE`` pairs as overrides; a value in YAML flow style (``[a, b]``, ``{k: v}``) is a list/map.

    Other values stay strings: the typed config converts them (``"16"`` -> 16) and reports a bad one
    with its key.

    >>> parse_overrides(["storage.root=/tmp/lake", "analyses.baskets.segments=[channel, region]"])
    {'storage.root': '/tmp/lake', 'analyses.baskets.segments': ['channel', 'region']}
    """
    import yaml

    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise CpbiError(f"--set expects KEY=VALUE, got {pair!r}")
        text = value.strip()
        if text[:1] in "[{" and text[-1:] in "]}":
            try:
                out[key.strip()] = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise CpbiError(f"--set {key.strip()}: {text!r} is not a YAML list or map: "
                                f"{str(exc).splitlines()[0]}") from exc
            continue
        out[key.strip()] = value
    return out


def _load(args: argparse.Namespace):
    from cpbi_spark.config import load_config

    return load_config(conf_dir=args.conf_dir, env=args.env, extra_files=args.source,
                       overrides=parse_overrides(args.set))


def _context(args: argparse.Namespace, full_refresh: bool = False, tracked: bool = False):
    from cpbi_spark.runtime import RunContext

    return RunContext.create(env=args.env, conf_dir=args.conf_dir, extra_files=args.source,
                             overrides=parse_overrides(args.set), full_refresh=full_refresh, tracked=tracked)


def cmd_generate(args: argparse.Namespace) -> int:
    from cpbi_spark.synth import generate

    try:
        manifest = generate(args.out, scale=args.scale, seed=args.seed, batch=args.batch, progress=print,
                            batch_fraction=args.batch_fraction)
    except ValueError as exc:  # e.g. the folder holds a batch made with other parameters
        raise CpbiError(str(exc)) from exc
    counts = manifest.get("row_counts") or manifest.get("counts") or {}
    print(f"wrote landing files under {Path(args.out).resolve()}/landing and the manifest of planted truths")
    if counts:
        print(json.dumps(counts, indent=2, default=str)[:2000])
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    cfg = _load(args)
    if args.action == "validate":
        print(f"configuration OK: env={cfg.env}, {len(cfg.tables)} tables, {len(cfg.sources)} sources "
              f"(conf dir {cfg.conf_dir})")
    else:
        import yaml

        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False, width=120))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from cpbi_spark.pipeline import PIPELINE, all_stage_names, format_table_summary, run_stages, table_summary
    from cpbi_spark.tracking import tracked_run

    names = all_stage_names()
    # "pipeline" = bronze, silver, gold; "all" = the pipeline and every analysis; "a,b" = those, in that order.
    stages: list[str] = []
    for word in filter(None, (w.strip() for w in args.stage.split(","))):
        if word not in ("all", "pipeline") and word not in names:
            raise CpbiError(f"unknown stage {word!r}; choose one of: all, pipeline, {', '.join(names)}")
        stages += names if word == "all" else list(PIPELINE) if word == "pipeline" else [word]
    stages = list(dict.fromkeys(stages))  # "pipeline,all" runs each stage once
    if not stages:
        raise CpbiError("no stage given; choose one of: all, pipeline, " + ", ".join(names))
    ctx = _context(args, full_refresh=args.full_refresh, tracked=True)
    print(f"cpbi run {args.stage}: env={ctx.config.env}, run_id={ctx.run_id}, engine={ctx.lake.engine.name}")
    print(f"  landing: {ctx.config.storage.landing}\n  lakehouse: {ctx.config.storage.root}")
    with tracked_run(ctx.config, f"pipeline-{args.stage}", params={
            "env": ctx.config.env, "run_id": ctx.run_id, "stages": ",".join(stages),
            "engine": ctx.lake.engine.name, "full_refresh": args.full_refresh}) as run:
        import mlflow

        results = run_stages(ctx, stages, progress=print)
        for r in results:
            mlflow.log_metric(f"{r.stage}_seconds", r.counters.get("seconds", 0))
            for table, rows in r.tables.items():
                mlflow.log_metric(f"{r.stage}.{table}.rows_changed", rows)
        mlflow.log_dict({r.stage: {"tables": r.tables, "counters": r.counters} for r in results},
                        "stage_results.json")
        run_id = run.info.run_id
    if len(stages) > 1 or args.summary:
        print("\nTables (rows, Delta version):")
        print(format_table_summary(table_summary(ctx)))
    from cpbi_spark.tracking import tracking_uri

    print(f"\nOutputs:\n  lakehouse tables: {ctx.config.storage.root}\n  run outputs:      {ctx.config.storage.outputs}"
          f"\n  MLflow run {run_id} in {tracking_uri(ctx.config)}")
    return 0


def cmd_tables(args: argparse.Namespace) -> int:
    from cpbi_spark.pipeline import format_table_summary, table_summary

    ctx = _context(args)
    print(format_table_summary(table_summary(ctx, args.layer or None)))
    return 0


def cmd_maintain(args: argparse.Namespace) -> int:
    from cpbi_spark.errors import PipelineError
    from cpbi_spark.lakehouse.maintenance import maintain_tables, upkeep_result, upkeep_summary

    ctx = _context(args)
    m = ctx.config.maintenance
    what = "dry run: nothing is changed" if args.dry_run else (
        f"compact at {m.min_small_files}+ files under {m.target_file_mb // 2} MB"
        + (f", vacuum files older than {m.retention_hours} h" if m.vacuum else ", no vacuum"))
    print(f"cpbi maintain: env={ctx.config.env}, engine={ctx.lake.engine.name} ({what})")
    if args.dry_run:  # changes nothing, so there is nothing to record either
        outcomes = maintain_tables(ctx, args.table or None, dry_run=True, progress=print)
    else:  # recorded like a stage: job run, commits, logs, cost, and the compacted tables' data quality
        from cpbi_spark.pipeline import observed

        outcomes = []

        def work():
            outcomes.extend(maintain_tables(ctx, args.table or None, progress=print))
            lost = [u.table for u in outcomes if u.error]
            if lost:  # after every other table is done; recorded as a failed run with its incident
                raise PipelineError(f"maintain: {len(lost)} table(s) not compacted, each lost against a "
                                    f"concurrent commit (run it when no job writes): {', '.join(lost)}; "
                                    f"{upkeep_summary(outcomes)}")
            return upkeep_result(outcomes)

        observed(ctx, "maintain", work)
    print(upkeep_summary(outcomes, dry_run=args.dry_run))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from cpbi_spark.platform.status import format_status, run_status

    print(format_status(run_status(_context(args), last=args.last)))
    return 0


def _print_query(ctx, query: str, role: str, limit: int, out: str | None) -> None:
    from cpbi_spark.sql import run_sql

    df = run_sql(ctx, query, role)
    if out:
        rows = df.toPandas()
        rows.to_csv(out, index=False)
        print(f"{len(rows):,} row(s) written to {out}")
    else:
        df.show(limit, truncate=60)


def cmd_sql(args: argparse.Namespace) -> int:
    from cpbi_spark.errors import AccessDenied

    ctx = _context(args)
    if args.query:
        _print_query(ctx, args.query, args.role, args.limit, args.out)
        return 0
    # Interactive: statements end with ';'; 'exit' (or Ctrl-D) leaves.
    print(f"cpbi sql as role {args.role!r}: tables are registered under their names when a query names them. "
          "End statements with ';', leave with 'exit' or Ctrl-D.")
    buffer: list[str] = []
    while True:
        try:
            line = input("cpbi> " if not buffer else "  ... ")
        except EOFError:
            return 0
        except KeyboardInterrupt:  # Ctrl-C drops the statement being typed
            print()
            buffer = []
            continue
        if not buffer and line.strip().lower() in ("exit", "quit", "\\q"):
            return 0
        buffer.append(line)
        if line.rstrip().endswith(";"):
            query = "\n".join(buffer).rstrip().rstrip(";")
            buffer = []
            try:
                _print_query(ctx, query, args.role, args.limit, None)
            except AccessDenied as exc:
                print(f"error: {exc}")
            except Exception as exc:  # a typo in one statement must not end the session
                message = str(exc).strip()
                print(f"error: {message.splitlines()[0] if message else type(exc).__name__}")


def cmd_mapping(args: argparse.Namespace) -> int:
    from cpbi_spark.ingest.suggest import suggest_mapping

    path = Path(args.file)
    if not path.is_file():
        raise CpbiError(f"mapping suggest: {path} is not a file")
    found = suggest_mapping(path, sample_rows=args.rows, encoding=args.encoding)
    text = found.to_yaml(args.name or re.sub(r"[^a-z0-9_]+", "_", path.stem.lower()).strip("_") or "my_export")
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"mapping written to {args.out}: review it, then `cpbi config validate --source {args.out}`")
    else:
        print(text, end="")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from cpbi_spark.report import write_report

    ctx = _context(args)
    path = write_report(ctx, Path(args.out) if args.out else None, role=args.role)
    print(f"report: {path}")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from cpbi_spark.dashboard.launch import launch

    return launch(args)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cpbi", description="Customer Purchase Behavior Insights")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write a synthetic retailer's landing files and manifest")
    g.add_argument("--scale", type=float, default=1.0, help="1 = ~100k transaction lines")
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--batch", type=int, default=1, help="1 = history; 2 = a later delivery with changes")
    g.add_argument("--batch-fraction", type=float, default=None, metavar="F",
                   help="with --batch 2: deliver only about F x the history's lines (e.g. 0.01 for a 1%% "
                        "incremental batch), plus the batch's customer, product, store and rate changes")
    g.add_argument("--out", required=True, help="output folder (landing files go to OUT/landing)")
    g.set_defaults(func=cmd_generate)

    c = sub.add_parser("config", help="validate or show the configuration")
    c.add_argument("action", choices=["validate", "show"])
    _common(c)
    c.set_defaults(func=cmd_config)

    r = sub.add_parser("run", help="run pipeline stages")
    r.add_argument("stage", help="bronze, silver, gold, an analysis (baskets, cohorts, ...), "
                                 "pipeline (the three stages), all, or a comma-separated list such as silver,gold")
    r.add_argument("--full-refresh", action="store_true",
                   help="reprocess every bronze batch in silver and recompute all of gold")
    r.add_argument("--summary", action="store_true", help="print every table's rows after the run")
    _common(r)
    r.set_defaults(func=cmd_run)

    t = sub.add_parser("tables", help="list tables with row counts and versions")
    t.add_argument("--layer", action="append", default=[])
    _common(t)
    t.set_defaults(func=cmd_tables)

    mt = sub.add_parser("maintain", help="compact small files and vacuum unused ones (a scheduled job; "
                                         "settings: maintenance in the conf)")
    mt.add_argument("--table", action="append", default=[], help="only this table (repeatable); default: "
                                                                 "every table of maintenance.layers")
    mt.add_argument("--dry-run", action="store_true", help="report what would be compacted and deleted, change nothing")
    _common(mt)
    mt.set_defaults(func=cmd_maintain)

    st = sub.add_parser("status", help="the last runs: stages, rows, data quality, cost, incidents")
    st.add_argument("--last", type=_positive_int, default=5, help="how many runs (newest first)")
    _common(st)
    st.set_defaults(func=cmd_status)

    q = sub.add_parser("sql", help="Spark SQL over the tables, read as an access role (interactive without QUERY)")
    q.add_argument("query", nargs="?", help='e.g. "SELECT channel, count(*) FROM fact_transactions GROUP BY 1"')
    q.add_argument("--role", default="analyst", help="access role of platform.roles (default analyst)")
    q.add_argument("--limit", type=int, default=20, help="rows shown (default 20)")
    q.add_argument("--out", metavar="FILE.csv", help="write the whole result as CSV instead of showing it")
    _common(q)
    q.set_defaults(func=cmd_sql)

    mp = sub.add_parser("mapping", help="suggest a source mapping for your own CSV export (review it before use)")
    mp_sub = mp.add_subparsers(dest="mapping_command", required=True)
    ms = mp_sub.add_parser("suggest", help="guess canonical columns, timestamp pattern and returns from a CSV file")
    ms.add_argument("file", help="one CSV file of the export (its header and first rows are read)")
    ms.add_argument("--out", help="write the mapping here (default: print it)")
    ms.add_argument("--name", help="mapping name (default: from the file name)")
    ms.add_argument("--rows", type=int, default=2000, help="rows sampled for the guesses (default 2000)")
    ms.add_argument("--encoding", default="utf-8", help="file encoding (default utf-8)")
    ms.set_defaults(func=cmd_mapping)

    rp = sub.add_parser("report", help="write the insight report (one self-contained HTML file) and print its path")
    rp.add_argument("--out", help="output folder (default <storage.outputs>/report)")
    # engineer: the data-health section needs the platform records; PII stays masked for this role
    rp.add_argument("--role", default="engineer", help="access role the report reads as (default engineer)")
    _common(rp)
    rp.set_defaults(func=cmd_report)

    d = sub.add_parser("dashboard", help="serve the interactive dashboard over the gold and insight tables")
    d.add_argument("--role", default="analyst", help="access role the dashboard reads as (default analyst)")
    d.add_argument("--port", type=int, default=8501)
    d.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 to share on the network)")
    d.add_argument("--headless", action="store_true", help="do not open a browser")
    _common(d)
    d.set_defaults(func=cmd_dashboard)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("py4j", "mlflow", "alembic", "urllib3", "great_expectations"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.func(args)
    except CpbiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def submit(stage: str, argv: Sequence[str], command: str = "run") -> int:
    """Entry point of the ``jobs/*.py`` files run by ``spark-submit``: ``cpbi run <stage> ARGS``.

    ``--stages a,b`` in ``argv`` replaces ``stage``. Another ``command`` runs ``cpbi <command> ARGS``
    (``jobs/maintain_tables.py``: ``maintain``; ``stage`` is then unused). The job owns its Spark application, so the
    session is stopped before the process exits: executors of a cluster are released cleanly
    instead of being killed by the JVM's shutdown hooks.

    Example (``jobs/ingest_bronze.py``)::

        sys.exit(submit("bronze", sys.argv[1:]))
    """
    args = list(argv)
    for at, arg in enumerate(args if command == "run" else []):
        if arg.startswith("--stages="):
            stage = arg.partition("=")[2]
            del args[at]
            break
        if arg == "--stages":
            if at + 1 >= len(args):
                print("error: --stages expects a comma-separated list, e.g. --stages bronze,silver,gold",
                      file=sys.stderr)
                return 2
            stage = args[at + 1]
            del args[at:at + 2]
            break
    try:
        return main(["run", stage, *args] if command == "run" else [command, *args])
    finally:
        from pyspark.sql import SparkSession

        active = SparkSession.getActiveSession()
        if active is not None:
            active.stop()


if __name__ == "__main__":
    sys.exit(main())
