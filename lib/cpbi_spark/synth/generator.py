"""Entry point: simulate the retailer month by month and write one delivery batch of landing files.

Example:
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     manifest = generate(tmp, scale=0.05, seed=7)
    ...     sorted(manifest["row_counts"])[:3]
    ['customers', 'exchange_rates', 'products']
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa

from cpbi_spark.synth.customers import CUSTOMER_COLUMNS
from cpbi_spark.synth.dirty import (
    RETURN_DIRTY_KINDS,
    TRANSACTION_DIRTY_KINDS,
    DirtyOutcome,
    inject_returns,
    inject_transactions,
    plan_dirty,
)
from cpbi_spark.synth.params import GENERATOR_VERSION, REPORTING_CURRENCY, SizeParams
from cpbi_spark.synth.promotions import PROMOTIONS, assign_targeted, promotion_record
from cpbi_spark.synth.realized import Realized
from cpbi_spark.synth.returns import draw_returns
from cpbi_spark.synth.sales import TRANSACTION_COLUMNS, simulate_month
from cpbi_spark.synth.scd2 import scd2_expectations
from cpbi_spark.synth.timeline import BATCH_MONTHS, DAY, iso_date
from cpbi_spark.synth.truths import build_truths
from cpbi_spark.synth.world import World, build_world
from cpbi_spark.synth.writers import csv_bytes, jsonl_bytes, parquet_bytes, write_if_changed

MANIFEST_NAMES: dict[int, str] = {1: "manifest.json", 2: "manifest_batch2.json"}
STORE_COLUMNS = ("store_id", "store_name", "channel", "region", "country", "currency", "opened_date")
RATE_COLUMNS = ("rate_date", "currency", "rate_to_usd")
EXPOSURE_SCHEMA = pa.schema([
    ("exposure_id", pa.string()), ("promotion_id", pa.string()), ("customer_id", pa.string()),
    ("arm", pa.string()), ("exposed_ts", pa.timestamp("us", tz="UTC")),
])


class _BatchFiles:
    """Bookkeeping of the files one batch writes: rows, valid/dirty counts, ids and hashes."""

    def __init__(self, root: Path, batch: int) -> None:
        self.root, self.batch = root, batch
        self.files: dict[str, dict] = {}
        self.dirty: dict[str, dict[str, int]] = {}
        self.dirty_ids: dict[str, dict[str, list[str]]] = {}
        self.dirty_details: dict[str, dict[str, dict[str, int]]] = {}

    def write(self, source: str, name: str, fmt: str, data: bytes, rows: int,
              dirty: DirtyOutcome | None = None) -> None:
        rel = f"landing/{source}/{name}"
        info = write_if_changed(self.root / rel, data)
        n_dirty = sum(dirty.counts.values()) if dirty else 0
        self.files[rel] = {"source": source, "format": fmt, "rows": rows, "valid": rows - n_dirty,
                           "dirty": dict(dirty.counts) if dirty else {}, **info}
        if dirty:
            totals = self.dirty.setdefault(source, {})
            ids = self.dirty_ids.setdefault(source, {})
            details = self.dirty_details.setdefault(source, {})
            for kind, k in dirty.counts.items():
                totals[kind] = totals.get(kind, 0) + k
                ids.setdefault(kind, []).extend(dirty.ids.get(kind, []))
            for kind, parts in dirty.details.items():
                slot = details.setdefault(kind, {})
                for what, k in parts.items():
                    slot[what] = slot.get(what, 0) + k

    def row_counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for info in self.files.values():
            agg = out.setdefault(info["source"], {"files": 0, "rows": 0, "valid": 0, "dirty": 0})
            agg["files"] += 1
            agg["rows"] += info["rows"]
            agg["valid"] += info["valid"]
            agg["dirty"] += info["rows"] - info["valid"]
        return dict(sorted(out.items()))


def _check_existing(root: Path, batch: int, seed: int, scale: float, fraction: float | None = None,
                    requested: bool = False) -> bool:
    """True if ``batch`` was already generated here with the same parameters (then it is kept)."""
    path = root / MANIFEST_NAMES[batch]
    if not path.exists():
        return False
    old = json.loads(path.read_text(encoding="utf-8"))
    if (old.get("seed"), old.get("scale"), old.get("generator_version")) != (seed, scale, GENERATOR_VERSION):
        raise ValueError(
            f"{path} was generated with seed={old.get('seed')}, scale={old.get('scale')}, "
            f"version={old.get('generator_version')}; refusing to add batch files with seed={seed}, "
            f"scale={scale}, version={GENERATOR_VERSION} to it")
    if requested and old.get("batch_fraction") != fraction:
        # The same file names would hold other lines: a partial and a whole delivery do not mix.
        raise ValueError(f"{path} was generated with batch_fraction={old.get('batch_fraction')}; refusing to "
                         f"write batch {batch} again with batch_fraction={fraction}: use another --out folder")
    return True


def _write_static(world: World, out: _BatchFiles) -> None:
    """Master data, rates and campaigns delivered with batch ``out.batch``."""
    b, pop, cat, st = out.batch, world.pop, world.catalog, world.stores
    rows = pop.customer_rows(b)
    out.write("customers", f"customers_{b}.csv", "csv", csv_bytes(CUSTOMER_COLUMNS, rows), len(rows))
    idx = np.arange(cat.n) if b == 1 else cat.changed
    products = cat.records(idx, batch2_prices=b >= 2)
    out.write("products", f"products_{b}.jsonl", "jsonl", jsonl_bytes(products), len(products))
    stores = st.rows(b)
    out.write("stores", f"stores_{b}.csv", "csv", csv_bytes(STORE_COLUMNS, stores), len(stores))
    rates = world.fx.rows(b)
    out.write("exchange_rates", f"rates_{b}.csv", "csv", csv_bytes(RATE_COLUMNS, rates), len(rates))
    specs = [s for s in PROMOTIONS if world.timeline.months[s.month_index].batch == b]
    promos = [promotion_record(s, world.timeline) for s in specs]
    out.write("promotions", f"promotions_{b}.jsonl", "jsonl", jsonl_bytes(promos), len(promos))
    for spec in specs:
        exp = world.exposures[spec.promotion_id]
        table = pa.table({
            "exposure_id": exp.exposure_ids(),
            "promotion_id": [spec.promotion_id] * len(exp.cust),
            "customer_id": [pop.customer_id[c] for c in exp.cust.tolist()],
            "arm": [spec.arm_names[a] for a in exp.arm.tolist()],
            "exposed_ts": pa.array(exp.exposed_ts * 1_000_000, type=pa.timestamp("us", tz="UTC")),
        }, schema=EXPOSURE_SCHEMA)
        out.write("promotion_exposures", f"exposures_{spec.promotion_id}.parquet", "parquet",
                  parquet_bytes(table), len(exp.cust))


def _manifest(world: World, real: Realized, out: _BatchFiles) -> dict:
    b, tl = out.batch, world.timeline
    months = tl.batch_months(b)
    return {
        "generator": "cpbi_spark.synth",
        "generator_version": GENERATOR_VERSION,
        "seed": world.seed,
        "scale": world.sizes.scale,
        "batch": b,
        "manifest_files": {str(k): v for k, v in MANIFEST_NAMES.items()},
        "reporting_currency": REPORTING_CURRENCY,
        "window": {
            "start": iso_date([months[0].start])[0], "end": iso_date([months[-1].end - DAY])[0],
            "months": [m.label for m in months],
        },
        "cumulative_window": {"start": iso_date([tl.months[0].start])[0],
                              "end": iso_date([months[-1].end - DAY])[0]},
        "conventions": {
            "timestamps": ("posted_ts/returned_ts carry the store's fixed UTC offset (US -05:00, "
                           "DE/FR +01:00, GB +00:00); all truths use UTC months/days"),
            "exchange_rates": ("rate_to_usd = USD per unit; rate_date is a UTC date: convert with the "
                               "UTC date"),
            "amounts": ("amount = quantity * unit_price (2 decimals, store currency); returns carry "
                        "positive amounts"),
            "customers": ("change feed: one row per version; batch 2 holds new versions, late updates, "
                          "repeats"),
            "products": ("batch 1 = full catalog; batch 2 = only products whose list_price changed "
                         "(new version)"),
            "stores": "batch 1 = all stores; batch 2 = the store opened in batch 2",
        },
        "sizes": {"customers": world.pop.n, "products": world.catalog.n, "stores": world.stores.n,
                  "lines_per_basket_expected": round(world.lines_per_basket, 6)},
        "files": out.files,
        "row_counts": out.row_counts(),
        "dirty": out.dirty,
        "dirty_ids": out.dirty_ids,
        "dirty_details": out.dirty_details,
        "scd2": scd2_expectations(world.pop, b),
        "product_price_changes": {
            "count": len(world.catalog.changed), "effective": iso_date([world.catalog.change_ts])[0],
            "product_ids": [world.catalog.product_id[i] for i in world.catalog.changed.tolist()],
        },
        "truths": build_truths(world, real, b),
    }


def generate(out_dir: str | Path, scale: float = 1.0, seed: int = 42, batch: int = 1,
             progress: Callable[[str], None] | None = None, batch_fraction: float | None = None) -> dict:
    """Write delivery ``batch`` of the synthetic retailer under ``out_dir`` and return its manifest.

    Earlier batches missing from ``out_dir`` are written too (batch 2 needs batch 1's world);
    batches already present must have been generated with the same seed and scale and are never
    rewritten. Output bytes depend only on (seed, scale, batch, batch_fraction).

    ``batch_fraction`` (batch 2 and later only) makes the delivery a small daily-style increment:
    its transaction lines stop once they number ``batch_fraction`` x the lines of the earlier
    batches (the first lines of the batch in time order, with a proportional share of dirty
    lines), and only the returns made before that point are delivered (without planted dirty
    returns, which are built from lines after it). Customer, product, store and rate files are
    delivered whole, so the late and changed SCD2 versions are still in it. Such a manifest has
    no analytical ``truths`` (they describe whole batches) and records ``partial_delivery``.

    Example:
        >>> generate("/tmp/cpbi", scale=1, batch=2, batch_fraction=0.01)["partial_delivery"]  # doctest: +SKIP
        {'batch_fraction': 0.01, 'history_lines': 99876, 'lines': 998, 'until': '2025-03-05T...'}
    """
    if batch not in BATCH_MONTHS:
        raise ValueError(f"batch must be one of {sorted(BATCH_MONTHS)}, got {batch!r}")
    if batch_fraction is not None and (batch < 2 or not 0 < batch_fraction <= 1):
        raise ValueError(f"batch_fraction needs a later batch (--batch 2) and a value in (0, 1], got "
                         f"batch={batch}, batch_fraction={batch_fraction}")
    sizes = SizeParams.from_scale(scale)
    root = Path(out_dir)
    say = progress or (lambda _msg: None)
    # Every batch already in out_dir must come from the same (seed, scale, version); the requested
    # batch is (re)written - a no-op for identical bytes - and missing earlier batches are added.
    existing = {b: _check_existing(root, b, seed, sizes.scale, batch_fraction, requested=b == batch)
                for b in BATCH_MONTHS}
    to_write = [b for b in range(1, batch + 1) if b == batch or not existing[b]]
    world = build_world(seed, sizes.scale, say)
    tl = world.timeline
    real = Realized(world)
    outs = {b: _BatchFiles(root, b) for b in to_write}
    plans_tx: dict[int, dict[str, int]] = {}
    plans_ret: dict[int, dict[str, int]] = {}
    mean_return = float(np.mean(world.catalog.category_return_prob[world.catalog.category]))
    for b in to_write:
        idx = [m.index for m in tl.batch_months(b)]
        plans_tx |= plan_dirty(seed, b, idx, world.expected_lines_month[idx], TRANSACTION_DIRTY_KINDS,
                               "transactions")
        plans_ret |= plan_dirty(seed, b, idx, world.expected_lines_month[idx] * mean_return,
                                RETURN_DIRTY_KINDS, "returns")
    carry: list[tuple[int, dict]] = []
    history_lines = 0  # valid lines of the batches before ``batch`` (the base of batch_fraction)
    budget: int | None = None  # lines still to deliver in a partial batch
    until: int | None = None  # time of the last delivered line of a partial batch
    for month in tl.months[: tl.batch_months(batch)[-1].index + 1]:
        m = month.index
        for spec in PROMOTIONS:  # the targeted campaign picks its audience from the spend so far
            if not spec.is_randomized and spec.month_index == m:
                world.exposures[spec.promotion_id] = assign_targeted(spec, seed, world.pop, world.offset, tl,
                                                                     real.spend_usd)
        sales = simulate_month(world, m)
        rets = draw_returns(world, sales)
        real.add_month(world, sales, rets)
        ret_month = tl.month_of(rets.returned_ts).tolist()
        due = carry + [(int(t), r) for t, r, rm in zip(rets.returned_ts.tolist(), rets.records, ret_month,
                                                       strict=True) if rm == m]
        carry = [(int(t), r) for t, r, rm in zip(rets.returned_ts.tolist(), rets.records, ret_month,
                                                 strict=True) if rm > m]
        if month.batch < batch:
            history_lines += sales.n_lines
        if month.batch not in outs:
            continue
        out = outs[month.batch]
        valid, tx_plan, ret_plan = sales.rows(world), plans_tx[m], plans_ret[m]
        if batch_fraction is not None and month.batch == batch:
            if budget is None:
                budget = max(1, round(batch_fraction * history_lines))
            if budget <= 0:
                continue
            keep = min(budget, len(valid))  # lines are in time order: the first ones of the batch
            budget -= keep
            share = keep / max(1, len(valid))
            valid, tx_plan, ret_plan = valid[:keep], {k: round(v * share) for k, v in tx_plan.items()}, {}
            until = int(sales.l_ts[keep - 1])
            due = [(t, r) for t, r in due if t <= until]
        tx = inject_transactions(world, sales, valid, tx_plan)
        out.write("transactions", f"transactions_{month.label}.csv", "csv",
                  csv_bytes(TRANSACTION_COLUMNS, tx.rows), len(tx.rows), tx)
        ret = inject_returns(world, sales, rets, due, ret_plan)
        out.write("returns", f"returns_{month.label}.jsonl", "jsonl", jsonl_bytes(r for _, r in ret.rows),
                  len(ret.rows), ret)
        say(f"transactions {month.label}: {sales.n_lines:,} lines in {sales.n_baskets:,} baskets "
            f"(+{sum(tx.counts.values())} dirty); returns: {len(ret.rows):,} rows")
    manifest: dict = {}
    for b, out in outs.items():
        _write_static(world, out)
        manifest = _manifest(world, real, out)
        if batch_fraction is not None and b == batch:
            manifest["batch_fraction"] = batch_fraction
            manifest["truths"] = {}  # the planted truths describe whole batches, not this increment
            manifest["partial_delivery"] = {
                "batch_fraction": batch_fraction, "history_lines": history_lines,
                "lines": manifest["row_counts"].get("transactions", {}).get("valid", 0),
                "until": iso_date([until])[0] if until is not None else None}
        data = (json.dumps(manifest, indent=1, ensure_ascii=False) + "\n").encode("utf-8")
        write_if_changed(root / MANIFEST_NAMES[b], data)
        say(f"batch {b}: {len(out.files)} files, manifest {MANIFEST_NAMES[b]}")
    return manifest
