"""Analyses over the gold tables (baskets, cohorts, uplift, drivers, ...).

Each analysis is a function ``run(ctx: RunContext) -> StageResult`` registered in
:data:`ANALYSES` by an import string, so ``cpbi run <name>`` and ``cpbi run all`` find it
without importing every analysis (and its libraries) up front. An analysis writes its
results as insight tables, tracks itself in MLflow, and skips with a stated reason when
the data lack what it needs.
"""

from __future__ import annotations

# name -> "module:function"; run in this order by ``cpbi run all`` after the pipeline stages.
ANALYSES: dict[str, str] = {
    "cohorts": "cpbi_spark.analytics.cohorts.job:run",
    "baskets": "cpbi_spark.analytics.baskets.job:run",
    "uplift": "cpbi_spark.analytics.uplift.job:run",
    "drivers": "cpbi_spark.analytics.uplift.job:run_drivers",
    # last: it ranks actions from the insight tables of the analyses above
    "interventions": "cpbi_spark.analytics.interventions.job:run",
}
