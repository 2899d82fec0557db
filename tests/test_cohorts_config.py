"""The cohorts section of the configuration and its tables: defaults, validation, declared schemas."""

from __future__ import annotations

import datetime as dt

import pytest

from cpbi_spark.analytics.cohorts.config import CohortsConfig, cohorts_config, period_columns, validate_cohorts_section
from cpbi_spark.config import load_config
from cpbi_spark.errors import ConfigError

COHORT_TABLES = ("cohort_retention", "cohort_retention_wide", "repeat_purchase_rates", "repeat_survival_curve",
                 "customer_purchase_profile", "rfm_segments", "return_rates", "customer_returns",
                 "returns_revenue_at_risk", "clv_customers", "clv_deciles", "clv_model_fit", "clv_holdout_deciles")


@pytest.fixture(scope="module")
def config():
    return load_config(env="ci")


def test_conf_file_is_loaded_and_validated(config):
    cfg = cohorts_config(config)
    assert cfg.cohort_by == "first_purchase_month" and cfg.period_grain == "month" and cfg.max_age == 13
    assert cfg.repeat.windows_days == [30, 60, 90, 365]
    assert cfg.clv.holdout_days == 120 and cfg.clv.time_unit_days == 7
    assert cfg.as_of is None and cfg.segment_filters == {}


def test_every_problem_is_reported_with_file_and_key():
    raw = {"cohort_by": "year", "max_age": 0, "clv": {"holdot_days": 30}, "segment_filters": {"colour": ["red"]}}
    with pytest.raises(ConfigError) as err:
        validate_cohorts_section(raw, file="conf/base/analysis_cohorts.yaml", n_period_columns=53)
    problems = {p.key: p for p in err.value.problems}
    assert set(problems) == {"analyses.cohorts.cohort_by", "analyses.cohorts.max_age",
                             "analyses.cohorts.clv.holdot_days", "analyses.cohorts.segment_filters.colour"}
    assert all(p.file == "conf/base/analysis_cohorts.yaml" for p in problems.values())
    assert "holdout_days" in problems["analyses.cohorts.clv.holdot_days"].reason  # did-you-mean hint


def test_rules_relating_keys_are_collected_too():
    raw = {"max_age": 60, "cohort_by": "first_purchase_week", "period_grain": "month",
           "repeat": {"windows_days": [30, 30]}}
    with pytest.raises(ConfigError) as err:
        validate_cohorts_section(raw, file="f.yaml", n_period_columns=53)
    keys = {p.key: p.reason for p in err.value.problems}
    assert set(keys) == {"analyses.cohorts.max_age", "analyses.cohorts.period_grain",
                         "analyses.cohorts.repeat.windows_days"}
    assert "p52" in keys["analyses.cohorts.max_age"]


def test_a_problem_names_where_the_bad_value_came_from(tmp_path):
    # --set: reported as an override, like the loader's own problems
    cfg = load_config(env="ci", overrides={"analyses.cohorts.rfm.bins": "1", "analyses.cohorts.as_of": "2025-01-31"})
    with pytest.raises(ConfigError) as err:
        cohorts_config(cfg)
    (problem,) = err.value.problems
    assert (problem.file, problem.key) == ("<override>", "analyses.cohorts.rfm.bins")
    # an overlay file (--source): that file, while the keys it does not set still come from base
    overlay = tmp_path / "my_cohorts.yaml"
    overlay.write_text("analyses:\n  cohorts:\n    rfm: {bins: 1}\n")
    with pytest.raises(ConfigError) as err:
        cohorts_config(load_config(env="ci", extra_files=[overlay]))
    (problem,) = err.value.problems
    assert (problem.file, problem.key) == (str(overlay), "analyses.cohorts.rfm.bins")
    ok = load_config(env="ci", overrides={"analyses.cohorts.as_of": "2025-01-31", "analyses.cohorts.max_age": "6"})
    assert cohorts_config(ok).as_of == dt.date(2025, 1, 31) and cohorts_config(ok).max_age == 6


def test_defaults_without_a_section():
    cfg = CohortsConfig.model_validate({})
    assert cfg.activity.measure == "purchase" and cfg.rfm.bins == 5 and cfg.clv.enabled
    assert cfg.params()["clv.horizon_days"] == 365


def test_cohort_tables_are_declared_in_the_insights_layer(config):
    for name in COHORT_TABLES:
        table = config.table(name)
        assert table.layer == "insights" and table.grain.startswith("one row per")
        assert set(table.keys) <= set(table.columns)
        assert "as_of" in table.columns
    assert period_columns(config) == [f"p{k:02d}" for k in range(53)]
