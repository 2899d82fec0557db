"""Bring your own data: the built-in source mappings on small inline files of each shape.

Each file below is written by hand with its expected outcome, including malformed lines, a
wrong date format and a missing mapped column, and the mapping must classify returns and
exclusions and report clear errors. The Complete Journey mapping runs on the first lines of
the shared real export (``../shared/data/completejourney``).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from cpbi_spark.analytics.requirements import missing_for
from cpbi_spark.errors import AnalysisError, ConfigError, IngestError, PipelineError
from cpbi_spark.pipeline import run_stages
from cpbi_spark.runtime import RunContext

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / "conf" / "sources"
CJ_DIR = ROOT.parent / "shared" / "data" / "completejourney"

INVOICES = """InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country
536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,12/1/2010 8:26,2.55,17850,United Kingdom
536365,71053,WHITE METAL LANTERN,6,12/1/2010 8:26,3.39,17850,United Kingdom
536366,22633,HAND WARMER UNION JACK,6,12/1/2010 8:28,1.85,,United Kingdom
536367,POST,POSTAGE,3,12/1/2010 8:34,18.00,12583,France
C536379,85123A,WHITE HANGING HEART T-LIGHT HOLDER,-1,12/1/2010 9:41,2.55,17850,United Kingdom
536368,22960,JAM MAKING SET WITH JARS,6,2010-12-01 08:34,4.25,13047,United Kingdom
536369,21756,BATH BUILDING BLOCK WORD,3,12/1/2010 8:35
536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,12/1/2010 8:26,2.55,17850,United Kingdom
"""
# by hand: 3 sales accepted (lines 1, 2, 3 - line 3 without a customer), 1 excluded (POST), 1 return
# (C536379, unlinked), 1 wrong date format (bad_type), 1 malformed line, 1 exact duplicate of line 1.

BASKETS = """citrus fruit,semi-finished bread,margarine,ready soups
tropical fruit,yogurt,coffee
whole milk
pip fruit,yogurt,cream cheese ,meat spreads
other vegetables,whole milk,condensed milk,long life bakery product
"""
# by hand: 5 baskets, 16 item lines; "yogurt" in baskets 2 and 4.

ORDER_PRODUCTS = """order_id,product_id,add_to_cart_order,reordered
1,24852,1,1
1,13176,2,0
1,21137,3,1
2,24852,1,1
2,13176,2,1
3,24852,1,0
3,47209,2,0
4,13176,1,1
4,21137,2,0
5,24852,1,1
5,13176,2,1
5,47209,3,1
6,196,1,0
7,,1,0
"""
INSTACART_PRODUCTS = """product_id,product_name,aisle_id,department_id
196,Soda,77,7
13176,Bag of Organic Bananas,24,4
21137,Organic Strawberries,24,4
24852,Banana,24,4
47209,Organic Hass Avocado,24,4
"""
# by hand: 6 orders, 13 lines, and 1 line without a product (quarantined). Items: 24852 and 13176 in 4 orders,
# 21137 and 47209 in 2, 196 in 1. Pairs: {13176, 24852} in orders 1, 2, 5; {13176, 21137} in 1, 4;
# {24852, 47209} in 3, 5. Rule 24852 -> 13176: confidence 3/4, lift (3/4) / (4/6) = 1.125;
# rule 21137 -> 13176: confidence 1, lift 1 / (4/6) = 1.5.

OLIST_ITEMS = """order_id,order_item_id,product_id,seller_id,shipping_limit_date,price,freight_value
o1,1,p1,s1,2017-10-06 11:07:15,29.99,8.72
o1,2,p1,s1,2017-10-06 11:07:15,29.99,8.72
o2,1,p2,s2,2017-10-07 09:00:00,100.00,10.00
o3,1,p3,s1,2017-11-09 12:00:00,15.50,5.00
o4,1,p2,s2,2017-11-10 12:00:00,100.00,10.00
"""
OLIST_ORDERS = """order_id,customer_id,order_status,order_purchase_timestamp,order_approved_at
o1,c1,delivered,2017-10-02 10:56:33,2017-10-02 11:07:15
o2,c2,delivered,2017-10-03 09:00:00,2017-10-03 09:10:00
o3,c1,delivered,2017-11-05 12:00:00,2017-11-05 12:10:00
"""
OLIST_PRODUCTS = """product_id,product_category_name,product_weight_g
p1,perfumaria,225
p2,artes,1000
p3,esporte_lazer,154
"""
# by hand: 5 item lines, 4 with an order header (o1 twice: two units are two rows, told apart by
# order_item_id), o4 has none (missing_header). Sao Paulo was UTC-3 on 2017-10-02 and UTC-2 (summer
# time from 2017-10-15) on 2017-11-05: 10:56:33 -> 13:56:33 UTC, 12:00 -> 14:00 UTC.

TAFENG = """TRANSACTION_DT,CUSTOMER_ID,AGE_GROUP,PIN_CODE,PRODUCT_SUBCLASS,PRODUCT_ID,AMOUNT,ASSET,SALES_PRICE
11/1/2000,01104905,45-49,115,110411,4710199010372,2,24,30
11/1/2000,01104905,45-49,115,110507,4710857472535,1,48,46
11/1/2000,00418683,45-49,115,120103,4710043654103,2,142,166
11/2/2000,01104905,45-49,115,110411,4710199010372,1,12,15
11/2/2000,,45-49,115,110411,4710199010372,1,12,15
"""
# by hand: 5 lines, no basket id. Baskets = customer and day: 01104905 on 1 Nov (2 lines), 00418683 on 1 Nov
# (1), 01104905 on 2 Nov (1); the line without a customer has none. 1 Nov 2000 in Taipei (UTC+8) starts at
# 2000-10-31 16:00 UTC. The first line: quantity 2, amount 30, so unit price 15.

CAMPAIGN = """recency,history_segment,history,mens,womens,zip_code,newbie,channel,segment,visit,conversion,spend
10,2) $100 - $200,142.44,1,0,Surburban,0,Phone,Womens E-Mail,0,0,0
6,3) $200 - $350,329.08,1,1,Rural,1,Web,No E-Mail,0,0,0
7,2) $100 - $200,180.65,0,1,Surburban,1,Web,Womens E-Mail,1,0,0
9,5) $500 - $750,675.83,1,0,Rural,1,Web,Mens E-Mail,1,1,45.5
2,1) $0 - $100,45.34,1,0,Urban,0,Web,Womens E-Mail,0,0,0
6,2) $100 - $200,134.83,0,1,Surburban,0,Phone,Womens E-Mail,1,0,abc
"""
# by hand: 6 customers; 1 control (No E-Mail); 1 bad spend ("abc") quarantined.


def _run(spark, tmp_path: Path, mapping: str, files: dict[str, str], stages=("bronze", "silver", "gold"),
         platform: bool = False):
    """Land ``files`` and run ``stages`` with ``mapping``. The platform recorder (sources A-D) is off
    unless asked: these tests are about the mapping, and the Complete Journey test runs it on real data."""
    landing = tmp_path / "landing"
    landing.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (landing / name).write_text(text, encoding="utf-8")
    ctx = RunContext.create(env="ci", spark=spark, extra_files=[SOURCES / mapping], overrides={
        "storage.root": str(tmp_path / "lake"), "storage.landing": str(landing),
        "storage.outputs": str(tmp_path / "outputs"), "platform.enabled": str(platform).lower()})
    results = run_stages(ctx, list(stages))
    return ctx, results


def _again(spark, ctx: RunContext, mapping: str, overrides: dict | None = None, **kwargs) -> RunContext:
    """A new run context on ``ctx``'s storage with ``mapping`` and more ``overrides`` (platform recorder off)."""
    storage = ctx.config.storage
    return RunContext.create(env="ci", spark=spark, extra_files=[SOURCES / mapping], overrides={
        "storage.root": storage.root, "storage.landing": storage.landing, "storage.outputs": storage.outputs,
        "platform.enabled": "false", **(overrides or {})}, **kwargs)


