"""The synthetic retailer: determinism, file contracts, planted dirt and planted truths (no Spark).

Every check re-derives its numbers from the written files with plain csv/json/pandas parsing, so it
tests the files against the manifest, not the generator against itself.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cpbi_spark.synth import generate

TX_COLUMNS = ["txn_id", "basket_id", "account_id", "customer_id", "product_id", "store_id", "quantity",
              "unit_price", "amount", "currency", "txn_type", "payment_method", "posted_ts"]
CUSTOMER_COLUMNS = ["customer_id", "account_id", "first_name", "last_name", "email", "phone",
                    "street_address", "city", "region", "country", "loyalty_tier", "signup_date",
                    "updated_at"]
STORE_COLUMNS = ["store_id", "store_name", "channel", "region", "country", "currency", "opened_date"]
RATE_COLUMNS = ["rate_date", "currency", "rate_to_usd"]
PRODUCT_KEYS = ["product_id", "product_name", "brand", "category", "department", "unit_cost", "list_price",
                "updated_at"]
RETURN_KEYS = ["return_id", "original_txn_id", "customer_id", "product_id", "store_id", "quantity", "amount",
               "currency", "returned_ts", "reason"]
PROMOTION_KEYS = ["promotion_id", "name", "promo_type", "discount_pct", "channel", "start_date", "end_date",
                  "response_window_days", "cost_per_contact", "is_randomized"]
EXPOSURE_COLUMNS = ["exposure_id", "promotion_id", "customer_id", "arm", "exposed_ts"]
CURRENCIES = {"USD", "EUR", "GBP"}
NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


# --------------------------------------------------------------------------- fixtures and parsing


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict:
    """Scale 0.05: batch 1, then batch 2 added to the same folder."""
    root = tmp_path_factory.mktemp("small")
    messages: list[str] = []
    m1 = generate(root, scale=0.05, seed=42, batch=1, progress=messages.append)
    before = _hashes(root)
    mtimes = {p: (root / p).stat().st_mtime_ns for p in before}
    m2 = generate(root, scale=0.05, seed=42, batch=2)
    return {"root": root, "m1": m1, "m2": m2, "before": before, "mtimes": mtimes, "messages": messages}


@pytest.fixture(scope="module")
def half(tmp_path_factory) -> dict:
    """Scale 0.5, batch 1 only: large enough for the statistical checks."""
    root = tmp_path_factory.mktemp("half")
    return {"root": root, "m1": generate(root, scale=0.5, seed=42, batch=1)}


def _csv_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _utc(values) -> pd.Series:
    return pd.to_datetime(pd.Series(list(values)), utc=True, format="ISO8601")


def _classify_tx(row: list[str], window_end: pd.Timestamp) -> str | None:
    """The one defect of a transaction row (None = valid), judged independently of the generator."""
    if len(row) != len(TX_COLUMNS):
        return "malformed_line"
    rec = dict(zip(TX_COLUMNS, row, strict=True))
    if not rec["txn_id"] or not rec["customer_id"] or not rec["product_id"]:
        return "missing_key"
    if not NUMBER.match(rec["quantity"]) or not NUMBER.match(rec["unit_price"]):
        return "bad_type"
    if rec["currency"] not in CURRENCIES:
        return "unknown_currency"
    if pd.Timestamp(rec["posted_ts"]) > window_end:
        return "future_date"
    if int(rec["quantity"]) < 0:
        return "negative_quantity"
    return None


def _scan_transactions(root: Path, window_end: str) -> tuple[dict, pd.DataFrame]:
    """Per-file defect counts and the deduplicated valid lines of all transaction files."""
    end = pd.Timestamp(window_end, tz="UTC") + pd.Timedelta(days=1)
    counts: dict[str, Counter] = {}
    valid: list[list[str]] = []
    for path in sorted((root / "landing/transactions").glob("*.csv")):
        header, rows = _csv_rows(path)
        assert header == TX_COLUMNS
        seen: set[tuple[str, ...]] = set()
        c: Counter = Counter()
        for row in rows:
            kind = _classify_tx(row, end)
            if kind is None and tuple(row) in seen:
                kind = "duplicate"
            if kind is None:
                seen.add(tuple(row))
                valid.append(row)
            else:
                c[kind] += 1
        counts[str(path.relative_to(root))] = c
    df = pd.DataFrame(valid, columns=TX_COLUMNS)
    df["quantity"] = df["quantity"].astype(int)
    df["unit_price"] = df["unit_price"].astype(float)
    df["amount"] = df["amount"].astype(float)
    df["ts"] = _utc(df["posted_ts"])
    return counts, df


@pytest.fixture(scope="module")
def small_tx(small) -> tuple[dict, pd.DataFrame]:
    return _scan_transactions(small["root"], small["m2"]["cumulative_window"]["end"])


@pytest.fixture(scope="module")
def half_tx(half) -> tuple[dict, pd.DataFrame]:
    return _scan_transactions(half["root"], half["m1"]["window"]["end"])


def _valid_returns(root: Path, valid_txn: set[str]) -> tuple[pd.DataFrame, Counter]:
    recs, dirty = [], Counter()
    for path in sorted((root / "landing/returns").glob("*.jsonl")):
        for r in _jsonl(path):
            if not isinstance(r["quantity"], int) or not isinstance(r["amount"], (int, float)):
                dirty["bad_type"] += 1
            elif r["original_txn_id"] not in valid_txn:
                dirty["orphan_return"] += 1
            else:
                recs.append(r)
    df = pd.DataFrame(recs, columns=RETURN_KEYS)
    df["ts"] = _utc(df["returned_ts"])
    return df, dirty


# --------------------------------------------------------------------------- determinism and API


def test_same_seed_same_bytes_and_other_seed_differs(small, tmp_path):
    again = tmp_path / "again"
    generate(again, scale=0.05, seed=42, batch=1)
    generate(again, scale=0.05, seed=42, batch=2)
    assert _hashes(again) == _hashes(small["root"])
    other = tmp_path / "other"
    generate(other, scale=0.05, seed=43, batch=1)
    name = "landing/transactions/transactions_2024-03.csv"
    assert (other / name).read_bytes() != (small["root"] / name).read_bytes()


def test_batch2_alone_writes_batch1_identically(small, tmp_path):
    fresh = tmp_path / "fresh"
    generate(fresh, scale=0.05, seed=42, batch=2)
    assert _hashes(fresh) == _hashes(small["root"])


def test_rejects_bad_arguments(small, tmp_path):
    with pytest.raises(ValueError):
        generate(tmp_path / "x", scale=0.05, batch=3)
    with pytest.raises(ValueError):
        generate(tmp_path / "y", scale=0)
    with pytest.raises(ValueError, match="seed=42"):
        generate(small["root"], scale=0.05, seed=7, batch=2)  # batch 1 there has another seed
    with pytest.raises(ValueError, match="refusing"):
        generate(small["root"], scale=0.1, seed=42, batch=1)  # would overwrite landed files


def test_progress_messages(small):
    assert any(m.startswith("transactions 2024-03: ") and " lines" in m for m in small["messages"])


def test_manifest_identity(small):
    m1, m2 = small["m1"], small["m2"]
    assert (m1["seed"], m1["scale"], m1["batch"], m2["batch"]) == (42, 0.05, 1, 2)
    assert m1["reporting_currency"] == "USD" and m1["generator_version"]
    assert m1["window"] == {"start": "2024-01-01", "end": "2025-02-28", "months": m1["window"]["months"]}
    assert len(m1["window"]["months"]) == 14 and m2["window"]["months"] == ["2025-03", "2025-04"]
    on_disk = json.loads((small["root"] / "manifest_batch2.json").read_text(encoding="utf-8"))
    assert on_disk == m2
    assert set(m1["truths"]) >= {"basket_pairs", "retention", "promotion_effects", "return_rates",
                                 "repurchase_drivers"}


# --------------------------------------------------------------------------- file contracts


def test_headers_and_fields(small):
    root = small["root"]
    land = root / "landing"
    for path in land.glob("customers/*.csv"):
        assert _csv_rows(path)[0] == CUSTOMER_COLUMNS
    for path in land.glob("stores/*.csv"):
        assert _csv_rows(path)[0] == STORE_COLUMNS
    for path in land.glob("exchange_rates/*.csv"):
        assert _csv_rows(path)[0] == RATE_COLUMNS
    for pattern, keys in (("products/*.jsonl", PRODUCT_KEYS), ("returns/*.jsonl", RETURN_KEYS),
                          ("promotions/*.jsonl", PROMOTION_KEYS)):
        paths = list(land.glob(pattern))
        assert paths
        for path in paths:
            assert all(list(r) == keys for r in _jsonl(path))
    for path in land.glob("promotion_exposures/*.parquet"):
        schema = pq.read_schema(path)
        assert schema.names == EXPOSURE_COLUMNS
        assert schema.field("exposed_ts").type == pa.timestamp("us", tz="UTC")
    months = [f"2024-{m:02d}" for m in range(1, 13)] + ["2025-01", "2025-02", "2025-03", "2025-04"]
    tx_files = sorted(p.name for p in land.glob("transactions/*.csv"))
    assert tx_files == [f"transactions_{m}.csv" for m in months]
    assert sorted(p.name for p in land.glob("returns/*.jsonl")) == [f"returns_{m}.jsonl" for m in months]


def test_manifest_file_entries_match_disk(small):
    root = small["root"]
    for manifest in (small["m1"], small["m2"]):
        for rel, info in manifest["files"].items():
            data = (root / rel).read_bytes()
            assert hashlib.sha256(data).hexdigest() == info["sha256"]
            if rel.endswith(".csv"):
                assert data.count(b"\n") - 1 == info["rows"]  # no field holds a newline
            elif rel.endswith(".jsonl"):
                assert data.count(b"\n") == info["rows"]
            else:
                assert pq.read_metadata(root / rel).num_rows == info["rows"]
        for source, agg in manifest["row_counts"].items():
            infos = [i for i in manifest["files"].values() if i["source"] == source]
            assert agg["rows"] == sum(i["rows"] for i in infos) == agg["valid"] + agg["dirty"]


def test_valid_lines_are_consistent(small, small_tx):
    _, tx = small_tx
    root = small["root"]
    assert tx["txn_id"].is_unique
    assert (tx["txn_type"] == "SALE").all() and (tx["quantity"] >= 1).all()
    assert np.allclose(tx["amount"], (tx["quantity"] * tx["unit_price"]).round(2))
    assert set(tx["payment_method"]) <= {"card", "cash", "wallet", "gift_card"}
    assert tx["basket_id"].str.fullmatch(r"B\d{8}").all()
    assert tx.groupby("basket_id")["product_id"].apply(lambda s: s.is_unique).all()
    stores = pd.concat([pd.read_csv(p, dtype=str) for p in sorted((root / "landing/stores").glob("*.csv"))])
    assert set(stores["channel"]) == {"store", "online", "mobile"}
    assert set(stores["currency"]) == CURRENCIES and stores["country"].nunique() >= 3
    cur = tx.merge(stores[["store_id", "currency"]], on="store_id", suffixes=("", "_store"))
    assert len(cur) == len(tx) and (cur["currency"] == cur["currency_store"]).all()
    customers = pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False)
                           for p in sorted((root / "landing/customers").glob("*.csv"))])
    assert set(tx["customer_id"]) <= set(customers["customer_id"])
    pairs = customers[["customer_id", "account_id"]].drop_duplicates()
    assert pairs["customer_id"].is_unique
    assert set(zip(tx["customer_id"], tx["account_id"], strict=True)) <= set(
        zip(pairs["customer_id"], pairs["account_id"], strict=True))
    assert set(customers["loyalty_tier"]) == {"bronze", "silver", "gold", "platinum"}
    sizes = tx.groupby("basket_id").size()
    assert 3.0 <= sizes.mean() <= 6.0


def test_rates_cover_every_transaction_date(small, small_tx):
    _, tx = small_tx
    root = small["root"]
    for batch, manifest in ((1, small["m1"]), (2, small["m2"])):
        rates = pd.read_csv(root / f"landing/exchange_rates/rates_{batch}.csv", dtype={"rate_to_usd": float})
        assert set(rates["currency"]) == CURRENCIES
        assert (rates.loc[rates["currency"] == "USD", "rate_to_usd"] == 1.0).all()
        assert not rates.duplicated(["rate_date", "currency"]).any()
        lo, hi = manifest["window"]["start"], manifest["window"]["end"]
        days = tx["ts"].dt.strftime("%Y-%m-%d")
        needed = set(days[(days >= lo) & (days <= hi)])
        assert needed and needed <= set(rates["rate_date"])
        assert rates.groupby("rate_date").size().eq(3).all()


# --------------------------------------------------------------------------- dirty records


def test_dirty_transaction_counts_match_manifest(small, small_tx):
    counts, _ = small_tx
    for manifest in (small["m1"], small["m2"]):
        total: Counter = Counter()
        for rel, info in manifest["files"].items():
            if info["source"] == "transactions":
                found = counts[rel]
                planted = {k: v for k, v in info["dirty"].items() if v}
                assert {k: v for k, v in found.items() if v} == planted, rel
                total.update(found)
        planted = manifest["dirty"]["transactions"]
        assert dict(total) == {k: v for k, v in planted.items() if v}
        assert all(v >= 3 for v in planted.values()) and len(planted) == 7


def test_dirty_ids_and_share(half, half_tx):
    _, tx = half_tx
    manifest = half["m1"]
    planted = manifest["dirty"]["transactions"]
    assert 0.003 <= sum(planted.values()) / len(tx) <= 0.008  # about 0.5 %
    ids = manifest["dirty_ids"]["transactions"]
    valid = set(tx["txn_id"])
    assert set(ids["duplicate"]) <= valid
    for kind in ("bad_type", "unknown_currency", "future_date", "negative_quantity", "malformed_line"):
        assert len(ids[kind]) == planted[kind] and not set(ids[kind]) & valid
    no_txn_id = manifest["dirty_details"]["transactions"]["missing_key"].get("txn_id", 0)
    assert len(ids["missing_key"]) == planted["missing_key"] - no_txn_id


def test_dirty_return_counts_and_links(small, small_tx):
    _, tx = small_tx
    returns, dirty = _valid_returns(small["root"], set(tx["txn_id"]))
    expected = Counter()
    for manifest in (small["m1"], small["m2"]):
        expected.update(manifest["dirty"]["returns"])
    assert dirty == expected and min(expected.values()) >= 3
    assert returns["return_id"].is_unique
    lines = tx.set_index("txn_id")
    orig = lines.loc[returns["original_txn_id"]]
    assert (returns["quantity"].to_numpy() >= 1).all()
    assert (returns["quantity"].to_numpy() <= orig["quantity"].to_numpy()).all()
    delay = (returns["ts"].to_numpy() - orig["ts"].to_numpy()) / np.timedelta64(1, "D")
    assert ((delay >= 1) & (delay < 28)).all()
    for col in ("customer_id", "product_id", "store_id", "currency"):
        assert (returns[col].to_numpy() == orig[col].to_numpy()).all()
    refund = (returns["quantity"].to_numpy() * orig["unit_price"].to_numpy()).round(2)
    assert np.allclose(returns["amount"].to_numpy(), refund)
    assert (returns["amount"] > 0).all()
    assert not returns["original_txn_id"].duplicated().any()


# --------------------------------------------------------------------------- batch 2 and SCD2


def test_batch2_only_adds_new_files(small):
    root, before = small["root"], small["before"]
    after = _hashes(root)
    for rel, sha in before.items():
        assert after[rel] == sha and (root / rel).stat().st_mtime_ns == small["mtimes"][rel]
    new = set(after) - set(before)
    assert new == {"manifest_batch2.json", *small["m2"]["files"]}
    assert not set(small["m2"]["files"]) & set(small["m1"]["files"])


def test_batch2_customer_changes(small):
    land = small["root"] / "landing/customers"
    b1 = pd.read_csv(land / "customers_1.csv", dtype=str, keep_default_na=False)
    b2 = pd.read_csv(land / "customers_2.csv", dtype=str, keep_default_na=False)
    counts = small["m2"]["scd2"]["counts"]
    repeat = b2.merge(b1, how="inner", on=CUSTOMER_COLUMNS)
    assert len(repeat) == counts["repeats"] >= 3
    last_b1 = b1.groupby("customer_id")["updated_at"].agg(["min", "max"])
    joined = b2.join(last_b1, on="customer_id")
    known = joined["max"].notna()
    late = known & (joined["updated_at"] < joined["max"]) & (joined["updated_at"] > joined["min"])
    assert late.sum() == counts["late_updates"] >= 3
    changed = joined[known & (joined["updated_at"] > joined["max"])]["customer_id"].nunique()
    assert changed == counts["changed_customers"] >= 3
    assert (~known).groupby(joined["customer_id"]).any().sum() == counts["new_customers"]
    assert small["m1"]["scd2"]["counts"]["customers_with_multiple_versions"] > 0


def _expected_history(frames: list[pd.DataFrame], customers: list[str]) -> list[dict]:
    allv = pd.concat(frames).drop_duplicates()
    out = []
    for cid in sorted(customers):
        v = allv[allv["customer_id"] == cid].sort_values("updated_at")
        stamps = v["updated_at"].tolist()
        for j, (_, r) in enumerate(v.iterrows()):
            out.append({"customer_id": cid, "region": r["region"], "loyalty_tier": r["loyalty_tier"],
                        "valid_from": stamps[j], "valid_to": stamps[j + 1] if j + 1 < len(stamps) else None})
    return out


def test_scd2_samples_match_files(small):
    land = small["root"] / "landing/customers"
    b1 = pd.read_csv(land / "customers_1.csv", dtype=str, keep_default_na=False)
    b2 = pd.read_csv(land / "customers_2.csv", dtype=str, keep_default_na=False)
    for frames, manifest in (([b1], small["m1"]), ([b1, b2], small["m2"])):
        scd2 = manifest["scd2"]
        assert set(scd2["sample_customers"].values()) >= {"late_update", "repeat", "changed_batch2"}
        got = [{k: s[k] for k in ("customer_id", "region", "loyalty_tier", "valid_from", "valid_to")}
               for s in scd2["samples"]]
        assert got == _expected_history(frames, list(scd2["sample_customers"]))
        versions = pd.concat(frames).drop_duplicates()
        assert len(versions) == scd2["counts"]["versions_expected_total"]


# --------------------------------------------------------------------------- planted truths


def _baskets(tx: pd.DataFrame) -> pd.DataFrame:
    return tx[["basket_id", "product_id"]].drop_duplicates()


def test_basket_pair_lifts(half, half_tx):
    _, tx = half_tx
    b = _baskets(tx)
    n = b["basket_id"].nunique()
    sets = b.groupby("product_id")["basket_id"].apply(set)
    pairs = half["m1"]["truths"]["basket_pairs"]["pairs"]
    kinds = Counter(p["kind"] for p in pairs)
    assert kinds["planted"] >= 3 and kinds["independent"] >= 3
    for p in pairs:
        assert math.isclose(p["lift"], p["p_ab"] / (p["p_a"] * p["p_b"]), rel_tol=1e-4)
        sa, sb = sets[p["product_a"]], sets[p["product_b"]]
        n_ab = len(sa & sb)
        lift = n * n_ab / (len(sa) * len(sb))
        se_log = math.sqrt(1 / n_ab - 1 / len(sa) - 1 / len(sb) + 1 / n)  # delta method
        if p["kind"] == "planted":
            assert 3 <= p["lift"] <= 9 and p["p_ab"] >= 0.005
            assert abs(lift / p["lift"] - 1) < 0.15, (p, lift)
        else:
            assert p["lift"] == 1.0
            assert abs(math.log(lift)) < 3.5 * se_log, (p, lift)


def test_return_rates_by_category(half, half_tx):
    _, tx = half_tx
    root, truth = half["root"], half["m1"]["truths"]["return_rates"]["categories"]
    returns, _ = _valid_returns(root, set(tx["txn_id"]))
    products = pd.DataFrame(_jsonl(root / "landing/products/products_1.jsonl"))
    cutoff = pd.Timestamp("2025-03-01", tz="UTC") - pd.Timedelta(days=28)  # returns fully observed
    lines = tx[tx["ts"] < cutoff].merge(products[["product_id", "category"]], on="product_id")
    lines["returned"] = lines["txn_id"].isin(set(returns["original_txn_id"]))
    rates = lines.groupby("category")["returned"].agg(["mean", "size"])
    probs = {c: v["return_prob"] for c, v in truth.items()}
    assert max(probs.values()) >= 0.25 and min(probs.values()) <= 0.02
    z = {cat: (row["mean"] - probs[cat]) / math.sqrt(probs[cat] * (1 - probs[cat]) / row["size"])
         for cat, row in rates.iterrows()}
    assert len(z) == len(probs) == 30
    # Each category within 3 sigma, allowing one 3-4 sigma outlier among the 30 (expected 0.08 of them),
    # plus an omnibus chi-square at the 0.1 % level (Wilson-Hilferty quantile for 30 df ~ 59.8).
    assert sum(abs(v) > 3 for v in z.values()) <= 1 and max(abs(v) for v in z.values()) <= 4, z
    df = len(z)
    q999 = df * (1 - 2 / (9 * df) + 3.09 * math.sqrt(2 / (9 * df))) ** 3
    assert sum(v * v for v in z.values()) <= q999, z
    assert rates["mean"].idxmax() == max(probs, key=probs.get)


def test_retention_cohorts(half, half_tx):
    _, tx = half_tx
    cohorts = half["m1"]["truths"]["retention"]["cohorts"]
    month = tx["ts"].dt.tz_convert("UTC").dt.strftime("%Y-%m")
    first = month.groupby(tx["customer_id"]).min()
    active = set(zip(tx["customer_id"], month, strict=True))
    months = sorted(set(month))
    for c in cohorts:
        members = first.index[first == c["cohort"]]
        assert len(members) == c["customers"]
        assert c["expected"][0] == 1.0
        if c["customers"] < 400:
            continue
        start = months.index(c["cohort"])
        for k in range(1, min(6, len(c["expected"]))):
            obs = np.mean([(m, months[start + k]) in active for m in members])
            p = c["expected"][k]
            assert abs(obs - p) <= 4 * math.sqrt(p * (1 - p) / len(members)), (c["cohort"], k, obs, p)
    big = [c for c in cohorts if c["customers"] >= 400]
    assert len(big) >= 5
    curve = np.mean([c["expected"][1:8] for c in big], axis=0)
    assert 0.38 <= curve[0] <= 0.5 and curve[-1] < curve[0] and np.all(np.diff(curve) < 0)


def test_promotion_arms_and_conversions(half, half_tx):
    _, tx = half_tx
    root, truths = half["root"], half["m1"]["truths"]["promotion_effects"]["promotions"]
    promos = {p["promotion_id"]: p for p in _jsonl(root / "landing/promotions/promotions_1.jsonl")}
    assert {p["is_randomized"] for p in promos.values()} == {True, False}
    basket_ts = tx.groupby(["customer_id", "basket_id"])["ts"].first().reset_index()
    arm_sets = set()
    for pid, truth in truths.items():
        exp = pq.read_table(root / f"landing/promotion_exposures/exposures_{pid}.parquet").to_pandas()
        assert exp["exposure_id"].is_unique and exp["customer_id"].is_unique
        assert truth["is_randomized"] == promos[pid]["is_randomized"]
        arm_sets.add(tuple(sorted(exp["arm"].unique())))
        n = len(exp)
        for arm, share in truth["arms_planned_share"].items():
            k = int((exp["arm"] == arm).sum())
            assert abs(k / n - share) <= 4 * math.sqrt(share * (1 - share) / n) + 1e-9, (pid, arm, k, n)
        window = pd.Timedelta(days=promos[pid]["response_window_days"])
        joined = exp.merge(basket_ts, on="customer_id", how="left")
        inside = (joined["ts"] >= joined["exposed_ts"]) & (joined["ts"] < joined["exposed_ts"] + window)
        converted = inside.groupby(joined["exposure_id"]).any()
        exp["converted"] = exp["exposure_id"].map(converted).fillna(False).astype(bool)
        for arm, block in truth["overall"].items():
            sel = exp[exp["arm"] == arm]
            p = block["expected_conversion"]
            assert abs(sel["converted"].mean() - p) <= 4 * math.sqrt(p * (1 - p) / len(sel)), (pid, arm)
            assert math.isclose(sel["converted"].mean(), block["realized_conversion"], abs_tol=1e-6)
    assert ("control", "treatment") in arm_sets and ("control", "treatment_a", "treatment_b") in arm_sets
    assert ("treatment",) in arm_sets
    effects = [a["planted_effect_pp"] for t in truths.values() if t["is_randomized"]
               for s in t["segments"].values() for arm, a in s["arms"].items() if arm != "control"]
    assert max(effects) >= 10 and min(effects) == 0
    targeted = next(t for t in truths.values() if not t["is_randomized"])
    assert targeted["naive_bias_pp"] > 0 and targeted["true_effect_pp"] > 0


def test_repurchase_drivers(half):
    drivers = half["m1"]["truths"]["repurchase_drivers"]
    coef = drivers["coefficients"]
    assert drivers["no_effect_features"] == ["first_basket_weekend"] and coef["first_basket_weekend"] == 0.0
    assert coef["first_basket_discount"] < 0
    tiers = [coef["loyalty_tier"][t] for t in ("bronze", "silver", "gold", "platinum")]
    assert tiers == sorted(tiers) and tiers[-1] > tiers[0]
    expected = drivers["repurchase_3m"]["expected"]
    realized = drivers["repurchase_3m"]["realized"]
    levels = [expected["loyalty_tier"][t]["p"] for t in ("bronze", "silver", "gold", "platinum")]
    assert levels == sorted(levels)
    assert expected["first_basket_discount"]["true"]["p"] < expected["first_basket_discount"]["false"]["p"]
    weekend = expected["first_basket_weekend"]
    assert abs(weekend["true"]["p"] - weekend["false"]["p"]) < 0.02  # only through feature mix
    for feature, levels_ in expected.items():
        for level, e in levels_.items():
            p, n = e["p"], e["n"]
            assert abs(realized[feature][level] - p) <= 4 * math.sqrt(p * (1 - p) / n), (feature, level)


def test_batch_fraction_delivers_a_small_increment_with_the_master_changes(small, tmp_path):
    part = tmp_path / "part"
    m = generate(part, scale=0.05, seed=42, batch=2, batch_fraction=0.02)
    history = small["m1"]["row_counts"]["transactions"]["valid"]
    delivery = m["partial_delivery"]
    assert delivery["history_lines"] == history
    lines = m["row_counts"]["transactions"]["valid"]
    assert lines == delivery["lines"] and abs(lines - 0.02 * history) <= 1
    # The first lines of the batch in time order, the same ids as in the whole batch 2.
    whole = small["root"] / "landing/transactions/transactions_2025-03.csv"
    with whole.open() as fh:
        first = [r["txn_id"] for r in csv.DictReader(fh) if r["txn_id"].startswith("T202503")]
    with (part / "landing/transactions/transactions_2025-03.csv").open() as fh:
        got = [r["txn_id"] for r in csv.DictReader(fh) if r["txn_id"].startswith("T202503")]
    assert set(got) <= set(first) and len(got) >= lines
    assert not (part / "landing/transactions/transactions_2025-04.csv").exists()
    # Master data changes (late and changed customer versions, prices) come whole.
    for source in ("customers", "products", "stores", "exchange_rates"):
        assert m["row_counts"][source] == small["m2"]["row_counts"][source], source
    assert m["truths"] == {} and m["batch_fraction"] == 0.02
    with pytest.raises(ValueError, match="batch_fraction"):
        generate(part, scale=0.05, seed=42, batch=2)  # a whole batch 2 would overwrite the partial one
    with pytest.raises(ValueError, match="batch_fraction"):
        generate(tmp_path / "b1", scale=0.05, seed=42, batch=1, batch_fraction=0.01)
