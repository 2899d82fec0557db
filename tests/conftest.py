"""Shared fixtures: one local SparkSession for the whole run (start-up costs ~5 s)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("CPBI_CONF_DIR", str(ROOT / "conf"))


@pytest.fixture(scope="session")
def spark():
    """A local[2] session with few shuffle partitions and no UI, shared by every test."""
    from cpbi_spark.session import get_spark

    session = get_spark(
        {
            "spark.sql.shuffle.partitions": "2",
            "spark.default.parallelism": "2",
            "spark.driver.memory": "2g",
            # Test data is tiny: compiling Spark's huge generated methods (which get_spark turns on for
            # real data) costs more than it saves here. This comes after get_spark's option on the JVM's
            # command line, so it wins (tests/test_session.py). The end-to-end and platform pipeline
            # tests took 295 s with it against 338 s without (one run each, same code).
            "spark.driver.extraJavaOptions": "-XX:+DontCompileHugeMethods",
        },
        app_name="cpbi-tests",
        master="local[2]",
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


WORLD_SCALE, WORLD_SEED = 1.0, 42


@pytest.fixture(scope="session")
def gold_world(spark, tmp_path_factory):
    """A generated retailer (scale 1, seed 42: ~100k lines) run through bronze, silver and gold once.

    Analyses tests share it and check their results against ``manifest`` (the planted truths).
    ``CPBI_TEST_WORLD=/path`` reuses a folder where that world was already generated and run
    (``cpbi generate --scale 1 --seed 42 --out /path`` then ``cpbi run all`` with storage under it),
    which saves ~3 minutes per local test session; CI always builds it fresh.
    Yields ``(ctx, manifest)``.
    """
    import json

    from cpbi_spark.pipeline import run_stages
    from cpbi_spark.runtime import RunContext
    from cpbi_spark.synth import generate

    reuse = os.environ.get("CPBI_TEST_WORLD")
    root = Path(reuse) if reuse else tmp_path_factory.mktemp("gold_world")
    # The analyses do not read the platform records; tests/test_platform_*.py cover the recorder, so this
    # larger world skips it (it would add Great Expectations suites and roll-ups to every stage).
    overrides = {"storage.root": str(root / "lake"), "storage.landing": str(root / "landing"),
                 "storage.outputs": str(root / "outputs"), "platform.enabled": "false"}
    if reuse and (root / "lake").is_dir():
        manifest = json.loads((root / "manifest.json").read_text())
        assert manifest["scale"] == WORLD_SCALE and manifest["seed"] == WORLD_SEED, "CPBI_TEST_WORLD differs"
        ctx = RunContext.create(env="ci", spark=spark, overrides=overrides)
    else:
        manifest = generate(root, scale=WORLD_SCALE, seed=WORLD_SEED, batch=1)
        ctx = RunContext.create(env="ci", spark=spark, overrides=overrides)
        run_stages(ctx, ["bronze", "silver", "gold"])
    return ctx, manifest


# Test settings of the analyses on the shared world: two basket segment keys (the shipped conf adds region,
# 14 more scopes per level) and a shorter bootstrap for observational promotions.
ANALYSIS_OVERRIDES = {"analyses.baskets.segments": ["channel", "loyalty_tier"],
                      "analyses.uplift.observational.bootstrap": "30"}


@pytest.fixture(scope="session")
def analysed_world(spark, gold_world):
    """``gold_world`` after ``cpbi run cohorts,baskets,uplift,drivers,interventions`` in one run context.

    The analyses' own tests and the deliverables built on their insight tables (interventions, report,
    dashboard, notebooks) share it. MLflow runs go to the world's default store (``tracking_uri(ctx.config)``).
    Yields ``(ctx, manifest, results)`` with ``results[name]`` the analysis' StageResult.
    """
    from cpbi_spark.pipeline import run_stages
    from cpbi_spark.runtime import RunContext

    world_ctx, manifest = gold_world
    storage = world_ctx.config.storage
    ctx = RunContext.create(env="ci", spark=spark, overrides={
        "storage.root": storage.root, "storage.landing": storage.landing, "storage.outputs": storage.outputs,
        "platform.enabled": "false", **ANALYSIS_OVERRIDES})
    names = ["cohorts", "baskets", "uplift", "drivers", "interventions"]
    results = dict(zip(names, run_stages(ctx, names), strict=True))   # through the registry, as `cpbi run`
    return ctx, manifest, results
