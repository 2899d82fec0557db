"""Basket analysis configuration: defaults, the shipped YAML, and every problem reported with file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from cpbi_spark.analytics.baskets.config import (
    BasketsConfig,
    baskets_config,
    min_count_for,
    validate_baskets_section,
)
from cpbi_spark.config import load_config
from cpbi_spark.errors import ConfigError


def test_shipped_config_loads_and_declares_the_insight_tables(repo_root: Path):
    config = load_config(conf_dir=repo_root / "conf", env="ci")
    cfg = baskets_config(config)
    assert cfg.levels == ["product", "category", "department"]
    assert cfg.max_len == 3 and cfg.returns.policy == "keep_and_flag"
    for name in ("basket_scopes", "basket_itemsets", "basket_rules", "basket_recommendations",
                 "basket_recommendation_eval"):
        table = config.table(name)
        assert table.layer == "insights" and table.grain.startswith("one row per") and table.keys
        assert set(table.keys) <= set(table.columns)


def test_every_problem_is_collected_with_file_and_key():
    with pytest.raises(ConfigError) as err:
        validate_baskets_section({
            "min_support": 1.5,                         # out of range
            "levelz": ["product"],                      # unknown key
            "levels": ["product", "product"],           # repeated
            "window": {"last_days": 30, "start": "2024-01-01"},   # both ways of giving a window
            "significance": {"correction": "magic"},    # not a statsmodels method
        }, file="conf/base/analysis_baskets.yaml")
    problems = {p.key: p for p in err.value.problems}
    assert all(p.file == "conf/base/analysis_baskets.yaml" for p in problems.values())
    assert "analyses.baskets.min_support" in problems
    assert "did you mean 'levels'" in problems["analyses.baskets.levelz"].reason
    assert "analyses.baskets.significance.correction" in problems
    # Rules between keys are checked only once the keys themselves parse: fix the first problems and they show.
    with pytest.raises(ConfigError) as err2:
        validate_baskets_section({"levels": ["product", "product"], "window": {"last_days": 30,
                                                                               "start": "2024-01-01"}})
    keys = {p.key for p in err2.value.problems}
    assert keys == {"analyses.baskets.levels", "analyses.baskets.window.last_days"}


def test_evaluation_needs_the_product_level():
    with pytest.raises(ConfigError, match="recommendations are products"):
        validate_baskets_section({"levels": ["category"]})
    assert validate_baskets_section({"levels": ["category"], "evaluation": {"enabled": False}}).levels == ["category"]


def test_min_count_is_exact_decimal_arithmetic():
    # By hand: 0.001 * 1e6 = 1000; 10% of 30 = 3 (the float product 3.0000000000000004 must not give 4);
    # 50% of 7 = 3.5 -> 4; the floor min_count wins when larger.
    assert min_count_for(1_000_000, 0.001) == 1000
    assert min_count_for(30, 0.1) == 3
    assert min_count_for(7, 0.5) == 4
    assert min_count_for(100, 0.001, 3) == 3
    assert BasketsConfig(min_support=0.02, min_count=25).min_count_for(1000) == 25


def test_params_are_flat_for_mlflow():
    params = BasketsConfig().params()
    assert params["min_support"] == 0.005 and params["significance.test"] == "fisher"
    assert params["guard.max_itemsets"] == 500_000