def _reasons(ctx: RunContext) -> dict[str, int]:
    rows = ctx.lake.read("stage_quarantine").groupBy("reason").count().collect()
    return {r["reason"]: r["count"] for r in rows}


def test_invoice_lines_mapping(spark, tmp_path):
    ctx, _ = _run(spark, tmp_path, "invoice_lines.yaml", {"online_retail.csv": INVOICES})
    sales = ctx.lake.read("stg_transactions")
    assert sales.count() == 3
    assert sales.filter(F.col("customer_id").isNull()).count() == 1  # guest lines are kept
    first = sales.filter((F.col("basket_id") == "536365") & (F.col("product_id") == "85123A")).first()
    assert float(first["amount"]) == pytest.approx(15.30)  # 6 x 2.55, computed from the unit price
    assert first["currency"] == "GBP"
    assert first["posted_ts"].isoformat() == "2010-12-01T08:26:00"  # London in December = UTC
    returns = ctx.lake.read("stg_returns").collect()
    assert [(r["return_id"] is not None, r["quantity"], float(r["amount"]), r["is_linked"]) for r in returns] == [
        (True, 1.0, 2.55, False)]
    assert _reasons(ctx) == {"excluded_non_product": 1, "bad_type": 1, "malformed_line": 1}
    log = ctx.lake.read("ctl_batch_log").filter(F.col("source") == "transactions").first()
    assert (log["rows_in"], log["rows_accepted"], log["rows_quarantined"], log["rows_duplicate"]) == (8, 4, 3, 1)
    fact = ctx.lake.read("fact_transactions")
    assert fact.filter(F.col("txn_type") == "RETURN").first()["amount"] < 0
    # products and customers come from the lines when the export has no master files
    assert ctx.lake.read("dim_product").filter(F.col("product_id") == "71053").first()["product_name"] == \
        "WHITE METAL LANTERN"
    assert ctx.lake.read("dim_customer").filter(F.col("customer_id") == "17850").first()["country"] == \
        "United Kingdom"
    recon = ctx.lake.read("audit_recon").collect()
    assert all(r["status"] == "balanced" for r in recon), [r.asDict() for r in recon]
    assert [missing_for(ctx, a) for a in ("baskets", "cohorts", "clv")] == [None, None, None]
    assert missing_for(ctx, "uplift") == "the sources hold no promotion exposures (who was offered what)"


