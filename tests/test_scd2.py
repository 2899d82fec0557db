"""SCD2 as a pure function (rebuild_history, scd2_merge_source) and its MERGE applied for real.

The dimension is a tiny customer table: key ``customer_id``, tracked ``city``/``tier``, a
non-tracked ``name``. Every expected version is written out by hand; the surrogate key and
the row hash are recomputed with :mod:`hashlib` from their documented recipe, never with the
code under test.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from cpbi_spark.silver.scd2 import rebuild_history, scd2_merge_source, scd2_merge_spec

DIM = ("customer_sk string, customer_id string, name string, city string, tier string, valid_from timestamp, "
       "valid_to timestamp, is_current boolean, row_hash string")
INCOMING = "customer_id string, name string, city string, tier string, updated_at timestamp"
OPTS = {"key": "customer_id", "effective": "updated_at", "tracked": ["city", "tier"],
        "attributes": ["name", "city", "tier"], "sk": "customer_sk"}


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def sk(key: str, valid_from: str) -> str:
    """sha256 of ``key|yyyy-MM-ddTHH:mm:ss.SSSSSS``, first 32 hex characters."""
    return hashlib.sha256(f"{key}|{ts(valid_from):%Y-%m-%dT%H:%M:%S.%f}".encode()).hexdigest()[:32]


def row_hash(*tracked: str) -> str:
    return hashlib.sha256("\u001f".join(tracked).encode()).hexdigest()


def version(key: str, name: str, city: str, tier: str, valid_from: str, valid_to: str | None) -> tuple:
    return (sk(key, valid_from), key, name, city, tier, ts(valid_from), ts(valid_to) if valid_to else None,
            valid_to is None, row_hash(city, tier))


def dim(spark, rows: list[tuple]):
    return spark.createDataFrame(rows, DIM)


def incoming(spark, rows: list[tuple]):
    return spark.createDataFrame([(k, n, c, t, ts(u)) for k, n, c, t, u in rows], INCOMING)


def with_action(rows: list[tuple], action: str) -> list[tuple]:
    return [(*r, action) for r in rows]


def assert_source(spark, actual, expected_rows: list[tuple]) -> None:
    expected = spark.createDataFrame(expected_rows, DIM + ", _scd_action string")
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


# C1 after its first load: three versions (the 04-01 record repeated the 03-01 state).
C1_V1 = version("C1", "Ann", "Boston", "bronze", "2024-01-01 00:00:00", "2024-02-01 00:00:00")
C1_V2 = version("C1", "Ann", "Austin", "bronze", "2024-02-01 00:00:00", "2024-03-01 00:00:00")
C1_V3 = version("C1", "Ann", "Austin", "gold", "2024-03-01 00:00:00", None)
C2_W1 = version("C2", "Bob", "Leeds", "silver", "2024-01-15 00:00:00", None)
C3_X1 = version("C3", "Cy", "Paris", "gold", "2024-01-10 00:00:00", None)
FIRST_LOAD = [
    ("C1", "Ann", "Austin", "bronze", "2024-02-01 00:00:00"),  # out of order on purpose
    ("C1", "Ann", "Boston", "bronze", "2024-01-01 00:00:00"),
    ("C1", "Ann", "Austin", "gold", "2024-03-01 00:00:00"),
    ("C1", "Ann", "Austin", "gold", "2024-04-01 00:00:00"),  # same state again: no version
    ("C2", "Bob", "Leeds", "silver", "2024-01-15 00:00:00"),
]


def history(key: str) -> list[tuple]:
    """The three versions of C1 above, under another key (one key per scenario below)."""
    return [version(key, "Ann", "Boston", "bronze", "2024-01-01 00:00:00", "2024-02-01 00:00:00"),
            version(key, "Ann", "Austin", "bronze", "2024-02-01 00:00:00", "2024-03-01 00:00:00"),
            version(key, "Ann", "Austin", "gold", "2024-03-01 00:00:00", None)]


# Second batch: each scenario lives under its own key, so one MERGE source answers them all.
SECOND_BATCH = [
    ("change", "Bob", "York", "silver", "2024-03-10 00:00:00"),
    ("late", "Ann", "Dallas", "bronze", "2024-02-15 00:00:00"),
    ("repeat", "Ann", "Austin", "gold", "2024-03-01 00:00:00"),        # same time, same state
    ("repeat", "Ann", "Austin", "gold", "2024-05-01 00:00:00"),        # later, same state
    ("move", "Ann", "Austin", "gold", "2024-02-20 00:00:00"),          # late, equal to the next version
    ("non_tracked", "Annie", "Austin", "gold", "2024-04-01 00:00:00"),  # only the name changes
    ("same_time", "Ann", "Austin", "platinum", "2024-03-01 00:00:00"),
]


@pytest.fixture(scope="module")
def second(spark):
    existing = dim(spark, [version("change", "Bob", "Leeds", "silver", "2024-01-15 00:00:00", None),
                           *history("late"), *history("repeat"), *history("move"), *history("non_tracked"),
                           *history("same_time"), version("untouched", "Cy", "Paris", "gold", "2024-01-10", None)])
    source = scd2_merge_source(existing, incoming(spark, SECOND_BATCH), **OPTS).persist()
    yield source
    source.unpersist()


def of(source, key: str):
    return source.filter(F.col("customer_id") == key)


def test_recipes_match_the_documented_hashes():
    """Pin the hand recipes used below to one literal (sha256 of 'C1|2024-01-01T00:00:00.000000')."""
    assert sk("C1", "2024-01-01 00:00:00") == hashlib.sha256(b"C1|2024-01-01T00:00:00.000000").hexdigest()[:32]
    assert row_hash("Austin", "gold") == hashlib.sha256(b"Austin\x1fgold").hexdigest()


def test_first_load_builds_versions_per_key(spark):
    rebuilt = rebuild_history(dim(spark, []), incoming(spark, FIRST_LOAD), **OPTS)
    expected = dim(spark, [C1_V1, C1_V2, C1_V3, C2_W1])
    assert_df_equality(rebuilt, expected, ignore_row_order=True, ignore_nullable=True)


def test_only_the_keys_of_the_batch_are_in_the_merge_source(second):
    assert {r[0] for r in second.select("customer_id").distinct().collect()} == {
        "change", "late", "repeat", "move", "non_tracked", "same_time"}


def test_changed_attribute_adds_a_version_and_closes_the_previous(spark, second):
    closed = version("change", "Bob", "Leeds", "silver", "2024-01-15 00:00:00", "2024-03-10 00:00:00")
    new = version("change", "Bob", "York", "silver", "2024-03-10 00:00:00", None)
    assert_source(spark, of(second, "change"), with_action([closed, new], "upsert"))


def test_late_update_is_inserted_between_its_neighbours(spark, second):
    v1, _, v3 = history("late")
    v2_closed_earlier = version("late", "Ann", "Austin", "bronze", "2024-02-01 00:00:00", "2024-02-15 00:00:00")
    late = version("late", "Ann", "Dallas", "bronze", "2024-02-15 00:00:00", "2024-03-01 00:00:00")
    assert_source(spark, of(second, "late"), with_action([v1, v2_closed_earlier, late, v3], "upsert"))


def test_repeated_identical_record_makes_no_version(spark, second):
    assert_source(spark, of(second, "repeat"), with_action(history("repeat"), "upsert"))


def test_late_update_equal_to_the_next_version_moves_it_earlier(spark, second):
    v1, _, v3 = history("move")
    v2 = version("move", "Ann", "Austin", "bronze", "2024-02-01 00:00:00", "2024-02-20 00:00:00")
    moved = version("move", "Ann", "Austin", "gold", "2024-02-20 00:00:00", None)
    # the old version's surrogate key is tombstoned, the moved version is a new key
    assert_source(spark, of(second, "move"), [*with_action([v1, v2, moved], "upsert"), (*v3, "delete")])


def test_change_of_a_non_tracked_attribute_only_makes_no_version(spark, second):
    assert_source(spark, of(second, "non_tracked"), with_action(history("non_tracked"), "upsert"))


def test_same_key_and_time_in_existing_and_incoming_incoming_wins(spark, second):
    v1, v2, v3 = history("same_time")
    replaced = version("same_time", "Ann", "Austin", "platinum", "2024-03-01 00:00:00", None)
    assert replaced[0] == v3[0]  # same surrogate key: the version is updated in place
    assert_source(spark, of(second, "same_time"), with_action([v1, v2, replaced], "upsert"))


def test_merge_spec_clauses():
    spec = scd2_merge_spec("customer_sk", ["name", "city"])
    assert spec.predicate == "t.customer_sk <=> s.customer_sk"
    assert [(c.action, c.condition) for c in spec.when_matched] == [
        ("delete", "s._scd_action = 'delete'"),
        ("update", "NOT (t.name <=> s.name) OR NOT (t.city <=> s.city) OR NOT (t.valid_to <=> s.valid_to) "
                   "OR NOT (t.is_current <=> s.is_current) OR NOT (t.row_hash <=> s.row_hash)"),
    ]
    assert [c.condition for c in spec.when_not_matched] == ["s._scd_action = 'upsert'"]


def test_merge_applied_with_delta_rs_over_two_batches(spark, tmp_path):
    from pyspark.sql.types import _parse_datatype_string

    from cpbi_spark.lakehouse.deltars_engine import DeltaRsEngine

    engine = DeltaRsEngine(spark)
    path = str(tmp_path / "dim_customer")
    engine.create(path, _parse_datatype_string(DIM))
    spec = scd2_merge_spec("customer_sk", OPTS["attributes"])

    def load(rows: list[tuple]):
        source = scd2_merge_source(engine.read(path), incoming(spark, rows), **OPTS)
        return engine.merge(source, path, spec)

    first = load([*FIRST_LOAD, ("C3", "Cy", "Paris", "gold", "2024-01-10 00:00:00")])
    assert first.metrics["num_inserted"] == 5
    assert_df_equality(engine.read(path), dim(spark, [C1_V1, C1_V2, C1_V3, C2_W1, C3_X1]),
                       ignore_row_order=True, ignore_nullable=True)

    second_batch = [
        ("C1", "Ann", "Austin", "gold", "2024-02-20 00:00:00"),   # late, equal to the next version
        ("C2", "Bob", "York", "silver", "2024-03-10 00:00:00"),   # a change
        ("C2", "Bob", "Leeds", "silver", "2024-01-15 00:00:00"),  # a repeat of an existing version
    ]
    second = load(second_batch)
    assert (second.metrics["num_inserted"], second.metrics["num_updated"], second.metrics["num_deleted"]) == (2, 2, 1)
    final = [
        C1_V1,
        version("C1", "Ann", "Austin", "bronze", "2024-02-01 00:00:00", "2024-02-20 00:00:00"),
        version("C1", "Ann", "Austin", "gold", "2024-02-20 00:00:00", None),
        version("C2", "Bob", "Leeds", "silver", "2024-01-15 00:00:00", "2024-03-10 00:00:00"),
        version("C2", "Bob", "York", "silver", "2024-03-10 00:00:00", None),
        C3_X1,
    ]
    assert_df_equality(engine.read(path), dim(spark, final), ignore_row_order=True, ignore_nullable=True)
