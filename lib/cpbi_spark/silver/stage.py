"""The silver stage: new bronze batches -> typed, validated, deduplicated silver tables.

Only bronze batches that silver has not processed (``ctl_batch_log``) are read, unless
``full_refresh``. Every bronze record ends in exactly one place: a silver table, the
quarantine (``stage_quarantine``, with its reason) or the duplicate count; the batch log
and ``stage_reconciliations`` record that ``rows_in = accepted + quarantined + duplicate``.

Example:
    >>> run_silver(ctx).tables          # doctest: +SKIP
    {'stg_transactions': 99012, 'dim_customer': 6400, ...}
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from cpbi_spark.ingest.bronze import BATCH_TAG
from cpbi_spark.ingest.readers import CORRUPT, EXTRA
from cpbi_spark.lakehouse.merge_spec import MergeSpec, NotMatchedBySourceClause, changed_condition
from cpbi_spark.runtime import StageResult
from cpbi_spark.silver import entities as E
from cpbi_spark.silver.pii import apply_pii, pii_salt
from cpbi_spark.silver.scd2 import scd2_merge_source, scd2_merge_spec
from cpbi_spark.silver.validate import REASON, quarantine_frame, record_json

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from cpbi_spark.runtime import RunContext

STAGE = "silver"
# Dependencies first: currencies before transactions, sales before the returns that link to them.
# Declared side tables ("table") come before the lines: order headers (sources.*.header) are one of them.
ORDER = ["exchange_rates", "stores", "products", "customers", "promotions", "table", "transactions", "returns",
         "promotion_exposures", "campaign_results"]
CONTROL_ARMS = ("control", "holdout", "no_contact", "no-contact", "none")
DIGITAL_CHANNELS = ("online", "web", "mobile", "app", "ecommerce", "e-commerce")
OUTCOME = "_outcome"
PAYLOAD, RAW_AMOUNT = "_payload", "_received_amount"  # see SilverBatch.slim


def sync_spec(keys: list[str], columns: list[str]) -> MergeSpec:
    """Make the table equal to the source: upsert changed rows, delete rows the source lacks."""
    base = MergeSpec.upsert(keys, only_if_changed=changed_condition([c for c in columns if c not in keys]))
    return MergeSpec(base.predicate, base.when_matched, base.when_not_matched,
                     (NotMatchedBySourceClause("delete"),))


class SilverBatch:
    """The new bronze rows of one source and the bookkeeping of their outcomes."""

    def __init__(self, ctx: RunContext, name: str, batches: list[str]):
        """``batches``: the source's bronze batches to process (see :func:`pending_batches`)."""
        from pyspark.sql import functions as F

        self.ctx, self.name = ctx, name
        self.source = ctx.config.sources[name]
        self.rows: DataFrame | None = None
        self.log_rows: list[dict] = []
        self.recon_rows: list[dict] = []
        self.batches = sorted(batches)
        if self.batches:
            bronze = ctx.lake.read(self.source.bronze_table)
            # A full refresh reprocesses every batch: the whole table, without a filter to evaluate.
            self.rows = bronze if ctx.full_refresh else bronze.filter(F.col("_batch_id").isin(self.batches))

    def slim(self, classified: DataFrame, amount_col: str | None = None) -> DataFrame:
        """``classified`` without the as-received copies, keeping what :meth:`finish` reads of them.

        The record as received is kept only on quarantined rows (as the JSON the quarantine stores) and
        the received amount as a decimal. A frame that later steps reuse is cached; without the raw
        strings it is about half as wide (2M transaction lines: 28 s -> 20 s to compute and cache).
        """
        from pyspark.sql import functions as F

        payload = F.when(F.col(OUTCOME) == "quarantined", record_json(E.payload_columns(self.source)))
        received = (E.raw_cols(self.source)[amount_col].try_cast("decimal(18,2)")
                    if amount_col and amount_col in self.source.columns else F.lit(None).cast("decimal(18,2)"))
        raw = [c for c in classified.columns if c.startswith((E.RAW_PREFIX, E.ATTR_PREFIX, E.DISC_PREFIX))
               or c in (EXTRA, CORRUPT, "_rn", "_first_hash", "_silver_hash")]
        return classified.withColumn(PAYLOAD, payload).withColumn(RAW_AMOUNT, received).drop(*raw)

    def finish(self, classified: DataFrame, amount_col: str | None = None) -> dict[str, int]:
        """Quarantine rejected rows, log per-batch outcome counts; ``classified`` has ``_outcome``.

        ``classified`` is either the full frame or its :meth:`slim` form (made with the same ``amount_col``).
        """
        from pyspark.sql import functions as F

        ctx = self.ctx
        if PAYLOAD not in classified.columns:
            classified = self.slim(classified, amount_col)
        amount = F.col(amount_col) if amount_col else F.lit(None).cast("decimal(18,2)")
        per_batch = classified.groupBy("_batch_id").agg(
            F.count(F.lit(1)).alias("rows_in"),
            F.sum(F.when(F.col(OUTCOME) == "accepted", 1).otherwise(0)).alias("rows_accepted"),
            F.sum(F.when(F.col(OUTCOME) == "quarantined", 1).otherwise(0)).alias("rows_quarantined"),
            F.sum(F.when(F.col(OUTCOME) == "duplicate", 1).otherwise(0)).alias("rows_duplicate"),
            F.sum(RAW_AMOUNT).cast("decimal(18,2)").alias("amount_in"),
            F.sum(F.when(F.col(OUTCOME) == "accepted", amount)).cast("decimal(18,2)").alias("amount_accepted"),
        ).collect()
        totals = {"rows_in": 0, "rows_accepted": 0, "rows_quarantined": 0, "rows_duplicate": 0}
        log_rows, recon_rows = [], []
        for r in per_batch:
            for k in totals:
                totals[k] += int(r[k])
            counts = {k: int(r[k]) for k in totals}
            key = {"stage": STAGE, "source": self.name, "batch_id": r["_batch_id"], "run_id": ctx.run_id}
            log_rows.append({**key, **counts, "processed_at": ctx.started_at})
            accounted = counts["rows_accepted"] + counts["rows_quarantined"] + counts["rows_duplicate"]
            balanced = counts["rows_in"] == accounted
            recon_rows.append({**key, **counts, "amount_in": r["amount_in"] or Decimal(0),
                               "amount_accepted": r["amount_accepted"] or Decimal(0), "balanced": balanced})
        # Counted first, so a batch with nothing to quarantine (most are) spends no write job on an empty MERGE.
        if totals["rows_quarantined"]:
            rejected = classified.filter(F.col(OUTCOME) == "quarantined")
            ctx.lake.merge("stage_quarantine", quarantine_frame(
                rejected, stage=STAGE, source=self.name, payload=F.col(PAYLOAD), run_id=ctx.run_id,
                at=ctx.started_at), MergeSpec.insert_new(["stage", "record_id"]))
        else:
            ctx.lake.ensure("stage_quarantine")  # empty, but there for its readers (no Spark job)
        # Bookkeeping rows are written once for all sources at the end of the stage (see run_silver).
        self.log_rows, self.recon_rows = log_rows, recon_rows
        return totals


