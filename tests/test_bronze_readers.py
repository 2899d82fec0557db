"""Landing files read as received (CSV, JSONL, parquet) and listed with their sha256."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
from chispa import assert_df_equality

from cpbi_spark.config.models import SourceConfig
from cpbi_spark.ingest.files import LandingFile, list_landing_files
from cpbi_spark.ingest.readers import read_source_files

HEADER = "id,Customer Name,amount"
OUT = "id string, Customer_Name string, amount string, _extra_columns string, _corrupt_record string"


def csv_source(**kw) -> SourceConfig:
    return SourceConfig(format="csv", path="c/*.csv", bronze_table="raw_c", record_key=["id"],
                        columns={"id": "id", "name": "Customer Name", "amount": "amount"}, **kw)


def landed(root, pattern: str) -> list[LandingFile]:
    return list_landing_files(str(root), pattern)


def values(frame):
    """The frame without ``_source_file`` (checked separately)."""
    return frame.drop("_source_file")


def test_csv_quoted_comma_and_lines_with_another_field_count(spark, tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a.csv").write_text(f'{HEADER}\n1,"Smith, J",10.50\n2,Bob\n3,Ann,7\n4,X,1,extra\n')
    outcome = read_source_files(spark, csv_source(), landed(tmp_path, "c/*.csv"))
    assert outcome.rejected == {} and outcome.drift == {}
    expected = spark.createDataFrame([("1", "Smith, J", "10.50", None, None),
                                      ("2", "Bob", None, None, "2,Bob"),          # too few fields
                                      ("3", "Ann", "7", None, None),
                                      ("4", "X", "1", None, "4,X,1,extra")],      # too many fields
                                     OUT)
    rows = outcome.frame.persist()
    assert_df_equality(values(rows), expected, ignore_row_order=True, ignore_nullable=True)
    assert {r[0] for r in rows.select("_source_file").collect()} == {f"file:{tmp_path}/c/a.csv"}
    rows.unpersist()


def test_csv_header_without_a_mapped_column_rejects_the_file(spark, tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "good.csv").write_text(f"{HEADER}\n1,Ann,5\n")
    (tmp_path / "c" / "bad.csv").write_text("id,amount\n2,6\n")
    outcome = read_source_files(spark, csv_source(), landed(tmp_path, "c/*.csv"))
    bad = str(tmp_path / "c" / "bad.csv")
    assert list(outcome.rejected) == [bad]
    assert "Customer Name" in outcome.rejected[bad] and outcome.rejected[bad].startswith("missing mapped columns")
    assert_df_equality(values(outcome.frame), spark.createDataFrame([("1", "Ann", "5", None, None)], OUT),
                       ignore_nullable=True)


def test_csv_new_column_rejected_or_kept_as_json(spark, tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x1.csv").write_text(f"{HEADER},loyalty\n1,Ann,5,gold\n")
    (tmp_path / "c" / "x2.csv").write_text("amount,loyalty,id,Customer Name\n6,silver,2,Bob\n")  # other order
    files = landed(tmp_path, "c/*.csv")
    x1, x2 = (str(tmp_path / "c" / n) for n in ("x1.csv", "x2.csv"))

    rejected = read_source_files(spark, csv_source(on_new_columns="reject"), files)
    assert rejected.frame is None
    assert rejected.rejected == {x: "new columns ['loyalty'] not in the mapping (on_new_columns: reject)"
                                 for x in (x1, x2)}

    evolved = read_source_files(spark, csv_source(on_new_columns="evolve"), files)
    assert evolved.rejected == {} and evolved.drift == {x1: ["loyalty"], x2: ["loyalty"]}
    expected = spark.createDataFrame([("1", "Ann", "5", '{"loyalty":"gold"}', None),
                                      ("2", "Bob", "6", '{"loyalty":"silver"}', None)], OUT)
    assert_df_equality(values(evolved.frame), expected, ignore_row_order=True, ignore_nullable=True)


JSONL = ('{"id": "1", "name": "a", "qty": 2}\n'
         "\n"
         "not json\n"
         '{"id": 3, "name": null}\n'
         "   \n"
         '{"id": "4", "name": "d", "qty": 1.5, "color": "red"}\n')


def jsonl_source(on_new_columns: str) -> SourceConfig:
    return SourceConfig(format="jsonl", path="j/*.jsonl", bronze_table="raw_j", record_key=["id"],
                        columns={"id": "id", "name": "name", "qty": "qty"}, on_new_columns=on_new_columns)


def test_jsonl_corrupt_lines_blank_lines_and_new_fields(spark, tmp_path):
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "r.jsonl").write_text(JSONL)
    outcome = read_source_files(spark, jsonl_source("evolve"), landed(tmp_path, "j/*.jsonl"))
    assert outcome.rejected == {} and outcome.drift == {str(tmp_path / "j" / "r.jsonl"): ["color"]}
    expected = spark.createDataFrame([("1", "a", "2", None, None),
                                      (None, None, None, None, "not json"),
                                      ("3", None, None, None, None),
                                      ("4", "d", "1.5", '{"color":"red"}', None)],
                                     "id string, name string, qty string, _extra_columns string, "
                                     "_corrupt_record string")
    assert_df_equality(values(outcome.frame), expected, ignore_row_order=True, ignore_nullable=True)


def test_jsonl_new_field_rejects_only_that_file_even_with_a_space_in_its_name(spark, tmp_path):
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "export 1.jsonl").write_text(JSONL)  # has the unknown field "color"
    (tmp_path / "j" / "clean.jsonl").write_text('{"id": "9", "name": "z", "qty": "1"}\n')
    outcome = read_source_files(spark, jsonl_source("reject"), landed(tmp_path, "j/*.jsonl"))
    assert outcome.rejected == {
        str(tmp_path / "j" / "export 1.jsonl"): "new fields ['color'] not in the mapping (on_new_columns: reject)"}
    expected = spark.createDataFrame([("9", "z", "1", None, None)],
                                     "id string, name string, qty string, _extra_columns string, "
                                     "_corrupt_record string")
    assert_df_equality(values(outcome.frame), expected, ignore_nullable=True)


def test_parquet_values_are_read_as_strings(spark, tmp_path):
    (tmp_path / "p").mkdir()
    when = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    pq.write_table(pa.table({"id": pa.array([1, 2], pa.int64()), "name": ["a", None], "amount": [2.5, 10.0],
                             "ts": pa.array([when, when], pa.timestamp("us", tz="UTC")), "flag": [True, False]}),
                   tmp_path / "p" / "e.parquet")
    (tmp_path / "p" / "broken.parquet").write_text("not a parquet file")
    source = SourceConfig(format="parquet", path="p/*.parquet", bronze_table="raw_p", record_key=["id"],
                          columns={"id": "id", "name": "name", "amount": "amount", "ts": "ts"},
                          on_new_columns="evolve")
    outcome = read_source_files(spark, source, landed(tmp_path, "p/*.parquet"))
    assert list(outcome.rejected) == [str(tmp_path / "p" / "broken.parquet")]
    assert outcome.rejected[str(tmp_path / "p" / "broken.parquet")].startswith("unreadable parquet")
    assert outcome.drift == {str(tmp_path / "p" / "e.parquet"): ["flag"]}
    expected = spark.createDataFrame([("1", "a", "2.5", "2024-01-02 03:04:05", '{"flag":true}', None),
                                      ("2", None, "10.0", "2024-01-02 03:04:05", '{"flag":false}', None)],
                                     "id string, name string, amount string, ts string, _extra_columns string, "
                                     "_corrupt_record string")
    assert_df_equality(values(outcome.frame), expected, ignore_row_order=True, ignore_nullable=True)


def test_list_landing_files_glob_and_sha256(tmp_path):
    tx = tmp_path / "landing" / "tx"
    tx.mkdir(parents=True)
    (tx / "b 2024.csv").write_bytes(b"id\n1\n")
    (tx / "a.csv").write_bytes(b"abc")
    (tx / ".hidden.csv").write_bytes(b"x")       # hidden: never landing data
    (tx / "_partial.csv").write_bytes(b"x")      # marker-like name: skipped
    (tx / "notes.txt").write_bytes(b"x")         # does not match the glob
    (tmp_path / "landing" / "other").mkdir()
    (tmp_path / "landing" / "other" / "c.csv").write_bytes(b"x")
    root = str(tmp_path / "landing")
    found = list_landing_files(root, "tx/*.csv")
    assert found == [
        # sha256("abc") is the FIPS 180-2 test vector
        LandingFile(str(tx / "a.csv"), "a.csv", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        LandingFile(str(tx / "b 2024.csv"), "b 2024.csv", 5, hashlib.sha256(b"id\n1\n").hexdigest()),
    ]
    assert list_landing_files(root, str(tx / "a*.csv")) == found[:1]  # an absolute pattern
    assert list_landing_files(root, "missing/*.csv") == []

