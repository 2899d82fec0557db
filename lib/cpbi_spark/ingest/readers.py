"""Read landing files "as received": every mapped column as a string, nothing dropped.

Each reader returns one frame with the source's mapped file columns (strings, named as in
the file, made Delta-safe), ``_extra_columns`` (JSON of columns the mapping does not know,
kept when the drift policy is ``evolve``), ``_corrupt_record`` (the raw text of a line the
parser could not split into the expected fields) and ``_source_file``.

Example:
    >>> frame = read_source_files(spark, source_cfg, files)     # doctest: +SKIP
    >>> frame.filter("_corrupt_record IS NOT NULL").count()       # doctest: +SKIP
    3
"""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote

from cpbi_spark.ingest.files import LandingFile, read_first_line

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from cpbi_spark.config.models import SourceConfig

EXTRA = "_extra_columns"
CORRUPT = "_corrupt_record"
SOURCE_FILE = "_source_file"
_UNSAFE = re.compile(r"[ ,;{}()\n\t=]+")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*:)?/*")


def _same_file(spark_path: str, uri: str) -> bool:
    """Spark's ``file:/a%20b`` (or ``s3a://``) spelling and the listing's ``/a b`` (``s3://``) are one file."""
    return _SCHEME.sub("", unquote(spark_path)) == _SCHEME.sub("", uri)


def safe_name(column: str) -> str:
    """A Delta-safe column name (Delta without column mapping forbids `` ,;{}()\\n\\t=``)."""
    return _UNSAFE.sub("_", column.strip()) or "_blank"


@dataclass
class ReadOutcome:
    """The frame read from the accepted files, and the files rejected with their reason."""

    frame: DataFrame | None
    rejected: dict[str, str] = field(default_factory=dict)  # uri -> reason
    drift: dict[str, list[str]] = field(default_factory=dict)  # uri -> new columns kept in _extra_columns


def _mapped_file_columns(source: SourceConfig) -> list[str]:
    return source.file_columns()


def _check_header(uri: str, header: list[str], source: SourceConfig, outcome: ReadOutcome) -> bool:
    expected = _mapped_file_columns(source)
    missing = [c for c in expected if c not in header]
    extra = [c for c in header if c not in expected]
    if missing:
        outcome.rejected[uri] = f"missing mapped columns {missing} (file has {header})"
        return False
    if extra and source.on_new_columns == "reject":
        outcome.rejected[uri] = f"new columns {extra} not in the mapping (on_new_columns: reject)"
        return False
    if extra:
        outcome.drift[uri] = extra
    return True


def _finish(df: DataFrame, mapped: list[str], extras: list[str]) -> DataFrame:
    from pyspark.sql import functions as F

    extra_col = (F.to_json(F.struct(*[F.col(f"`{c}`").alias(c) for c in extras])) if extras
                 else F.lit(None).cast("string"))
    return df.select(*[F.col(f"`{c}`").cast("string").alias(safe_name(c)) for c in mapped],
                     extra_col.alias(EXTRA), F.col(CORRUPT), F.col(SOURCE_FILE))


def _read_csv(spark: SparkSession, source: SourceConfig, files: list[LandingFile],
              outcome: ReadOutcome) -> list[DataFrame]:
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    opts = {k.lower(): v for k, v in source.options.items()}
    delimiter = opts.get("delimiter", opts.get("sep", ","))
    quote = opts.get("quote", '"')
    encoding = opts.get("encoding", "utf-8")
    groups: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for f in files:
        line = read_first_line(f.uri, encoding)
        header = next(csv.reader(io.StringIO(line), delimiter=delimiter, quotechar=quote), [])
        header = [h.strip() for h in header]
        if not header or not any(header):
            outcome.rejected[f.uri] = "empty file or no header line"
        elif len(set(header)) != len(header):
            outcome.rejected[f.uri] = f"duplicate column names in the header {header}"
        elif _check_header(f.uri, header, source, outcome):
            groups[tuple(header)].append(f.uri)
    frames = []
    mapped = _mapped_file_columns(source)
    for header, uris in groups.items():
        # Positional schema of the file's own header: Spark marks lines with another field count corrupt.
        schema = StructType([StructField(h, StringType()) for h in header] + [StructField(CORRUPT, StringType())])
        reader = (spark.read.schema(schema).option("header", True).option("mode", "PERMISSIVE")
                  .option("columnNameOfCorruptRecord", CORRUPT).option("sep", delimiter)
                  .option("quote", quote).option("encoding", encoding)
                  .option("ignoreLeadingWhiteSpace", False).option("ignoreTrailingWhiteSpace", False))
        for key in ("escape", "comment", "nullValue", "multiLine", "lineSep"):
            if key.lower() in opts:
                reader = reader.option(key, opts[key.lower()])
        df = reader.csv(uris).withColumn(SOURCE_FILE, F.col("_metadata.file_path"))
        frames.append(_finish(df, mapped, [h for h in header if h not in mapped]))
    return frames


def _read_jsonl(spark: SparkSession, source: SourceConfig, files: list[LandingFile],
                outcome: ReadOutcome) -> list[DataFrame]:
    from pyspark.sql import functions as F

    mapped = _mapped_file_columns(source)
    raw = (spark.read.text([f.uri for f in files])
           .withColumn(SOURCE_FILE, F.col("_metadata.file_path"))
           .filter(F.trim("value") != "")  # blank lines carry no record
           .withColumn("_m", F.from_json("value", "map<string,string>")))
    mapped_arr = F.array(*[F.lit(c) for c in mapped])
    extras = F.map_filter("_m", lambda k, v: ~F.array_contains(mapped_arr, k))
    raw = raw.withColumn("_x", extras)
    # Drift is decided per file: which unknown keys does each file carry?
    drift_rows = (raw.filter(F.size("_x") > 0).select(SOURCE_FILE, F.explode(F.map_keys("_x")).alias("k"))
                  .distinct().collect())
    by_uri: dict[str, list[str]] = defaultdict(list)
    for r in drift_rows:
        by_uri[r[SOURCE_FILE]].append(r["k"])
    bad = []
    for f in files:
        keys = next((sorted(v) for k, v in by_uri.items() if _same_file(k, f.uri)), [])
        if keys and source.on_new_columns == "reject":
            outcome.rejected[f.uri] = f"new fields {keys} not in the mapping (on_new_columns: reject)"
            bad.append(f.uri)
        elif keys:
            outcome.drift[f.uri] = keys
    if bad:
        raw = raw.filter(~F.col(SOURCE_FILE).isin([u for u in by_uri if any(_same_file(u, b) for b in bad)]))
    df = raw.select(
        *[F.col("_m").getItem(c).alias(safe_name(c)) for c in mapped],
        F.when(F.size("_x") > 0, F.to_json("_x")).alias(EXTRA),
        F.when(F.col("_m").isNull(), F.col("value")).alias(CORRUPT),
        F.col(SOURCE_FILE),
    )
    return [df]


def _read_parquet(spark: SparkSession, source: SourceConfig, files: list[LandingFile],
                  outcome: ReadOutcome) -> list[DataFrame]:
    import pyarrow.parquet as pq
    from pyspark.sql import functions as F

    from cpbi_spark.ingest.files import _filesystem

    groups: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for f in files:
        filesystem, path = _filesystem(f.uri)
        try:
            with filesystem.open_input_file(path) as fh:
                header = list(pq.read_schema(fh).names)
        except Exception as exc:  # not a parquet file: reject it with the parser's words
            outcome.rejected[f.uri] = f"unreadable parquet: {exc}"
            continue
        if _check_header(f.uri, header, source, outcome):
            groups[tuple(header)].append(f.uri)
    mapped = _mapped_file_columns(source)
    frames = []
    for header, uris in groups.items():
        df = (spark.read.parquet(*uris).withColumn(SOURCE_FILE, F.col("_metadata.file_path"))
              .withColumn(CORRUPT, F.lit(None).cast("string")))
        frames.append(_finish(df, mapped, [h for h in header if h not in mapped]))
    return frames


def _read_basket_lines(spark: SparkSession, source: SourceConfig, files: list[LandingFile],
                       outcome: ReadOutcome) -> list[DataFrame]:
    """One row per line (a basket); ``_row_position`` identifies the line within its file."""
    from pyspark.sql import functions as F

    items = safe_name(source.columns.get("items", "items"))
    frames = []
    for f in files:
        # One read per file: the position is unique within a file, and the file name scopes it.
        df = (spark.read.text(f.uri).withColumn(SOURCE_FILE, F.col("_metadata.file_path"))
              .withColumn("_row_position", F.monotonically_increasing_id())
              .filter(F.trim("value") != ""))
        frames.append(df.select(F.col("value").alias(items), F.lit(None).cast("string").alias(EXTRA),
                                F.lit(None).cast("string").alias(CORRUPT), SOURCE_FILE, "_row_position"))
    return frames


def read_source_files(spark: SparkSession, source: SourceConfig, files: list[LandingFile]) -> ReadOutcome:
    """Read ``files`` of one source as received; files that cannot be mapped are rejected, not read."""
    outcome = ReadOutcome(None)
    if not files:
        return outcome
    reader = {"csv": _read_csv, "jsonl": _read_jsonl, "parquet": _read_parquet,
              "basket_lines": _read_basket_lines}[source.format]
    frames = reader(spark, source, files, outcome)
    if frames:
        frame = frames[0]
        for other in frames[1:]:
            frame = frame.unionByName(other)
        outcome.frame = frame
    return outcome
