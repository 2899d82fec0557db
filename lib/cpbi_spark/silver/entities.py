"""Per-source parsing and validation rules: bronze strings -> typed canonical rows + reasons.

Each ``prepare_<source>`` is a pure function ``(bronze rows, context values) -> DataFrame``
with the canonical typed columns, the raw values, and ``_reject_reason``/``_reject_detail``
from :func:`cpbi_spark.silver.validate.classify`.

Example:
    >>> typed = prepare_transactions(bronze_new, source_cfg, known_currencies={"USD"}, limits={...})
    >>> typed.groupBy("_reject_reason").count()                                   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from cpbi_spark.ingest.readers import safe_name
from cpbi_spark.silver.parse import clean_str, parse_bool, parse_date, parse_number, parse_timestamp
from cpbi_spark.silver.validate import Rule, bad_type, classify, missing

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

    from cpbi_spark.config.models import SourceConfig

# Canonical columns that must not be empty, when the mapping does not say otherwise.
DEFAULT_NOT_NULL: dict[str, list[str]] = {
    "transactions": ["txn_id", "basket_id", "customer_id", "product_id"],
    "returns": ["return_id", "original_txn_id", "product_id"],
    "customers": ["customer_id"],
    "products": ["product_id"],
    "stores": ["store_id"],
    "exchange_rates": ["rate_date", "currency"],
    "promotions": ["promotion_id"],
    "promotion_exposures": ["exposure_id", "promotion_id", "customer_id", "arm"],
}


RAW_PREFIX = "_raw_"


def with_raw(df: DataFrame, source: SourceConfig) -> DataFrame:
    """Keep every mapped value as received in ``_raw_<canonical>`` before typed columns replace it."""
    from pyspark.sql import functions as F

    return df.select("*", *[F.col(f"`{safe_name(file_col)}`").alias(f"{RAW_PREFIX}{canon}")
                            for canon, file_col in source.columns.items()])


def raw_cols(source: SourceConfig) -> dict[str, Column]:
    """Canonical name -> the as-received value (the ``_raw_`` copy made by :func:`with_raw`)."""
    from pyspark.sql import functions as F

    return {canon: F.col(f"{RAW_PREFIX}{canon}") for canon in source.columns}


def payload_columns(source: SourceConfig) -> list[Column]:
    """The record as received, under the file's own column names (for the quarantine)."""
    from pyspark.sql import functions as F

    return [F.col(f"{RAW_PREFIX}{canon}").alias(file_col) for canon, file_col in source.columns.items()] + [
        F.col("_extra_columns"), F.col("_corrupt_record")]


def not_null_columns(name: str, source: SourceConfig) -> list[str]:
    declared = getattr(source, "not_null", None)
    wanted = list(declared) if declared else DEFAULT_NOT_NULL.get(name, list(source.record_key))
    return [c for c in wanted if c in source.columns]


def _typed(df: DataFrame, parsed: Mapping[str, Column]) -> DataFrame:
    for name, col in parsed.items():
        df = df.withColumn(name, col)
    return df


def _common_rules(name: str, source: SourceConfig, raw: dict[str, Column], parsed: dict[str, Column],
                  types: dict[str, str]) -> list[Rule]:
    from pyspark.sql import functions as F

    return [
        Rule("malformed_line", F.col("_corrupt_record").isNotNull(),
             F.concat(F.lit("the parser could not split this line: "), F.col("_corrupt_record"))),
        missing(not_null_columns(name, source), parsed),
        bad_type(raw, parsed, {c: t for c, t in types.items() if c in raw}),
    ]


