"""PII policies: salted sha256 hash, mask (first character + last two), drop; and the salt lookup."""

from __future__ import annotations

import hashlib

import pytest
from chispa import assert_df_equality

from cpbi_spark.silver.pii import DEV_SALT, apply_pii, pii_salt

SCHEMA = "id int, email string, phone string, first_name string, note string, city string"
POLICIES = {"email": "hash", "phone": "mask", "first_name": "mask", "note": "drop", "city": "none",
            "not_a_column": "hash"}


def salted(salt: str, value: str) -> str:
    return "sha256:" + hashlib.sha256(f"{salt}{value}".encode()).hexdigest()


@pytest.fixture(scope="module")
def people(spark):
    return spark.createDataFrame([(1, "ann@example.com", "555-0101", "Anna", "vip", "Boston"),
                                  (2, None, None, "Bob", None, "Leeds"),
                                  (3, "ann@example.com", "1234", "Al", "x", None)], SCHEMA)


def test_apply_pii_hashes_masks_and_drops(spark, people):
    out = apply_pii(people, POLICIES, salt="s1")
    expected = spark.createDataFrame([
        (1, salted("s1", "ann@example.com"), "5***01", "A***na", None, "Boston"),
        (2, None, None, "***", None, "Leeds"),  # NULL stays NULL; 3 characters or fewer are fully masked
        (3, salted("s1", "ann@example.com"), "1***34", "***", None, None),
    ], SCHEMA)
    assert_df_equality(out, expected, ignore_row_order=True, ignore_nullable=True)


def test_hash_is_deterministic_salted_and_never_the_clear_value(people):
    first = {r["id"]: r["email"] for r in apply_pii(people, {"email": "hash"}, salt="s1").collect()}
    other = {r["id"]: r["email"] for r in apply_pii(people, {"email": "hash"}, salt="s2").collect()}
    assert first[1] == first[3]                      # same value, same salt: same hash (joins still work)
    assert first[1] != other[1]                      # another salt: another hash
    assert other[1] == salted("s2", "ann@example.com")
    assert "ann" not in first[1] and "example" not in first[1]
    assert first[2] is None and other[2] is None


def test_pii_salt_from_the_environment(monkeypatch):
    monkeypatch.setenv("CPBI_PII_SALT", "from-env")
    assert pii_salt() == "from-env"
    monkeypatch.delenv("CPBI_PII_SALT")
    assert pii_salt() == DEV_SALT
