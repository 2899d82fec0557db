"""Tests of the typed config: loading, overlays, interpolation, overrides and problem reporting.

No Spark: every test builds a small conf tree under ``tmp_path`` (or reads the repository's).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from cpbi_spark.config import CpbiConfig, default_conf_dir, load_config, mask_secrets
from cpbi_spark.errors import ConfigError

REPO_CONF = Path(__file__).resolve().parents[1] / "conf"
PREFIX = "customer_purchase_behavior_insights_"

BASE_PROJECT = """
    project:
      name: cpbi
    storage:
      root: ./data/lakehouse
      landing: ./data/landing
      outputs: ./data/outputs
    engine: auto
    spark:
      spark.sql.shuffle.partitions: 8
      spark.sql.adaptive.enabled: true
    mlflow:
      experiment: cpbi
"""

BASE_TABLES = """
    tables:
      raw_transactions:
        layer: bronze
        description: landed transaction lines
        grain: one row per landed line of a transactions file
        keys: [_record_hash]
        columns: {}
      dim_customer:
        layer: silver
        description: customers with history
        grain: one row per customer version
        keys: [customer_id]
        columns:
          customer_id: string
          email: string
          segment: string
          credit_limit: decimal(18, 2)
          valid_from: timestamp
          valid_to: timestamp
          is_current: boolean
        scd_type: 2
        tracked: [segment, credit_limit]
        pii: {email: hash}
        tags: [customers]