def prepare_transactions(df: DataFrame, source: SourceConfig, *, known_currencies: Sequence[str],
                         limits: Mapping[str, float], default_currency: str | None = None) -> DataFrame:
    """Sale (and inline return) lines: typed, amounts completed, classified."""
    from pyspark.sql import functions as F

    df = with_raw(df, source)
    raw = raw_cols(source)
    dec_comma = str(source.options.get("decimal", ".")) == ","
    qty = parse_number(raw["quantity"], "double", dec_comma) if "quantity" in raw else F.lit(1.0)
    price = parse_number(raw["unit_price"], "decimal(18,4)", dec_comma) if "unit_price" in raw else F.lit(None)
    amount = parse_number(raw["amount"], "decimal(18,2)", dec_comma) if "amount" in raw else F.lit(None)
    parsed: dict[str, Column] = {c: clean_str(raw[c]) if c in raw else F.lit(None).cast("string")
                                 for c in ("txn_id", "basket_id", "account_id", "customer_id", "product_id",
                                           "store_id", "payment_method", "original_txn_id")}
    parsed["quantity"] = qty
    parsed["unit_price"] = price
    parsed["amount"] = amount
    currency = F.upper(clean_str(raw["currency"])) if "currency" in raw else F.lit(default_currency)
    parsed["currency"] = currency
    parsed["posted_ts"] = parse_timestamp(raw["posted_ts"], source.timestamp_format, source.timezone)
    txn_type = F.upper(clean_str(raw["txn_type"])) if "txn_type" in raw else F.lit(None)
    parsed["txn_type"] = F.coalesce(txn_type, F.lit("SALE"))
    types = {"quantity": "number", "unit_price": "number", "amount": "number", "posted_ts": "timestamp"}
    df = _typed(df, parsed)
    # Exports give a line amount, a unit price, or both: complete the missing one.
    df = (df.withColumn("amount", F.coalesce(F.col("amount"),
                                             F.round(F.col("unit_price") * F.col("quantity"), 2).cast("decimal(18,2)")))
            .withColumn("unit_price", F.coalesce(F.col("unit_price"), F.when(
                F.col("quantity") != 0, (F.col("amount") / F.col("quantity")).cast("decimal(18,4)"))))
            .withColumn("payment_method", F.coalesce(F.lower("payment_method"), F.lit("unknown")))
            .withColumn("posted_date", F.to_date("posted_ts")))
    # Rules judge the parsed values themselves (expressions over the _raw_ copies), not the completed columns.
    parsed_cols = dict(parsed)
    max_future = float(limits.get("max_future_days", 1))
    max_qty = float(limits.get("max_line_quantity", 10000))
    rules = _common_rules("transactions", source, raw, parsed_cols, types) + [
        Rule("missing_key", F.col("posted_ts").isNull() & (raw["posted_ts"].isNull() | (F.trim(raw["posted_ts"]) == "")),
             F.lit("posted_ts is empty")),
        Rule("missing_amount", F.col("amount").isNull(), F.lit("neither amount nor unit_price is given")),
        Rule("unknown_currency", ~F.col("currency").isin(list(known_currencies)) | F.col("currency").isNull(),
             F.concat(F.lit("currency not in the exchange rates: "), F.coalesce(F.col("currency"), F.lit("NULL")))),
        Rule("future_date", F.col("posted_ts") > F.col("_ingested_at") + F.expr(f"INTERVAL {int(max_future * 86400)} SECONDS"),
             F.concat(F.lit("posted after ingestion: "), F.col("posted_ts").cast("string"))),
        Rule("negative_quantity", (F.col("txn_type") == "SALE") & (F.col("quantity") < 0),
             F.concat(F.lit("a sale with quantity "), F.col("quantity").cast("string"))),
        Rule("quantity_over_limit", F.abs(F.col("quantity")) > max_qty,
             F.concat(F.lit(f"|quantity| > {max_qty:g}: "), F.col("quantity").cast("string"))),
        Rule("unknown_txn_type", ~F.col("txn_type").isin("SALE", "RETURN"),
             F.concat(F.lit("txn_type is "), F.col("txn_type"))),
    ]
    return classify(df, rules)


def prepare_returns(df: DataFrame, source: SourceConfig, *, known_currencies: Sequence[str]) -> DataFrame:
    from pyspark.sql import functions as F

    df = with_raw(df, source)
    raw = raw_cols(source)
    parsed: dict[str, Column] = {c: clean_str(raw[c]) if c in raw else F.lit(None).cast("string")
                                 for c in ("return_id", "original_txn_id", "customer_id", "product_id",
                                           "store_id", "reason")}
    parsed["quantity"] = F.abs(parse_number(raw["quantity"], "double"))
    parsed["amount"] = F.abs(parse_number(raw["amount"], "decimal(18,2)"))
    parsed["currency"] = F.upper(clean_str(raw["currency"])) if "currency" in raw else F.lit(None)
    parsed["returned_ts"] = parse_timestamp(raw["returned_ts"], source.timestamp_format, source.timezone)
    df = _typed(df, parsed)
    types = {"quantity": "number", "amount": "number", "returned_ts": "timestamp"}
    rules = _common_rules("returns", source, raw, dict(parsed), types) + [
        Rule("unknown_currency", ~F.col("currency").isin(list(known_currencies)) | F.col("currency").isNull(),
             F.concat(F.lit("currency not in the exchange rates: "), F.coalesce(F.col("currency"), F.lit("NULL")))),
    ]
    return classify(df, rules)


def prepare_versions(df: DataFrame, source: SourceConfig, name: str, *, strings: Sequence[str],
                     numbers: Mapping[str, str] = {}, dates: Sequence[str] = (), effective: str | None = None,
                     ) -> DataFrame:
    """Master-data records (customers, products, stores, promotions, ...): typed and classified."""
    from pyspark.sql import functions as F

    df = with_raw(df, source)
    raw = raw_cols(source)
    parsed: dict[str, Column] = {c: clean_str(raw[c]) if c in raw else F.lit(None).cast("string") for c in strings}
    for c, t in numbers.items():
        parsed[c] = parse_number(raw[c], t) if c in raw else F.lit(None).cast(t)
    for c in dates:
        parsed[c] = parse_date(raw[c]) if c in raw else F.lit(None).cast("date")
    types = {c: "number" for c in numbers} | {c: "date" for c in dates}
    if effective:
        parsed[effective] = (parse_timestamp(raw[effective], source.timestamp_format, source.timezone)
                             if effective in raw else F.col("_ingested_at"))
        types[effective] = "timestamp"
    df = _typed(df, parsed)
    return classify(df, _common_rules(name, source, raw, dict(parsed), types))


def prepare_exposures(df: DataFrame, source: SourceConfig) -> DataFrame:
    from pyspark.sql import functions as F

    df = with_raw(df, source)
    raw = raw_cols(source)
    parsed: dict[str, Column] = {c: clean_str(raw[c]) for c in ("exposure_id", "promotion_id", "customer_id")}
    parsed["arm"] = F.lower(clean_str(raw["arm"]))
    parsed["exposed_ts"] = parse_timestamp(raw["exposed_ts"], source.timestamp_format, source.timezone)
    df = _typed(df, parsed)
    return classify(df, _common_rules("promotion_exposures", source, raw, dict(parsed),
                                      {"exposed_ts": "timestamp"}))


def parse_flag(col: Column) -> Column:
    return parse_bool(col)
