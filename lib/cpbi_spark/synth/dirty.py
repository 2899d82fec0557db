"""Planted dirty records: each has exactly ONE defect, so the manifest counts are exact.

Transactions (``transactions_<YYYY-MM>.csv``):

* ``bad_type`` - quantity or unit_price is not a number (``abc``, ``#VALUE!`` ...);
* ``missing_key`` - empty txn_id, customer_id or product_id;
* ``unknown_currency`` - currency ``XXX``;
* ``future_date`` - posted_ts 5-8 years after the end of the generation window;
* ``negative_quantity`` - a SALE with quantity < 0 (amount = quantity x unit_price, so negative too);
* ``duplicate`` - an exact copy of a valid line (same txn_id): deduplicate, do not quarantine;
* ``malformed_line`` - one field dropped (12 instead of 13 fields): a CSV parser rejects the line.

Returns (``returns_<YYYY-MM>.jsonl``): ``orphan_return`` (original_txn_id that exists nowhere) and
``bad_type`` (quantity or amount is a non-numeric string).

Every dirty row except ``duplicate`` has its own fresh txn_id / return_id (and basket_id), so it is
never a valid line of its own, never the original of a return and never part of a planted truth.

Example:
    >>> plan = plan_dirty(42, 1, [0, 1], np.array([1000.0, 1000.0]), TRANSACTION_DIRTY_KINDS, "transactions")
    >>> sum(plan[0].values()) + sum(plan[1].values()) == 3 * len(TRANSACTION_DIRTY_KINDS)
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cpbi_spark.synth.params import DIRTY_SHARE, MIN_DIRTY_PER_KIND
from cpbi_spark.synth.reference_data import CURRENCIES
from cpbi_spark.synth.returns import MonthReturns
from cpbi_spark.synth.sales import TRANSACTION_COLUMNS, MonthSales, cents_str
from cpbi_spark.synth.seeding import derive_rng
from cpbi_spark.synth.timeline import DAY, iso_with_offset
from cpbi_spark.synth.world import World

TRANSACTION_DIRTY_KINDS: tuple[str, ...] = (
    "bad_type", "missing_key", "unknown_currency", "future_date", "negative_quantity", "duplicate",
    "malformed_line",
)
RETURN_DIRTY_KINDS: tuple[str, ...] = ("orphan_return", "bad_type")
BAD_NUMBER_TOKENS: tuple[str, ...] = ("abc", "two", "#VALUE!", "12a", "1.2.3")
UNKNOWN_CURRENCY = "XXX"
MISSING_KEY_FIELDS: tuple[str, ...] = ("txn_id", "customer_id", "product_id")
MALFORMED_DROPPED: tuple[str, ...] = ("payment_method", "store_id")
ORPHAN_SEQ_BASE = 9_000_000  # orphan originals use sequence numbers no month ever reaches
_COL = {c: i for i, c in enumerate(TRANSACTION_COLUMNS)}


def plan_dirty(seed: int, batch: int, months: list[int], expected: np.ndarray, kinds: tuple[str, ...],
               source: str, share: float = DIRTY_SHARE) -> dict[int, dict[str, int]]:
    """Dirty-record counts per month and kind: ``share`` of the expected rows over all kinds, at least
    MIN_DIRTY_PER_KIND of each kind per batch, spread over the months in proportion to volume."""
    weights = np.asarray(expected, dtype=np.float64)
    per_kind = max(MIN_DIRTY_PER_KIND, round(share * weights.sum() / len(kinds)))
    rng = derive_rng(seed, "dirty_plan", source, batch)
    plan: dict[int, dict[str, int]] = {m: {} for m in months}
    for kind in kinds:
        for m, k in zip(months, rng.multinomial(per_kind, weights / weights.sum()).tolist(), strict=True):
            plan[m][kind] = int(k)
    return plan


@dataclass
class DirtyOutcome:
    """Rows of one file (valid and dirty interleaved) and what was planted in it."""

    rows: list
    counts: dict[str, int]
    ids: dict[str, list[str]]
    details: dict[str, dict[str, int]] = field(default_factory=dict)


def inject_transactions(world: World, sales: MonthSales, valid: list[list[str]],
                        counts: dict[str, int]) -> DirtyOutcome:
    """Mix the planned dirty lines into the month's valid CSV rows at random positions."""
    rng = derive_rng(world.seed, "dirty_transactions", sales.month.index)
    n = len(valid)
    month = sales.month
    st = world.stores
    next_txn, next_basket = n, sales.n_baskets
    width = max(6, len(str(sales.n_baskets)))
    keys: list[float] = []
    rows: list[list[str]] = []
    ids: dict[str, list[str]] = {k: [] for k in TRANSACTION_DIRTY_KINDS}
    details: dict[str, dict[str, int]] = {"missing_key": {}, "bad_type": {}, "malformed_line": {}}

    def fresh(t: int) -> list[str]:
        nonlocal next_txn, next_basket
        next_txn += 1
        next_basket += 1
        row = list(valid[t])
        row[_COL["txn_id"]] = f"T{month.yyyymm}{next_txn:07d}"
        row[_COL["basket_id"]] = f"B{month.index:02d}{next_basket:0{width}d}"
        return row

    def bump(kind: str, what: str) -> None:
        details[kind][what] = details[kind].get(what, 0) + 1

    for kind in TRANSACTION_DIRTY_KINDS:
        k = counts.get(kind, 0)
        if k == 0:
            continue
        if n == 0:
            raise ValueError(f"month {month.label} has no valid line to build dirty records from")
        templates = rng.choice(n, size=k, replace=k > n).tolist()
        for t in templates:
            if kind == "duplicate":
                rows.append(list(valid[t]))
                keys.append(float(rng.uniform(t + 0.1, n)))  # the copy comes after the original
                ids[kind].append(valid[t][_COL["txn_id"]])
                continue
            row = fresh(t)
            if kind == "bad_type":
                col = ("quantity", "unit_price")[int(rng.integers(0, 2))]
                row[_COL[col]] = BAD_NUMBER_TOKENS[int(rng.integers(0, len(BAD_NUMBER_TOKENS)))]
                bump(kind, col)
            elif kind == "missing_key":
                col = MISSING_KEY_FIELDS[int(rng.integers(0, len(MISSING_KEY_FIELDS)))]
                row[_COL[col]] = ""
                bump(kind, col)
            elif kind == "unknown_currency":
                row[_COL["currency"]] = UNKNOWN_CURRENCY
            elif kind == "future_date":
                shift = int(rng.integers(5, 9)) * 365 * DAY + int(rng.integers(0, 365)) * DAY
                store = sales.l_store[t]
                row[_COL["posted_ts"]] = iso_with_offset(np.array([sales.l_ts[t] + shift]),
                                                         st.offset_minutes[[store]])[0]
            elif kind == "negative_quantity":
                q = int(sales.l_qty[t])
                row[_COL["quantity"]] = str(-q)
                row[_COL["amount"]] = cents_str([-q * int(sales.l_price_cents[t])])[0]
            elif kind == "malformed_line":
                col = MALFORMED_DROPPED[int(rng.integers(0, len(MALFORMED_DROPPED)))]
                del row[_COL[col]]
                bump(kind, f"dropped_{col}")
            if row[_COL["txn_id"]]:  # an emptied txn_id has no id to list
                ids[kind].append(row[_COL["txn_id"]])
            keys.append(float(rng.uniform(-0.5, n)))
            rows.append(row)
    order = np.argsort(np.concatenate([np.arange(n, dtype=np.float64), np.array(keys, dtype=np.float64)]),
                       kind="stable")
    combined = valid + rows
    planted = {k: int(counts.get(k, 0)) for k in TRANSACTION_DIRTY_KINDS}
    return DirtyOutcome([combined[i] for i in order.tolist()], planted, ids, details)


