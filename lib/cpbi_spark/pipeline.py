"""Run pipeline stages in order and describe what the lakehouse now holds.

Example:
    >>> results = run_stages(ctx, ["bronze", "silver", "gold"])     # doctest: +SKIP
    >>> print(format_table_summary(table_summary(ctx)))              # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cpbi_spark.errors import PipelineError

if TYPE_CHECKING:
    from cpbi_spark.runtime import RunContext, StageResult


def _bronze(ctx: RunContext) -> StageResult:
    from cpbi_spark.ingest.bronze import run_bronze

    return run_bronze(ctx)


def _silver(ctx: RunContext) -> StageResult:
    from cpbi_spark.silver.stage import run_silver

    return run_silver(ctx)


def _gold(ctx: RunContext) -> StageResult:
    from cpbi_spark.gold.stage import run_gold

    return run_gold(ctx)


STAGES: dict[str, Callable[[RunContext], StageResult]] = {"bronze": _bronze, "silver": _silver, "gold": _gold}
PIPELINE = ("bronze", "silver", "gold")


def analysis_names() -> list[str]:
    from cpbi_spark.analytics import ANALYSES

    return list(ANALYSES)


def resolve_stage(name: str) -> Callable[[RunContext], StageResult]:
    """A pipeline stage or a registered analysis, imported only when it runs."""
    import importlib

    from cpbi_spark.analytics import ANALYSES

    if name in STAGES:
        return STAGES[name]
    if name in ANALYSES:
        module, _, func = ANALYSES[name].partition(":")
        return getattr(importlib.import_module(module), func)
    raise PipelineError(f"unknown stage {name!r}; stages are {', '.join([*STAGES, *ANALYSES])}")


def all_stage_names() -> list[str]:
    return [*PIPELINE, *analysis_names()]


def _run_one(ctx: RunContext, name: str) -> StageResult:
    """Run a stage; an analysis whose needs the data do not meet is skipped with the reason."""
    from cpbi_spark.analytics.requirements import missing_for
    from cpbi_spark.runtime import StageResult

    if name not in STAGES:
        reason = missing_for(ctx, name)
        if reason:
            ctx.log.warning("%s skipped: %s", name, reason)
            return StageResult(name, counters={"skipped": reason})
    return resolve_stage(name)(ctx)


def run_stages(ctx: RunContext, names: Sequence[str], progress: Callable[[str], None] | None = None
               ) -> list[StageResult]:
    """Run the named stages (pipeline stages, then analyses) in order; summaries go to ``progress``."""
    order = all_stage_names()
    unknown = [n for n in names if n not in order]
    if unknown:
        raise PipelineError(f"unknown stage(s) {unknown}; stages are {', '.join(order)}")
    results = []
    for name in [n for n in order if n in names]:
        if progress:
            progress(f"[{name}] running ...")
        result = observed(ctx, name, lambda name=name: _run_one(ctx, name))
        if progress:
            progress(f"[{name}] done in {result.counters['seconds']:.1f} s: {result.summary()}")
        results.append(result)
    return results


def observed(ctx: RunContext, name: str, work: Callable[[], StageResult]) -> StageResult:
    """Run ``work`` as the step ``name`` between the context's observers' hooks (the platform records:
    job run, commits, lineage, data quality of the tables it committed, logs, cost).

    Example:
        >>> observed(ctx, "maintain", lambda: StageResult("maintain"))   # doctest: +SKIP
    """
    t0 = time.perf_counter()
    for observer in ctx.observers:
        observer.stage_started(ctx, name)
    try:
        result = work()
    except BaseException as exc:
        for observer in ctx.observers:
            observer.stage_failed(ctx, name, exc)
        raise
    result.counters["seconds"] = round(time.perf_counter() - t0, 2)
    # Observers may veto promotion (a blocking data-quality check raises QualityError here).
    for observer in ctx.observers:
        observer.stage_finished(ctx, name, result)
    return result


@dataclass(frozen=True)
class TableState:
    name: str
    layer: str
    rows: int | None
    version: int | None
    path: str


def table_summary(ctx: RunContext, layers: Sequence[str] | None = None) -> list[TableState]:
    """Every declared table with its row count and version (None when not written yet)."""
    out = []
    for name, cfg in sorted(ctx.config.tables.items(), key=lambda kv: (kv[1].layer, kv[0])):
        if layers and cfg.layer not in layers:
            continue
        path = ctx.lake.path(name)
        if ctx.lake.exists(name):
            out.append(TableState(name, cfg.layer, ctx.lake.row_count(name), ctx.lake.version(name), path))
        else:
            out.append(TableState(name, cfg.layer, None, None, path))
    return out


def format_table_summary(states: Sequence[TableState]) -> str:
    width = max((len(s.name) for s in states), default=10)
    lines = [f"{'layer':<9} {'table':<{width}} {'rows':>11} {'version':>7}"]
    for s in states:
        rows = f"{s.rows:,}" if s.rows is not None else "-"
        version = str(s.version) if s.version is not None else "-"
        lines.append(f"{s.layer:<9} {s.name:<{width}} {rows:>11} {version:>7}")
    return "\n".join(lines)
