"""landing -> bronze: append every new landing file as received, with lineage columns.

Bronze is append-only. A file whose sha256 is already in the bronze table is never landed
again (idempotent by checksum, so a rerun changes nothing), and a file the mapping cannot
read is rejected with its reason in ``audit_ingest`` instead of being half-landed. Rows the
parser could not split keep their raw text in ``_corrupt_record``; silver quarantines them.

Bronze columns: the mapped file columns as strings (named as in the file), ``_extra_columns``,
``_corrupt_record``, ``_source_file``, ``_source_sha256``, ``_batch_id``, ``_ingested_at``,
``_record_hash`` (sha256 of the received values) and ``_record_id`` (unique per row).

Example:
    >>> result = run_bronze(ctx)                  # doctest: +SKIP
    >>> result.tables
    {'raw_transactions': 100512, 'raw_customers': 6120, ...}
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING
from urllib.parse import unquote

from cpbi_spark.errors import IngestError
from cpbi_spark.ingest.files import LandingFile, list_landing_files
from cpbi_spark.ingest.readers import CORRUPT, EXTRA, SOURCE_FILE, read_source_files, safe_name
from cpbi_spark.runtime import StageResult

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

    from cpbi_spark.config.models import SourceConfig
    from cpbi_spark.runtime import RunContext

_SCHEME = r"^([A-Za-z][A-Za-z0-9+.-]*:)?/*"
LEDGER = "audit_ingest"


def path_key(uri: str) -> str:
    """A file's path without scheme and leading slashes, so Spark's and pyarrow's spellings agree."""
    return re.sub(_SCHEME, "", unquote(uri))


def path_key_col(col: Column) -> Column:
    from pyspark.sql import functions as F

    return F.regexp_replace(F.url_decode(col), _SCHEME, "")


def record_hash(columns: list[str]) -> Column:
    """sha256 over the received values; a null and an empty string hash differently."""
    from pyspark.sql import functions as F

    parts = [F.coalesce(F.col(f"`{c}`"), F.lit("\u0000")) for c in columns]
    return F.sha2(F.concat_ws("\u001f", *parts), 256)


def with_lineage(frame: DataFrame, files: list[LandingFile], batch_id: str, ingested_at) -> DataFrame:
    """Add the bronze lineage columns (pure: the file -> sha256 map comes from the caller)."""
    from pyspark.sql import functions as F

    sha_map = F.create_map(*[x for f in files for x in (F.lit(path_key(f.uri)), F.lit(f.sha256))])
    value_cols = [c for c in frame.columns if c != SOURCE_FILE]
    return (frame
            .withColumn("_source_sha256", sha_map[path_key_col(F.col(SOURCE_FILE))])
            .withColumn("_batch_id", F.lit(batch_id))
            .withColumn("_ingested_at", F.lit(ingested_at).cast("timestamp"))
            .withColumn("_record_hash", record_hash(value_cols))
            .withColumn("_record_id",
                        F.concat_ws("-", F.lit(batch_id), F.monotonically_increasing_id().cast("string"))))


# The commit tag under which a bronze append records the sha256 of the files it landed (a JSON list).
LANDED_TAG = "landed_sha256"
# Each landing commit also records its batch id (the run id every row of it carries in ``_batch_id``), so
# silver finds the batches it has not processed from the commit log (see silver.stage.pending_batches).
BATCH_TAG = "batch_id"


def landed_checksums(ctx: RunContext, bronze_tables: list[str]) -> dict[str, set[str]]:
    """Per bronze table, the sha256 of every file already in it (bronze itself is the truth).

    Each landing commit records its files' checksums in its own metadata (:data:`LANDED_TAG`), so
    they are read from the commit log without a Spark job. A table whose log cannot answer for all
    of its rows (landed before the tag existed, written by other means, log cleaned up) is scanned
    instead: all of those in one Spark job (:meth:`Lakehouse.logged_values`).
    """
    return ctx.lake.logged_values({t: t for t in bronze_tables}, "_source_sha256", LANDED_TAG)


