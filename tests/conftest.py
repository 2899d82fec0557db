"""Shared fixtures: one local SparkSession for the whole run (start-up costs ~5 s)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("CPBI_CONF_DIR", str(ROOT / "conf"))


@pytest.fixture(scope="session")
def spark():
    """A local[2] session with few shuffle partitions and no UI, shared by every test."""
    from cpbi_spark.session import get_spark

    session = get_spark(
        {
            "spark.sql.shuffle.partitions": "2",
            "spark.default.parallelism": "2",
            "spark.driver.memory": "2g",
        },
        app_name="cpbi-tests",
        master="local[2]",
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT
