"""Baselines for ``scripts/bench``: the same landing files through simpler machinery.

Two commands, each printing one JSON line (``BASELINE {...}``) with its own timings:

``spark``  a plain Spark pass over the transaction and return landing files: read (CSV / JSON lines,
           every column as text), cast to the typed columns, hash each record (sha256 of its fields),
           write parquet. No validation, no Delta, no MERGE: the floor any Spark pipeline pays.
``pandas`` the bronze -> silver -> gold work on one machine with pandas (simplified, see below).

What the pandas baseline covers: bronze (all sources read as text, lineage columns, record hash,
parquet); silver (typing, the same rejection rules for transactions and returns: missing key, bad
number, unknown currency, future date, non-positive quantity, orphan return; duplicates by id;
customers and products as SCD2 versions with valid_from/valid_to; e-mail hashed); gold (sales and
returns conformed to the customer and product version valid at posting time, daily exchange rates
carried forward, reporting amounts, basket lines, month-end account snapshots with the month grid).
What it leaves out: Delta tables and their atomic commits, MERGE / incremental processing, the
quarantine table and reconciliation records, settlements, the platform records. All in memory of one
process, so it stops at the machine's RAM.

Usage:
    .venv/bin/python scripts/bench_baselines.py spark  --landing DIR --out DIR [--env local]
    .venv/bin/python scripts/bench_baselines.py pandas --landing DIR --out DIR
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

TXN_TYPES = {"quantity": "int", "unit_price": "decimal(18,2)", "amount": "decimal(18,2)", "posted_ts": "timestamp"}
RET_TYPES = {"quantity": "int", "amount": "decimal(18,2)", "returned_ts": "timestamp"}


def spark_baseline(landing: Path, out: Path, env: str) -> dict[str, Any]:
    """Read -> cast -> hash -> parquet for the transactions (CSV) and returns (JSON lines)."""
    from pyspark.sql import functions as F

    from cpbi_spark.config import load_config
    from cpbi_spark.session import get_spark

    spark = get_spark(load_config(env=env).spark, app_name="cpbi-bench-baseline")
    t0 = time.perf_counter()
    rows = 0
    for name, reader, types in (("transactions", "csv", TXN_TYPES), ("returns", "json", RET_TYPES)):
        folder = landing / name
        if not folder.is_dir():
            continue
        df = (spark.read.option("header", True).csv(str(folder)) if reader == "csv"
              else spark.read.option("primitivesAsString", True).json(str(folder)))
        typed = df.select(*[F.col(c).try_cast(types[c]).alias(c) if c in types else F.col(c) for c in df.columns])
        hashed = typed.withColumn("_record_hash", F.sha2(F.concat_ws("|", *[F.col(c).cast("string")
                                                                              for c in df.columns]), 256))
        hashed.write.mode("overwrite").parquet(str(out / name))
        rows += spark.read.parquet(str(out / name)).count()
    seconds = time.perf_counter() - t0
    spark.stop()
    return {"baseline": "spark read-cast-hash-parquet", "rows": rows, "seconds": round(seconds, 2)}


# ------------------------------------------------------------------------------------------- pandas
def _read_source(landing: Path, name: str):
    import pandas as pd

    frames = []
    for f in sorted((landing / name).glob("*")):
        if f.suffix == ".csv":
            df = pd.read_csv(f, dtype=str, keep_default_na=False, on_bad_lines="skip")
        elif f.suffix == ".jsonl":
            df = pd.read_json(f, lines=True, dtype=False).astype(str)
        elif f.suffix == ".parquet":
            df = pd.read_parquet(f).astype(str)
        else:
            continue
        df["_source_file"] = f.name
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _ts(series):
    import pandas as pd

    return pd.to_datetime(series.replace({"": None, "None": None, "nan": None}), utc=True, errors="coerce",
                          format="ISO8601")


def _scd2(df, key: str, sk: str):
    """SCD2 versions from a change feed: one version per distinct (key, updated_at), ordered."""
    df = df.assign(updated_at=_ts(df["updated_at"])).dropna(subset=[key, "updated_at"])
    df = df.sort_values([key, "updated_at"]).drop_duplicates([key, "updated_at"], keep="last")
    df["valid_from"] = df["updated_at"]
    df["valid_to"] = df.groupby(key)["valid_from"].shift(-1)
    df[sk] = df[key] + "@" + df["valid_from"].astype("int64").astype(str)
    return df


def _as_of(facts, dim, key: str, sk: str):
    """The version valid at posted_ts (the first version for earlier lines)."""
    import pandas as pd

    f = facts.sort_values("posted_ts")
    d = dim[[key, "valid_from", sk]].sort_values("valid_from")
    hit = pd.merge_asof(f, d, left_on="posted_ts", right_on="valid_from", by=key, direction="backward")
    first = dim.sort_values("valid_from").drop_duplicates(key)[[key, sk]].rename(columns={sk: "_first"})
    hit = hit.merge(first, on=key, how="left")
    hit[sk] = hit[sk].fillna(hit["_first"])
    return hit.drop(columns=["_first", "valid_from"])


def pandas_baseline(landing: Path, out: Path) -> dict[str, Any]:
    import numpy as np
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    steps: dict[str, float] = {}
    t0 = t = time.perf_counter()
    # bronze: every source as text with lineage and a record hash
    raw = {n: _read_source(landing, n) for n in ("transactions", "returns", "customers", "products", "stores",
                                                  "exchange_rates")}
    for name, df in raw.items():
        if df.empty:
            continue
        df["_record_hash"] = pd.util.hash_pandas_object(df.drop(columns=["_source_file"]), index=False).astype(str)
        df.to_parquet(out / f"bronze_{name}.parquet", index=False)
    steps["bronze"] = time.perf_counter() - t
    t = time.perf_counter()
    # silver
    rates = raw["exchange_rates"].assign(rate_to_usd=lambda d: pd.to_numeric(d["rate_to_usd"], errors="coerce"),
                                         rate_date=lambda d: pd.to_datetime(d["rate_date"], errors="coerce"))
    rates = rates.dropna(subset=["rate_to_usd", "rate_date"]).drop_duplicates(["rate_date", "currency"])
    known = set(rates["currency"]) | {"USD"}
    tx = raw["transactions"].copy()
    tx["quantity_n"] = pd.to_numeric(tx["quantity"], errors="coerce")
    tx["unit_price_n"] = pd.to_numeric(tx["unit_price"], errors="coerce")
    tx["amount_n"] = pd.to_numeric(tx["amount"], errors="coerce")
    tx["posted"] = _ts(tx["posted_ts"])
    now = pd.Timestamp.now(tz="UTC")
    bad = ((tx["txn_id"] == "") | (tx["customer_id"] == "") | (tx["product_id"] == "") | tx["quantity_n"].isna()
           | tx["unit_price_n"].isna() | tx["posted"].isna() | ~tx["currency"].isin(known) | (tx["posted"] > now))
    sales_all = tx[~bad & (tx["quantity_n"] > 0)]
    quarantined = int(bad.sum() + ((~bad) & (tx["quantity_n"] <= 0)).sum())
    sales = sales_all.drop_duplicates("txn_id", keep="first")
    ret = raw["returns"].copy()
    ret["quantity_n"] = pd.to_numeric(ret["quantity"], errors="coerce")
    ret["amount_n"] = pd.to_numeric(ret["amount"], errors="coerce")
    ret["returned"] = _ts(ret["returned_ts"])
    ok = (ret["quantity_n"].notna() & ret["amount_n"].notna() & ret["returned"].notna()
          & ret["original_txn_id"].isin(sales["txn_id"]))
    returns = ret[ok].drop_duplicates("return_id")
    customers = raw["customers"].copy()
    if "email" in customers:
        customers["email"] = [hashlib.sha256(e.encode()).hexdigest() for e in customers["email"]]
    dim_c = _scd2(customers, "customer_id", "customer_sk")
    dim_p = _scd2(raw["products"].copy(), "product_id", "product_sk")
    for name, df in (("stg_transactions", sales), ("stg_returns", returns), ("dim_customer", dim_c),
                     ("dim_product", dim_p)):
        df.to_parquet(out / f"silver_{name}.parquet", index=False)
    steps["silver"] = time.perf_counter() - t
    t = time.perf_counter()
    # gold: conformed facts in the reporting currency, basket lines, month-end snapshots
    origin = sales[["txn_id", "basket_id", "account_id"]].rename(columns={"txn_id": "original_txn_id"})
    r = returns.merge(origin, on="original_txn_id", how="left")
    lines = pd.concat([
        pd.DataFrame({"transaction_id": sales["txn_id"], "basket_id": sales["basket_id"],
                      "account_id": sales["account_id"], "customer_id": sales["customer_id"],
                      "product_id": sales["product_id"], "currency": sales["currency"], "txn_type": "SALE",
                      "posted_ts": sales["posted"], "quantity": sales["quantity_n"], "amount": sales["amount_n"]}),
        pd.DataFrame({"transaction_id": r["return_id"], "basket_id": r["basket_id"], "account_id": r["account_id"],
                      "customer_id": r["customer_id"], "product_id": r["product_id"], "currency": r["currency"],
                      "txn_type": "RETURN", "posted_ts": r["returned"], "quantity": -r["quantity_n"],
                      "amount": -r["amount_n"]})], ignore_index=True)
    lines = _as_of(lines, dim_c, "customer_id", "customer_sk")
    lines = _as_of(lines, dim_p, "product_id", "product_sk")
    days = pd.date_range(rates["rate_date"].min(), max(rates["rate_date"].max(),
                                                       lines["posted_ts"].max().tz_localize(None)), freq="D")
    daily = (rates.pivot_table(index="rate_date", columns="currency", values="rate_to_usd").reindex(days)
             .ffill().bfill().stack().rename("rate").reset_index().rename(columns={"level_0": "date"}))
    daily.columns = ["date", "currency", "rate"]
    lines["date"] = lines["posted_ts"].dt.tz_localize(None).dt.normalize()
    lines = lines.merge(daily, on=["date", "currency"], how="left")
    lines.loc[lines["currency"] == "USD", "rate"] = 1.0
    lines["amount_reporting"] = (lines["amount"] * lines["rate"]).round(2)
    lines.to_parquet(out / "gold_fact_transactions.parquet", index=False)
    baskets = (lines[lines["txn_type"] == "SALE"].groupby(["basket_id", "product_id"], as_index=False)
               .agg(quantity=("quantity", "sum"), amount_reporting=("amount_reporting", "sum")))
    baskets.to_parquet(out / "gold_fact_basket_lines.parquet", index=False)
    acc = lines.dropna(subset=["account_id"]).copy()
    acc["month"] = acc["posted_ts"].dt.tz_localize(None).dt.to_period("M")
    monthly = acc.groupby(["account_id", "month"])["amount_reporting"].sum()
    last = acc["month"].max()
    grid = [(a, m) for a, first in monthly.reset_index().groupby("account_id")["month"].min().items()
            for m in pd.period_range(first, last, freq="M")]
    snap = monthly.reindex(pd.MultiIndex.from_tuples(grid, names=["account_id", "month"]), fill_value=0).to_frame(
        "net_spend_month")
    snap["cumulative_net_spend"] = snap.groupby(level=0)["net_spend_month"].cumsum()
    snap["points_balance"] = np.maximum(np.floor(snap["cumulative_net_spend"]), 0).astype("int64")
    snap.reset_index().astype({"month": str}).to_parquet(out / "gold_fact_balance_snapshots.parquet", index=False)
    steps["gold"] = time.perf_counter() - t
    return {"baseline": "pandas bronze-silver-gold (simplified)", "rows_landed": len(raw["transactions"]),
            "sales_lines": len(sales), "returns": len(returns), "quarantined_lines": quarantined,
            "fact_lines": len(lines), "basket_lines": len(baskets), "snapshots": len(snap),
            "seconds": round(time.perf_counter() - t0, 2), "stage_seconds": {k: round(v, 2) for k, v in steps.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=["spark", "pandas"])
    parser.add_argument("--landing", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--env", default="local")
    args = parser.parse_args(argv)
    result = (spark_baseline(args.landing, args.out, args.env) if args.kind == "spark"
              else pandas_baseline(args.landing, args.out))
    print("BASELINE " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