# Up to this many files landed at once are counted while they are written (two aggregates each); more are
# counted by reading the batch back (one grouped Spark job).
OBSERVED_FILES_MAX = 200


def observe_file_counts(frame: DataFrame, files: list[LandingFile]) -> tuple[DataFrame, object | None]:
    """``frame`` with per-file rows and corrupt rows observed (Spark's ``Observation``), and the observation.

    The counts are collected by the action that writes the frame, so the ledger's counts cost no Spark
    job of their own (before, the batch was read back from the bronze table and grouped). The observation
    is None, and ``frame`` unchanged, when there are more than :data:`OBSERVED_FILES_MAX` files.

    Example:
        >>> frame, obs = observe_file_counts(frame, files)          # doctest: +SKIP
        >>> lake.append("raw_transactions", frame); observed_file_counts(obs, files)  # doctest: +SKIP
        {'9f2c...': (5083, 12)}
    """
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    if not files or len(files) > OBSERVED_FILES_MAX:
        return frame, None
    observation = Observation(f"cpbi-landed-{files[0].sha256[:12]}")
    aggregates = []
    for i, f in enumerate(files):
        mine = F.col("_source_sha256") == F.lit(f.sha256)
        aggregates += [F.count_if(mine).alias(f"n{i}"), F.count_if(mine & F.col(CORRUPT).isNotNull()).alias(f"bad{i}")]
    return frame.observe(observation, *aggregates), observation


def observed_file_counts(observation, files: list[LandingFile]) -> dict[str, tuple[int, int]]:
    """sha256 -> (rows, corrupt rows) from :func:`observe_file_counts`'s observation, once the frame was written.

    Only call it after an action ran over the observed frame: Spark waits for one otherwise.
    """
    got = observation.get
    return {f.sha256: (int(got[f"n{i}"]), int(got[f"bad{i}"])) for i, f in enumerate(files)}


def land_source(ctx: RunContext, name: str, source: SourceConfig, done: set[str]) -> tuple[int, list[dict]]:
    """Land the new files of one source (``done``: checksums of files already landed); return (rows
    landed, ledger rows)."""
    from pyspark.sql import functions as F

    files = list_landing_files(ctx.config.storage.landing, source.path)
    new: list[LandingFile] = []
    ledger: list[dict] = []
    seen: set[str] = set()
    for f in files:
        if f.sha256 in done:
            continue
        if f.sha256 in seen:  # the same bytes under two names: land once, record the copy
            ledger.append(_ledger_row(ctx, name, f, "duplicate_file", "same content as another file in this batch"))
            continue
        seen.add(f.sha256)
        new.append(f)
    if not files and source.required:
        ctx.log.warning("source %s: no file matches %s under %s", name, source.path, ctx.config.storage.landing)
    if not new:
        return 0, ledger
    ctx.log.info("source %s: landing %d new file(s)", name, len(new))
    outcome = read_source_files(ctx.spark, source, new)
    accepted = [f for f in new if f.uri not in outcome.rejected]
    for f in new:
        if f.uri in outcome.rejected:
            ledger.append(_ledger_row(ctx, name, f, "rejected", outcome.rejected[f.uri]))
    rows = 0
    if outcome.frame is not None and accepted:
        frame = with_lineage(outcome.frame, accepted, ctx.run_id, ctx.started_at)
        frame, observation = observe_file_counts(frame, accepted)
        # The checksums commit with the rows: a file is never landed twice (see landed_checksums).
        info = ctx.lake.append(source.bronze_table, frame,
                               tags={LANDED_TAG: json.dumps(sorted({f.sha256 for f in accepted})),
                                     BATCH_TAG: json.dumps([ctx.run_id])})
        if observation is not None and info.changed:  # the write ran over the frame: its counts are in
            counts = observed_file_counts(observation, accepted)
        else:  # read back what this batch landed
            counts = {r["_source_sha256"]: (r["n"], r["bad"]) for r in (
                ctx.lake.read(source.bronze_table).filter(F.col("_batch_id") == ctx.run_id)
                .groupBy("_source_sha256")
                .agg(F.count(F.lit(1)).alias("n"), F.count(CORRUPT).alias("bad")).collect())}
        for f in accepted:
            n, bad = counts.get(f.sha256, (0, 0))
            rows += n
            drift = outcome.drift.get(f.uri)
            reason = f"new columns kept in {EXTRA}: {drift}" if drift else None
            ledger.append(_ledger_row(ctx, name, f, "landed", reason, rows=n, corrupt=bad))
    return rows, ledger


