"""Choose the table engine: delta-spark where its JVM classes load, delta-rs otherwise.

Example:
    >>> engine = make_engine(spark, "auto")     # doctest: +SKIP
    >>> engine.name                              # doctest: +SKIP
    'delta-rs'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cpbi_spark.errors import EngineUnavailable

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from cpbi_spark.lakehouse.engine import TableEngine

ENGINES = ("auto", "delta-rs", "delta-spark")


def delta_spark_unavailable_reason(spark: SparkSession) -> str | None:
    """Why delta-spark cannot run in this session, or None when it can."""
    try:
        import delta  # noqa: F401  (the Python half of delta-spark)
    except ImportError:
        return "the delta-spark Python package is not installed"
    try:
        from py4j.java_gateway import JavaClass

        klass = spark.sparkContext._jvm.io.delta.tables.DeltaTable  # type: ignore[union-attr]
        if not isinstance(klass, JavaClass):
            return ("Delta's JVM classes (io.delta:delta-spark jars) are not on Spark's classpath; "
                    "start Spark with --packages io.delta:delta-spark_2.13:<version> or on a cluster "
                    "that ships them")
    except Exception as exc:  # Spark Connect or a stopped JVM
        return f"cannot inspect the JVM classpath: {exc}"
    extensions = spark.conf.get("spark.sql.extensions", "") or ""
    if "io.delta.sql.DeltaSparkSessionExtension" not in extensions:
        return "spark.sql.extensions does not include io.delta.sql.DeltaSparkSessionExtension"
    return None


def make_engine(spark: SparkSession, choice: str = "auto") -> TableEngine:
    """Build the engine named by ``choice`` (``auto``, ``delta-rs`` or ``delta-spark``)."""
    if choice not in ENGINES:
        raise EngineUnavailable(f"unknown table engine {choice!r}; choose one of {', '.join(ENGINES)}")
    if choice in ("auto", "delta-spark"):
        reason = delta_spark_unavailable_reason(spark)
        if reason is None:
            from cpbi_spark.lakehouse.deltaspark_engine import DeltaSparkEngine

            return DeltaSparkEngine(spark)
        if choice == "delta-spark":
            raise EngineUnavailable(f"engine delta-spark was requested but cannot start: {reason}")
    from cpbi_spark.lakehouse.deltars_engine import DeltaRsEngine

    return DeltaRsEngine(spark)
