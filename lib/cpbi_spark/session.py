"""The one SparkSession factory.

Every job, test and notebook gets its session here, so local defaults (few shuffle
partitions, no UI, UTC session time zone, parquet timestamps as INT64 micros so every
Delta reader agrees on them) live in one place and conf settings override them.

Example:
    >>> from cpbi_spark.session import get_spark
    >>> spark = get_spark(app_name="cpbi-demo")          # doctest: +SKIP
    >>> spark is get_spark(existing=spark)               # doctest: +SKIP
    True
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pyspark is imported lazily: nothing heavy at import time
    from pyspark.sql import SparkSession

# Defaults that make local mode quick and the written files readable by every Delta reader.
LOCAL_DEFAULTS: dict[str, str] = {
    "spark.sql.shuffle.partitions": "4",
    "spark.default.parallelism": "4",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.session.timeZone": "UTC",
    # delta-rs and delta-spark both read INT64 micros; INT96 is deprecated in parquet.
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.ansi.enabled": "false",
    "spark.driver.memory": "2g",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.python.worker.reuse": "true",
}

# JVM options cpbi adds to the driver's and executors' default options (kept apart from the
# ``extraJavaOptions`` users set, which come later on the command line and so win). HotSpot does not
# JIT-compile a method over 8000 bytes of bytecode; the code Spark generates for the wide silver plans
# (dozens of parsed and validated columns) is larger, so it would run interpreted: 2M lines took 14.6 s
# to parse and validate with the default and 3.4 s with this option (same session, second run, 2 cores).
JAVA_OPTIONS = ("-XX:-DontCompileHugeMethods",)
_JAVA_OPTION_KEYS = ("spark.driver.defaultJavaOptions", "spark.executor.defaultJavaOptions")


def _xx_flag(option: str) -> str:
    """The name of a ``-XX:[+-]Name[=value]`` option (the option itself otherwise)."""
    m = re.match(r"-XX:[+-]?([A-Za-z0-9_]+)", option)
    return m.group(1) if m else option


def with_java_options(conf: Mapping[str, str]) -> dict[str, str]:
    """``conf`` with :data:`JAVA_OPTIONS` appended to the driver's and executors' default JVM options.

    Example:
        >>> with_java_options({"spark.driver.defaultJavaOptions": "-Xss4m"})["spark.driver.defaultJavaOptions"]
        '-Xss4m -XX:-DontCompileHugeMethods'
    """
    out = dict(conf)
    for key in _JAVA_OPTION_KEYS:
        current = out.get(key, "").split()
        flags = {_xx_flag(o) for o in current}  # the user's own setting of a flag wins
        extra = [o for o in JAVA_OPTIONS if _xx_flag(o) not in flags]
        out[key] = " ".join([*current, *extra])
    return out


def _submitted_java_options() -> dict[str, str]:
    """The default JVM options a running ``spark-submit`` was given (its --conf, spark-defaults.conf).

    Under ``spark-submit`` the JVM is up before the session is built, and a builder setting would
    replace what was submitted; reading it first lets :func:`with_java_options` append instead.
    Empty when this process starts the JVM itself.
    """
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # set by spark-submit for the Python driver it runs
        return {}
    from pyspark import SparkConf, SparkContext

    SparkContext._ensure_initialized()  # connects to spark-submit's JVM (no new JVM is started)
    submitted = SparkConf()
    return {k: submitted.get(k) for k in _JAVA_OPTION_KEYS if submitted.contains(k)}


def get_spark(
    settings: Mapping[str, str] | None = None,
    *,
    app_name: str = "cpbi",
    master: str | None = None,
    existing: SparkSession | None = None,
) -> SparkSession:
    """Return a SparkSession configured for cpbi.

    ``existing`` is returned as is (a notebook or a cluster already made one). Otherwise an
    active session is reused, or a new one is built from :data:`LOCAL_DEFAULTS` overridden by
    ``settings`` (``spark:`` section of the conf). ``master`` (or ``spark.master`` in the
    settings) is optional: ``spark-submit --master`` or Spark's own default applies otherwise.
    """
    if existing is not None:
        return existing
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    # Executors must run the same interpreter as the driver in local mode (the venv's python).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    conf = dict(LOCAL_DEFAULTS)
    conf.update(_submitted_java_options())
    conf.update({k: str(v) for k, v in (settings or {}).items()})
    conf = with_java_options(conf)
    # Without an explicit master, spark-submit's --master wins, and plain python gets local[*].
    chosen_master = master or conf.pop("spark.master", None)
    if chosen_master:
        builder = builder.master(chosen_master)
    for key, value in conf.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()