def test_basket_lines_mapping(spark, tmp_path):
    ctx, _ = _run(spark, tmp_path, "basket_lines.yaml", {"groceries.csv": BASKETS})
    lines = ctx.lake.read("fact_basket_lines")
    assert lines.count() == 16
    assert lines.select("basket_id").distinct().count() == 5
    assert lines.filter(F.col("product_id") == "yogurt").count() == 2
    assert lines.filter(F.col("product_id") == "cream cheese").count() == 1  # items are trimmed
    assert lines.filter(F.col("customer_id").isNotNull() | F.col("basket_ts").isNotNull()).count() == 0
    assert missing_for(ctx, "baskets") is None
    assert missing_for(ctx, "cohorts") == "no transaction line has a customer id"


def test_order_products_mapping_mines_baskets_without_times(spark, tmp_path):
    ctx, _ = _run(spark, tmp_path, "order_products.yaml",
                  {"order_products__prior.csv": ORDER_PRODUCTS, "products.csv": INSTACART_PRODUCTS})
    assert ctx.lake.read("fact_basket_lines").count() == 13
    assert _reasons(ctx) == {"missing_key": 1}
    assert missing_for(ctx, "cohorts") == "no transaction line has a customer id"
    actx = _again(spark, ctx, "order_products.yaml", {
        "analyses.baskets.min_count": "2", "analyses.baskets.min_support": "0.01",
        "analyses.baskets.segments": [], "analyses.baskets.levels": ["product", "department"]})
    (result,) = run_stages(actx, ["baskets"])
    assert "skipped" not in result.counters, result.counters
    assert result.counters["evaluation"].startswith("skipped: no basket line has a time")
    scopes = {r["level"]: r["n_baskets"] for r in actx.lake.read("basket_scopes").collect()}
    assert scopes == {"product": 6, "department": 6}
    counts = {r["itemset_key"]: r["support_count"] for r in actx.lake.read("basket_itemsets")
              .filter("level = 'product'").collect()}
    assert counts == {"24852": 4, "13176": 4, "21137": 2, "47209": 2, "13176 | 24852": 3, "13176 | 21137": 2,
                      "24852 | 47209": 2}
    rules = {(r["antecedent_key"], r["consequent_key"]): r for r in actx.lake.read("basket_rules")
             .filter("level = 'product'").collect()}
    banana = rules[("24852", "13176")]
    assert (banana["confidence"], banana["lift"]) == (pytest.approx(0.75), pytest.approx(1.125))
    assert banana["antecedent_names"] == "Banana" and banana["consequent_names"] == "Bag of Organic Bananas"
    strawberries = rules[("21137", "13176")]
    assert (strawberries["confidence"], strawberries["lift"]) == (pytest.approx(1.0), pytest.approx(1.5))
    # no customer on the lines: nobody to recommend to, and nothing fails for it
    assert actx.lake.read("basket_recommendations").count() == 0
    # a time window cannot select baskets that have no time: a clear error, not an empty analysis
    windowed = _again(spark, ctx, "order_products.yaml", {"analyses.baskets.window.last_days": "30"})
    with pytest.raises(AnalysisError, match="window selects baskets by time, but no basket line has a time"):
        run_stages(windowed, ["baskets"])


