"""Table upkeep: compact small files, then vacuum the files no recent version uses (``cpbi maintain``).

Every batch adds a few small files to the tables it touches (an append writes one file per Spark
task), and every rewrite leaves the replaced files on disk for time travel. Reads slow down with the
number of files and storage grows with the old ones, so a scheduled job (weekly, say; see
``scripts/schedule``) keeps each table in shape, driven by the ``maintenance`` settings
(:class:`cpbi_spark.config.models.MaintenanceConfig`):

- compaction rewrites the files under half of ``target_file_mb`` into files of about that size once a
  table has ``min_small_files`` of them, in a ``dataChange=false`` commit (readers and gold's change
  reading see no change);
- vacuum then deletes the files that no version of the last ``retention_hours`` uses.

Both leave the data as it is: a table that needs neither gets no new version, so a rerun does
nothing. A table whose compaction loses against a concurrent writer is reported (``error``) and left
as it was; the others are still maintained (``cpbi maintain`` then fails, naming it).

Example:
    >>> outcomes = maintain_tables(ctx, dry_run=True)          # doctest: +SKIP
    >>> print(upkeep_summary(outcomes, dry_run=True))          # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, get_args

from cpbi_spark.config.models import Layer
from cpbi_spark.errors import CommitConflict, TableNotFound
from cpbi_spark.lakehouse.engine import compaction_plan

if TYPE_CHECKING:
    from cpbi_spark.config.models import CpbiConfig
    from cpbi_spark.runtime import RunContext, StageResult


@dataclass(frozen=True)
class TableUpkeep:
    """What maintenance did (or, in a dry run, would do) to one table."""

    table: str
    layer: str
    files: int              # data files before
    compacted: int          # files rewritten by compaction (0: below min_small_files)
    written: int            # files they became (in a dry run: the estimate)
    version: int | None     # the compaction's commit; None when none was made
    vacuumed: int           # files deleted by vacuum (in a dry run: that it would delete)
    error: str | None = None


def tables_to_maintain(config: CpbiConfig, names: Sequence[str] | None = None) -> list[str]:
    """The declared tables of the configured layers (or ``names``, which must be declared), by layer.

    Example:
        >>> tables_to_maintain(config, ["fact_transactions"])          # doctest: +SKIP
        ['fact_transactions']
    """
    layers = list(config.maintenance.layers)
    if names:
        unknown = sorted(set(names) - set(config.tables))
        if unknown:
            raise TableNotFound(f"cpbi maintain: unknown table(s) {unknown}; `cpbi tables` lists them")
        chosen = set(names)
    else:
        chosen = {n for n, c in config.tables.items() if c.layer in layers}
    order = {layer: i for i, layer in enumerate(get_args(Layer))}  # bronze first, platform last
    return sorted(chosen, key=lambda n: (order[config.tables[n].layer], n))


def maintain_tables(ctx: RunContext, names: Sequence[str] | None = None, *, dry_run: bool = False,
                    progress: Callable[[str], None] | None = None) -> list[TableUpkeep]:
    """Compact and vacuum the tables (see the module doc); tables not written yet are skipped."""
    settings, lake = ctx.config.maintenance, ctx.lake
    out = []
    for name in tables_to_maintain(ctx.config, names):
        if not lake.exists(name):
            continue
        layer = ctx.config.tables[name].layer
        sizes = lake.file_sizes(name)
        chosen, written = compaction_plan(sizes, settings.target_file_mb, settings.min_small_files)
        compacted = len(chosen)
        version, error = None, None
        if compacted and not dry_run:
            try:
                info = lake.optimize(name, target_file_mb=settings.target_file_mb,
                                     min_files=settings.min_small_files)
                compacted, written, version = info.files_removed, info.files_added, info.version
            except CommitConflict as exc:  # a writer committed meanwhile: this table stays as it was
                compacted, written, error = 0, 0, str(exc)
        vacuumed = len(lake.vacuum(name, retention_hours=settings.retention_hours, dry_run=dry_run)) \
            if settings.vacuum else 0
        upkeep = TableUpkeep(name, layer, len(sizes), compacted, written, version, vacuumed, error)
        out.append(upkeep)
        if progress and (compacted or vacuumed or error):
            progress(_line(upkeep, dry_run))
    return out


def _line(u: TableUpkeep, dry_run: bool) -> str:
    verb = "would compact" if dry_run else "compacted"
    parts = []
    if u.compacted:
        parts.append(f"{verb} {u.compacted} of {u.files} files into {u.written}"
                     + (f" (version {u.version})" if u.version is not None else ""))
    if u.vacuumed:
        parts.append(f"{'would delete' if dry_run else 'deleted'} {u.vacuumed} unused file(s)")
    if u.error:
        parts.append(f"not compacted: {u.error}")
    return f"{u.layer}.{u.table}: " + "; ".join(parts)


def upkeep_summary(outcomes: Sequence[TableUpkeep], dry_run: bool = False) -> str:
    """One line of totals over :func:`maintain_tables`' outcomes (its ``progress`` gives the per-table lines)."""
    return (f"{len(outcomes)} table(s) checked: {sum(bool(u.compacted) for u in outcomes)} "
            f"{'to compact' if dry_run else 'compacted'} ({sum(u.compacted for u in outcomes)} files into "
            f"{sum(u.written for u in outcomes)}), {sum(u.vacuumed for u in outcomes)} unused file(s) "
            f"{'to delete' if dry_run else 'deleted'}, {sum(bool(u.error) for u in outcomes)} failed")


def upkeep_result(outcomes: Sequence[TableUpkeep]) -> StageResult:
    """The run as a stage result (``maintain``) for the platform records: no rows change, files do."""
    from cpbi_spark.runtime import StageResult

    return StageResult("maintain", counters={
        "tables_compacted": sum(bool(u.compacted) for u in outcomes),
        "files_compacted": sum(u.compacted for u in outcomes), "files_written": sum(u.written for u in outcomes),
        "files_vacuumed": sum(u.vacuumed for u in outcomes), "tables_failed": sum(bool(u.error) for u in outcomes)})
