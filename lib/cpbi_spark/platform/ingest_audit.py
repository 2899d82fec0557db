"""Source A (ingest & landing): what landed, what was rejected, where and why - from bronze and its ledger.

Everything here is derived after the stage from the tables the stages already write (bronze rows with
their lineage columns, the ``audit_ingest`` ledger, ``stage_quarantine``) and from the landing files
themselves (headers, modification times, line positions), so ingestion code needs no extra hooks.

The position of a rejected record (:func:`locate_records`) is found by reading its landing file again:
a malformed line by its text (kept in ``_corrupt_record``), any other record by its record key and
its occurrence among the file's records with that key.

Example:
    >>> text = "id,v\\n1,a\\n2\\n1,b\\n"
    >>> locate_records(text, "csv", ["id"], [("r1", ("1",), None, 2), ("r2", None, "2", 1)])
    {'r1': (4, 3), 'r2': (3, 2)}
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import defaultdict
from datetime import datetime
from typing import TYPE_CHECKING

from cpbi_spark.ingest.readers import safe_name

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from pyspark.sql import DataFrame

    from cpbi_spark.config.models import SourceConfig
    from cpbi_spark.platform.store import PlatformStore
    from cpbi_spark.runtime import RunContext

FILE_TYPES: dict[str, dict[str, str]] = {
    "csv": {"extension": ".csv", "header": "first line names the columns",
            "corrupt_detection": "a line with another number of fields than the header (kept in _corrupt_record)",
            "drift_detection": "header compared with the mapping before reading",
            "description": "delimited text, read as strings"},
    "jsonl": {"extension": ".jsonl", "header": "none: keys per line",
              "corrupt_detection": "a line that is not a JSON object (kept in _corrupt_record)",
              "drift_detection": "keys of every line compared with the mapping",
              "description": "one JSON object per line"},
    "parquet": {"extension": ".parquet", "header": "schema in the file footer",
                "corrupt_detection": "an unreadable footer rejects the file",
                "drift_detection": "footer schema compared with the mapping",
                "description": "columnar files, values cast to strings in bronze"},
    "basket_lines": {"extension": ".txt", "header": "none: one basket per line",
                     "corrupt_detection": "an empty or unparsable basket line",
                     "drift_detection": "not applicable (one column)",
                     "description": "one basket (comma separated items) per line"},
}


def file_columns(source: SourceConfig) -> list[str]:
    """The file columns a mapping reads (canonical mapping values, then discounts and attributes if any)."""
    getter = getattr(source, "file_columns", None)
    return list(getter()) if callable(getter) else list(dict.fromkeys(source.columns.values()))


def key_file_columns(source: SourceConfig) -> list[str]:
    return [source.columns[k] for k in source.record_key if k in source.columns]


def _key_expr(source: SourceConfig):
    from pyspark.sql import functions as F

    cols = [F.col(f"`{safe_name(c)}`") for c in key_file_columns(source)]
    if not cols:
        return F.lit(None).cast("string")
    key = F.concat_ws("|", *[F.coalesce(c, F.lit("")) for c in cols])
    return F.when(F.length(F.regexp_replace(key, r"\|", "")) > 0, key)


def _ordinal(record_id_col):
    """The numeric part of ``_record_id`` (``<batch>-<monotonic id>``): file order within a batch."""
    from pyspark.sql import functions as F

    return F.regexp_extract(record_id_col, r"-(\d+)$", 1).cast("long")


# ---------------------------------------------------------------------------------------------- raw events
def raw_events(ctx: RunContext, store: PlatformStore, batch_id: str) -> DataFrame | None:
    """``fact_raw_events`` of one bronze batch: every landed record of every source."""
    from pyspark.sql import functions as F

    from cpbi_spark.silver.parse import parse_timestamp

    frames = []
    for name, source in sorted(ctx.config.sources.items()):
        if not store.lake.exists(source.bronze_table):
            continue
        bronze = store.lake.read(source.bronze_table).filter(F.col("_batch_id") == batch_id)
        event_col = ctx.config.platform.event_time.get(name)
        file_col = source.columns.get(event_col) if event_col else None
        if file_col and safe_name(file_col) in bronze.columns:
            event = parse_timestamp(F.col(f"`{safe_name(file_col)}`"), source.timestamp_format, source.timezone)
        else:
            event = F.lit(None).cast("timestamp")
        frames.append(bronze.select(
            F.lit(name).alias("source"), F.col("_record_id").alias("record_id"), F.col("_batch_id").alias("batch_id"),
            F.lit(ctx.run_id).alias("run_id"), F.col("_source_sha256").alias("file_sha256"),
            F.regexp_extract("_source_file", r"([^/]+)$", 1).alias("file_name"), _key_expr(source).alias("record_key"),
            F.col("_record_hash").alias("payload_sha256"), event.alias("event_ts"),
            F.to_date(event).alias("event_date"), F.col("_corrupt_record").isNotNull().alias("is_corrupt"),
            F.col("_ingested_at").alias("ingested_at")))
    if not frames:
        return None
    out = frames[0]
    for f in frames[1:]:
        out = out.unionByName(f)
    return out


def event_counts(events: DataFrame) -> DataFrame:
    """``fact_event_counts``: records per source, batch and event date (pure)."""
    from pyspark.sql import functions as F

    return events.groupBy("source", "batch_id", "event_date").agg(
        F.count(F.lit(1)).alias("records"), F.sum(F.col("is_corrupt").cast("long")).alias("corrupt_records"),
        F.min("event_ts").alias("first_event_ts"), F.max("event_ts").alias("last_event_ts"),
        F.first("run_id").alias("run_id"))


def duplicate_keys(events: DataFrame) -> DataFrame:
    """``stage_duplicate_keys``: record keys landed more than once in a batch (pure)."""
    from pyspark.sql import functions as F

    return (events.filter(F.col("record_key").isNotNull())
            .groupBy("source", "batch_id", "record_key")
            .agg(F.count(F.lit(1)).alias("occurrences"), F.countDistinct("payload_sha256").alias("distinct_payloads"),
                 F.first("run_id").alias("run_id"))
            .filter(F.col("occurrences") > 1)
            .withColumn("kind", F.when(F.col("distinct_payloads") == 1, "exact_repeat").otherwise("conflicting")))


# ---------------------------------------------------------------------------------------------- ledger-based
def volume_rows(ledger: list[dict], batch_id: str) -> tuple[list[dict], list[dict]]:
    """(``fact_source_volumes``, ``dim_batch``) rows of one batch from its ledger rows (pure)."""
    by_source: dict[str, list[dict]] = defaultdict(list)
    for e in ledger:
        by_source[e["source"]].append(e)
    volumes = []
    for source, entries in sorted(by_source.items()):
        landed = [e for e in entries if e["status"] == "landed"]
        volumes.append({"source": source, "batch_id": batch_id, "run_id": batch_id, "files": len(landed),
                        "rows": sum(e["rows_landed"] or 0 for e in landed),
                        "bytes": sum(e["bytes"] or 0 for e in landed),
                        "corrupt_rows": sum(e["corrupt_rows"] or 0 for e in landed),
                        "rejected_files": sum(e["status"] == "rejected" for e in entries),
                        "landed_ts": min(e["ingested_at"] for e in entries)})
    batch = []
    if ledger:
        landed = [e for e in ledger if e["status"] == "landed"]
        batch.append({"batch_id": batch_id, "run_id": batch_id, "started_ts": min(e["ingested_at"] for e in ledger),
                      "sources": ",".join(sorted(by_source)), "files_landed": len(landed),
                      "files_rejected": sum(e["status"] == "rejected" for e in ledger),
                      "files_duplicate": sum(e["status"] == "duplicate_file" for e in ledger),
                      "rows_landed": sum(e["rows_landed"] or 0 for e in landed),
                      "corrupt_rows": sum(e["corrupt_rows"] or 0 for e in landed),
                      "bytes_landed": sum(e["bytes"] or 0 for e in landed)})
    return volumes, batch


def _mtime(uri: str) -> datetime | None:
    from cpbi_spark.ingest.files import _filesystem

    try:
        filesystem, path = _filesystem(uri)
        return filesystem.get_file_info(path).mtime
    except Exception:  # the file may be gone (moved after landing): no arrival time then
        return None


def latency_rows(ledger: list[dict]) -> list[dict]:
    """``fact_ingest_latency`` of the landed files (arrival = file modification time)."""
    rows = []
    for e in ledger:
        if e["status"] != "landed":
            continue
        modified = _mtime(e["file_uri"])
        landed = e["ingested_at"]
        latency = None
        if modified is not None:
            latency = (landed.replace(tzinfo=None) - modified.replace(tzinfo=None)).total_seconds()
        rows.append({"source": e["source"], "file_sha256": e["sha256"], "file_name": e["file_name"],
                     "modified_ts": modified, "landed_ts": landed, "latency_seconds": latency,
                     "batch_id": e["batch_id"]})
    return rows


def arrival_rows(ctx: RunContext, ledger_all: list[dict], now: datetime) -> list[dict]:
    """``fact_file_arrivals``: every file now in the landing area and what this run's bronze did with it."""
    from cpbi_spark.ingest.files import list_landing_files

    this_batch = {(e["source"], e["file_uri"]): e["status"] for e in ledger_all if e["batch_id"] == ctx.run_id}
    earlier = {(e["source"], e["sha256"]) for e in ledger_all
               if e["batch_id"] != ctx.run_id and e["status"] == "landed"}
    rows = []
    for name, source in sorted(ctx.config.sources.items()):
        for f in list_landing_files(ctx.config.storage.landing, source.path):
            status = this_batch.get((name, f.uri))
            if status is None:
                status = "already_landed" if (name, f.sha256) in earlier else "pending"
            rows.append({"run_id": ctx.run_id, "source": name, "file_path": f.uri, "file_name": f.name,
                         "file_sha256": f.sha256, "bytes": f.size, "modified_ts": _mtime(f.uri), "action": status,
                         "seen_ts": now})
    return rows