def _ledger_row(ctx: RunContext, source: str, f: LandingFile, status: str, reason: str | None,
                rows: int = 0, corrupt: int = 0) -> dict:
    return {"source": source, "sha256": f.sha256, "file_uri": f.uri, "file_name": f.name, "bytes": f.size,
            "batch_id": ctx.run_id, "status": status, "reason": reason, "rows_landed": rows,
            "corrupt_rows": corrupt, "ingested_at": ctx.started_at}


def write_ledger(ctx: RunContext, rows: list[dict]) -> None:
    """Upsert the per-file ledger; an unchanged rejection on rerun writes nothing.

    The ledger is small and read without a Spark job: rows for files it does not hold yet (every
    landing of new files) are appended as records; only a file whose entry changed (a rejected file
    landed after a fix of its mapping) needs the MERGE, a few Spark jobs.
    """
    from cpbi_spark.lakehouse.merge_spec import MergeSpec, changed_condition

    if not rows:
        return
    held = {(r["source"], r["sha256"]): r for r in ctx.lake.read_records(LEDGER)} if ctx.lake.exists(LEDGER) else {}
    fields = ("status", "reason", "rows_landed")  # compared here and by the MERGE below
    changed = [r for r in rows if (r["source"], r["sha256"]) in held
               and any(held[(r["source"], r["sha256"])][f] != r[f] for f in fields)]
    new = [r for r in rows if (r["source"], r["sha256"]) not in held]
    if not changed:
        if new:
            ctx.lake.append_records(LEDGER, new)
        return
    df = ctx.lake.frame(LEDGER, rows)
    spec = MergeSpec.upsert(["source", "sha256"], only_if_changed=changed_condition(fields))
    ctx.lake.merge(LEDGER, df, spec)


def run_bronze(ctx: RunContext, sources: list[str] | None = None) -> StageResult:
    """Land every configured source (or the named ones); raise after landing if files were rejected."""
    result = StageResult("bronze")
    ledger: list[dict] = []
    chosen = {n: s for n, s in sorted(ctx.config.sources.items()) if not sources or n in sources}
    done = landed_checksums(ctx, [s.bronze_table for s in chosen.values()])
    for name, source in chosen.items():
        rows, entries = land_source(ctx, name, source, done[source.bronze_table])
        # Two sources may share a bronze table: what one landed is landed for the next.
        done[source.bronze_table] |= {e["sha256"] for e in entries if e["status"] == "landed"}
        ledger += entries
        if rows:
            result.tables[source.bronze_table] = rows
    write_ledger(ctx, ledger)
    rejected = [e for e in ledger if e["status"] == "rejected"]
    result.counters["files_landed"] = sum(e["status"] == "landed" for e in ledger)
    result.counters["files_rejected"] = len(rejected)
    if rejected:
        detail = "\n".join(f"  - {e['source']}: {e['file_uri']}: {e['reason']}" for e in rejected)
        raise IngestError(f"{len(rejected)} landing file(s) rejected (the other files were landed; "
                          f"see table {LEDGER}):\n{detail}")
    return result


__all__ = ["run_bronze", "safe_name", "with_lineage"]
