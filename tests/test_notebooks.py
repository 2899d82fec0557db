"""The analyst notebooks in notebooks/: committed without outputs, reading only through the library, and run end
to end on the shared analysed world.

Each notebook runs in a fresh kernel of this interpreter (``scripts/run_notebooks.py``) with its own SparkSession,
reads the ``analysed_world`` lakehouse through its parameters (environment variables), and writes its key numbers to
``CPBI_NOTEBOOK_RESULTS``; those numbers are compared here with the insight tables read independently.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
EXPECTED = ["baskets.ipynb", "cohorts.ipynb", "uplift.ipynb"]
PARAMETERS = ["CPBI_ENV", "CPBI_NOTEBOOK_STORAGE", "CPBI_NOTEBOOK_ROLE", "CPBI_NOTEBOOK_OVERRIDES",
              "CPBI_NOTEBOOK_SOURCE", "CPBI_NOTEBOOK_RESULTS"]
# The kernel starts its own JVM next to the test session's: keep it small. A notebook's JVM lives for a few dozen
# seconds, so the quick client compiler and the serial collector halve its time on a busy 2-core machine.
KERNEL_OVERRIDES = {"platform.enabled": "false", "spark.spark.master": "local[2]",
                    "spark.spark.driver.memory": "1g", "spark.spark.sql.shuffle.partitions": "2",
                    "spark.spark.default.parallelism": "2",
                    "spark.spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"}
# Notebooks showing sales KPIs (computed by cpbi_spark.metrics.sales_kpis).
SALES_KPIS = {"baskets.ipynb", "cohorts.ipynb"}
# Figures each notebook draws (image/png outputs), at least.
FIGURES = {"baskets.ipynb": 4, "cohorts.ipynb": 5, "uplift.ipynb": 4}


def _load_runner():
    spec = importlib.util.spec_from_file_location("run_notebooks", ROOT / "scripts" / "run_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


runner = _load_runner()


def _code(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def test_notebooks_are_committed_without_outputs():
    names = [p.name for p in runner.notebooks()]
    assert set(EXPECTED) <= set(names), f"missing notebooks: {set(EXPECTED) - set(names)}"
    for path in runner.notebooks():
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert nb.metadata.kernelspec.name == runner.KERNEL_NAME, path.name
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                assert cell.outputs == [], f"{path.name} cell {i + 1} holds outputs"
                assert cell.execution_count is None, f"{path.name} cell {i + 1} has an execution count"
        assert runner.is_stripped(path), f"{path.name}: run `python scripts/run_notebooks.py --strip`"


@pytest.mark.parametrize("name", EXPECTED)
def test_notebooks_use_the_library_and_its_definitions(name):
    """One session factory, the access-controlled reader for every table, the shared metric definitions."""
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    code = "\n".join(_code(nb))
    first = _code(nb)[0]
    for variable in PARAMETERS:
        assert f'"{variable}"' in first, f"{name}: the first code cell does not read {variable}"
    assert "RunContext.create(env=ENV, extra_files=SOURCES, overrides=overrides)" in code
    assert "SecureReader(ctx, ROLE)" in code
    assert "from cpbi_spark.metrics import METRICS" in code
    if name in SALES_KPIS:
        assert "sales_kpis(filter_lines(" in code
        (names,) = re.findall(r"^from cpbi_spark\.metrics import (.+)$", code, flags=re.M)
        assert {"METRICS", "filter_lines", "sales_kpis"} <= {n.strip() for n in names.split(",")}
    # Every table read goes through the role: no direct lakehouse, Spark or Delta reads, no second session.
    for bypass in (".lake.", "spark.read", "SparkSession.", "deltalake", "get_spark", "read_parquet", "spark.sql("):
        assert bypass not in code, f"{name} reads around the library: {bypass}"
    reads = re.findall(r"\bread\(\"(\w+)\"", code) + re.findall(r"tables\.read\(\"(\w+)\"\)", code)
    assert reads, f"{name} reads no table"
    for table in reads:
        assert table in _table_names(), f"{name} reads an undeclared table {table}"
    metrics = re.findall(r"METRICS\[[\"'](\w+)[\"']\]", code) + re.findall(r"fmt\([\"'](\w+)[\"']", code)
    for call in re.findall(r"definitions\(([^)]*)\)", code):
        metrics += re.findall(r"[\"'](\w+)[\"']", call)
    assert metrics, f"{name} shows no metric definition"
    for metric in metrics:
        assert metric in _metrics(), f"{name} uses an undefined metric {metric}"
    # Links to the docs resolve.
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    links = re.findall(r"\]\(([^)#]+\.md)\)", text)
    assert any("docs/" in link for link in links), f"{name} links no docs page"
    for link in links:
        assert (NOTEBOOK_DIR / link).resolve().is_file(), f"{name}: broken link {link}"


def _table_names() -> set[str]:
    from cpbi_spark.config import load_config

    return set(load_config(env="ci").tables)


def _metrics() -> set[str]:
    from cpbi_spark.metrics import METRICS

    return set(METRICS)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def executed(analysed_world, tmp_path_factory):
    """``run(name)`` executes a notebook once against the analysed world.

    Returns (execution, key numbers, executed notebook, access decisions recorded during the run).
    """
    ctx, _, _ = analysed_world
    storage = Path(ctx.config.storage.root).parent
    assert Path(ctx.config.storage.root) == storage / "lake"
    assert Path(ctx.config.storage.landing) == storage / "landing"
    assert Path(ctx.config.storage.outputs) == storage / "outputs"
    out = tmp_path_factory.mktemp("notebooks")
    runs: dict[str, tuple] = {}

    def run(name: str):
        if name not in runs:
            path = NOTEBOOK_DIR / name
            results = out / f"{path.stem}.json"
            env = {**os.environ, "CPBI_ENV": "ci", "CPBI_NOTEBOOK_STORAGE": str(storage),
                   "CPBI_NOTEBOOK_ROLE": "analyst", "CPBI_NOTEBOOK_RESULTS": str(results),
                   "CPBI_NOTEBOOK_OVERRIDES": json.dumps(KERNEL_OVERRIDES)}
            before, audited_before = _sha(path), _audit(ctx)
            execution = runner.execute_notebook(path, out, env=env, timeout=900)
            print(f"{name}: {execution.seconds:.1f} s")
            assert execution.ok, f"{name} failed: {execution.error} (executed copy: {execution.output})"
            assert _sha(path) == before, f"running {name} modified the committed notebook"
            assert execution.output.parent == out
            audited = _audit(ctx)
            audited = audited[~audited.decision_id.isin(audited_before.decision_id)]
            runs[name] = (execution, json.loads(results.read_text()), nbformat.read(execution.output, as_version=4),
                          audited)
        return runs[name]

    return run


def _audit(ctx):
    """The access decisions recorded so far (SecureReader appends one per read)."""
    import pandas as pd

    if not ctx.lake.exists("audit_access"):
        return pd.DataFrame({"decision_id": [], "role": [], "dataset_id": [], "decision": []})
    return ctx.lake.read("audit_access").select("decision_id", "role", "dataset_id", "decision").toPandas()


def _check_run(name: str, run) -> dict:
    """No error output, the figures drawn, every table read audited for the role; returns the key numbers."""
    _, results, nb, audited = run
    _check_outputs(name, nb)
    code = "\n".join(_code(nbformat.read(NOTEBOOK_DIR / name, as_version=4)))
    reads = set(re.findall(r"\bread\(\"(\w+)\"", code))
    assert set(audited.dataset_id) == reads, f"{name}: tables audited {set(audited.dataset_id)}, read {reads}"
    assert set(audited.role) == {"analyst"} and set(audited.decision) == {"granted"}
    return results


def _check_outputs(name: str, nb) -> None:
    figures = 0
    for i, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            assert output.output_type != "error", f"{name} cell {i + 1}: {output.get('ename')}"
            figures += "image/png" in output.get("data", {})
    assert figures >= FIGURES[name], f"{name} drew {figures} figures, expected at least {FIGURES[name]}"


def _frame(ctx, name: str):
    return ctx.lake.read(name).toPandas()


def _kpis_from_lines(ctx) -> dict[str, float]:
    """The sales KPIs recomputed in pandas from fact_basket_lines (metric definitions in docs/metrics.md)."""
    lines = _frame(ctx, "fact_basket_lines")
    gross = lines.amount_reporting.astype(float).sum()
    refunds = lines.returned_amount_reporting.astype(float).fillna(0).sum()
    known = lines[lines.customer_id.notna()]
    per_customer = known.groupby("customer_id").basket_id.nunique()
    return {"gross_revenue": gross, "refunds": refunds, "net_revenue": gross - refunds,
            "orders": lines.basket_id.nunique(), "customers": len(per_customer), "return_rate": refunds / gross,
            "orders_per_customer": known.basket_id.nunique() / len(per_customer),
            "repeat_customer_share": (per_customer >= 2).mean()}


def _assert_kpis(found: dict, ctx) -> None:
    expected = _kpis_from_lines(ctx)
    for name, value in found.items():
        assert value == pytest.approx(expected[name], rel=1e-9), name


def test_baskets_notebook(executed, analysed_world):
    ctx, _, _ = analysed_world
    results = _check_run("baskets.ipynb", executed("baskets.ipynb"))
    _assert_kpis(results["kpis"], ctx)

    scopes = _frame(ctx, "basket_scopes").query("segment_key == 'all'")
    assert results["rules_by_level"] == {r.level: {"rules": r.n_rules, "significant": r.n_significant_rules}
                                         for r in scopes.itertuples()}
    rules = _frame(ctx, "basket_rules").query("segment_key == 'all'")
    significant = rules[rules.is_significant]
    product = significant[significant.level == "product"]
    top = product.sort_values(["lift", "rule_rank"], ascending=[False, True]).head(5)
    assert len(top) > 0
    names = ["antecedent_names", "consequent_names"]
    assert [r[:2] for r in results["top_rules_by_lift"]] == top[names].values.tolist()
    assert [r[2] for r in results["top_rules_by_lift"]] == pytest.approx(top.lift.tolist())
    valuable = product.sort_values(["expected_net_value", "rule_rank"], ascending=[False, True]).head(3)
    assert [r[:2] for r in results["top_product_rules_by_net_value"]] == valuable[names].values.tolist()
    assert [r[2] for r in results["top_product_rules_by_net_value"]] == pytest.approx(valuable.expected_net_value)
    assert results["flagged_significant_rules"] == \
        significant.groupby("level").high_return_flag.sum().astype(int).to_dict()

    evaluation = _frame(ctx, "basket_recommendation_eval")
    assert results["map_at_k"] == pytest.approx({f"{r.scenario}/{r.model}/{r.k}": r.map_at_k
                                                 for r in evaluation.itertuples()})
    recommendations = _frame(ctx, "basket_recommendations")
    assert results["recommended_customers"] == recommendations.customer_id.nunique()
    assert results["rule_slot_share"] == pytest.approx((recommendations.source == "rule").mean())


def test_cohorts_notebook(executed, analysed_world):
    ctx, _, _ = analysed_world
    results = _check_run("cohorts.ipynb", executed("cohorts.ipynb"))
    _assert_kpis(results["kpis"], ctx)

    retention = _frame(ctx, "cohort_retention")
    assert results["as_of"] == str(retention.as_of.max())
    assert results["cohort_sizes"] == retention.groupby("cohort_key").cohort_size.first().to_dict()
    age1 = retention[retention.period_index == 1].set_index("cohort_key").retention_rate
    assert results["retention_age1"] == pytest.approx(age1.to_dict())
    pooled = retention.groupby("period_index")[["active_customers", "customers_observable"]].sum()
    assert results["pooled_retention"] == pytest.approx(
        {str(k): v for k, v in (pooled.active_customers / pooled.customers_observable).items()})
    assert results["pooled_retention"]["0"] == pytest.approx(1.0)

    rates = _frame(ctx, "repeat_purchase_rates").query("cohort_key == 'ALL'").set_index("window_days")
    assert results["repeat_rate"] == pytest.approx({str(k): v for k, v in rates.repeat_rate.items()})
    assert results["km_repeat_rate"] == pytest.approx({str(k): v for k, v in rates.km_repeat_rate.items()})
    assert results["median_days_to_second"] == pytest.approx(rates.median_days_to_second.iloc[0])
    curve = _frame(ctx, "repeat_survival_curve").query("segment == 'ALL'").sort_values("day")
    assert results["survival_at"], "no survival point"
    for day, value in results["survival_at"].items():
        assert value == pytest.approx(curve[curve.day <= int(day)].survival.iloc[-1])

    returns = _frame(ctx, "return_rates")
    by_category = returns[returns.dimension == "category"].set_index("dimension_value").amount_return_rate
    assert results["category_return_rate"] == pytest.approx(by_category.to_dict())
    assert results["highest_return_category"] == by_category.idxmax()
    assert results["overall_amount_return_rate"] == pytest.approx(
        returns.loc[returns.dimension == "all", "amount_return_rate"].iloc[0])
    at_risk = _frame(ctx, "returns_revenue_at_risk")
    assert results["expected_refunds_at_risk"] == pytest.approx(
        at_risk.loc[at_risk.category == "ALL", "expected_refunds"].iloc[0])
    assert results["serial_returners"] == int(_frame(ctx, "customer_returns").is_serial_returner.fillna(False).sum())


def test_uplift_notebook(executed, analysed_world):
    ctx, _, _ = analysed_world
    results = _check_run("uplift.ipynb", executed("uplift.ipynb"))

    studies = _frame(ctx, "uplift_studies")
    assert results["studies"] == {r.promotion_id: {"study_type": r.study_type, "causal": bool(r.causal)}
                                  for r in studies.itertuples()}
    readout = _frame(ctx, "uplift_readout").query("segment == 'all' and metric == 'conversion'")
    expected = {f"{r.promotion_id}/{r.estimate}/{r.arm}": [r.difference, r.ci_low, r.ci_high, r.p_adjusted]
                for r in readout.itertuples()}
    assert results["conversion_uplift"].keys() == expected.keys()
    for key, values in expected.items():
        assert results["conversion_uplift"][key] == pytest.approx(values), key

    evaluation = _frame(ctx, "uplift_evaluation")
    normalized = evaluation[evaluation.metric == "qini_normalized"]
    assert results["qini_normalized"] == pytest.approx(
        {f"{r.promotion_id}/{r.score_arm}/{r.learner}/{r.outcome}": r.value for r in normalized.itertuples()})
    curves = _frame(ctx, "uplift_qini_curve").query("outcome == 'conversion'")
    ends = curves.sort_values("share").groupby(["promotion_id", "score_arm", "learner"]).qini.last()
    assert results["qini_curve_end"] == pytest.approx({"/".join(k): v for k, v in ends.items()})
    ate = evaluation[(evaluation.metric == "ate") & (evaluation.outcome == "conversion")]
    for r in ate.itertuples():  # a Qini curve ends at the average effect of the arm
        assert results["qini_curve_end"][f"{r.promotion_id}/{r.score_arm}/{r.learner}"] == pytest.approx(r.value)

    policy = _frame(ctx, "uplift_policy").query("strategy == 'policy' and compared_with == 'treat_none'")
    assert results["policy_vs_none"].keys() == set(policy.promotion_id)
    for r in policy.itertuples():
        assert results["policy_vs_none"][r.promotion_id] == pytest.approx(
            [r.incremental_profit, r.profit_ci_low, r.profit_ci_high]), r.promotion_id
    drivers = _frame(ctx, "purchase_drivers").query("method == 'permutation' and segment == 'all'")
    assert results["top_drivers"] == drivers.sort_values("rank").feature.head(3).tolist()
    assert results["drivers_test_auc"] == pytest.approx(drivers.test_auc.iloc[0])


def _notebook(path: Path, sources: list[str]) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, path)
    return path


def test_runner_uses_this_interpreter_names_the_failing_cell_and_strips(tmp_path):
    """A python3 kernelspec elsewhere on the Jupyter path (pointing at another Python) is not used; a failure
    exits 1 naming the cell; the notebook run is left untouched; --strip and --check work on it."""
    kernels = tmp_path / "jupyter" / "kernels" / "python3"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps(
        {"argv": ["/nonexistent/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
         "display_name": "another Python", "language": "python"}))
    path = _notebook(tmp_path / "broken.ipynb", ["import sys\nprint(sys.executable)", "x = 1", "1 / 0", "x = 2"])
    before = _sha(path)
    env = {**os.environ, "JUPYTER_PATH": str(tmp_path / "jupyter"), "JUPYTER_DATA_DIR": str(tmp_path / "jupyter")}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "run_notebooks.py"), str(path),
                           "--out", str(tmp_path / "out"), "--timeout", "120"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAILED  broken.ipynb" in proc.stderr
    assert "cell 3 (code cell 3: `1 / 0`): ZeroDivisionError" in proc.stderr
    assert _sha(path) == before
    executed_copy = nbformat.read(tmp_path / "out" / "broken.ipynb", as_version=4)
    assert executed_copy.cells[0].outputs[0]["text"].strip() == sys.executable
    assert executed_copy.cells[3].outputs == []  # execution stopped at the failing cell
    assert (tmp_path / "out" / "broken.kernel.log").is_file()

    # An error raised after the cell's code (here while the inline backend draws the figure) fails the run too.
    late = _notebook(tmp_path / "late.ipynb", [
        "%matplotlib inline\nimport matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.scatter([], [])\n"
        "ax.axhline(1)\nax.set(xscale='log')\nplt.show()", "x = 1"])
    run = runner.execute_notebook(late, tmp_path / "out", env=env, timeout=120)
    assert not run.ok and run.error.startswith("cell 1 (code cell 1: `%matplotlib inline`): ValueError"), run.error

    assert runner.main(["--check", str(tmp_path / "out" / "broken.ipynb")]) == 1
    assert runner.main(["--strip", str(tmp_path / "out" / "broken.ipynb")]) == 0
    assert runner.is_stripped(tmp_path / "out" / "broken.ipynb")
    assert runner.main(["--check", str(tmp_path / "out" / "broken.ipynb")]) == 0
