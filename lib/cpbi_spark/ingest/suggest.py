"""A first source mapping for a retailer's CSV export, guessed from its header and first rows.

``cpbi mapping suggest FILE`` reads the header and a sample of lines on the driver (nothing else is
read), matches column names to canonical ones (``InvoiceNo`` -> ``basket_id``, ``household_id`` ->
``customer_id``, ...), guesses the timestamp pattern from the sampled values and whether negative
quantities (and invoice prefixes) mark returns, and writes a mapping to review: the notes at its top
say what to check (time zone, currency) and list every column it could not place, and ``cpbi config
validate --source FILE`` checks the result.

Example:
    >>> m = suggest_mapping(Path("online_retail.csv"))        # doctest: +SKIP
    >>> m.columns["basket_id"], m.timestamp_format             # doctest: +SKIP
    ('InvoiceNo', 'M/d/yyyy H:mm')
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path

# canonical name -> normalised column names (lower case, letters and digits only), best first
SYNONYMS: dict[str, tuple[str, ...]] = {
    "basket_id": ("basketid", "invoiceno", "invoice", "invoiceid", "invoicenumber", "orderid", "order",
                  "ordernumber", "receiptid", "receipt", "receiptno", "ticketid", "ticket", "billno", "transactionid"),
    "product_id": ("productid", "stockcode", "sku", "itemid", "productcode", "articleid", "article", "upc", "ean",
                   "item", "product"),
    "product_name": ("productname", "description", "itemname", "itemdescription", "productdescription"),
    "customer_id": ("customerid", "customer", "householdid", "householdkey", "household", "userid", "clientid",
                    "memberid", "customerno", "customernumber", "shopperid"),
    "quantity": ("quantity", "qty", "units", "unitssold", "itemcount"),
    "unit_price": ("unitprice", "price", "priceperunit", "itemprice"),
    "amount": ("salesvalue", "linetotal", "lineamount", "totalprice", "total", "revenue", "sales", "netsales",
               "amount", "value"),
    "posted_ts": ("transactiontimestamp", "invoicedate", "orderpurchasetimestamp", "orderdate", "transactiondate",
                  "transactiondt", "datetime", "timestamp", "purchasedate", "date", "createdat", "orderedat"),
    "store_id": ("storeid", "store", "shopid", "shop", "branchid", "branch", "storeno"),
    "country": ("country", "countryname"),
    "channel": ("channel", "saleschannel"),
    "currency": ("currency", "currencycode"),
}

# Spark datetime pattern -> the same pattern for Python's strptime (tried on the sampled values, in order)
TIMESTAMP_PATTERNS: tuple[tuple[str, str], ...] = (
    ("yyyy-MM-dd HH:mm:ss", "%Y-%m-%d %H:%M:%S"),
    ("yyyy-MM-dd'T'HH:mm:ss", "%Y-%m-%dT%H:%M:%S"),
    ("yyyy-MM-dd HH:mm", "%Y-%m-%d %H:%M"),
    ("yyyy-MM-dd", "%Y-%m-%d"),
    ("M/d/yyyy H:mm", "%m/%d/%Y %H:%M"),
    ("M/d/yyyy H:mm:ss", "%m/%d/%Y %H:%M:%S"),
    ("M/d/yyyy", "%m/%d/%Y"),
    ("d/M/yyyy H:mm", "%d/%m/%Y %H:%M"),
    ("d/M/yyyy", "%d/%m/%Y"),
    ("d.M.yyyy H:mm", "%d.%m.%Y %H:%M"),
    ("d.M.yyyy", "%d.%m.%Y"),
    ("yyyyMMdd", "%Y%m%d"),
)


@dataclass
class SuggestedMapping:
    """What :func:`suggest_mapping` found; :meth:`to_yaml` writes it as a mapping file."""

    path: str
    delimiter: str
    columns: dict[str, str] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)
    timestamp_format: str | None = None
    negative_quantity: bool = False
    return_prefix: str | None = None
    decimal_comma: bool = False
    sampled_rows: int = 0

    def to_yaml(self, name: str) -> str:
        import yaml

        source: dict = {"format": "csv", "path": self.path, "bronze_table": "raw_transactions",
                        "columns": dict(self.columns), "on_new_columns": "evolve"}
        options = {**({"delimiter": self.delimiter} if self.delimiter != "," else {}),
                   **({"decimal": ","} if self.decimal_comma else {})}
        if options:
            source["options"] = options
        # Lines without a customer (guest checkouts) stay in the facts and basket analysis.
        source["not_null"] = [c for c in ("basket_id", "product_id") if c in self.columns]
        if self.timestamp_format:
            source["timestamp_format"] = self.timestamp_format
            source["timezone"] = "UTC"
        if "currency" not in self.columns:
            source["currency"] = "USD"   # a placeholder the notes ask to review
        if self.negative_quantity or self.return_prefix:
            rule: dict = {"negative_quantity": self.negative_quantity}
            if self.return_prefix:
                rule["id_prefix"] = {"basket_id": self.return_prefix}
            source["returns"] = rule
        doc: dict = {"mapping": {"name": name, "description": f"Suggested from {Path(self.path).name}; review it"}}
        if "currency" not in self.columns:
            doc["project"] = {"reporting_currency": source["currency"]}  # amounts stay in the export's currency
        doc["sources"] = {"transactions": source}
        notes = [f"# Suggested by `cpbi mapping suggest` from the header and {self.sampled_rows} sampled rows.",
                 "# Review every value, then: cpbi config validate --source THIS_FILE",
                 "# - timezone: the time zone of the export's local times (UTC as written here);",
                 "# - currency and project.reporting_currency: the export's currency (USD as written here);",
                 "# - run it: cpbi run all --source THIS_FILE --set storage.landing=FOLDER_OF_THE_FILES"]
        if self.unmatched:
            notes.append(f"# Columns not placed (kept in _extra_columns): {', '.join(self.unmatched)}")
        if "basket_id" not in self.columns:
            notes.append("# No basket id found: map one if the export has it; else one customer's lines at one time "
                         "are one basket.")
        if "posted_ts" in self.columns and not self.timestamp_format:
            notes.append(f"# No known pattern fits every sampled {self.columns['posted_ts']!r}: set timestamp_format.")
        return "\n".join(notes) + "\n" + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def match_columns(header: list[str]) -> tuple[dict[str, str], list[str]]:
    """Canonical name -> file column for the names ``SYNONYMS`` knows; the others in file order.

    >>> match_columns(["InvoiceNo", "StockCode", "CustomerID", "Colour"])
    ({'basket_id': 'InvoiceNo', 'product_id': 'StockCode', 'customer_id': 'CustomerID'}, ['Colour'])
    """
    by_norm = {_norm(c): c for c in reversed(header)}  # the first of two equal spellings wins
    found: dict[str, str] = {}
    used: set[str] = set()
    for canonical, names in SYNONYMS.items():
        for n in names:
            column = by_norm.get(n)
            if column is not None and column not in used:
                found[canonical] = column
                used.add(column)
                break
    return found, [c for c in header if c not in used]


def guess_timestamp_format(values: list[str]) -> str | None:
    """The first Spark pattern every non-empty sampled value parses with (None when none does).

    >>> guess_timestamp_format(["12/1/2010 8:26", "12/13/2010 14:05"])
    'M/d/yyyy H:mm'
    """
    sample = [v.strip() for v in values if v and v.strip()]
    if not sample:
        return None
    for spark_pattern, python_pattern in TIMESTAMP_PATTERNS:
        try:
            for v in sample:
                dt.datetime.strptime(v, python_pattern)
        except ValueError:
            continue
        return spark_pattern
    return None


def _letter_prefix(basket_id: str) -> str:
    """The letters before the number of an invoice id ("C536379" -> "C"; "536379" -> "")."""
    m = re.match(r"^([A-Za-z]+)\d", basket_id)
    return m.group(1) if m else ""


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", "."))
    except (AttributeError, ValueError):
        return None


def suggest_mapping(path: Path, *, sample_rows: int = 2000, encoding: str = "utf-8") -> SuggestedMapping:
    """Read the header and up to ``sample_rows`` lines of a CSV file and guess its transactions mapping."""
    with open(path, newline="", encoding=encoding, errors="replace") as fh:
        head = fh.read(64 * 1024)
        fh.seek(0)
        try:
            delimiter = csv.Sniffer().sniff(head.splitlines()[0] if head else ",", delimiters=",;\t|").delimiter
        except csv.Error:
            delimiter = ","
        reader = csv.reader(fh, delimiter=delimiter)
        header = next(reader, [])
        rows = [r for _, r in zip(range(sample_rows), reader, strict=False)]
    columns, unmatched = match_columns(header)
    out = SuggestedMapping(path=path.name, delimiter=delimiter, columns=columns, unmatched=unmatched,
                           sampled_rows=len(rows))
    index = {c: i for i, c in enumerate(header)}

    def values(canonical: str) -> list[str]:
        i = index[columns[canonical]]
        return [r[i] if i < len(r) else "" for r in rows]   # one value per sampled row: lists stay aligned

    if "posted_ts" in columns:
        out.timestamp_format = guess_timestamp_format(values("posted_ts"))
    money = [v.strip() for c in ("unit_price", "amount", "quantity") if c in columns for v in values(c)]
    # European exports write 2,55: a comma before the decimals and never a point.
    out.decimal_comma = (any(re.fullmatch(r"-?\d+,\d+", v) for v in money)
                         and not any(re.fullmatch(r"-?\d+\.\d+", v) for v in money))
    if "quantity" in columns:
        quantities = [_number(v) for v in values("quantity")]
        negative = [i for i, q in enumerate(quantities) if q is not None and q < 0]
        out.negative_quantity = bool(negative)
        if negative and "basket_id" in columns:
            # Invoice-style exports mark cancellations with a letter before the number (Online Retail: "C").
            ids = values("basket_id")
            prefixes = {_letter_prefix(ids[i]) for i in negative}
            sales = {ids[i][:1] for i, q in enumerate(quantities) if q is not None and q >= 0}
            if len(prefixes) == 1 and (p := prefixes.pop()) and not any(s.isalpha() for s in sales):
                out.return_prefix = p
    return out