# ---------------------------------------------------------------------------------------------- schema drift
def file_header(spark, source: SourceConfig, uri: str) -> list[str] | None:
    """The column names a landing file carries (CSV header, JSON keys of every line, parquet schema)."""
    from cpbi_spark.ingest.files import _filesystem, read_first_line

    try:
        if source.format == "csv":
            opts = {k.lower(): v for k, v in source.options.items()}
            line = read_first_line(uri, opts.get("encoding", "utf-8"))
            row = next(csv.reader(io.StringIO(line), delimiter=opts.get("delimiter", opts.get("sep", ",")),
                                  quotechar=opts.get("quote", '"')), [])
            return [h.strip() for h in row]
        if source.format == "parquet":
            import pyarrow.parquet as pq

            filesystem, path = _filesystem(uri)
            with filesystem.open_input_file(path) as fh:
                return list(pq.read_schema(fh).names)
        if source.format == "jsonl":
            from pyspark.sql import functions as F

            keys = (spark.read.text(uri).filter(F.trim("value") != "")
                    .select(F.explode(F.map_keys(F.from_json("value", "map<string,string>"))).alias("k"))
                    .distinct().collect())
            mapped = file_columns(source)
            found = {r["k"] for r in keys}
            return [c for c in mapped if c in found] + sorted(found - set(mapped))
    except Exception:  # unreadable file: the ledger already says why it was rejected
        return None
    return None