def test_order_items_take_customer_and_time_from_their_order_header(spark, tmp_path):
    ctx, _ = _run(spark, tmp_path, "order_items.yaml", {"olist_order_items_dataset.csv": OLIST_ITEMS,
                                                        "olist_orders_dataset.csv": OLIST_ORDERS,
                                                        "olist_products_dataset.csv": OLIST_PRODUCTS})
    lines = {(r["basket_id"], float(r["amount"]), r["customer_id"], r["posted_ts"].isoformat())
             for r in ctx.lake.read("stg_transactions").collect()}
    assert ctx.lake.read("stg_transactions").count() == 4
    assert lines == {("o1", 29.99, "c1", "2017-10-02T13:56:33"), ("o2", 100.0, "c2", "2017-10-03T12:00:00"),
                     ("o3", 15.5, "c1", "2017-11-05T14:00:00")}
    assert _reasons(ctx) == {"missing_header": 1}
    (missing,) = ctx.lake.read("stage_quarantine").collect()
    assert "no order header in ref_order_headers for basket_id o4" in missing["detail"]
    facts = ctx.lake.read("fact_transactions")
    assert {r["customer_id"] for r in facts.collect()} == {"c1", "c2"}
    assert ctx.lake.read("dim_product").filter(F.col("product_id") == "p1").first()["category"] == "perfumaria"
    recon = ctx.lake.read("audit_recon").collect()
    assert all(r["status"] == "balanced" for r in recon), [r.asDict() for r in recon]
    assert [missing_for(ctx, a) for a in ("baskets", "cohorts", "clv")] == [None, None, None]
    # o4's order arrives later: a silver full refresh takes the quarantined line in, the others stay as they were
    (tmp_path / "landing" / "olist_orders_late.csv").write_text(
        "order_id,customer_id,order_status,order_purchase_timestamp\no4,c3,delivered,2017-11-06 08:00:00\n")
    run_stages(ctx, ["bronze"])
    refresh = _again(spark, ctx, "order_items.yaml", full_refresh=True)
    run_stages(refresh, ["silver"])
    late = {(r["basket_id"], r["customer_id"], r["posted_ts"].isoformat())
            for r in ctx.lake.read("stg_transactions").collect()}
    assert late == {(b, c, t) for b, _, c, t in lines} | {("o4", "c3", "2017-11-06T10:00:00")}
    assert ctx.lake.read("stg_transactions").count() == 5


