"""Byte-exact file writers: CSV (RFC 4180, ``\\n`` line ends), JSON lines and Parquet.

Files are rendered to bytes first and only written when the bytes differ from what is on disk, so
re-running the generator never touches (not even the mtime of) a landing file that is already right.

Example:
    >>> csv_bytes(["a", "b"], [["1", "x,y"]])
    b'a,b\\n1,"x,y"\\n'
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def csv_bytes(header: Sequence[str], rows: Iterable[Sequence[str]]) -> bytes:
    """UTF-8 CSV with a header; fields are quoted only when they contain a comma, quote or newline."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def jsonl_bytes(records: Iterable[dict]) -> bytes:
    """One JSON object per line, keys in insertion order, non-ASCII kept as UTF-8."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def parquet_bytes(table: pa.Table) -> bytes:
    """A single-row-group snappy Parquet file (no pandas metadata, so bytes depend only on data)."""
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="snappy")
    return sink.getvalue()


def write_if_changed(path: Path, data: bytes) -> dict:
    """Write ``data`` unless ``path`` already holds exactly these bytes; returns size and sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not (path.exists() and path.stat().st_size == len(data) and path.read_bytes() == data):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)  # atomic: a reader never sees half a landing file
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
