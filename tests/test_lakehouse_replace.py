"""``Lakehouse.replace`` (a full recompute written only when it differs) and the content signature it uses."""

from __future__ import annotations

from collections import Counter

from cpbi_spark.lakehouse.signature import content_signature
from cpbi_spark.runtime import RunContext
from delta_log_reader import commit_versions, data_files_on_disk, live_files, live_row_count, table_root

SCHEMA = "k int, v string, n double"


def _sig(spark, rows, schema=SCHEMA) -> tuple:
    return tuple(content_signature(spark.createDataFrame(rows, schema)).first())


def test_signature_ignores_row_order_and_sees_every_kind_of_change(spark):
    rows = [(1, "a", 1.5), (2, None, 2.0), (3, "c", None)]
    base = _sig(spark, rows)
    assert base[0] == 3
    assert _sig(spark, list(reversed(rows))) == base
    changed = {
        "a value": [(1, "a", 1.5), (2, None, 2.0), (3, "d", None)],
        "a null filled": [(1, "a", 1.5), (2, "", 2.0), (3, "c", None)],
        "a row dropped": rows[:2],
        "a row duplicated": [*rows, rows[0]],
        "one row twice instead of another": [rows[0], rows[0], rows[2]],
    }
    for what, other in changed.items():
        assert _sig(spark, other) != base, what
    # Spark's row hashes skip nulls: (null, x) and (x, null) must still differ.
    swapped = _sig(spark, [(1, None, "x")], "k int, a string, b string")
    assert swapped != _sig(spark, [(1, "x", None)], "k int, a string, b string")
    assert _sig(spark, [], SCHEMA) == (0, 0, 0)


def test_replace_writes_only_a_different_content_and_then_holds_exactly_it(spark, tmp_path):
    ctx = RunContext.create(env="ci", spark=spark, overrides={
        "storage.root": str(tmp_path / "lake"), "storage.landing": str(tmp_path / "landing"),
        "storage.outputs": str(tmp_path / "outputs"), "platform.enabled": "false"})
    lake = ctx.lake
    rows = [{"limit_name": f"l{i}", "limit_value": float(i), "description": None if i % 2 else f"d{i}"}
            for i in range(50)]

    def stored() -> Counter:
        return Counter(tuple(r) for r in lake.read("ref_limits").select("limit_name", "limit_value", "description")
                       .collect())

    def want(rs) -> Counter:
        return Counter((r["limit_name"], r["limit_value"], r["description"]) for r in rs)

    assert not lake.replace("ref_limits", lake.frame("ref_limits", [])).changed  # empty into empty: no commit
    assert lake.row_count("ref_limits") == 0
    first = lake.replace("ref_limits", lake.frame("ref_limits", rows))
    assert first.changed and stored() == want(rows)
    version = lake.version("ref_limits")

    again = lake.replace("ref_limits", lake.frame("ref_limits", list(reversed(rows))))
    assert not again.changed and lake.version("ref_limits") == version  # same rows: no commit

    edited = [dict(r) for r in rows]
    edited[7]["description"], edited[8]["description"] = edited[8]["description"], edited[7]["description"]
    edited = edited[1:]  # one row fewer as well
    third = lake.replace("ref_limits", lake.frame("ref_limits", edited))
    assert third.changed and lake.version("ref_limits") == version + 1
    assert stored() == want(edited)
    # A reader of the Delta log that shares no code with the writer sees the same live rows.
    root = table_root(lake.path("ref_limits"))
    assert live_row_count(root) == len(edited)

    # The same rows again, now compared with the signature the last overwrite recorded: no commit.
    fourth = lake.replace("ref_limits", lake.frame("ref_limits", list(reversed(edited))))
    assert not fourth.changed and lake.version("ref_limits") == version + 1
    # Another writer appends a row: the recorded signature no longer describes the table, which is read.
    lake.append("ref_limits", lake.frame("ref_limits", [{"limit_name": "extra", "limit_value": 1.0}]))
    fifth = lake.replace("ref_limits", lake.frame("ref_limits", edited))
    assert fifth.changed and stored() == want(edited)
    # Files written for a replace that made no commit are deleted: every data file on disk is in some version.
    in_log = set().union(*(live_files(root, v) for v in commit_versions(root)))
    assert data_files_on_disk(root) == in_log