def test_header_join_mistakes_are_reported_with_their_keys(tmp_path):
    from cpbi_spark.config import load_config

    mapping = tmp_path / "mine.yaml"
    mapping.write_text((SOURCES / "order_items.yaml").read_text().replace(
        "columns: [customer_id, posted_ts]", "columns: [customer_id, posted_ts, store_id, quantity]").replace(
        "unit_price: price\n", "unit_price: price\n      posted_ts: shipping_limit_date\n").replace(
        "keys: [basket_id]", "keys: [basket_id, customer_id]"))
    with pytest.raises(ConfigError) as exc:
        load_config(env="ci", extra_files=[mapping])
    problems = {(p.key, p.reason.split(":")[0].split(" (")[0].split(";")[0]) for p in exc.value.problems}
    assert problems == {
        ("sources.transactions.header.table", "table 'ref_order_headers' must have keys [basket_id]"),
        ("sources.transactions.header.columns[1]", "'posted_ts' is mapped on the lines too"),
        ("sources.transactions.header.columns[2]", "'store_id' is not a column of table 'ref_order_headers'"),
        ("sources.transactions.header.columns[3]", "'quantity' cannot come from an order header"),
    }, exc.value.problems
    assert all(p.file == str(mapping) for p in exc.value.problems)


def test_lines_without_a_basket_id_make_one_basket_per_customer_and_time(spark, tmp_path):
    ctx, _ = _run(spark, tmp_path, "customer_day_lines.yaml", {"D11": TAFENG})
    lines = ctx.lake.read("stg_transactions")
    assert lines.count() == 5 and _reasons(ctx) == {}
    per_basket = {r["basket_id"]: r["count"] for r in lines.groupBy("basket_id").count().collect()}
    assert per_basket == {"01104905@2000-10-31T16:00:00": 2, "00418683@2000-10-31T16:00:00": 1,
                          "01104905@2000-11-01T16:00:00": 1, None: 1}
    first = lines.filter((F.col("basket_id") == "01104905@2000-10-31T16:00:00")
                         & (F.col("product_id") == "4710199010372")).first()
    assert (first["quantity"], float(first["amount"]), float(first["unit_price"]), first["currency"]) == \
        (2.0, 30.0, 15.0, "TWD")
    assert ctx.lake.read("fact_basket_lines").count() == 4   # the line without a customer has no basket
    assert [missing_for(ctx, a) for a in ("baskets", "cohorts", "clv")] == [None, None, None]


def test_campaign_test_mapping(spark, tmp_path):
    ctx, _ = _run(spark, tmp_path, "campaign_test.yaml", {"hillstrom.csv": CAMPAIGN})
    out = ctx.lake.read("fact_campaign_outcomes")
    assert out.count() == 5
    assert out.filter("is_control").count() == 1
    assert out.filter("converted").first()["spend"] == pytest.approx(45.5)
    assert '"history":"675.83"' in out.filter("converted").first()["attributes"]
    assert _reasons(ctx) == {"bad_type": 1}
    promo = ctx.lake.read("dim_promotion").collect()
    assert [(p["promotion_id"], p["is_randomized"]) for p in promo] == [("email_test", True)]
    exposures = ctx.lake.read("fact_promotion_exposures")
    assert exposures.filter("is_control").count() == 1 and exposures.count() == 5
    assert missing_for(ctx, "uplift") is None
    assert missing_for(ctx, "baskets") == "the sources hold no transaction lines"


def test_missing_mapped_column_is_a_clear_error_and_loses_nothing(spark, tmp_path):
    broken = INVOICES.replace("UnitPrice", "Price")
    with pytest.raises(IngestError) as exc:
        _run(spark, tmp_path, "invoice_lines.yaml", {"bad.csv": broken}, stages=("bronze",))
    assert "missing mapped columns ['UnitPrice']" in str(exc.value)
    assert "bad.csv" in str(exc.value)


def test_an_empty_landing_folder_is_named_when_gold_has_no_lines(spark, tmp_path):
    with pytest.raises(PipelineError) as exc:
        _run(spark, tmp_path, "invoice_lines.yaml", {"notes.txt": "not a csv"})
    message = str(exc.value)
    assert "no transaction lines have landed" in message
    assert str(tmp_path / "landing") in message and "sources.transactions.path '*.csv'" in message


