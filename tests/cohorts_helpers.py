"""Tiny inline frames shared by the cohorts tests (same columns as the job's sale/return lines)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

SALES_SCHEMA = ("transaction_id string, customer_id string, basket_id string, posted_ts timestamp, "
                "amount decimal(18,2), channel string, product_id string, category string, department string, "
                "region string, country string, loyalty_tier string")
RETURNS_SCHEMA = ("return_id string, transaction_id string, customer_id string, sale_ts timestamp, "
                  "returned_ts timestamp, days_to_return int, amount decimal(18,2)")


def ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def sale(txn: str, customer: str, basket: str, when: str, amount: str, channel: str = "store",
         category: str = "Tops") -> tuple:
    return (txn, customer, basket, ts(when), Decimal(amount), channel, "P1", category, "Apparel", "West", "US",
            "bronze")