def schema_id(columns: list[str]) -> str:
    return hashlib.sha256(json.dumps(sorted(columns)).encode()).hexdigest()[:12]


def drift_rows(ctx: RunContext, ledger: list[dict], known: list[dict], now: datetime) -> tuple[list[dict], list[dict]]:
    """(new ``dim_schema_version`` rows, ``audit_schema_drift`` rows) for the files of this batch's ledger."""
    versions, drift = [], []
    next_version: dict[str, int] = defaultdict(int)
    seen = {(k["source"], k["schema_id"]) for k in known}
    for k in known:
        next_version[k["source"]] = max(next_version[k["source"]], k["version"])
    for e in sorted(ledger, key=lambda e: (e["source"], e["file_uri"])):
        if e["status"] not in ("landed", "rejected") or e["source"] not in ctx.config.sources:
            continue
        source = ctx.config.sources[e["source"]]
        header = file_header(ctx.spark, source, e["file_uri"])
        if not header:
            continue
        mapped = file_columns(source)
        new = [c for c in header if c not in mapped]
        sid = schema_id(header)
        if (e["source"], sid) not in seen:
            seen.add((e["source"], sid))
            next_version[e["source"]] += 1
            status = "baseline" if not new else ("rejected" if e["status"] == "rejected" else "evolved")
            versions.append({"source": e["source"], "schema_id": sid, "version": next_version[e["source"]],
                             "columns_json": json.dumps(header), "column_count": len(header),
                             "new_columns": ",".join(new) or None, "status": status, "policy": source.on_new_columns,
                             "first_seen_batch": e["batch_id"], "first_seen_file": e["file_name"],
                             "first_seen_ts": now})
        for column in new:
            drift.append({"source": e["source"], "file_sha256": e["sha256"], "file_name": e["file_name"],
                          "column_name": column, "policy": source.on_new_columns,
                          "action": "file_rejected" if e["status"] == "rejected" else "kept_in_extra_columns",
                          "batch_id": e["batch_id"], "run_id": ctx.run_id, "detected_ts": now})
    return versions, drift


