"""What the dashboard shows, read as one role and returned as pandas (no Streamlit here).

:class:`DashboardData` reads every table through :class:`~cpbi_spark.platform.access.SecureReader` once per
table version (so each read is audited and a role without the PII grant gets masked columns), computes
the sales KPIs with :func:`cpbi_spark.metrics.filter_lines` and :func:`cpbi_spark.metrics.sales_kpis`,
and raises :class:`TableUnavailable` with the reason (never written, or no grant) instead of a Spark error.

Example:
    >>> data = DashboardData(SecureReader(ctx, "analyst"))                          # doctest: +SKIP
    >>> data.kpis(Filters(channels=("online",)))["net_revenue"]                     # doctest: +SKIP
    1234567.89
    >>> data.query("basket_rules", equals=(("level", "product"),), limit=5)          # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from cpbi_spark.errors import AccessDenied, CpbiError
from cpbi_spark.metrics import filter_lines, monthly_kpis, sales_kpis

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

    from cpbi_spark.platform.access import SecureReader

# The command that writes each table a page shows, for the "not written yet" message.
WRITTEN_BY = {
    "fact_basket_lines": "cpbi run gold",
    "basket_rules": "cpbi run baskets", "basket_recommendations": "cpbi run baskets",
    "basket_recommendation_eval": "cpbi run baskets",
    "cohort_retention": "cpbi run cohorts", "repeat_purchase_rates": "cpbi run cohorts",
    "repeat_survival_curve": "cpbi run cohorts", "customer_purchase_profile": "cpbi run cohorts",
    "uplift_studies": "cpbi run uplift", "uplift_readout": "cpbi run uplift", "uplift_qini_curve": "cpbi run uplift",
    "uplift_policy": "cpbi run uplift",
    "recommended_interventions": "cpbi run interventions",
}


@dataclass(frozen=True)
class Segmentation:
    """A way to pick customers: a column of a customer-level table (its current version for a dimension)."""

    label: str
    table: str
    column: str
    current_only: bool = False


SEGMENTATIONS: dict[str, Segmentation] = {
    "rfm_segment": Segmentation("RFM segment", "customer_purchase_profile", "rfm_segment"),
    "loyalty_tier": Segmentation("Loyalty tier", "dim_customer", "loyalty_tier", current_only=True),
    "region": Segmentation("Region", "dim_customer", "region", current_only=True),
}


@dataclass(frozen=True)
class Filters:
    """The sidebar's sales filters; empty means everything (the semantics of :func:`filter_lines`)."""

    start: dt.date | None = None
    end: dt.date | None = None
    channels: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    segment_by: str | None = None
    segments: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line for captions, e.g. ``2024-01-01 to 2024-12-31 · channel online``."""
        parts = [f"{self.start or 'first day'} to {self.end or 'last day'}"]
        if self.channels:
            parts.append("channel " + ", ".join(self.channels))
        if self.categories:
            parts.append("category " + ", ".join(self.categories))
        if self.segment_by and self.segments:
            parts.append(f"{SEGMENTATIONS[self.segment_by].label.lower()} " + ", ".join(self.segments))
        return " · ".join(parts)


@dataclass(frozen=True)
class Options:
    """What the filters can choose from, taken from the data the role can read."""

    first_day: dt.date | None
    last_day: dt.date | None
    channels: tuple[str, ...]
    categories: tuple[str, ...]
    segments: dict[str, tuple[str, ...]] = field(default_factory=dict)  # segmentation key -> values
    unavailable: dict[str, str] = field(default_factory=dict)  # segmentation key -> why it cannot be used


class TableUnavailable(CpbiError):
    """A table the page needs cannot be shown: ``kind`` is ``missing`` (never written) or ``denied``."""

    def __init__(self, table: str, kind: str, message: str):
        super().__init__(message)
        self.table, self.kind, self.message = table, kind, message


class DashboardData:
    """The dashboard's reads as one role; safe to share between the server's sessions (see module doc)."""

    # Read by every KPI and chart on each filter change: kept in Spark's memory once per table version.
    PERSISTED = frozenset({"fact_basket_lines"})

    def __init__(self, reader: SecureReader):
        self.reader, self.ctx = reader, reader.ctx
        self._frames: dict[str, tuple[int, Any]] = {}
        self._lock = threading.Lock()  # the server runs each browser session in its own thread

    # ------------------------------------------------------------------ tables
    def version(self, name: str) -> int | None:
        """The table's current Delta version, or None when it was never written (the cache key of a page)."""
        lake = self.ctx.lake
        return lake.version(name) if lake.exists(name) else None

    def missing_message(self, name: str) -> str:
        """Why ``name`` is not there and what writes it."""
        cfg = self.ctx.config.table(name)
        if cfg.layer == "platform":
            return (f"{name} has not been recorded: the platform recorder is off (platform.enabled: false) "
                    "or no run has finished with it on.")
        command = WRITTEN_BY.get(name)
        return f"{name} has not been written yet" + (f": run `{command}`." if command else ".")

    def table(self, name: str) -> DataFrame:
        """The table as the role sees it, read (and audited) once per table version."""
        version = self.version(name)
        if version is None:
            raise TableUnavailable(name, "missing", self.missing_message(name))
        with self._lock:
            known = self._frames.get(name)
            if known is None or known[0] != version:
                if known is not None and name in self.PERSISTED and not isinstance(known[1], tuple):
                    known[1].unpersist()
                try:
                    value: Any = self.reader.read(name)
                except AccessDenied as exc:  # remembered per version: a denied read is audited once, not per click
                    value = ("denied", str(exc))
                else:
                    if name in self.PERSISTED:
                        value = value.persist()
                self._frames[name] = (version, value)
            value = self._frames[name][1]
        if isinstance(value, tuple):
            raise TableUnavailable(name, *value)
        return value

    def query(self, name: str, *, equals: Sequence[tuple[str, Any]] = (), columns: Sequence[str] = (),
              order_by: Sequence[str] = (), descending: bool = False, limit: int | None = None) -> pd.DataFrame:
        """Rows of ``name`` where each ``(column, value)`` of ``equals`` holds, as pandas (decimals as floats).

        Values are compared as Spark literals, never pasted into SQL text, so a typed customer id is safe.
        """
        from pyspark.sql import functions as F
        from pyspark.sql.types import DecimalType

        df = self.table(name)
        for column, value in equals:
            df = df.filter(F.col(column).isNull() if value is None else F.col(column) == F.lit(value))
        if columns:
            df = df.select(*columns)
        if order_by:
            df = df.orderBy(*[F.col(c).desc_nulls_last() if descending else F.col(c).asc_nulls_last()
                              for c in order_by])
        if limit:
            df = df.limit(limit)
        # Altair and st.dataframe want numbers, not Python Decimals.
        df = df.select(*[F.col(f.name).cast("double").alias(f.name) if isinstance(f.dataType, DecimalType)
                         else F.col(f.name) for f in df.schema.fields])
        return df.toPandas()

    # ------------------------------------------------------------------ sales filters and KPIs
    def options(self) -> Options:
        """Date range, channels and categories of ``fact_basket_lines``, and the usable segmentations."""
        from pyspark.sql import functions as F

        def values(column: str) -> Column:
            return F.array_sort(F.collect_set(F.col(column).cast("string"))).alias(column)

        # One pass per table (not one job per list): the first page of a fresh server waits for these.
        lines = self.table("fact_basket_lines")
        span = lines.agg(F.min(F.to_date("basket_ts")).alias("lo"), F.max(F.to_date("basket_ts")).alias("hi"),
                         values("channel"), values("category")).first()
        segments: dict[str, tuple[str, ...]] = {}
        unavailable: dict[str, str] = {}
        by_table: dict[str, list[str]] = {}
        for key, seg in SEGMENTATIONS.items():
            by_table.setdefault(seg.table, []).append(key)
        for keys in by_table.values():
            try:
                source = self._segment_source(SEGMENTATIONS[keys[0]])
            except TableUnavailable as exc:
                for key in keys:
                    unavailable[key] = (f"role {self.reader.role} has no grant on {exc.table}" if exc.kind == "denied"
                                        else f"{exc.table} has not been written yet")
                continue
            row = source.agg(*[values(SEGMENTATIONS[k].column) for k in keys]).first()
            segments.update({k: tuple(row[SEGMENTATIONS[k].column]) for k in keys})
        return Options(span["lo"], span["hi"], tuple(span["channel"]), tuple(span["category"]), segments, unavailable)

    def _segment_source(self, seg: Segmentation) -> DataFrame:
        from pyspark.sql import functions as F

        df = self.table(seg.table)
        return df.filter(F.col("is_current")) if seg.current_only else df

    def lines(self, filters: Filters) -> DataFrame:
        """``fact_basket_lines`` with the filters applied by :func:`cpbi_spark.metrics.filter_lines`."""
        from pyspark.sql import functions as F

        customers = None
        if filters.segment_by and filters.segments:
            seg = SEGMENTATIONS[filters.segment_by]
            customers = self._segment_source(seg).filter(F.col(seg.column).isin(list(filters.segments)))
        return filter_lines(self.table("fact_basket_lines"), start=filters.start, end=filters.end,
                            channels=filters.channels, categories=filters.categories, customers=customers)

    def kpis(self, filters: Filters) -> dict[str, Any]:
        """The sales KPIs of :data:`cpbi_spark.metrics.METRICS` for the filtered lines (one row, as a dict)."""
        return sales_kpis(self.lines(filters)).first().asDict()

    def monthly(self, filters: Filters) -> pd.DataFrame:
        """:func:`cpbi_spark.metrics.monthly_kpis` of the filtered lines, one row per month."""
        return monthly_kpis(self.lines(filters)).orderBy("month").toPandas()

    def breakdown(self, filters: Filters, by: str) -> pd.DataFrame:
        """The sales KPIs per value of ``by`` (e.g. ``channel``), largest net revenue first."""
        return sales_kpis(self.lines(filters), by=[by]).orderBy("net_revenue", ascending=False).toPandas()

    # ------------------------------------------------------------------ page-specific aggregates
    def recommended_products(self, limit: int = 15) -> pd.DataFrame:
        """The products recommended to the most customers, by source (rule or popularity backfill)."""
        from pyspark.sql import functions as F

        recs = self.table("basket_recommendations")
        return (recs.groupBy("product_id", "product_name", "source")
                .agg(F.countDistinct("customer_id").alias("customers"), F.avg("lift").alias("mean_lift"))
                .orderBy(F.desc("customers"), "product_id").limit(limit).toPandas())
