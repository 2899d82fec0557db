"""Unit tests of the scope derivation of incremental gold (tiny inline frames).

The end-to-end comparison with a full refresh is in tests/test_pipeline_e2e.py.
"""

from __future__ import annotations

from datetime import datetime

from cpbi_spark.gold import incremental
from cpbi_spark.gold.incremental import dimension_change_points, scoped_merge_source, small_side

DIM = "customer_sk string, customer_id string, region string, valid_from timestamp, valid_to timestamp, " \
      "is_current boolean"


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_change_points_from_the_first_moved_boundary(spark):
    # C1: a new version from March closes the current one (its end moved): lines from March on.
    # C2: a late update between two old versions (Feb) inserted; the January version now ends earlier.
    # C3: a version before the first one arrived: every line (the first version changed).
    # C4: an attribute of the current version changed in place: lines from its start.
    changes = spark.createDataFrame([
        ("c1a", "C1", "N", ts("2024-01-01 00:00:00"), None, True, "delete"),
        ("c1a", "C1", "N", ts("2024-01-01 00:00:00"), ts("2024-03-01 00:00:00"), False, "insert"),
        ("c1b", "C1", "S", ts("2024-03-01 00:00:00"), None, True, "insert"),
        ("c2a", "C2", "N", ts("2024-01-01 00:00:00"), ts("2024-04-01 00:00:00"), False, "delete"),
        ("c2a", "C2", "N", ts("2024-01-01 00:00:00"), ts("2024-02-10 00:00:00"), False, "insert"),
        ("c2x", "C2", "E", ts("2024-02-10 00:00:00"), ts("2024-04-01 00:00:00"), False, "insert"),
        ("c3x", "C3", "W", ts("2023-06-01 00:00:00"), ts("2024-01-01 00:00:00"), False, "insert"),
        ("c4a", "C4", "N", ts("2024-02-01 00:00:00"), None, True, "delete"),
        ("c4a", "C4", "X", ts("2024-02-01 00:00:00"), None, True, "insert"),
    ], DIM + ", _change string")
    dim = spark.createDataFrame([
        ("c1a", "C1", "N", ts("2024-01-01 00:00:00"), ts("2024-03-01 00:00:00"), False),
        ("c1b", "C1", "S", ts("2024-03-01 00:00:00"), None, True),
        ("c2a", "C2", "N", ts("2024-01-01 00:00:00"), ts("2024-02-10 00:00:00"), False),
        ("c2x", "C2", "E", ts("2024-02-10 00:00:00"), ts("2024-04-01 00:00:00"), False),
        ("c3x", "C3", "W", ts("2023-06-01 00:00:00"), ts("2024-01-01 00:00:00"), False),
        ("c3a", "C3", "N", ts("2024-01-01 00:00:00"), None, True),
        ("c4a", "C4", "X", ts("2024-02-01 00:00:00"), None, True),
    ], DIM)
    got = {r["customer_id"]: r["since"] for r in
           dimension_change_points(changes, dim, "customer_id", "customer_sk").collect()}
    assert got == {"C1": ts("2024-03-01 00:00:00"), "C2": ts("2024-02-10 00:00:00"), "C3": None, "C4": None}


def test_scoped_merge_source_marks_only_vanished_keys_of_the_scope(spark):
    schema = "basket_id string, product_id string, qty int"
    new = spark.createDataFrame([("B1", "P1", 2), ("B1", None, 1)], schema)
    in_scope = spark.createDataFrame([("B1", "P1", 1), ("B1", "P2", 1), ("B1", None, 5)], schema)
    rows = {(r["basket_id"], r["product_id"], r["qty"], r["_cpbi_delete"])
            for r in scoped_merge_source(new, in_scope, ["basket_id", "product_id"]).collect()}
    # P2 vanished from B1: deleted; a NULL product key matches itself (null-safe), so it is not deleted.
    assert rows == {("B1", "P1", 2, False), ("B1", None, 1, False), ("B1", "P2", None, True)}


def _executed_plan(df) -> str:
    df.collect()  # adaptive execution settles the final plan once the query ran
    return df._jdf.queryExecution().executedPlan().toString()


def test_a_small_scope_is_broadcast_so_the_large_side_is_not_shuffled(spark, monkeypatch):
    # The table side is made to look large (its rows come from a range, no size statistics that would
    # let the planner broadcast on its own below the threshold).
    spark.conf.set("spark.sql.autoBroadcastJoinThreshold", "-1")
    try:
        table = spark.range(50_000).selectExpr("cast(id as string) as txn_id", "id % 7 as v")
        keys = spark.createDataFrame([("1",), ("42",), ("49999",)], "txn_id string")
        hinted = table.join(small_side(keys, 3), "txn_id", "left_semi")
        plan = _executed_plan(hinted)
        assert "BroadcastHashJoin" in plan and "SortMergeJoin" not in plan, plan
        assert sorted(r["txn_id"] for r in hinted.collect()) == ["1", "42", "49999"]
        # Above the limit the frame is returned as it is: the planner decides (here: no broadcast).
        monkeypatch.setattr(incremental, "BROADCAST_MAX_ROWS", 2)
        plain = table.join(small_side(keys, 3), "txn_id", "left_semi")
        plan = _executed_plan(plain)
        assert "BroadcastHashJoin" not in plan, plan
        assert plain.count() == 3
    finally:
        spark.conf.unset("spark.sql.autoBroadcastJoinThreshold")
