"""Test helper: the string values stored in a lakehouse's parquet files, read with pyarrow directly.

Used to prove that personal data never reaches silver/gold files in clear text, independently of
the library's readers (it reads every data file under the layer folders, live or not).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow.dataset as ds


def string_values(root: Path, layers: Sequence[str]) -> Iterator[tuple[str, str, set]]:
    """``(table folder, column, values of one batch)`` for every string column of every table in ``layers``."""
    for layer in layers:
        for table_dir in (Path(root) / layer).iterdir():
            dataset = ds.dataset(str(table_dir), format="parquet", exclude_invalid_files=True,
                                 ignore_prefixes=["_delta_log", "_", "."])
            for batch in dataset.to_batches():
                for column in batch.schema.names:
                    if str(batch.schema.field(column).type) == "string":
                        yield table_dir.name, column, set(batch.column(column).to_pylist())