def test_bad_mapping_reports_every_problem(tmp_path):
    mapping = tmp_path / "mine.yaml"
    mapping.write_text("""
mapping: {name: mine}
sources:
  transactions:
    format: xlsx
    path: "*.csv"
    bronze_table: raw_nowhere
    columns: {basket_id: Invoice}
    exclude: [{column: sku, values: [POST]}]
    returns: {id_prefix: {order_id: C}}
""", encoding="utf-8")
    from cpbi_spark.config import load_config

    with pytest.raises(ConfigError) as exc:
        load_config(extra_files=[mapping])
    keys = {p.key for p in exc.value.problems}
    assert {"sources.transactions.format", "sources.transactions.bronze_table",
            "sources.transactions.exclude[0].column", "sources.transactions.returns.id_prefix.order_id"} <= keys
    assert all(p.file == str(mapping) for p in exc.value.problems)


@pytest.mark.skipif(not CJ_DIR.is_dir(), reason="the shared Complete Journey data is not beside the repository")
def test_complete_journey_mapping_on_the_shared_export(spark, tmp_path):
    # The first lines of each real file (the whole sample is exercised by the demo and benchmarks).
    sub = tmp_path / "cj"
    sub.mkdir()
    for f in CJ_DIR.glob("*.csv"):
        with f.open(encoding="utf-8") as src, (sub / f.name).open("w", encoding="utf-8") as dst:
            for i, line in enumerate(src):
                if i > 1500:
                    break
                dst.write(line)
    with (sub / "transactions_sample.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    ctx = RunContext.create(env="ci", spark=spark, extra_files=[SOURCES / "completejourney.yaml"], overrides={
        "storage.root": str(tmp_path / "lake"), "storage.landing": str(sub),
        "storage.outputs": str(tmp_path / "outputs")})
    run_stages(ctx, ["bronze", "silver", "gold"])
    fact = ctx.lake.read("fact_transactions")
    over_limit = sum(abs(float(r["quantity"])) > 10000 for r in rows)
    assert fact.count() == len(rows) - over_limit
    assert _reasons(ctx).get("quantity_over_limit", 0) == over_limit
    total = sum(float(r["sales_value"]) for r in rows if abs(float(r["quantity"])) <= 10000)
    assert float(fact.agg(F.sum("amount_reporting")).first()[0]) == pytest.approx(total, abs=0.01)
    disc = sum(float(r["retail_disc"]) + float(r["coupon_disc"]) + float(r["coupon_match_disc"]) for r in rows
               if abs(float(r["quantity"])) <= 10000)
    assert float(fact.agg(F.sum("discount_amount_reporting")).first()[0]) == pytest.approx(disc, abs=0.01)
    # local New York time -> UTC (January: UTC-5)
    first = rows[0]
    got = fact.filter((F.col("basket_id") == first["basket_id"]) & (F.col("product_id") == first["product_id"])) \
        .first()["posted_ts"]
    assert got.strftime("%Y-%m-%d %H:%M:%S") > first["transaction_timestamp"]
    exposures = ctx.lake.read("fact_promotion_exposures")
    assert exposures.filter("is_randomized").count() == 0  # targeted campaigns, no control group
    assert exposures.filter(F.col("exposed_ts").isNull()).count() == 0  # from the campaign start date
    assert ctx.lake.read("dim_product").filter(F.col("attributes").contains("package_size")).count() > 0
    assert ctx.lake.read("fact_coupon_redemptions").count() > 0
    recon = ctx.lake.read("audit_recon").collect()
    assert all(r["status"] == "balanced" for r in recon), [r.asDict() for r in recon]
    # The platform recorder ran on this real export: one successful job run per stage, quality checks recorded.
    runs = {r["stage"]: r["status"] for r in ctx.lake.read("fact_job_runs").filter(F.col("run_id") == ctx.run_id)
            .collect()}
    assert runs == {"bronze": "succeeded", "silver": "succeeded", "gold": "succeeded"}
    dq = ctx.lake.read("fact_data_quality").filter(F.col("run_id") == ctx.run_id)
    assert dq.filter(F.col("dataset_id") == "stg_transactions").count() > 0
