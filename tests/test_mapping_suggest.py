"""``cpbi mapping suggest``: a first mapping guessed from an export's header and sampled rows.

The expected columns are those of the built-in mappings, written by hand for the same exports
(conf/sources/completejourney.yaml on the shared real file, invoice_lines.yaml for Online Retail).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cpbi_spark.cli import main
from cpbi_spark.config import load_config
from cpbi_spark.ingest.suggest import guess_timestamp_format, suggest_mapping

ROOT = Path(__file__).resolve().parents[1]
CJ = ROOT.parent / "shared" / "data" / "completejourney" / "transactions_sample.csv"

ONLINE_RETAIL = """InvoiceNo;StockCode;Description;Quantity;InvoiceDate;UnitPrice;CustomerID;Country
536365;85123A;WHITE HANGING HEART T-LIGHT HOLDER;6;12/1/2010 8:26;2,55;17850;United Kingdom
536365;71053;WHITE METAL LANTERN;6;12/1/2010 8:26;3,39;17850;United Kingdom
C536379;85123A;WHITE HANGING HEART T-LIGHT HOLDER;-1;12/1/2010 9:41;2,55;17850;United Kingdom
536366;22633;HAND WARMER UNION JACK;6;12/13/2010 14:28;1,85;;United Kingdom
"""


def _built_in(name: str) -> dict:
    return yaml.safe_load((ROOT / "conf" / "sources" / name).read_text())["sources"]["transactions"]


@pytest.mark.skipif(not CJ.exists(), reason="the shared Complete Journey export is not next to the repository")
def test_complete_journey_columns_are_those_of_the_hand_written_mapping():
    found = suggest_mapping(CJ)
    cj = _built_in("completejourney.yaml")
    assert found.columns == cj["columns"]
    assert found.timestamp_format == cj["timestamp_format"]
    assert found.unmatched == ["retail_disc", "coupon_disc", "coupon_match_disc", "week"]
    assert found.sampled_rows == 2000 and not found.negative_quantity   # the sample has no returns
    assert found.delimiter == "," and not found.decimal_comma


def test_online_retail_with_semicolons_returns_and_a_validating_mapping(tmp_path, capsys):
    export = tmp_path / "online_retail.csv"
    export.write_text(ONLINE_RETAIL)
    found = suggest_mapping(export)
    assert found.delimiter == ";" and found.decimal_comma
    assert found.columns == _built_in("invoice_lines.yaml")["columns"]
    assert found.timestamp_format == "M/d/yyyy H:mm"
    assert found.negative_quantity and found.return_prefix == "C"
    out = tmp_path / "mine.yaml"
    assert main(["mapping", "suggest", str(export), "--out", str(out)]) == 0
    assert "cpbi config validate --source" in capsys.readouterr().out
    cfg = load_config(env="ci", extra_files=[out])   # the written mapping is a valid configuration
    source = cfg.sources["transactions"]
    assert list(cfg.sources) == ["transactions"] and source.options == {"delimiter": ";", "decimal": ","}
    assert source.returns.negative_quantity and source.returns.id_prefix == {"basket_id": "C"}
    assert source.currency == cfg.project.reporting_currency == "USD"
    assert source.not_null == ["basket_id", "product_id"]   # a guest line (no CustomerID) is kept


def test_timestamp_patterns_need_every_sampled_value():
    assert guess_timestamp_format(["2017-01-28 14:06:53", "2017-02-28 22:31:57"]) == "yyyy-MM-dd HH:mm:ss"
    assert guess_timestamp_format(["11/1/2000", "11/30/2000", ""]) == "M/d/yyyy"
    assert guess_timestamp_format(["31/12/2020", "1/2/2021"]) == "d/M/yyyy"   # 31 cannot be a month
    assert guess_timestamp_format(["12/1/2010 8:26", "2010-12-01 08:34"]) is None   # two formats: none fits all
    assert guess_timestamp_format([]) is None
