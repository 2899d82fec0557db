"""Expected SCD2 outcome of the customer master after loading batches 1..b (for the manifest).

The business key is ``customer_id``; a version is valid from its ``updated_at`` until the next
version's ``updated_at``. A repeat (same attributes, same ``updated_at``) adds no version; a late
update is inserted between the two versions that surround its ``updated_at``.

Example:
    >>> from cpbi_spark.synth.world import build_world
    >>> exp = scd2_expectations(build_world(42, 0.05).pop, 2)
    >>> exp["counts"]["late_updates"] >= 3, exp["counts"]["repeats"] >= 3
    (True, True)
"""

from __future__ import annotations

import pandas as pd

from cpbi_spark.synth.customers import Population
from cpbi_spark.synth.timeline import iso_utc

SAMPLES_PER_CASE = 2


def _sample_customers(v: pd.DataFrame) -> dict[int, str]:
    """A fixed handful of customers per case, the same for every batch's manifest."""
    true = v[v["kind"] != "repeat"]
    b1_sizes = true[true["delivered"] == 1].groupby("cust").size()
    b2_kinds = v[v["delivered"] == 2].groupby("cust")["kind"].agg(set)
    first_batch = true.groupby("cust")["delivered"].min()
    cases: dict[str, list[int]] = {
        "multi_version_batch1": [c for c, s in b1_sizes.items() if s >= 3 and c not in b2_kinds.index],
        "changed_batch2": [c for c, k in b2_kinds.items() if k == {"change"} and first_batch[c] == 1],
        "late_update": [c for c, k in b2_kinds.items() if "late" in k],
        "repeat": [c for c, k in b2_kinds.items() if k == {"repeat"}],
        "new_batch2": [c for c, b in first_batch.items() if b == 2],
        "unchanged": [c for c, s in b1_sizes.items() if s == 1 and c not in b2_kinds.index],
    }
    out: dict[int, str] = {}
    for case, custs in cases.items():
        for c in sorted(custs)[:SAMPLES_PER_CASE]:
            out.setdefault(int(c), case)
    return out


def scd2_expectations(pop: Population, batch: int) -> dict:
    """Counts and sample histories expected once batches 1..``batch`` are merged."""
    v = pop.versions
    true = v[v["kind"] != "repeat"]
    visible = true[true["delivered"] <= batch].sort_values(["cust", "ts"])
    before = true[true["delivered"] < batch]
    rows = v[v["delivered"] == batch]
    known_before = set(before["cust"].tolist())
    changed = rows[(rows["kind"] == "change") & rows["cust"].isin(known_before)]["cust"].nunique()
    sizes = visible.groupby("cust").size()
    counts = {
        "rows_in_file": len(rows),
        "customers_in_file": int(rows["cust"].nunique()),
        "new_customers": len(set(rows["cust"].tolist()) - known_before),
        "changed_customers": int(changed),
        "late_updates": int((rows["kind"] == "late").sum()),
        "repeats": int((rows["kind"] == "repeat").sum()),
        "versions_added": len(visible) - len(before),
        "versions_expected_total": len(visible),
        "customers_expected_total": int(visible["cust"].nunique()),
        "customers_with_multiple_versions": int((sizes > 1).sum()),
    }
    samples = _sample_customers(v)
    hist = visible[visible["cust"].isin(list(samples))]
    history = []
    for cust, grp in hist.groupby("cust", sort=True):
        stamps = iso_utc(grp["ts"].to_numpy())
        for j, (region, tier) in enumerate(zip(grp["region"], grp["loyalty_tier"], strict=True)):
            history.append({
                "customer_id": pop.customer_id[int(cust)], "region": region, "loyalty_tier": tier,
                "valid_from": stamps[j], "valid_to": stamps[j + 1] if j + 1 < len(stamps) else None,
                "is_current": j + 1 == len(stamps), "case": samples[int(cust)],
            })
    return {
        "business_key": "customer_id",
        "version_order": "updated_at",
        "tracked_columns": ["account_id", "first_name", "last_name", "email", "phone", "street_address",
                            "city", "region", "country", "loyalty_tier", "signup_date"],
        "counts": counts,
        "sample_customers": {pop.customer_id[c]: case for c, case in sorted(samples.items())},
        "samples": history,
    }
