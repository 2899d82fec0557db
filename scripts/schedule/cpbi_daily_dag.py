"""Airflow DAG: the daily cpbi run as spark-submit jobs (copy into your Airflow ``dags/`` folder).

Each task is one ``spark-submit`` of a file in ``jobs/`` (bronze -> silver -> gold -> the analyses in
turn), then ``cpbi report`` writes the day's insight report, and once a week (Airflow Variable
``cpbi_maintain_weekday``, ISO day, default 7 = Sunday) ``jobs/maintain_tables.py`` compacts and
vacuums; stages are idempotent, so a failed task can simply be cleared and rerun once its cause is
fixed. Set these Airflow Variables (or edit the defaults):
``cpbi_home`` (the repository checkout on the Airflow worker), ``cpbi_spark_submit``
(the ``spark-submit`` to use), ``cpbi_master`` (``yarn``, ``spark://host:7077``, ``local[2]``, ...)
and ``cpbi_env`` (the conf overlay, ``prod`` on a cluster). Cluster recipes (shipping the library
with ``--py-files`` or a packed venv, shared storage): docs/spark-submit.md.

The DAG uses the BashOperator so it needs no Spark provider package; with
``apache-airflow-providers-apache-spark`` installed, SparkSubmitOperator(application=...) is the
equivalent.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow import DAG
from airflow.models import Variable
from airflow.operators.bash import BashOperator

HOME = Variable.get("cpbi_home", default_var="/opt/cpbi")
SUBMIT = Variable.get("cpbi_spark_submit", default_var=f"{HOME}/.venv/bin/spark-submit")
MASTER = Variable.get("cpbi_master", default_var="local[2]")
ENV = Variable.get("cpbi_env", default_var="local")

# task id -> job file; run in this order (each stage reads what the previous one committed)
STAGES = [
    ("ingest_bronze", "jobs/ingest_bronze.py"),
    ("bronze_to_silver", "jobs/bronze_to_silver.py"),
    ("silver_to_gold", "jobs/silver_to_gold.py"),
]
# then the analyses (cpbi_spark.analytics.ANALYSES), one after the other: each run's platform recorder
# writes the same platform tables, so parallel jobs would contend for their commits
ANALYSES = [
    ("cohorts", "jobs/cohorts.py"),
    ("baskets", "jobs/baskets.py"),
    ("uplift", "jobs/uplift.py uplift"),
    ("drivers", "jobs/uplift.py drivers"),
    ("interventions", "jobs/interventions.py"),
]
# last, the insight report of the day (one HTML file under <storage.outputs>/report)
REPORT = "report"
# and once a week, after the report: table upkeep (compaction, vacuum; `maintenance` in the conf). In this
# DAG it never overlaps a pipeline job (max_active_runs=1); on other days the task does nothing.
MAINTENANCE = [("maintain_tables", "jobs/maintain_tables.py")]
MAINTAIN_ISO_WEEKDAY = int(Variable.get("cpbi_maintain_weekday", default_var=7))  # 7 = Sunday


def spark_submit(job: str) -> str:
    """The shell command of one task."""
    return (f"cd {HOME} && PYSPARK_PYTHON={HOME}/.venv/bin/python {SUBMIT} --master '{MASTER}' "
            f"--conf spark.log.level=WARN --driver-java-options -XX:-DontCompileHugeMethods {job} --env {ENV}")


with DAG(
    dag_id="cpbi_daily",
    description="cpbi: landing -> bronze -> silver -> gold, then the analyses",
    schedule="0 3 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # two runs must not write the same tables at once
    default_args={"retries": 1, "retry_delay": timedelta(minutes=10)},
    tags=["cpbi"],
) as dag:
    previous = None
    for task_id, job in STAGES:
        task = BashOperator(task_id=task_id, bash_command=spark_submit(job))
        if previous is not None:
            previous >> task
        previous = task
    for task_id, job in ANALYSES:
        task = BashOperator(task_id=task_id, bash_command=spark_submit(job))
        previous >> task
        previous = task
    report = BashOperator(task_id=REPORT, bash_command=f"cd {HOME} && .venv/bin/cpbi report --env {ENV}")
    previous >> report
    for task_id, job in MAINTENANCE:
        weekly = (f'if [ "{{{{ logical_date.isoweekday() }}}}" != "{MAINTAIN_ISO_WEEKDAY}" ]; then '
                  f'echo "not the maintenance day"; exit 0; fi; ')
        report >> BashOperator(task_id=task_id, bash_command=weekly + spark_submit(job))