def _outcome_by_key(df: DataFrame, key: str, existing: DataFrame | None) -> DataFrame:
    """Accepted / duplicate (same content again) / conflicting_duplicate (same key, other content)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    # Valid rows first: a rejected delivery of a key does not make a later valid one a repeat.
    w = Window.partitionBy(key).orderBy(F.col(REASON).isNotNull(), "_ingested_at", "_record_id")
    valid = F.col(REASON).isNull()
    df = (df.withColumn("_rn", F.when(valid, F.row_number().over(w)))
            .withColumn("_first_hash", F.when(valid, F.first("_record_hash").over(w))))
    if existing is not None:
        df = df.join(existing.select(F.col(key), F.col("record_hash").alias("_silver_hash")), key, "left")
    else:
        df = df.withColumn("_silver_hash", F.lit(None).cast("string"))
    dup = valid & (((F.col("_rn") > 1) & (F.col("_record_hash") == F.col("_first_hash")))
                   | F.coalesce(F.col("_silver_hash") == F.col("_record_hash"), F.lit(False)))  # no silver row: False
    conflict = valid & ~dup & ((F.col("_rn") > 1) | F.col("_silver_hash").isNotNull())
    # Decide both before REASON is overwritten (``valid`` reads REASON).
    df = df.withColumn("_dup", dup).withColumn("_conflict", conflict)
    df = (df.withColumn(REASON, F.when(F.col("_conflict"), F.lit("conflicting_duplicate")).otherwise(F.col(REASON)))
            .withColumn("_reject_detail", F.when(F.col("_conflict"), F.concat(
                F.lit(f"{key} already seen with other values: "), F.col(key))).otherwise(F.col("_reject_detail"))))
    return df.withColumn(OUTCOME, F.when(F.col(REASON).isNotNull(), "quarantined")
                         .when(F.col("_dup"), "duplicate").otherwise("accepted")).drop("_dup", "_conflict")


def _simple_outcome(df: DataFrame) -> DataFrame:
    from pyspark.sql import functions as F

    return df.withColumn(OUTCOME, F.when(F.col(REASON).isNotNull(), "quarantined").otherwise("accepted"))


def _known_currencies(ctx: RunContext) -> list[str]:
    reporting = ctx.config.project.reporting_currency
    rates = ctx.lake.read_or_empty("ref_exchange_rates").select("currency").distinct().collect()
    return sorted({reporting, *[r[0] for r in rates]})


def _limits(ctx: RunContext) -> dict[str, float]:
    return {r["limit_name"]: float(r["limit_value"]) for r in ctx.config.refdata.get("limits", [])}


def _persisted(df: DataFrame) -> DataFrame:
    from pyspark import StorageLevel

    return df.persist(StorageLevel.MEMORY_AND_DISK)


# ---------------------------------------------------------------------------------------- per source
def silver_exchange_rates(ctx: RunContext, batch: SilverBatch, result: StageResult) -> None:
    from pyspark.sql import functions as F

    typed = E.prepare_versions(batch.rows, batch.source, "exchange_rates", strings=["currency"],
                               numbers={"rate_to_usd": "double"}, dates=["rate_date"])
    typed = typed.withColumn("currency", F.upper("currency"))
    reporting = ctx.config.project.reporting_currency
    valid = typed.filter(F.col(REASON).isNull())
    known = ctx.lake.read_or_empty("ref_exchange_rates").select("rate_date", "currency", "rate_to_usd")
    pool = known.unionByName(valid.select("rate_date", "currency", "rate_to_usd"))
    if reporting == "USD":  # the file quotes against USD: no cross rate needed
        base = typed.select("rate_date").distinct().withColumn("_base", F.lit(1.0))
    else:  # cross rate through the reporting currency's quote of the same day
        base = pool.filter(F.col("currency") == reporting).groupBy("rate_date").agg(
            F.first("rate_to_usd").alias("_base"))
    typed = (typed.join(base, "rate_date", "left")
             .withColumn("rate_to_reporting", F.col("rate_to_usd") / F.col("_base"))
             .withColumn(REASON, F.when(F.col(REASON).isNull() & (F.col("rate_to_usd") <= 0), "bad_value")
                         .when(F.col(REASON).isNull() & F.col("_base").isNull(), "missing_reporting_rate")
                         .otherwise(F.col(REASON)))
             .withColumn("_reject_detail", F.coalesce("_reject_detail", F.col(REASON))))
    typed = _persisted(_outcome_by_key(typed.withColumn("_k", F.concat_ws("|", "rate_date", "currency")), "_k",
                                       None))
    cols = ["rate_date", "currency", "rate_to_usd", "rate_to_reporting"]
    latest = typed.filter(F.col(OUTCOME) == "accepted").select(*cols)
    info = ctx.lake.merge("ref_exchange_rates", latest, MergeSpec.upsert(
        ["rate_date", "currency"], only_if_changed=changed_condition(["rate_to_usd", "rate_to_reporting"])))
    result.tables["ref_exchange_rates"] = info.metrics.get("num_inserted", 0) + info.metrics.get("num_updated", 0)
    result.counters["exchange_rates"] = batch.finish(typed)
    typed.unpersist()


def _latest_per_key(df: DataFrame, key: str) -> DataFrame:
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    w = Window.partitionBy(key).orderBy(F.col("_ingested_at").desc(), F.col("_record_id").desc())
    return df.withColumn("_rn", F.row_number().over(w)).filter("_rn = 1").drop("_rn")


def silver_stores(ctx: RunContext, batch: SilverBatch, result: StageResult) -> None:
    from pyspark.sql import functions as F

    typed = _persisted(_simple_outcome(E.prepare_versions(
        batch.rows, batch.source, "stores", strings=["store_id", "store_name", "channel", "region", "country",
                                                     "currency"], dates=["opened_date"])))
    valid = _latest_per_key(typed.filter(F.col(OUTCOME) == "accepted"), "store_id")
    merchants = valid.select(F.col("store_id").alias("merchant_id"), F.col("store_name").alias("merchant_name"),
                             F.lower("channel").alias("channel"), "region", "country",
                             F.upper("currency").alias("currency"), "opened_date")
    cols = merchants.columns
    info = ctx.lake.merge("dim_merchant", merchants, MergeSpec.upsert(
        ["merchant_id"], only_if_changed=changed_condition(cols[1:])))
    result.tables["dim_merchant"] = info.metrics.get("num_inserted", 0) + info.metrics.get("num_updated", 0)
    channels = merchants.select("channel").where(F.col("channel").isNotNull()).distinct().withColumn(
        "is_digital", F.col("channel").isin(list(DIGITAL_CHANNELS)))
    ctx.lake.merge("dim_channel", channels, MergeSpec.insert_new(["channel"]))
    result.counters["stores"] = batch.finish(typed)
    typed.unpersist()


def _scd2(ctx: RunContext, batch: SilverBatch, result: StageResult, *, table: str, key: str, sk: str,
          typed: DataFrame, attributes: list[str]) -> None:
    from pyspark.sql import functions as F

    cfg = ctx.config.table(table)
    valid = typed.filter(F.col(OUTCOME) == "accepted").select(key, "updated_at", *attributes)
    valid = apply_pii(valid, cfg.pii, pii_salt())
    existing = ctx.lake.read_or_empty(table)
    source = scd2_merge_source(existing, valid, key=key, effective="updated_at", tracked=cfg.tracked,
                               attributes=attributes, sk=sk)
    info = ctx.lake.merge(table, source, scd2_merge_spec(sk, attributes))
    result.tables[table] = sum(info.metrics.get(k, 0) for k in ("num_inserted", "num_updated", "num_deleted"))


def silver_products(ctx: RunContext, batch: SilverBatch, result: StageResult) -> None:
    attrs = ["product_name", "brand", "category", "department", "unit_cost", "list_price", "attributes"]
    typed = _persisted(_simple_outcome(E.prepare_versions(
        batch.rows, batch.source, "products", strings=["product_id", "product_name", "brand", "category",
                                                       "department"],
        numbers={"unit_cost": "decimal(18,4)", "list_price": "decimal(18,4)"}, effective="updated_at"
    ).withColumn("attributes", E.attributes_json(batch.source))))
    _scd2(ctx, batch, result, table="dim_product", key="product_id", sk="product_sk", typed=typed, attributes=attrs)
    result.counters["products"] = batch.finish(typed)
    typed.unpersist()


def silver_customers(ctx: RunContext, batch: SilverBatch, result: StageResult) -> None:
    from pyspark.sql import functions as F

    strings = ["customer_id", "account_id", "first_name", "last_name", "email", "phone", "street_address",
               "city", "region", "country", "loyalty_tier"]
    typed = _persisted(_simple_outcome(E.prepare_versions(
        batch.rows, batch.source, "customers", strings=strings, dates=["signup_date"], effective="updated_at"
    ).withColumn("attributes", E.attributes_json(batch.source))))
    attrs = [c for c in strings if c != "customer_id"] + ["signup_date", "attributes"]
    _scd2(ctx, batch, result, table="dim_customer", key="customer_id", sk="customer_sk", typed=typed,
          attributes=attrs)
    # Accounts: the latest state of each account (SCD1).
    accounts = _latest_per_key(typed.filter((F.col(OUTCOME) == "accepted") & F.col("account_id").isNotNull()),
                               "account_id").select(
        "account_id", "customer_id", F.col("signup_date").alias("opened_date"), "loyalty_tier",
        F.lit("active").alias("status"), "updated_at")
    info = ctx.lake.merge("dim_account", accounts, MergeSpec.upsert(
        ["account_id"], only_if_changed="s.updated_at > t.updated_at"))
    result.tables["dim_account"] = info.metrics.get("num_inserted", 0) + info.metrics.get("num_updated", 0)
    result.counters["customers"] = batch.finish(typed)
    typed.unpersist()


def silver_promotions(ctx: RunContext, batch: SilverBatch, result: StageResult) -> None:
    from pyspark.sql import functions as F

    typed = E.prepare_versions(
        batch.rows, batch.source, "promotions", strings=["promotion_id", "name", "promo_type", "channel"],
        numbers={"discount_pct": "double", "response_window_days": "int", "cost_per_contact": "double"},
        dates=["start_date", "end_date"])
    raw = E.raw_cols(batch.source)
    typed = _persisted(_simple_outcome(typed.withColumn("name", F.coalesce("name", "promotion_id")).withColumn(
        "is_randomized", F.coalesce(E.parse_flag(raw["is_randomized"]) if "is_randomized" in raw else F.lit(None),
                                    F.lit(False)))))
    cols = ["promotion_id", "name", "promo_type", "discount_pct", "channel", "start_date", "end_date",
            "response_window_days", "cost_per_contact", "is_randomized"]
    valid = _latest_per_key(typed.filter(F.col(OUTCOME) == "accepted"), "promotion_id").select(*cols)
    info = ctx.lake.merge("dim_promotion", valid, MergeSpec.upsert(
        ["promotion_id"], only_if_changed=changed_condition(cols[1:])))
    result.tables["dim_promotion"] = info.metrics.get("num_inserted", 0) + info.metrics.get("num_updated", 0)
    result.counters["promotions"] = batch.finish(typed)
    typed.unpersist()


def silver_transactions(ctx: RunContext, batch: SilverBatch, result: StageResult) -> None:
    from pyspark.sql import functions as F

    header = batch.source.header
    headers = ctx.lake.read_or_empty(header.table) if header is not None else None
    typed = E.prepare_transactions(batch.rows, batch.source, known_currencies=_known_currencies(ctx),
                                   limits=_limits(ctx), default_currency=ctx.config.project.reporting_currency,
                                   headers=headers)
    existing = ctx.lake.read("stg_transactions") if ctx.lake.exists("stg_transactions") else None
    typed = _persisted(batch.slim(_outcome_by_key(typed, "txn_id", existing), "amount"))
    accepted = typed.filter(F.col(OUTCOME) == "accepted")
    sales = accepted.filter(F.col("txn_type") == "SALE").select(
        "txn_id", "basket_id", "account_id", "customer_id", "product_id", "store_id", "quantity", "unit_price",
        "amount", "currency", "txn_type", "payment_method", "posted_ts", "posted_date", "original_txn_id",
        "discount_amount", F.col("_batch_id").alias("batch_id"), F.col("_record_hash").alias("record_hash"))
    info = ctx.lake.merge("stg_transactions", sales, MergeSpec.insert_new(["txn_id"]))
    result.tables["stg_transactions"] = info.metrics.get("num_inserted", 0)
    derive_dimensions(ctx, accepted, result)
    # Returns exported inline with the sales (negative lines) live with the other returns.
    inline = accepted.filter(F.col("txn_type") == "RETURN").select(
        F.col("txn_id").alias("return_id"), "original_txn_id", "customer_id", "product_id", "store_id",
        F.abs("quantity").alias("quantity"), F.abs("amount").cast("decimal(18,2)").alias("amount"), "currency",
        F.col("posted_ts").alias("returned_ts"), F.lit(None).cast("string").alias("reason"),
        F.col("original_txn_id").isNotNull().alias("is_linked"), F.col("_batch_id").alias("batch_id"))
    info = ctx.lake.merge("stg_returns", inline, MergeSpec.insert_new(["return_id"]))
    if info.changed:
        result.tables["stg_returns"] = result.tables.get("stg_returns", 0) + info.metrics.get("num_inserted", 0)
    result.counters["transactions"] = batch.finish(typed, amount_col="amount")
    _write_txn_file_audit(ctx, typed)
    typed.unpersist()


def _write_txn_file_audit(ctx: RunContext, typed: DataFrame) -> None:
    """Per landed transactions file: landed, accepted, quarantined, duplicate rows and accepted amount."""
    from pyspark.sql import functions as F

    per_file = typed.groupBy("_source_sha256").agg(
        F.first(F.regexp_extract("_source_file", r"([^/]+)$", 1)).alias("file_name"),
        F.first("_batch_id").alias("batch_id"),
        F.count(F.lit(1)).alias("rows_landed"),
        F.sum(F.when(F.col(OUTCOME) == "accepted", 1).otherwise(0)).cast("bigint").alias("rows_accepted"),
        F.sum(F.when(F.col(OUTCOME) == "quarantined", 1).otherwise(0)).cast("bigint").alias("rows_quarantined"),
        F.sum(F.when(F.col(OUTCOME) == "duplicate", 1).otherwise(0)).cast("bigint").alias("rows_duplicate"),
        F.sum(F.when(F.col(OUTCOME) == "accepted", F.col("amount"))).cast("decimal(18,2)").alias("amount_accepted"),
    ).select(F.col("_source_sha256").alias("sha256"), "file_name", "batch_id", "rows_landed", "rows_accepted",
             "rows_quarantined", "rows_duplicate", "amount_accepted",
             F.when(F.col("rows_quarantined") > 0, "landed_with_rejections").otherwise("clean").alias("status"),
             F.lit(ctx.started_at).cast("timestamp").alias("checked_at"))
    ctx.lake.merge("audit_txn_ingest", per_file, MergeSpec.insert_new(["sha256"]))


def silver_returns(ctx: RunContext, batch: SilverBatch, result: StageResult) -> None:
    from pyspark.sql import functions as F

    typed = E.prepare_returns(batch.rows, batch.source, known_currencies=_known_currencies(ctx))
    sales = ctx.lake.read_or_empty("stg_transactions").select(F.col("txn_id").alias("original_txn_id"),
                                                               F.lit(True).alias("_sale_found"))
    typed = typed.join(sales, "original_txn_id", "left").withColumn(
        REASON, F.when(F.col(REASON).isNull() & F.col("original_txn_id").isNotNull() & F.col("_sale_found").isNull(),
                       "orphan_return").otherwise(F.col(REASON))
    ).withColumn("_reject_detail", F.when(F.col(REASON) == "orphan_return", F.concat(
        F.lit("no sale line with txn_id "), F.col("original_txn_id"))).otherwise(F.col("_reject_detail")))
    # Repeats inside the batch are duplicates; a return already in silver is skipped by the insert-only MERGE.
    typed = _persisted(batch.slim(_outcome_by_key(typed, "return_id", None), "amount"))
    accepted = typed.filter(F.col(OUTCOME) == "accepted").select(
        "return_id", "original_txn_id", "customer_id", "product_id", "store_id", "quantity", "amount", "currency",
        "returned_ts", "reason", F.col("original_txn_id").isNotNull().alias("is_linked"),
        F.col("_batch_id").alias("batch_id"))
    info = ctx.lake.merge("stg_returns", accepted, MergeSpec.insert_new(["return_id"]))
    result.tables["stg_returns"] = result.tables.get("stg_returns", 0) + info.metrics.get("num_inserted", 0)
    result.counters["returns"] = batch.finish(typed, amount_col="amount")
    typed.unpersist()


def silver_promotion_exposures(ctx: RunContext, batch: SilverBatch, result: StageResult) -> None:
    from pyspark.sql import functions as F

    typed = E.prepare_exposures(batch.rows, batch.source)
    promos = ctx.lake.read_or_empty("dim_promotion").select("promotion_id", "is_randomized", "start_date")
    # A targeting list without times: the exposure happened when the promotion started.
    typed = typed.join(promos, "promotion_id", "left").withColumn(
        "exposed_ts", F.coalesce("exposed_ts", F.col("start_date").cast("timestamp"))).withColumn(
        REASON, F.when(F.col(REASON).isNull() & F.col("is_randomized").isNull(), "unknown_promotion")
        .otherwise(F.col(REASON))).withColumn("_reject_detail", F.coalesce("_reject_detail", F.col(REASON)))
    typed = _persisted(_outcome_by_key(typed, "exposure_id", None))
    accepted = typed.filter(F.col(OUTCOME) == "accepted").select(
        "exposure_id", "promotion_id", "customer_id", "arm", F.col("arm").isin(list(CONTROL_ARMS)).alias("is_control"),
        "exposed_ts", "is_randomized")
    info = ctx.lake.merge("fact_promotion_exposures", accepted, MergeSpec.insert_new(["exposure_id"]))
    result.tables["fact_promotion_exposures"] = info.metrics.get("num_inserted", 0)
    result.counters["promotion_exposures"] = batch.finish(typed)
    typed.unpersist()


def derive_dimensions(ctx: RunContext, lines: DataFrame, result: StageResult) -> None:
    """Products and customers the master files do not know: build them from the transaction lines.

    Exports often have no product or customer file (invoice lines), or one that covers only some of
    them (demographics for a third of the households). A product gets its name from the lines (first
    seen), a customer its country; both start at their first line's time. Keys already in the
    dimension are left alone: a derived record never overrides a delivered one.
    """
    from pyspark.sql import functions as F

    def first_seen(key: str, attribute: str) -> DataFrame:
        order = F.coalesce("posted_ts", "_ingested_at")
        return (lines.filter(F.col(key).isNotNull()).groupBy(key)
                .agg(F.min_by(attribute, order).alias(attribute), F.min(order).alias("updated_at")))

    product_attrs = ["product_name", "brand", "category", "department", "unit_cost", "list_price", "attributes"]
    types = {"unit_cost": "decimal(18,4)", "list_price": "decimal(18,4)"}
    products = first_seen("product_id", "product_name").select(
        "product_id", "updated_at", "product_name",
        *[F.lit(None).cast(types.get(c, "string")).alias(c) for c in product_attrs[1:]])
    _merge_scd2(ctx, result, "dim_product", "product_id", "product_sk", products, product_attrs)
    customer_attrs = ["account_id", "first_name", "last_name", "email", "phone", "street_address", "city", "region",
                      "country", "loyalty_tier", "signup_date", "attributes"]
    customers = first_seen("customer_id", "country").select(
        "customer_id", "updated_at", "country",
        *[F.lit(None).cast("date" if c == "signup_date" else "string").alias(c)
          for c in customer_attrs if c != "country"])
    _merge_scd2(ctx, result, "dim_customer", "customer_id", "customer_sk", customers, customer_attrs)


def _merge_scd2(ctx: RunContext, result: StageResult, table: str, key: str, sk: str, incoming: DataFrame,
                attributes: list[str]) -> None:
    cfg = ctx.config.table(table)
    existing = ctx.lake.read_or_empty(table)
    # Only keys not in the dimension yet: a derived record never overrides a delivered one. Computed
    # once (an aggregate over every line), and usually empty when the retailer delivers master data.
    incoming = incoming.join(existing.select(key).distinct(), key, "left_anti").localCheckpoint(eager=True)
    if incoming.isEmpty():
        return
    source = scd2_merge_source(existing, incoming, key=key, effective="updated_at", tracked=cfg.tracked,
                               attributes=attributes, sk=sk)
    info = ctx.lake.merge(table, source, scd2_merge_spec(sk, attributes))
    if info.changed:
        result.tables[table] = result.tables.get(table, 0) + info.metrics.get("num_inserted", 0)


def silver_table(ctx: RunContext, batch: SilverBatch, result: StageResult) -> None:
    """A declared side table (entity ``table``): typed by its declared columns, merged on its keys."""
    from pyspark.sql import functions as F

    name = batch.source.target_table
    cfg = ctx.config.table(name)
    typed = E.prepare_table(batch.rows, batch.source, cfg.columns, cfg.keys)
    typed = _persisted(_outcome_by_key(typed.withColumn("_key", F.concat_ws("|", *[F.col(k).cast("string")
                                                                                  for k in cfg.keys])), "_key", None))
    rows = typed.filter(F.col(OUTCOME) == "accepted").select(*cfg.columns)
    others = [c for c in cfg.columns if c not in cfg.keys]
    spec = (MergeSpec.upsert(list(cfg.keys), only_if_changed=changed_condition(others)) if others
            else MergeSpec.insert_new(list(cfg.keys)))
    info = ctx.lake.merge(name, rows, spec)
    result.tables[name] = info.metrics.get("num_inserted", 0) + info.metrics.get("num_updated", 0)
    result.counters[batch.name] = batch.finish(typed)
    typed.unpersist()


def silver_campaign_results(ctx: RunContext, batch: SilverBatch, result: StageResult) -> None:
    """A campaign test export: outcomes per customer, plus the promotion and its exposures."""
    from pyspark.sql import functions as F

    control = [a.lower() for a in (*batch.source.control_arms, *CONTROL_ARMS)]
    typed = E.prepare_campaign_results(batch.rows, batch.source)
    typed = typed.withColumn("_key", F.concat_ws("|", "customer_id", "promotion_id"))
    typed = _persisted(_outcome_by_key(typed, "_key", None))
    accepted = typed.filter(F.col(OUTCOME) == "accepted").withColumn(
        "is_control", F.lower("arm").isin(control))
    outcomes = accepted.select("customer_id", "promotion_id", "arm", "is_control", "visited", "converted", "spend",
                               "attributes", F.col("_batch_id").alias("batch_id"))
    info = ctx.lake.merge("fact_campaign_outcomes", outcomes, MergeSpec.insert_new(["customer_id", "promotion_id"]))
    result.tables["fact_campaign_outcomes"] = info.metrics.get("num_inserted", 0)
    promos = accepted.groupBy("promotion_id").agg(F.first("is_randomized").alias("is_randomized")).select(
        "promotion_id", F.col("promotion_id").alias("name"), F.lit("campaign_test").alias("promo_type"),
        F.lit(None).cast("double").alias("discount_pct"), F.lit(None).cast("string").alias("channel"),
        F.lit(None).cast("date").alias("start_date"), F.lit(None).cast("date").alias("end_date"),
        F.lit(None).cast("int").alias("response_window_days"), F.lit(None).cast("double").alias("cost_per_contact"),
        "is_randomized")
    ctx.lake.merge("dim_promotion", promos, MergeSpec.insert_new(["promotion_id"]))
    exposures = accepted.select(F.concat_ws(":", "promotion_id", "customer_id").alias("exposure_id"), "promotion_id",
                                "customer_id", F.lower("arm").alias("arm"), "is_control",
                                F.lit(None).cast("timestamp").alias("exposed_ts"), "is_randomized")
    ctx.lake.merge("fact_promotion_exposures", exposures, MergeSpec.insert_new(["exposure_id"]))
    result.counters[batch.name] = batch.finish(typed)
    typed.unpersist()


HANDLERS = {
    "exchange_rates": silver_exchange_rates, "stores": silver_stores, "products": silver_products,
    "customers": silver_customers, "promotions": silver_promotions, "transactions": silver_transactions,
    "returns": silver_returns, "promotion_exposures": silver_promotion_exposures,
    "campaign_results": silver_campaign_results, "table": silver_table,
}


def _same_records(ctx: RunContext, table: str, rows: list[dict]) -> bool:
    """True when ``table`` already holds exactly ``rows`` (compared on the driver: a few conf rows)."""
    from collections import Counter

    from cpbi_spark.lakehouse.engine import coerce_records

    if not ctx.lake.exists(table):
        return False
    schema = ctx.lake.schema(table)
    return Counter(coerce_records(ctx.lake.read_records(table), schema)) == Counter(coerce_records(rows, schema))


def sync_refdata(ctx: RunContext, result: StageResult) -> None:
    """Load the reference tables declared in conf; an unchanged one makes no new version.

    Unchanged is checked on the driver first (no Spark job); a difference, or values the check cannot
    compare as stored (e.g. a number for a text column), go through the MERGE, which writes only what
    differs.
    """
    mapping = {"fee_schedule": "ref_fee_schedule", "limits": "ref_limits", "statuses": "dim_status"}
    for key, table in mapping.items():
        rows = ctx.config.refdata.get(key)
        if not rows or _same_records(ctx, table, rows):
            continue
        df = ctx.lake.frame(table, rows)
        cfg = ctx.config.table(table)
        info = ctx.lake.merge(table, df, sync_spec(list(cfg.keys), df.columns))
        if info.changed:
            result.tables[table] = len(rows)


def pending_batches(ctx: RunContext, names: list[str]) -> dict[str, list[str]]:
    """Per source, the bronze batches silver has not processed yet (all of them on ``--full-refresh``).

    Bronze's batch ids come from its commit log (each landing commit records its batch, see
    :data:`cpbi_spark.ingest.bronze.BATCH_TAG`), else from one Spark job over the tables whose log
    cannot answer (:meth:`Lakehouse.logged_values`); the batch log is a small table read without Spark.
    """
    lake = ctx.lake
    done: set[tuple[str, str]] = set()
    if not ctx.full_refresh and lake.exists("ctl_batch_log"):
        done = {(r["source"], r["batch_id"]) for r in lake.read_records("ctl_batch_log") if r["stage"] == STAGE}
    landed = lake.logged_values({n: ctx.config.sources[n].bronze_table for n in names}, "_batch_id", BATCH_TAG)
    return {n: [b for b in landed[n] if (n, b) not in done] for n in names}


def run_silver(ctx: RunContext) -> StageResult:
    """Process every source's new bronze batches in dependency order."""
    result = StageResult(STAGE)
    sync_refdata(ctx, result)
    log_rows: list[dict] = []
    recon_rows: list[dict] = []
    rank = {entity: i for i, entity in enumerate(ORDER)}
    sources = sorted(ctx.config.sources.items(), key=lambda kv: (rank.get(kv[1].entity_of(kv[0]), len(ORDER)), kv[0]))
    handlers = {}
    for name, source in sources:
        entity = source.entity_of(name)
        if entity not in HANDLERS:
            ctx.log.warning("source %s (entity %s) has no silver handler; its rows stay in bronze", name, entity)
            continue
        handlers[name] = HANDLERS[entity]
    pending = pending_batches(ctx, list(handlers))
    for name, handler in handlers.items():
        batch = SilverBatch(ctx, name, pending[name])
        if batch.rows is None:
            continue
        ctx.log.info("silver %s: %d new bronze batch(es)", name, len(batch.batches))
        handler(ctx, batch, result)
        log_rows += batch.log_rows
        recon_rows += batch.recon_rows
    if recon_rows:
        ctx.lake.merge("stage_reconciliations", ctx.lake.frame("stage_reconciliations", recon_rows),
                       MergeSpec.upsert(["stage", "source", "batch_id"]))
    if log_rows:
        # The batch log is written last: a crash before it means these batches are processed again, and
        # every write above is an idempotent MERGE, so the rerun converges to the same tables.
        ctx.lake.merge("ctl_batch_log", ctx.lake.frame("ctl_batch_log", log_rows),
                       MergeSpec.upsert(["stage", "source", "batch_id"]))
    return result
