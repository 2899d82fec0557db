"""Platform sources A–D, filled from the pipeline's own runs.

A stage observer (:class:`cpbi_spark.platform.observer.PlatformObserver`) records, around every stage,
what landed and was rejected (A: ingest & landing), the jobs' structured logs, failures and durations
(B: operations), lineage, data-quality results, policies and access (C: governance) and what each
stage used and cost (D: cost). ``RunContext.create`` adds it when ``platform.enabled`` is true.

Example:
    >>> from cpbi_spark.config import load_config
    >>> [type(o).__name__ for o in default_observers(load_config(env="ci"))]      # doctest: +SKIP
    ['PlatformObserver']
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cpbi_spark.config import CpbiConfig
    from cpbi_spark.runtime import StageObserver


def default_observers(config: CpbiConfig) -> list[StageObserver]:
    """The observers every run gets by default: the platform recorder when ``platform.enabled``."""
    if not config.platform.enabled:
        return []
    from cpbi_spark.platform.observer import PlatformObserver
    from cpbi_spark.platform.settings import check_platform

    check_platform(config)  # a broken platform conf fails the run before any stage, with every problem
    return [PlatformObserver()]


__all__ = ["default_observers"]
