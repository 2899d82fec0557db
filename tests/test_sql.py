"""``cpbi sql``: queries over the lakehouse through the access roles (on the shared gold world)."""

from __future__ import annotations

import csv

import pytest
from pyspark.sql import functions as F

from cpbi_spark.cli import main
from cpbi_spark.errors import AccessDenied
from cpbi_spark.sql import referenced_tables, run_sql

pytestmark = pytest.mark.slow


def test_referenced_tables_ignores_string_literals_and_unknown_words():
    names = ["fact_transactions", "dim_customer", "dim_product"]
    q = "select count(*) from FACT_TRANSACTIONS where note = 'dim_product' and x in (select 1 from dim_customer)"
    assert referenced_tables(q, names) == ["dim_customer", "fact_transactions"]
    assert referenced_tables("select 1", names) == []


def test_analyst_query_matches_the_table(gold_world):
    ctx, _ = gold_world
    got = run_sql(ctx, "SELECT channel, count(*) AS n FROM fact_transactions GROUP BY channel", "analyst")
    want = ctx.lake.read("fact_transactions").groupBy("channel").count()
    assert {r["channel"]: r["n"] for r in got.collect()} == {r["channel"]: r["count"] for r in want.collect()}


def test_role_without_layer_grant_is_denied_and_audited(gold_world):
    ctx, _ = gold_world

    def denials() -> int:
        if not ctx.lake.exists("audit_access"):
            return 0
        return ctx.lake.read("audit_access").filter((F.col("role") == "analyst") & (
            F.col("dataset_id") == "raw_customers") & (F.col("decision") == "denied")).count()

    before = denials()
    with pytest.raises(AccessDenied, match=r"analyst.*raw_customers"):
        run_sql(ctx, "SELECT * FROM raw_customers", "analyst")
    assert denials() == before + 1


def test_only_read_only_statements_over_the_views(gold_world):
    ctx, _ = gold_world
    rows = ctx.lake.read("fact_transactions").count()
    for statement in ("DELETE FROM fact_transactions",
                      "WITH a AS (SELECT 1) INSERT INTO fact_transactions SELECT * FROM a",
                      "DROP TABLE fact_transactions"):
        with pytest.raises(AccessDenied, match="read-only"):
            run_sql(ctx, statement, "engineer")
    assert ctx.lake.read("fact_transactions").count() == rows
    # a file path would read the stored table around the role's view (unmasked PII): refused
    path = ctx.config.table_path("dim_customer")
    with pytest.raises(Exception, match=r"(?i)delta|path|table or view|not found|cannot be found"):
        run_sql(ctx, f"SELECT email FROM delta.`{path}`", "analyst").collect()
    assert ctx.spark.conf.get("spark.sql.runSQLOnFiles") == "true"  # the session's setting is restored


def test_pii_is_masked_without_the_grant_and_as_stored_with_it(gold_world):
    ctx, _ = gold_world
    q = "SELECT customer_sk, first_name, email FROM dim_customer ORDER BY customer_sk LIMIT 50"
    stored = {r["customer_sk"]: r for r in ctx.lake.read("dim_customer").collect()}
    engineer = run_sql(ctx, q, "engineer").collect()  # every layer, no PII grant
    auditor = run_sql(ctx, q, "auditor").collect()    # PII as stored (already hashed/masked in silver)
    assert engineer and len(engineer) == len(auditor)
    compared = 0
    for e, a in zip(engineer, auditor, strict=True):
        row = stored[a["customer_sk"]]
        assert (a["first_name"], a["email"]) == (row["first_name"], row["email"])
        for column in ("email", "first_name"):
            if row[column] is not None and len(row[column]) > 3:
                assert e[column] == row[column][0] + "***" + row[column][-2:]
                compared += 1
        if row["email"] is not None:  # stored hashed (64 hex digits): the masked form must differ
            assert e["email"] != row["email"]
    assert compared >= 50  # every sampled customer has a stored e-mail (hashed) to mask


def test_cli_writes_the_result_as_csv(gold_world, tmp_path):
    ctx, _ = gold_world
    out = tmp_path / "result.csv"
    s = ctx.config.storage
    rc = main(["sql", "SELECT txn_type, count(*) AS n FROM fact_transactions GROUP BY txn_type ORDER BY txn_type",
               "--env", "ci", "--out", str(out), "--set", f"storage.root={s.root}",
               "--set", f"storage.landing={s.landing}", "--set", f"storage.outputs={s.outputs}"])
    assert rc == 0
    rows = list(csv.DictReader(out.open()))
    want = ctx.lake.read("fact_transactions").groupBy("txn_type").count().collect()
    assert {r["txn_type"]: int(r["n"]) for r in rows} == {r["txn_type"]: r["count"] for r in want}
    assert main(["sql", "SELECT * FROM raw_customers", "--env", "ci", "--set", f"storage.root={s.root}"]) == 2
