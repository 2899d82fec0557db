"""Source C (governance & catalog): the catalog from conf, lineage of every stage, policies and their audit.

* ``dim_dataset`` / ``dim_column`` / ``ref_dataset_tags`` / ``dim_owner``: every declared table, from conf.
  Classification: ``restricted`` = personal data as received (bronze), ``confidential`` = personal data
  pseudonymised by a ``pii:`` policy, ``internal`` otherwise.
* ``stage_lineage``: edges read -> written per stage and run (:func:`lineage_edges`, from the tables the
  lakehouse facade saw read and committed during the stage; landing sources -> bronze from the ledger).
* ``ref_policies`` / ``audit_policies``: PII, access, retention and quality-gate policies and their
  verification on the data; ``fact_pii_scan`` looks for clear landed values in silver and gold.

Example:
    >>> sorted(lineage_edges(["stg_transactions", "dim_product", "fact_transactions"],
    ...                      ["fact_transactions", "audit_recon"], layers={"fact_transactions": "gold"}))[:2]
    [('dim_product', 'table', 'audit_recon'), ('dim_product', 'table', 'fact_transactions')]
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cpbi_spark.config import CpbiConfig, TableConfig
    from cpbi_spark.platform.scan_memo import ScanMemo
    from cpbi_spark.platform.store import PlatformStore
    from cpbi_spark.runtime import RunContext

HASH_PATTERN = r"^sha256:[0-9a-f]{64}$"
MASK_PATTERN = r"^(.\*\*\*.{0,2}|\*\*\*)$"


def lineage_edges(reads: list[str], writes: list[str], layers: dict[str, str],
                  landed: dict[str, str] | None = None) -> set[tuple[str, str, str]]:
    """Edges ``(source, kind, target)`` of one stage (pure).

    Every table read feeds every table committed, except a table into itself and bronze into bronze
    (bronze reads its own tables only to skip files already landed); ``landed`` maps a landing source to
    the bronze table it fed (kind ``landing``).
    """
    edges = {(r, "table", w) for r in set(reads) for w in set(writes)
             if r != w and not (layers.get(r) == "bronze" and layers.get(w) == "bronze")}
    edges |= {(f"landing:{src}", "landing", table) for src, table in (landed or {}).items()}
    return edges


def pii_columns_of(config: CpbiConfig, name: str, columns: list[str] | None = None) -> dict[str, str]:
    """Personal-data columns of a table and their policy (``as_received`` for bronze/undeclared PII)."""
    cfg = config.table(name)
    cols = list(cfg.columns) if cfg.columns else list(columns or [])
    out = {c: p for c, p in cfg.pii.items() if p != "none"}
    for c in cols:
        if c in config.platform.pii_columns and c not in out and cfg.pii.get(c) != "none":
            out[c] = "as_received"
    return out


def classification(config: CpbiConfig, name: str) -> str:
    cfg = config.table(name)
    pii = pii_columns_of(config, name, None)
    if cfg.layer == "bronze" and ("pii" in cfg.tags or "as_received" in pii.values()):
        return "restricted"
    if pii:
        return "confidential"
    return "internal"


def dataset_rows(config: CpbiConfig, platform_source: dict[str, str]) -> list[dict]:
    """``dim_dataset`` rows: every declared table (pure)."""
    ranks = {k: v.rank for k, v in config.platform.classifications.items()}
    rows = []
    for name, cfg in config.tables.items():
        cls = classification(config, name)
        rows.append({"dataset_id": name, "physical_name": config.physical_name(name), "layer": cfg.layer,
                     "platform_source": platform_source.get(name), "owner": cfg.owner or config.project.owner,
                     "grain": cfg.grain, "keys": ",".join(cfg.keys), "classification": cls,
                     "sensitivity": ranks.get(cls), "tags": ",".join(cfg.tags), "description": cfg.description,
                     "path": config.table_path(name), "scd_type": cfg.scd_type, "column_count": len(cfg.columns),
                     "has_pii": bool(pii_columns_of(config, name))})
    return rows


def column_rows(config: CpbiConfig) -> list[dict]:
    """``dim_column`` rows: every declared column (pure)."""
    rows = []
    for name, cfg in config.tables.items():
        pii = pii_columns_of(config, name)
        for i, (col, sql_type) in enumerate(cfg.columns.items(), start=1):
            policy = pii.get(col) or cfg.pii.get(col)
            rows.append({"dataset_id": name, "column_name": col, "data_type": sql_type, "position": i,
                         "is_key": col in cfg.keys, "pii_policy": policy,
                         "classification": "confidential" if col in pii else "internal"})
    return rows


def catalog_rows(config: CpbiConfig) -> dict[str, list[dict]]:
    """Tags, owners, classifications, roles and grants from conf (pure)."""
    plat = config.platform
    tags = [{"dataset_id": n, "tag": t} for n, cfg in config.tables.items() for t in dict.fromkeys(cfg.tags)]
    owned: dict[str, int] = defaultdict(int)
    for cfg in config.tables.values():
        owned[cfg.owner or config.project.owner] += 1
    owners = [{"owner": o, "team": plat.owners[o].team if o in plat.owners else o,
               "contact": plat.owners[o].contact if o in plat.owners else None, "datasets": n}
              for o, n in sorted(owned.items())]
    classes = [{"classification": k, "sensitivity": v.rank, "handling": v.handling, "description": v.description}
               for k, v in plat.classifications.items()]
    roles = [{"role": r, "description": spec.description, "layers": ",".join(spec.layers),
              "tables": ",".join(spec.tables), "pii_access": spec.pii} for r, spec in plat.roles.items()]
    grants = []
    for r, spec in plat.roles.items():
        priv = "read_pii" if spec.pii else "read"
        grants += [{"role": r, "scope_type": "layer", "scope": layer, "privilege": priv} for layer in spec.layers]
        grants += [{"role": r, "scope_type": "table", "scope": t, "privilege": priv} for t in spec.tables]
    return {"ref_dataset_tags": tags, "dim_owner": owners, "ref_classifications": classes, "dim_role": roles,
            "ref_access_grants": grants}


def policy_rows(config: CpbiConfig) -> list[dict]:
    """``ref_policies``: PII handling per column, access per role, retention per target, quality gates (pure)."""
    rows = []
    for name, cfg in config.tables.items():
        for col, policy in cfg.pii.items():
            if policy != "none":
                rows.append({"policy_id": f"pii:{name}.{col}", "kind": "pii", "target": f"{name}.{col}",
                             "rule": policy, "description": f"{col} is stored {policy}ed in {name}"
                             if policy != "drop" else f"{col} is not stored in {name}"})
    for role, spec in config.platform.roles.items():
        rows.append({"policy_id": f"access:{role}", "kind": "access", "target": role,
                     "rule": f"layers={','.join(spec.layers)}; tables={','.join(spec.tables)}; pii={spec.pii}",
                     "description": spec.description})
    for target, rule in config.platform.retention.items():
        rows.append({"policy_id": f"retention:{target}", "kind": "retention", "target": target,
                     "rule": f"keep {rule.days} days", "description": rule.description})
    rows.append({"policy_id": "quality:blocking-gate", "kind": "quality", "target": "*",
                 "rule": "a failing blocking check stops promotion to the next stage",
                 "description": "no stage runs after a stage whose blocking checks failed in the same run"})
    return rows


def audit_policy_rows(ctx: RunContext, store: PlatformStore, now: datetime, memo: ScanMemo) -> list[dict]:
    """``audit_policies`` of this run: each policy verified on the data as the run left it.

    The counts of a table's PII columns and the oldest row under a retention rule are read once per table
    state (``memo``): an unchanged table is not read again.
    """
    rows = []
    base = {"run_id": ctx.run_id, "checked_ts": now}
    for name, cfg in ctx.config.tables.items():
        policies = {col: policy for col, policy in cfg.pii.items() if policy != "none"}
        if not policies:
            continue
        stored = set(store.lake.engine.schema(store.lake.path(name)).fieldNames()) if store.lake.exists(name) \
            else set()
        checked = {col: policy for col, policy in policies.items() if col in stored}
        counts = {}
        if checked:
            counts = memo.value("pii_policy", name, [name], lambda n=name, c=checked: _policy_counts(store, n, c),
                                conf={"checked": checked, "patterns": [HASH_PATTERN, MASK_PATTERN]})
        for col, policy in policies.items():
            pid = {"policy_id": f"pii:{name}.{col}", "kind": "pii", "target": f"{name}.{col}"}
            if col not in counts:
                rows.append({**base, **pid, "status": "not_applicable", "observed": "table not written yet"})
                continue
            n, bad_count = counts[col]
            rows.append({**base, **pid, "status": "violation" if bad_count else "compliant",
                         "observed": f"{bad_count} of {n} values not {policy}ed"})
    for target, rule in ctx.config.platform.retention.items():
        pid = {"policy_id": f"retention:{target}", "kind": "retention", "target": target}
        if rule.kind != "table" or not store.lake.exists(target):
            rows.append({**base, **pid, "status": "not_applicable", "observed": "checked on log files at trim"
                         if rule.kind != "table" else "table not written yet"})
            continue
        oldest = oldest_value(store, memo, target, rule.ts_column)
        age = (now.replace(tzinfo=None) - oldest).days if oldest else 0
        rows.append({**base, **pid, "status": "violation" if age > rule.days else "compliant",
                     "observed": f"oldest row {age} days old (limit {rule.days})"})
    for role in ctx.config.platform.roles:
        rows.append({**base, "policy_id": f"access:{role}", "kind": "access", "target": role,
                     "status": "compliant", "observed": "enforced by SecureReader; decisions in audit_access"})
    # The gate holds when no stage ran after a blocked stage in the same run.
    runs = [r for r in store.rows("fact_job_runs") if r["run_id"] == ctx.run_id]
    blocked = [r for r in runs if r["status"] == "blocked"]
    later = [r for r in runs for b in blocked if r["started_ts"] > b["finished_ts"]]
    rows.append({**base, "policy_id": "quality:blocking-gate", "kind": "quality", "target": "*",
                 "status": "violation" if later else ("compliant" if runs else "not_applicable"),
                 "observed": f"{len(blocked)} blocked stage(s), {len(later)} stage(s) ran after one"})
    return rows


def _policy_counts(store: PlatformStore, name: str, checked: dict[str, str]) -> dict[str, list[int]]:
    """Per PII column: ``[values, values not in the policy's form]``, all columns in one Spark job."""
    from pyspark.sql import functions as F

    aggs = []
    for i, (col, policy) in enumerate(checked.items()):
        value = F.col(f"`{col}`").cast("string")
        bad = {"hash": ~value.rlike(HASH_PATTERN), "mask": ~value.rlike(MASK_PATTERN), "drop": F.lit(True)}[policy]
        aggs += [F.count(value).alias(f"n{i}"), F.sum(F.when(value.isNotNull() & bad, 1).otherwise(0)).alias(f"bad{i}")]
    first = store.lake.read(name).agg(*aggs).first()
    return {col: [first[f"n{i}"], first[f"bad{i}"] or 0] for i, col in enumerate(checked)}


def oldest_value(store: PlatformStore, memo: ScanMemo, table: str, column: str) -> datetime | None:
    """The smallest ``column`` of ``table`` (naive UTC), read once per table state (retention trim and audit)."""
    from pyspark.sql import functions as F

    found = memo.value("oldest", f"{table}.{column}", [table],
                       lambda: store.lake.read(table).agg(F.min(column)).first()[0])
    return datetime.fromisoformat(found) if isinstance(found, str) else found


def pii_scan_rows(ctx: RunContext, store: PlatformStore, now: datetime, memo: ScanMemo) -> list[dict]:
    """``fact_pii_scan``: values of silver/gold PII columns equal to values landed in bronze (must be 0).

    A column is scanned again only when it or a bronze table landing its values is at a new state
    (``memo``); the columns to scan are scanned together in one Spark job.
    """
    from cpbi_spark.ingest.readers import safe_name
    from cpbi_spark.platform.scan_memo import MISSING

    # PII column -> the bronze (table, column) pairs holding its landed values (from the log: no data read)
    feeds: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for source in ctx.config.sources.values():
        if not store.lake.exists(source.bronze_table):
            continue
        landed = set(store.lake.engine.schema(store.lake.path(source.bronze_table)).fieldNames())
        for canon, file_col in source.columns.items():
            if canon in ctx.config.platform.pii_columns and safe_name(file_col) in landed:
                feeds[canon].append((source.bronze_table, safe_name(file_col)))
    subjects: dict[tuple[str, str], tuple[str, str | None]] = {}  # (table, column) -> (policy, memo key)
    for name, cfg in ctx.config.tables.items():
        if cfg.layer not in ("silver", "gold") or not store.lake.exists(name):
            continue
        for col, policy in pii_columns_of(ctx.config, name).items():
            if col in cfg.columns and col in feeds:
                key = memo.inputs([name, *(t for t, _ in feeds[col])], conf=sorted(feeds[col]))
                subjects[(name, col)] = (policy, key)
    counts: dict[tuple[str, str], tuple[int, int]] = {}
    for (name, col), (_, key) in subjects.items():
        found = memo.lookup("pii_scan", f"{name}.{col}", key)
        if found is not MISSING:
            counts[(name, col)] = tuple(found)
    stale = [s for s in subjects if s not in counts]
    if stale:
        scanned = _scan_clear_values(store, stale, feeds)
        for subject in stale:
            counts[subject] = scanned.get(subject, (0, 0))
            memo.keep("pii_scan", f"{subject[0]}.{subject[1]}", subjects[subject][1], list(counts[subject]))
    rows = []
    for (name, col), (policy, _) in sorted(subjects.items()):
        n, found = counts[(name, col)]
        rows.append({"run_id": ctx.run_id, "dataset_id": name, "column_name": col, "policy": policy,
                     "rows_scanned": n, "clear_values_found": found,
                     "status": "clear_text_found" if found else "clean", "scanned_ts": now})
    return rows


def _scan_clear_values(store: PlatformStore, subjects: list[tuple[str, str]],
                       feeds: dict[str, list[tuple[str, str]]]) -> dict[tuple[str, str], tuple[int, int]]:
    """``(rows scanned, clear values found)`` per (table, column), every one in a single Spark job."""
    from pyspark.sql import functions as F

    columns = sorted({col for _, col in subjects})
    clear = None
    for col in columns:
        for table, landed in feeds[col]:
            part = store.lake.read(table).select(F.lit(col).alias("c"), F.col(f"`{landed}`").alias("v"))
            clear = part if clear is None else clear.unionByName(part)
    # "***"-short values (a masked short name) identify nobody; longer clear values must never appear.
    clear = clear.where(F.length(F.trim("v")) > 3).distinct().withColumn("_hit", F.lit(1))
    values = None
    for name, col in subjects:
        part = store.lake.read(name).select(F.lit(name).alias("d"), F.lit(col).alias("c"),
                                            F.col(col).cast("string").alias("v"))
        values = part if values is None else values.unionByName(part)
    return {(r["d"], r["c"]): (r["n"], r["found"]) for r in values.join(clear, ["c", "v"], "left")
            .groupBy("d", "c").agg(F.count(F.lit(1)).alias("n"), F.count("_hit").alias("found")).collect()}


def contract_rows(ctx: RunContext, store: PlatformStore, tables: list[str], now: datetime) -> list[dict]:
    """``audit_schema_contracts``: the stored schema of each table written against its declared columns."""
    rows = []
    for name in sorted(set(tables)):
        cfg: TableConfig = ctx.config.table(name)
        if not store.lake.exists(name):
            continue
        stored = {f.name: f.dataType.simpleString() for f in store.lake.engine.schema(store.lake.path(name)).fields}
        if cfg.as_received:
            diffs = [] if {"_record_id", "_batch_id"} <= set(stored) else ["bronze lineage columns missing"]
        else:
            declared = {f.name: f.dataType.simpleString() for f in store.lake.schema(name).fields}
            diffs = [f"missing {c}" for c in declared if c not in stored]
            diffs += [f"undeclared {c}" for c in stored if c not in declared]
            diffs += [f"{c}: {stored[c]} (declared {t})" for c, t in declared.items() if c in stored and stored[c] != t]
        rows.append({"run_id": ctx.run_id, "dataset_id": name, "version": store.lake.version(name),
                     "status": "mismatch" if diffs else "match", "differences": "; ".join(diffs) or None,
                     "checked_ts": now})
    return rows


def trust_rows(results: list[dict]) -> list[dict]:
    """``fact_dataset_trust`` from ``fact_data_quality`` rows: each table's last validation (pure)."""
    latest: dict[str, tuple] = {}
    for r in results:
        key = (r["checked_ts"], r["run_id"], r["stage"])
        if r["dataset_id"] not in latest or key > latest[r["dataset_id"]]:
            latest[r["dataset_id"]] = key
    out = []
    for dataset, key in sorted(latest.items()):
        last = [r for r in results if r["dataset_id"] == dataset and (r["checked_ts"], r["run_id"], r["stage"]) == key]
        passed = sum(r["check_status"] == "passed" for r in last)
        blocking = sum(r["check_status"] != "passed" and r["severity"] == "blocking" for r in last)
        warning = sum(r["check_status"] != "passed" and r["severity"] == "warning" for r in last)
        out.append({"dataset_id": dataset, "last_run_id": key[1], "dataset_version": last[0]["dataset_version"],
                    "last_checked_ts": key[0], "checks": len(last), "passed": passed, "failed_blocking": blocking,
                    "failed_warning": warning, "pass_rate": passed / len(last), "trusted": blocking == 0})
    return out


def region_rows(ctx: RunContext, store: PlatformStore, memo: ScanMemo) -> list[dict]:
    """``dim_region``: the platform's region (conf) and the merchant regions found in silver (read once per
    state of ``dim_merchant``, see ``memo``)."""
    from pyspark.sql import functions as F

    def merchant_regions() -> list[dict]:
        found = (store.lake.read("dim_merchant").where(F.col("region").isNotNull())
                 .groupBy("region").agg(F.min("country").alias("country"), F.count(F.lit(1)).alias("n")).collect())
        return [{"domain": "merchant", "region_code": r["region"], "name": r["region"], "country": r["country"],
                 "members": r["n"]} for r in sorted(found, key=lambda r: r["region"])]

    plat = ctx.config.platform
    rows = [{"domain": "platform", "region_code": plat.region.code, "name": plat.region.name, "country": None,
             "members": 1}]
    if store.lake.exists("dim_merchant"):
        rows += memo.value("regions", "dim_merchant", ["dim_merchant"], merchant_regions)
    return rows