"""

BASE_SOURCES = """
    sources:
      transactions:
        format: csv
        path: transactions/*.csv
        options: {header: true, delimiter: ";"}
        bronze_table: raw_transactions
        columns: {txn_id: TxnId, amount: Amount}
        record_key: [txn_id]
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small valid conf tree with envs local and dev; the working directory is tmp_path."""
    monkeypatch.chdir(tmp_path)
    for var in ("CPBI_ENV", "CPBI_CONF_DIR", "CPBI_STORAGE_ROOT", "CPBI_TEST_BUCKET", "CPBI_TEST_UNSET"):
        monkeypatch.delenv(var, raising=False)
    root = tmp_path / "conf"
    write(root / "base" / "project.yaml", BASE_PROJECT)
    write(root / "base" / "tables.yaml", BASE_TABLES)
    write(root / "base" / "sources.yaml", BASE_SOURCES)
    write(root / "local" / "project.yaml", "spark:\n  spark.sql.shuffle.partitions: 4\n")
    (root / "dev").mkdir()
    return root


def problem_set(exc: pytest.ExceptionInfo[ConfigError]) -> set[tuple[str, str]]:
    return {(p.file, p.key) for p in exc.value.problems}


# --- the repository's own conf -------------------------------------------------------------------


@pytest.mark.parametrize("env", ["local", "ci", "prod"])
def test_repository_conf_loads_for_each_env(
    env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for var in ("CPBI_STORAGE_ROOT", "CPBI_LANDING", "CPBI_OUTPUTS", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    cfg = load_config(REPO_CONF, env=env)
    assert cfg.env == env
    assert cfg.conf_dir == str(REPO_CONF)
    assert cfg.table("raw_transactions").layer == "bronze"
    assert cfg.source("transactions").bronze_table == "raw_transactions"
    assert cfg.physical_name("raw_transactions") == PREFIX + "raw_transactions"
    assert all(key.startswith("spark.") and isinstance(v, str) for key, v in cfg.spark.items())
    assert cfg.mlflow_tracking_uri()


def test_repository_conf_env_specifics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for var in ("CPBI_STORAGE_ROOT", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    local = load_config(REPO_CONF, env="local")
    assert local.spark["spark.sql.shuffle.partitions"] == "4"
    assert local.spark["spark.driver.memory"] == "4g"
    assert local.storage.root == str(tmp_path / "cpbi-data" / "lakehouse")
    assert local.mlflow_tracking_uri() == f"sqlite:///{tmp_path}/cpbi-data/outputs/mlruns/mlflow.db"

    ci = load_config(REPO_CONF, env="ci")
    assert ci.spark["spark.sql.shuffle.partitions"] == "2"
    assert ci.spark["spark.driver.memory"] == "2g"
    assert ci.storage.landing == str(tmp_path / "cpbi-data-ci" / "landing")

    prod = load_config(REPO_CONF, env="prod")
    assert prod.engine == "delta-spark"
    assert prod.storage.root == "s3a://my-bucket/cpbi"
    monkeypatch.setenv("CPBI_STORAGE_ROOT", "abfss://lake@acct.dfs.core.windows.net/cpbi")
    assert load_config(REPO_CONF, env="prod").storage.root == "abfss://lake@acct.dfs.core.windows.net/cpbi"


def test_default_conf_dir(conf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_conf_dir() == Path("conf")  # ./conf exists in the working directory
    assert load_config().conf_dir == str(conf)
    monkeypatch.setenv("CPBI_CONF_DIR", str(REPO_CONF))
    assert default_conf_dir() == REPO_CONF
    monkeypatch.delenv("CPBI_CONF_DIR")
    monkeypatch.chdir(tmp_path / "conf")  # no ./conf here: falls back to the repository's
    assert default_conf_dir().resolve() == REPO_CONF


# --- merge and environment selection --------------------------------------------------------------


def test_typed_values_and_coercion(conf: Path, tmp_path: Path) -> None:
    cfg = load_config(conf)
    assert isinstance(cfg, CpbiConfig)
    assert cfg.env == "local"
    assert cfg.spark == {"spark.sql.shuffle.partitions": "4", "spark.sql.adaptive.enabled": "true"}
    assert cfg.source("transactions").options == {"header": "true", "delimiter": ";"}
    assert cfg.table("dim_customer").columns["credit_limit"] == "decimal(18,2)"
    assert cfg.storage.root == str(tmp_path / "data" / "lakehouse")  # made absolute at load time
    assert cfg.project.reporting_currency == "USD"
    assert list(cfg.tables_in_layer("silver")) == ["dim_customer"]
    assert cfg.refdata == {} and cfg.analyses == {}


def test_overlay_deep_merges_dicts_and_replaces_lists(conf: Path) -> None:
    write(
        conf / "dev" / "overlay.yaml",
        """
        storage:
          root: s3://bucket/lake
        spark:
          spark.driver.memory: 3g
        tables:
          dim_customer:
            tracked: [segment]
            description: overridden in dev
        """,
    )
    cfg = load_config(conf, env="dev")
    assert cfg.env == "dev"
    assert cfg.storage.root == "s3://bucket/lake"  # URIs are kept as they are
    assert cfg.storage.landing.endswith("/data/landing")  # sibling keys survive the merge
    assert cfg.spark == {
        "spark.sql.shuffle.partitions": "8",  # base value: the local overlay does not apply to dev
        "spark.sql.adaptive.enabled": "true",
        "spark.driver.memory": "3g",
    }
    dim = cfg.table("dim_customer")
    assert dim.tracked == ["segment"]  # lists replace
    assert dim.description == "overridden in dev"
    assert dim.pii == {"email": "hash"}


def test_env_selection_argument_then_variable_then_local(conf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(conf / "dev" / "project.yaml", "engine: delta-rs\n")
    assert load_config(conf).env == "local"
    monkeypatch.setenv("CPBI_ENV", "dev")
    assert load_config(conf).engine == "delta-rs"
    assert load_config(conf, env="local").engine == "auto"  # the argument wins over CPBI_ENV


def test_extra_files_apply_after_env_and_later_wins(conf: Path, tmp_path: Path) -> None:
    first = write(
        tmp_path / "mine1.yaml", "sources:\n  transactions:\n    columns: {txn_id: id, amount: amt}\n"
    )
    second = write(tmp_path / "mine2.yaml", "sources:\n  transactions:\n    options: {delimiter: '|'}\n")
    third = write(tmp_path / "mine3.yaml", "spark:\n  spark.sql.shuffle.partitions: 1\n")
    cfg = load_config(conf, extra_files=[first, str(second), third])
    source = cfg.source("transactions")
    assert source.columns == {"txn_id": "id", "amount": "amt"}  # a dict replaced key by key
    assert source.options == {"header": "true", "delimiter": "|"}
    assert cfg.spark["spark.sql.shuffle.partitions"] == "1"  # wins over conf/local


def test_error_names_the_file_that_set_the_value_last(conf: Path, tmp_path: Path) -> None:
    write(conf / "dev" / "tables.yaml", "tables:\n  dim_customer:\n    scd_type: 5\n")
    extra = write(tmp_path / "user.yaml", "engine: warp\n")
    with pytest.raises(ConfigError) as exc:
        load_config(conf, env="dev", extra_files=[extra])
    assert problem_set(exc) == {
        (str(conf / "dev" / "tables.yaml"), "tables.dim_customer.scd_type"),
        (str(extra), "engine"),
    }


# --- every problem, in one error -------------------------------------------------------------------


def test_bad_config_reports_every_problem_with_file_and_key(conf: Path) -> None:
    tables = write(
        conf / "base" / "tables.yaml",
        """
        tables:
          raw_transactions:
            layer: bronze
            description: landed lines
            grain: one row per landed line
            keys: [_record_hash]
            columns: {}
          dim_customer:
            layer: silver
            description: customers
            grain: one row per customer version
            keys: [customer_id, customer_code]
            columns:
              customer_id: string
              credit_limit: decimal(40, 2)
              valid_from: timestamp
              is_current: string
            scd_type: 2
            pii: {email: hash}
            partition_by: [signup_date]
          fct_sales:
            layer: gold
            description: sales
            grain: ""
            keys: [sale_id]
            columns: {sale_id: varchar}
            colums: {}
          Bad_Name:
            layer: diamond
        """,
    )
    sources = write(
        conf / "base" / "sources.yaml",
        """
        sources:
          transactions:
            format: xml
            path: transactions/*.csv
            bronze_table: raw_transactions
            columns: {txn_id: TxnId}
            record_key: [txn_id]
            timezone: Mars/Olympus
          returns:
            format: csv
            path: returns/*.csv
            bronze_table: dim_customer
            columns: {return_id: ReturnId}
            record_key: [return_id, txn_id]
          refunds:
            format: csv
            path: refunds/*.csv
            bronze_table: raw_transaction
            columns: {refund_id: id}
            record_key: [refund_id]
        """,
    )
    with pytest.raises(ConfigError) as exc:
        load_config(conf)
    found = {(p.file, p.key): p.reason for p in exc.value.problems}
    t, s = str(tables), str(sources)
    expected = {
        # pydantic: types, literals, names, unknown keys
        (t, "tables.dim_customer.columns.credit_limit"): "decimal precision must be between 1 and 38",
        (t, "tables.fct_sales.grain"): "must not be empty",
        (t, "tables.fct_sales.columns.sale_id"): "unsupported type 'varchar'",
        (t, "tables.fct_sales.colums"): "did you mean 'columns'?",
        (t, "tables.Bad_Name"): "invalid name 'Bad_Name'",
        (t, "tables.Bad_Name.layer"): "should be 'bronze', 'silver', 'gold', 'insights' or 'platform'",
        (s, "sources.transactions.format"): "should be 'csv', 'jsonl', 'parquet' or 'basket_lines'",
        (s, "sources.transactions.timezone"): "unknown time zone 'Mars/Olympus'",
        # cross-field checks
        (t, "tables.dim_customer.keys[1]"): "column 'customer_code' is not declared in columns",
        (t, "tables.dim_customer.pii.email"): "column 'email' is not declared in columns",
        (t, "tables.dim_customer.partition_by[0]"): "column 'signup_date' is not declared",
        (t, "tables.dim_customer.partition_by"): "partitioning is not applied by the table engines yet",
        (t, "tables.dim_customer.columns"): "scd_type 2 needs a column 'valid_to'",
        (t, "tables.dim_customer.columns.is_current"): "must be boolean",
        (t, "tables.dim_customer.tracked"): "scd_type 2 needs the columns whose change creates a new version",
        (s, "sources.returns.bronze_table"): "must be a bronze table; 'dim_customer' is in layer 'silver'",
        (s, "sources.returns.record_key[1]"): "column 'txn_id' is not declared in the keys of columns",
        (s, "sources.refunds.bronze_table"): "did you mean 'raw_transactions'?",
    }
    for where, reason in expected.items():
        assert where in found, f"missing problem {where}; got {sorted(found)}"
        assert reason in found[where]
    assert {p.file for p in exc.value.problems} == {t, s}
    message = str(exc.value)
    assert message.startswith(f"{len(exc.value.problems)} problems in the configuration:")
    assert f"{t}: tables.fct_sales.colums: unknown key (did you mean 'columns'?)" in message


def test_unquoted_decimal_types_in_flow_mappings(conf: Path) -> None:
    # YAML splits `decimal(18,2)` at the comma inside {...}; the loader joins it back.
    write(
        conf / "dev" / "tables.yaml",
        """
        tables:
          fct_sales:
            layer: gold
            description: sales
            grain: one row per sale line
            keys: [sale_id]
            columns: {sale_id: string, amount: decimal(18,2), fee: decimal(18, 4), qty: double}
        """,
    )
    cfg = load_config(conf, env="dev")
    assert cfg.table("fct_sales").columns == {
        "sale_id": "string",
        "amount": "decimal(18,2)",
        "fee": "decimal(18,4)",
        "qty": "double",
    }


def test_duplicate_sections_across_base_files(conf: Path) -> None:
    extra_base = write(conf / "base" / "zz_more.yaml", "engine: delta-rs\nrefdata: {limits: [{a: 1}]}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(conf)
    (problem,) = exc.value.problems
    assert (problem.file, problem.key) == (str(extra_base), "engine")
    assert str(conf / "base" / "project.yaml") in problem.reason


def test_mapping_sections_may_be_split_over_base_files(conf: Path) -> None:
    write(conf / "base" / "tables_more.yaml", """
        tables:
          dim_store:
            layer: silver
            description: stores
            grain: one row per store
            keys: [store_id]
            columns: {store_id: string}
    """)
    cfg = load_config(conf)
    assert {"raw_transactions", "dim_customer", "dim_store"} <= set(cfg.tables)
    clash = write(conf / "base" / "tables_clash.yaml", """
        tables:
          dim_customer:
            layer: silver
            description: again
            grain: one row per customer
            keys: [customer_id]
            columns: {customer_id: string}
    """)
    with pytest.raises(ConfigError) as exc:
        load_config(conf)
    (problem,) = exc.value.problems
    assert (problem.file, problem.key) == (str(clash), "tables.dim_customer")
    assert "tables.yaml" in problem.reason


def test_yaml_syntax_error_names_file_and_line(conf: Path) -> None:
    broken = write(conf / "local" / "broken.yaml", "spark:\n  spark.a: 1\n  spark.b: [1, 2\nengine: auto\n")
    repeated = write(conf / "local" / "repeated.yaml", "mlflow:\n  experiment: a\n  experiment: b\n")
    with pytest.raises(ConfigError) as exc:
        load_config(conf)
    by_file = {p.file: p for p in exc.value.problems}
    assert set(by_file) == {str(broken), str(repeated)}
    assert by_file[str(broken)].key == "line 4"
    assert "YAML syntax error at line 4" in by_file[str(broken)].reason
    assert "started at line 3" in by_file[str(broken)].reason
    assert by_file[str(repeated)].key == "line 3"
    assert "'experiment' is repeated" in by_file[str(repeated)].reason


def test_unknown_env_and_missing_folders(conf: Path, tmp_path: Path) -> None:
    missing_extra = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as exc:
        load_config(conf, env="staging", extra_files=[missing_extra])
    assert problem_set(exc) == {(str(conf / "staging"), "env"), (str(missing_extra), "(file)")}
    (unknown_env,) = [p for p in exc.value.problems if p.key == "env"]
    assert "unknown environment 'staging'" in unknown_env.reason
    assert "(environments: dev, local)" in unknown_env.reason

    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "no-such-conf")
    assert problem_set(exc) == {(str(tmp_path / "no-such-conf"), "conf_dir")}


def test_reserved_and_misnamed_files_are_reported(conf: Path) -> None:
    write(conf / "local" / "env.yaml", "env: prod\n")
    write(conf / "local" / "other.yml", "engine: delta-rs\n")
    with pytest.raises(ConfigError) as exc:
        load_config(conf)
    assert problem_set(exc) == {
        (str(conf / "local" / "env.yaml"), "env"),
        (str(conf / "local" / "other.yml"), "(file)"),
    }


# --- interpolation and overrides ----------------------------------------------------------------


def test_environment_variable_interpolation(conf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(
        conf / "dev" / "storage.yaml",
        """
        storage:
          root: ${CPBI_TEST_BUCKET}/lake
          outputs: ${CPBI_TEST_UNSET:-file:///srv/fallback}/out
        mlflow:
          experiment: exp-$${literal}
        """,
    )
    monkeypatch.setenv("CPBI_TEST_BUCKET", "s3://from-env")
    cfg = load_config(conf, env="dev")
    assert cfg.storage.root == "s3://from-env/lake"
    assert cfg.storage.outputs == "file:///srv/fallback/out"
    assert cfg.mlflow.experiment == "exp-${literal}"

    monkeypatch.delenv("CPBI_TEST_BUCKET")
    with pytest.raises(ConfigError) as exc:
        load_config(conf, env="dev")
    (problem,) = [p for p in exc.value.problems if p.key == "storage.root"]
    assert problem.file == str(conf / "dev" / "storage.yaml")
    assert "CPBI_TEST_BUCKET is not set" in problem.reason


def test_overrides_apply_last(conf: Path, tmp_path: Path) -> None:
    cfg = load_config(
        conf,
        overrides={
            "storage.root": str(tmp_path / "x"),
            "spark.spark.sql.shuffle.partitions": 1,  # an existing Spark key (it contains dots)
            "spark.spark.executor.cores": 2,  # a new one
            "tables.dim_customer.tags": ["a", "b"],
        },
    )
    assert cfg.storage.root == str(tmp_path / "x")
    assert cfg.spark["spark.sql.shuffle.partitions"] == "1"
    assert cfg.spark["spark.executor.cores"] == "2"
    assert cfg.table("dim_customer").tags == ["a", "b"]

    with pytest.raises(ConfigError) as exc:
        load_config(
            conf, overrides={"engine": "warp", "engine.mode": "x", "project.reporting_currency": "usd"}
        )
    assert problem_set(exc) == {
        ("<override>", "engine"),
        ("<override>", "engine.mode"),
        ("<override>", "project.reporting_currency"),
    }


def test_command_line_overrides_take_yaml_lists_and_maps(conf: Path) -> None:
    from cpbi_spark.cli import parse_overrides
    from cpbi_spark.errors import CpbiError

    overrides = parse_overrides(["tables.dim_customer.tags=[a, b]", "spark.spark.sql.shuffle.partitions=3",
                                 "storage.landing=/data/[ab]*"])
    assert overrides["tables.dim_customer.tags"] == ["a", "b"]
    assert overrides["storage.landing"] == "/data/[ab]*"  # not a flow list: a glob stays a string
    cfg = load_config(conf, overrides=overrides)
    assert cfg.table("dim_customer").tags == ["a", "b"]
    assert cfg.spark["spark.sql.shuffle.partitions"] == "3"
    with pytest.raises(CpbiError, match=r"--set tables.dim_customer.tags: .* not a YAML list or map"):
        parse_overrides(["tables.dim_customer.tags=[a, {b]"])
    with pytest.raises(CpbiError, match="KEY=VALUE"):
        parse_overrides(["storage.root"])


# --- lookups and display ------------------------------------------------------------------------


def test_table_path_physical_name_and_lookups(conf: Path, tmp_path: Path) -> None:
    cfg = load_config(conf)
    assert cfg.physical_name("dim_customer") == PREFIX + "dim_customer"
    assert cfg.table_path("dim_customer") == f"{tmp_path}/data/lakehouse/silver/{PREFIX}dim_customer"
    assert cfg.source_glob("transactions") == f"{tmp_path}/data/landing/transactions/*.csv"
    uri_cfg = load_config(conf, overrides={"storage.root": "s3://b/lake/", "project.table_prefix": "x_"})
    assert uri_cfg.table_path("raw_transactions") == "s3://b/lake/bronze/x_raw_transactions"

    with pytest.raises(ConfigError) as exc:
        cfg.table("dim_custmer")
    (problem,) = exc.value.problems
    assert problem.key == "tables.dim_custmer"
    assert "did you mean 'dim_customer'?" in problem.reason
    with pytest.raises(ConfigError):
        cfg.physical_name("nope")


def test_mlflow_default_needs_local_outputs(conf: Path) -> None:
    cfg = load_config(conf, overrides={"mlflow.tracking_uri": "http://mlflow:5000"})
    assert cfg.mlflow_tracking_uri() == "http://mlflow:5000"
    file_cfg = load_config(conf, overrides={"storage.outputs": "file:///srv/out"})
    assert file_cfg.mlflow_tracking_uri() == "sqlite:////srv/out/mlruns/mlflow.db"
    with pytest.raises(ConfigError) as exc:
        load_config(conf, overrides={"storage.outputs": "s3://b/out"})
    assert problem_set(exc) == {(str(conf / "base" / "project.yaml"), "mlflow.tracking_uri")}


def test_show_masks_secrets(conf: Path) -> None:
    cfg = load_config(
        conf,
        overrides={
            "spark.spark.hadoop.fs.s3a.secret.key": "s3cr3t",
            "analyses.rfm": {"hash_salt": "pepper", "api_token": "t0k", "window_days": 90},
            "mlflow.tracking_uri": "postgresql://mlflow:hunter2@db:5432/mlflow",
        },
    )
    shown = cfg.to_dict()
    assert shown["spark"]["spark.hadoop.fs.s3a.secret.key"] == "***"
    assert shown["analyses"]["rfm"] == {"hash_salt": "***", "api_token": "***", "window_days": 90}
    assert shown["mlflow"]["tracking_uri"] == "postgresql://mlflow:***@db:5432/mlflow"
    assert shown["env"] == "local" and shown["tables"]["dim_customer"]["scd_type"] == 2
    assert "hunter2" not in repr(shown) and "pepper" not in repr(shown)
    assert cfg.analyses["rfm"]["hash_salt"] == "pepper"  # the config itself is untouched
    assert mask_secrets({"db_password": None}) == {"db_password": None}


def test_table_catalog_doc_is_up_to_date(repo_root):
    # docs/tables.md is generated from the table declarations; a declaration changed without
    # regenerating it (scripts/gen_table_docs.py) leaves analysts reading a wrong catalog.
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "scripts/gen_table_docs.py", "--check"], cwd=repo_root,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
