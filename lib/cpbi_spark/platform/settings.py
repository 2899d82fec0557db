"""Cross-section rules of the ``platform:`` and ``expectations:`` conf, and lookups built on them.

:func:`check_platform` collects every broken rule (an expectation on an undeclared column, a source
listing an unknown table, chargeback shares of a stage not summing to 1, ...) into one ConfigError.

Example:
    >>> from cpbi_spark.config import load_config
    >>> check_platform(load_config(env="ci"))                      # doctest: +SKIP
    >>> platform_source_of(load_config(env="ci"))["fact_logs"]     # doctest: +SKIP
    'B'
"""

from __future__ import annotations

import fnmatch
import re
from collections import defaultdict
from typing import TYPE_CHECKING

from cpbi_spark.errors import ConfigError, ConfigProblem

if TYPE_CHECKING:
    from cpbi_spark.config import CpbiConfig
    from cpbi_spark.config.platform import ChargebackRule

_TABLE_REF = re.compile(r"\{([a-z][a-z0-9_]*)\}")


def sql_table_refs(sql: str) -> list[str]:
    """Table names referenced as ``{name}`` in a row-count SQL.

    >>> sql_table_refs("SELECT count(*) FROM {stg_returns} r JOIN {dim_product} p ON true")
    ['stg_returns', 'dim_product']
    """
    return _TABLE_REF.findall(sql)


def _columns(config: CpbiConfig, table: str) -> set[str] | None:
    """Declared columns, or None for a bronze table stored as received (any column may exist)."""
    cfg = config.tables[table]
    return None if cfg.as_received else set(cfg.columns)


def platform_problems(config: CpbiConfig) -> list[tuple[str, str]]:
    """Every broken rule as ``(key path, reason)``."""
    problems: list[tuple[str, str]] = []
    plat = config.platform
    for source, spec in plat.sources.items():
        problems += [(f"platform.sources.{source}.tables", f"unknown table {t!r}")
                     for t in spec.tables if t not in config.tables]
    for name, suite in config.expectations.items():
        where = f"expectations.{name}"
        if name not in config.tables:
            problems.append((where, "unknown table"))
            continue
        declared = _columns(config, name)
        seen: set[str] = set()
        for i, check in enumerate(suite.checks):
            at = f"{where}.checks[{i}]"
            if check.check in seen:
                problems.append((at, f"check name {check.check!r} is used twice in the suite"))
            seen.add(check.check)
            cols = [check.column] if check.column else []
            cols += list(check.columns)
            needs = {"not_null": "column", "between": "column", "in_set": "column", "references": "column",
                     "unique": "columns"}.get(check.expect)
            if needs == "column" and not check.column:
                problems.append((at, f"expect {check.expect} needs a column"))
            if needs == "columns" and not check.columns:
                problems.append((at, "expect unique needs columns"))
            if declared is not None:
                problems += [(at, f"column {c!r} is not declared in table {name}") for c in cols if c not in declared]
            if check.expect == "between" and check.min is None and check.max is None:
                problems.append((at, "expect between needs min and/or max"))
            if check.expect == "in_set" and not check.values:
                problems.append((at, "expect in_set needs values"))
            if check.expect == "references":
                if check.table not in config.tables:
                    problems.append((at, f"references an unknown table {check.table!r}"))
                elif not check.table_column:
                    problems.append((at, "expect references needs table_column"))
                else:
                    ref_cols = _columns(config, check.table)
                    if ref_cols is not None and check.table_column not in ref_cols:
                        problems.append((at, f"column {check.table_column!r} is not declared in {check.table}"))
            if check.expect == "row_count":
                if not check.sql and check.min is None and check.max is None:
                    problems.append((at, "expect row_count needs sql (the expected count) or min/max"))
                for ref in sql_table_refs(check.sql or ""):
                    if ref not in config.tables:
                        problems.append((at, f"sql names an unknown table {{{ref}}}"))
    for role, spec in plat.roles.items():
        problems += [(f"platform.roles.{role}.tables", f"unknown table {t!r}")
                     for t in spec.tables if t not in config.tables]
    for target, rule in plat.retention.items():
        at = f"platform.retention.{target}"
        if rule.kind == "table":
            if target not in config.tables:
                problems.append((at, "unknown table"))
            elif not rule.ts_column or rule.ts_column not in config.tables[target].columns:
                problems.append((at, "a table rule needs ts_column, a declared timestamp column of the table"))
    meters = {p.meter for p in plat.price_catalog}
    skus = [p.sku for p in plat.price_catalog]
    problems += [("platform.price_catalog", f"sku {s!r} is listed twice") for s in set(skus) if skus.count(s) > 1]
    problems += [(f"platform.rates.discount_pct.{s}", "unknown sku") for s in plat.rates.discount_pct
                 if s not in skus]
    if plat.price_catalog:
        from cpbi_spark.platform.cost import METERS

        problems += [("platform.price_catalog", f"no price for meter {m!r}") for m in METERS if m not in meters]
    by_stage: dict[str, float] = defaultdict(float)
    for i, rule in enumerate(plat.chargeback):
        if rule.cost_center not in plat.cost_centers:
            problems.append((f"platform.chargeback[{i}].cost_center", f"unknown cost center {rule.cost_center!r}"))
        by_stage[rule.stage] += rule.share
    problems += [("platform.chargeback", f"shares of stage {stage!r} add up to {total:g}, not 1")
                 for stage, total in by_stage.items() if abs(total - 1.0) > 1e-9]
    return problems


def check_platform(config: CpbiConfig) -> None:
    """Raise one ConfigError listing every broken platform/expectations rule (nothing when all hold)."""
    problems = platform_problems(config)
    if problems:
        raise ConfigError([ConfigProblem(config.conf_dir, key, reason) for key, reason in problems])


def platform_source_of(config: CpbiConfig) -> dict[str, str]:
    """Table -> the platform sources listing it (``"C,D"`` for a conformed table)."""
    out: dict[str, list[str]] = defaultdict(list)
    for source, spec in sorted(config.platform.sources.items()):
        for table in spec.tables:
            out[table].append(source)
    return {t: ",".join(s) for t, s in out.items()}


def rules_for_stage(rules: list[ChargebackRule], stage: str) -> list[ChargebackRule]:
    """The chargeback rules that apply to ``stage``: an exact stage name wins, else the most specific glob.

    >>> from cpbi_spark.config.platform import ChargebackRule as R
    >>> rs = [R(rule="a", stage="gold", cost_center="x", share=1), R(rule="b", stage="*", cost_center="y", share=1)]
    >>> [r.rule for r in rules_for_stage(rs, "gold")], [r.rule for r in rules_for_stage(rs, "rfm")]
    (['a'], ['b'])
    """
    exact = [r for r in rules if r.stage == stage]
    if exact:
        return exact
    globs = sorted({r.stage for r in rules if fnmatch.fnmatchcase(stage, r.stage)}, key=lambda g: (-len(g), g))
    return [r for r in rules if globs and r.stage == globs[0]]