def inject_returns(world: World, sales: MonthSales, returns: MonthReturns, records: list[tuple[int, dict]],
                   counts: dict[str, int]) -> DirtyOutcome:
    """Add dirty return records (built from lines of ``sales`` that were not returned) to ``records``,
    the month's valid ``(returned_ts, record)`` pairs; the result is ordered by returned_ts."""
    rng = derive_rng(world.seed, "dirty_returns", sales.month.index)
    month = sales.month
    if sales.n_lines >= ORPHAN_SEQ_BASE:
        raise ValueError("too many lines in one month for the orphan id scheme")
    st, pop, cat = world.stores, world.pop, world.catalog
    pool = np.flatnonzero(~returns.returned_mask & (sales.l_ts < month.end - 2 * DAY))
    next_id = len(returns.records)
    ids: dict[str, list[str]] = {k: [] for k in RETURN_DIRTY_KINDS}
    details: dict[str, dict[str, int]] = {"bad_type": {}}
    out = list(records)
    orphan_seq = ORPHAN_SEQ_BASE
    for kind in RETURN_DIRTY_KINDS:
        k = counts.get(kind, 0)
        if k == 0:
            continue
        if len(pool) == 0:
            raise ValueError(f"month {month.label} has no line to build dirty returns from")
        for t in rng.choice(pool, size=k, replace=k > len(pool)).tolist():
            next_id += 1
            ts = int(sales.l_ts[t]) + DAY + int(rng.integers(0, month.end - int(sales.l_ts[t]) - DAY))
            store = int(sales.l_store[t])
            qty = 1 + int(rng.integers(0, int(sales.l_qty[t])))
            rec: dict = {
                "return_id": f"R{month.yyyymm}{next_id:07d}",
                "original_txn_id": sales.txn_ids[t],
                "customer_id": pop.customer_id[int(sales.l_cust[t])],
                "product_id": cat.product_id[int(sales.l_product[t])],
                "store_id": st.store_id[store],
                "quantity": qty,
                "amount": qty * int(sales.l_price_cents[t]) / 100,
                "currency": CURRENCIES[int(st.currency_idx[store])],
                "returned_ts": iso_with_offset(np.array([ts]), st.offset_minutes[[store]])[0],
                "reason": "changed_mind",
            }
            if kind == "orphan_return":
                orphan_seq += 1
                rec["original_txn_id"] = f"T{month.yyyymm}{orphan_seq:07d}"
            else:
                col = ("quantity", "amount")[int(rng.integers(0, 2))]
                rec[col] = BAD_NUMBER_TOKENS[int(rng.integers(0, len(BAD_NUMBER_TOKENS)))]
                details["bad_type"][col] = details["bad_type"].get(col, 0) + 1
            ids[kind].append(rec["return_id"])
            out.append((ts, rec))
    out.sort(key=lambda pair: (pair[0], pair[1]["return_id"]))
    planted = {k: int(counts.get(k, 0)) for k in RETURN_DIRTY_KINDS}
    return DirtyOutcome(out, planted, ids, details)
