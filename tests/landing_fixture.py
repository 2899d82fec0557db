# ruff: noqa: E501  (CSV lines are kept whole, as a file would hold them)
"""A tiny hand-written landing set (every source, a few dirty lines) for pipeline tests.

The expected outcome of every line is written here by hand, next to the line, so the
tests compare the pipeline against these facts and not against its own output.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

CUSTOMERS_1 = """customer_id,account_id,first_name,last_name,email,phone,street_address,city,region,country,loyalty_tier,signup_date,updated_at
C1,A1,Ann,Lee,ann@example.com,555-0101,1 Oak St,Boston,Northeast,US,bronze,2024-01-01,2024-01-01T00:00:00Z
C2,A2,Bob,Ray,bob@example.com,555-0102,2 Elm St,Leeds,North,GB,silver,2024-01-01,2024-01-01T00:00:00Z
C1,A1,Ann,Lee,ann@example.com,555-0101,9 Pine St,Austin,South,US,gold,2024-01-01,2024-02-15T00:00:00Z
"""
# batch 2: C2 moves (new version), C1 late update between its two versions, C1 repeat of an existing version
CUSTOMERS_2 = """customer_id,account_id,first_name,last_name,email,phone,street_address,city,region,country,loyalty_tier,signup_date,updated_at
C2,A2,Bob,Ray,bob@example.com,555-0102,5 Ash St,York,North,GB,gold,2024-01-01,2024-03-01T00:00:00Z
C1,A1,Ann,Lee,ann@example.com,555-0101,1 Oak St,Boston,Northeast,US,silver,2024-01-01,2024-02-01T00:00:00Z
C1,A1,Ann,Lee,ann@example.com,555-0101,9 Pine St,Austin,South,US,gold,2024-01-01,2024-02-15T00:00:00Z
"""
PRODUCTS = [
    {"product_id": "P1", "product_name": "Tea", "brand": "B", "category": "drinks", "department": "grocery",
     "unit_cost": 1.0, "list_price": 2.5, "updated_at": "2024-01-01T00:00:00Z"},
    {"product_id": "P2", "product_name": "Mug", "brand": "B", "category": "kitchen", "department": "home",
     "unit_cost": 3.0, "list_price": 8.0, "updated_at": "2024-01-01T00:00:00Z"},
]
STORES = """store_id,store_name,channel,region,country,currency,opened_date
S1,Boston,store,Northeast,US,USD,2020-01-01
S2,Web UK,online,North,GB,GBP,2021-06-01
"""
RATES = """rate_date,currency,rate_to_usd
2024-01-01,USD,1.0
2024-01-01,GBP,1.25
2024-01-03,GBP,1.30
"""
# line -> expected outcome (by hand)
TRANSACTIONS = """txn_id,basket_id,account_id,customer_id,product_id,store_id,quantity,unit_price,amount,currency,txn_type,payment_method,posted_ts
T1,B1,A1,C1,P1,S1,2,2.50,5.00,USD,SALE,card,2024-01-05T10:00:00+00:00
T2,B1,A1,C1,P2,S1,1,8.00,8.00,USD,SALE,card,2024-01-05T10:00:00+00:00
T3,B2,A2,C2,P1,S2,4,2.00,8.00,GBP,SALE,wallet,2024-01-04T09:00:00+00:00
T4,B3,A1,C1,P2,S1,1,8.00,8.00,USD,SALE,cash,2024-02-20T12:00:00+00:00
T1,B1,A1,C1,P1,S1,2,2.50,5.00,USD,SALE,card,2024-01-05T10:00:00+00:00
T5,B4,A2,C2,P2,S2,abc,8.00,8.00,GBP,SALE,card,2024-01-06T09:00:00+00:00
T6,B4,A2,,P2,S2,1,8.00,8.00,GBP,SALE,card,2024-01-06T09:00:00+00:00
T7,B5,A2,C2,P1,S2,1,2.00,2.00,XXX,SALE,card,2024-01-06T09:00:00+00:00
T8,B6,A1,C1,P1,S1,1,2.50,2.50,USD,SALE,card,2031-01-01T00:00:00+00:00
T9,B7,A1,C1,P1,S1,-3,2.50,-7.50,USD,SALE,card,2024-01-07T10:00:00+00:00
T10,B8,A1,C1,P1,S1,1,2.50
"""
EXPECTED_TXN = {
    "accepted": {"T1", "T2", "T3", "T4"},
    "duplicate": 1,  # the second T1
    "quarantined": {"bad_type": 1, "missing_key": 1, "unknown_currency": 1, "future_date": 1,
                    "negative_quantity": 1, "malformed_line": 1},
    "amount_accepted": "29.00",  # 5 + 8 + 8 (GBP) + 8
    "amount_reporting_sales": "31.40",  # 5 + 8 + 8*1.30 (rate of 2024-01-03 carried to 01-04) + 8
}
RETURNS = [
    {"return_id": "R1", "original_txn_id": "T2", "customer_id": "C1", "product_id": "P2", "store_id": "S1",
     "quantity": 1, "amount": 8.0, "currency": "USD", "returned_ts": "2024-01-10T10:00:00Z", "reason": "damaged"},
    {"return_id": "R2", "original_txn_id": "T404", "customer_id": "C1", "product_id": "P2", "store_id": "S1",
     "quantity": 1, "amount": 8.0, "currency": "USD", "returned_ts": "2024-01-10T10:00:00Z", "reason": "x"},
]
PROMOTIONS = [
    {"promotion_id": "PR1", "name": "Spring", "promo_type": "coupon", "discount_pct": 10, "channel": "all",
     "start_date": "2024-01-01", "end_date": "2024-01-31", "response_window_days": 14, "cost_per_contact": 0.5,
     "is_randomized": True},
]
EXPOSURES = {"exposure_id": ["E1", "E2"], "promotion_id": ["PR1", "PR1"], "customer_id": ["C1", "C2"],
             "arm": ["treatment", "control"]}


def write_landing(root: Path, batch: int = 1) -> Path:
    """Write the tiny landing set (batch 1, or batch 2's changed customers) under ``root``."""
    import datetime as dt

    for sub in ("customers", "products", "stores", "exchange_rates", "transactions", "returns", "promotions",
                "promotion_exposures"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    if batch == 1:
        (root / "customers" / "customers_1.csv").write_text(CUSTOMERS_1)
        (root / "products" / "products_1.jsonl").write_text("\n".join(json.dumps(p) for p in PRODUCTS) + "\n")
        (root / "stores" / "stores_1.csv").write_text(STORES)
        (root / "exchange_rates" / "rates_1.csv").write_text(RATES)
        (root / "transactions" / "transactions_2024-01.csv").write_text(TRANSACTIONS)
        (root / "returns" / "returns_2024-01.jsonl").write_text("\n".join(json.dumps(r) for r in RETURNS) + "\n")
        (root / "promotions" / "promotions_1.jsonl").write_text(json.dumps(PROMOTIONS[0]) + "\n")
        table = pa.table({**EXPOSURES, "exposed_ts": [dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc)] * 2})
        pq.write_table(table, root / "promotion_exposures" / "exposures_PR1.parquet")
    else:
        (root / "customers" / "customers_2.csv").write_text(CUSTOMERS_2)
    return root