# ---------------------------------------------------------------------------------------------- parsing errors
def _without_bom(lines: Iterable[str]) -> Iterator[str]:
    it = iter(lines)
    first = next(it, None)
    if first is not None:
        yield first.lstrip("\ufeff")
    yield from it


def locate_records(text: str | Iterable[str], fmt: str, key_columns: list[str],
                   wanted: list[tuple[str, tuple | None, str | None, int]]) -> dict[str, tuple[int | None, int]]:
    """Line and record number of records in a landing file (pure).

    ``text``: the file's text, or its lines with their line ends (a text file opened with
    ``newline=""``), so a large file is read line by line. Only the positions of wanted texts and keys
    are kept: memory stays bounded by the number of wanted records, not by the file's size.
    ``wanted``: ``(record id, key values or None, corrupt line text or None, occurrence of the key)``;
    a corrupt text is matched to the line with that text, a key to its n-th record with that key.
    Returns ``{record id: (line number or None, record number)}`` (1-based; the CSV header is line 1).
    """
    lines = _without_bom(io.StringIO(text, newline="") if isinstance(text, str) else text)
    texts = {c.rstrip("\r") for _, _, c, _ in wanted if c is not None}
    keys = {tuple(k) for _, k, _, _ in wanted if k is not None}
    by_text: dict[str, list[tuple[int | None, int]]] = defaultdict(list)
    by_key: dict[tuple, list[tuple[int | None, int]]] = defaultdict(list)

    def seen(line_no: int, number: int, raw: str, key: tuple | None) -> None:
        raw = raw.rstrip("\r")
        if raw in texts:
            by_text[raw].append((line_no, number))
        if key is not None and key in keys:
            by_key[key].append((line_no, number))

    if fmt == "csv":
        consumed: list[str] = []  # the physical lines of the record being parsed (a quoted field may span lines)

        def tracked() -> Iterator[str]:
            for line in lines:
                consumed.append(line)
                yield line

        reader = csv.reader(tracked())
        header = [h.strip() for h in next(reader, [])]
        index = [header.index(c) if c in header else None for c in key_columns]
        consumed.clear()
        prev = reader.line_num
        for number, row in enumerate(reader, start=1):
            start, prev = prev + 1, reader.line_num
            key = tuple((row[i] or None) if i is not None and i < len(row) else None for i in index)
            seen(start, number, "\n".join(part.rstrip("\r\n") for part in consumed), key)
            consumed.clear()
    elif fmt in ("jsonl", "basket_lines"):
        number = 0
        for line_no, line in enumerate(lines, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            number += 1
            key = None
            try:
                obj = json.loads(line)
                if isinstance(obj, dict):
                    key = tuple(None if obj.get(c) is None else obj[c] if isinstance(obj[c], str) else
                                json.dumps(obj[c]) for c in key_columns)
            except ValueError:
                pass
            seen(line_no, number, line, key)
    out: dict[str, tuple[int | None, int]] = {}
    used_text: dict[str, int] = defaultdict(int)
    for record_id, key, corrupt, occurrence in wanted:
        if corrupt is not None:
            hits = by_text.get(corrupt.rstrip("\r"), [])
            if used_text[corrupt] < len(hits):
                out[record_id] = hits[used_text[corrupt]]
                used_text[corrupt] += 1
                continue
        if key is not None:
            hits = by_key.get(tuple(key), [])
            if 0 < occurrence <= len(hits):
                out[record_id] = hits[occurrence - 1]
    return out


def _parquet_positions(uri: str, key_columns: list[str], wanted) -> dict[str, tuple[int | None, int]]:
    """Record numbers of wanted keys in a parquet file, read a batch of key columns at a time."""
    import pyarrow.parquet as pq

    from cpbi_spark.ingest.files import _filesystem

    keys = {tuple(k or ()) for _, k, _, _ in wanted}
    hits: dict[tuple, list[int]] = defaultdict(list)
    filesystem, path = _filesystem(uri)
    number = 0
    with filesystem.open_input_file(path) as fh:
        for batch in pq.ParquetFile(fh).iter_batches(columns=key_columns, batch_size=65536):
            for row in zip(*[batch.column(c).to_pylist() for c in key_columns], strict=True):
                number += 1
                key = tuple(None if v is None else str(v) for v in row)
                if key in keys:
                    hits[key].append(number)
    out = {}
    for record_id, key, _corrupt, occurrence in wanted:
        found = hits.get(tuple(key or ()), [])
        if 0 < occurrence <= len(found):
            out[record_id] = (None, found[occurrence - 1])
    return out


def parsing_error_rows(ctx: RunContext, store: PlatformStore, stage: str, now: datetime) -> list[dict]:
    """``ref_parsing_errors`` of this run: the records ``stage`` quarantined, located in their files."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from cpbi_spark.ingest.files import _filesystem

    if not store.lake.exists("stage_quarantine"):
        return []
    quarantine = store.lake.read("stage_quarantine").filter(
        (F.col("run_id") == ctx.run_id) & (F.col("stage") == stage))
    rows: list[dict] = []
    with_errors = {r[0] for r in quarantine.select("source").distinct().collect()}  # one job, not one per source
    for name, source in sorted(ctx.config.sources.items()):
        if name not in with_errors or not store.lake.exists(source.bronze_table):
            continue
        rejected = quarantine.filter(F.col("source") == name).select("record_id", "reason", "detail", "batch_id")
        bronze = store.lake.read(source.bronze_table)
        key_cols = key_file_columns(source)
        keys = [F.col(f"`{safe_name(c)}`") for c in key_cols if safe_name(c) in bronze.columns]
        key = F.array(*keys) if keys else F.array().cast("array<string>")
        files = rejected.join(bronze.select(F.col("_record_id").alias("record_id"), "_source_sha256"), "record_id") \
            .select("_source_sha256").distinct()
        w = Window.partitionBy("_source_sha256", "_key").orderBy(_ordinal(F.col("record_id")))
        located = (bronze.join(files, "_source_sha256")
                   .select(F.col("_record_id").alias("record_id"), "_source_sha256", "_source_file", "_corrupt_record",
                           "_record_hash", key.alias("_key"))
                   .withColumn("_occurrence", F.row_number().over(w))
                   .join(rejected, "record_id")
                   .collect())
        by_file: dict[tuple[str, str], list] = defaultdict(list)
        for r in located:
            by_file[(r["_source_sha256"], r["_source_file"])].append(r)
        for (sha, spark_path), recs in sorted(by_file.items()):
            uri = spark_path
            if uri.startswith("file:"):
                from urllib.parse import unquote

                uri = unquote(uri[len("file:"):]).replace("///", "/")
            wanted = [(r["record_id"], tuple(r["_key"]) if r["_key"] else None, r["_corrupt_record"],
                       r["_occurrence"]) for r in recs]
            try:
                if source.format == "parquet":
                    positions = _parquet_positions(uri, key_cols, wanted)
                else:
                    filesystem, path = _filesystem(uri)
                    encoding = str(source.options.get("encoding", "utf-8")).replace("_", "-")
                    with filesystem.open_input_stream(path) as fh, \
                            io.TextIOWrapper(fh, encoding=encoding, errors="replace", newline="") as lines:
                        positions = locate_records(lines, source.format, key_cols, wanted)
            except Exception:  # the file is gone: the error stays recorded without a position
                positions = {}
            for r in recs:
                line, number = positions.get(r["record_id"], (None, None))
                rows.append({"source": name, "record_id": r["record_id"], "batch_id": r["batch_id"],
                             "run_id": ctx.run_id, "stage": stage, "file_name": uri.rsplit("/", 1)[-1],
                             "file_sha256": sha, "line_number": line, "record_number": number, "reason": r["reason"],
                             "detail": (r["detail"] or "")[:1000],
                             "record_key": "|".join(v or "" for v in r["_key"]) if r["_key"] else None,
                             "payload_sha256": r["_record_hash"], "detected_ts": now})
    return rows


def rejected_file_rows(ledger: list[dict], run_id: str, now: datetime) -> list[dict]:
    """``ref_parsing_errors`` rows for files rejected whole at landing (no record of them reached bronze)."""
    return [{"source": e["source"], "record_id": f"file:{e['sha256']}", "batch_id": e["batch_id"], "run_id": run_id,
             "stage": "bronze", "file_name": e["file_name"], "file_sha256": e["sha256"], "line_number": None,
             "record_number": None, "reason": "file_rejected", "detail": (e["reason"] or "")[:1000],
             "record_key": None, "payload_sha256": e["sha256"], "detected_ts": now}
            for e in ledger if e["status"] == "rejected"]


# ---------------------------------------------------------------------------------------------- reference rows
def source_rows(ctx: RunContext) -> tuple[list[dict], list[dict], list[dict]]:
    """(``dim_source_system``, ``ref_file_schema``, ``dim_file_type``) from the sources in conf."""
    systems, schema = [], []
    used: dict[str, int] = defaultdict(int)
    for name, s in sorted(ctx.config.sources.items()):
        event = ctx.config.platform.event_time.get(name)
        entity = getattr(s, "entity_of", lambda n: n)(name)
        used[s.format] += 1
        systems.append({"source": name, "entity": entity, "format": s.format, "path_glob": s.path,
                        "bronze_table": s.bronze_table, "record_key": ",".join(s.record_key),
                        "event_time_column": event, "timezone": s.timezone, "on_new_columns": s.on_new_columns,
                        "required": s.required, "mapped_columns": len(s.columns)})
        for i, (canon, col) in enumerate(s.columns.items(), start=1):
            schema.append({"source": name, "canonical_column": canon, "file_column": col, "position": i,
                           "is_record_key": canon in s.record_key, "is_event_time": canon == event})
    types = [{"file_type": t, **{k: v for k, v in spec.items()}, "sources": used.get(t, 0)}
             for t, spec in FILE_TYPES.items()]
    return systems, schema, types
