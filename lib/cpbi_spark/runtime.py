"""The run context every stage receives: config, session, lakehouse, run id and a logger.

Jobs build one :class:`RunContext` at their edge and pass it to stage functions, so a
stage never reads the environment or builds its own session.

Example:
    >>> ctx = RunContext.create(env="local")         # doctest: +SKIP
    >>> ctx.run_id                                   # doctest: +SKIP
    '20261125T140102-3f9a1c2e'
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from cpbi_spark.config import CpbiConfig
    from cpbi_spark.lakehouse import Lakehouse


def new_run_id(now: datetime | None = None) -> str:
    """A sortable, unique run id: UTC timestamp plus 8 random hex digits."""
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


@dataclass
class StageResult:
    """What one stage did: rows per table written and free-form counters."""

    stage: str
    tables: dict[str, int] = field(default_factory=dict)
    counters: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        if self.counters.get("skipped"):
            return f"{self.stage}: skipped ({self.counters['skipped']})"
        parts = [f"{name}={rows:,}" for name, rows in sorted(self.tables.items())]
        return f"{self.stage}: " + (", ".join(parts) if parts else "no table changed")


class StageObserver:
    """Hooks around every stage (platform records: logs, lineage, data quality, cost).

    The default methods do nothing; an observer overrides what it needs. ``stage_finished``
    may raise (e.g. :class:`cpbi_spark.errors.QualityError`) to stop promotion to the next stage.
    """

    def stage_started(self, ctx: RunContext, stage: str) -> None:
        """Called before a stage runs."""

    def stage_finished(self, ctx: RunContext, stage: str, result: StageResult) -> None:
        """Called after a stage returned."""

    def stage_failed(self, ctx: RunContext, stage: str, error: BaseException) -> None:
        """Called when a stage raised; the error is re-raised afterwards."""


@dataclass
class RunContext:
    """Everything a stage needs; built once per job run."""

    spark: SparkSession
    config: CpbiConfig
    lake: Lakehouse
    run_id: str
    started_at: datetime
    full_refresh: bool = False
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("cpbi"))
    observers: list[StageObserver] = field(default_factory=list)

    @classmethod
    def create(
        cls,
        *,
        env: str | None = None,
        conf_dir: str | Path | None = None,
        extra_files: Sequence[str | Path] = (),
        overrides: Mapping[str, Any] | None = None,
        spark: SparkSession | None = None,
        full_refresh: bool = False,
        tracked: bool = False,
    ) -> RunContext:
        """Load the conf, start (or reuse) the Spark session and attach the platform recorder.

        ``tracked``: the run will be tracked in MLflow, whose store is opened in the background while the
        session starts (:func:`cpbi_spark.tracking.warm_up`).
        """
        from cpbi_spark.config import load_config
        from cpbi_spark.lakehouse import Lakehouse
        from cpbi_spark.session import get_spark

        kwargs: dict[str, Any] = {"env": env, "extra_files": extra_files, "overrides": overrides}
        if conf_dir is not None:
            kwargs["conf_dir"] = conf_dir
        config = load_config(**kwargs)
        if tracked:
            from cpbi_spark.tracking import warm_up

            warm_up(config)
        session = get_spark(config.spark, existing=spark, app_name=f"cpbi-{config.env}")
        started = datetime.now(timezone.utc)
        ctx = cls(session, config, Lakehouse(session, config), new_run_id(started), started,
                  full_refresh=full_refresh)
        from cpbi_spark.platform import default_observers

        ctx.observers.extend(default_observers(config))  # platform sources A-D (conf platform.enabled)
        return ctx
