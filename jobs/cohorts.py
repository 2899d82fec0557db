r"""spark-submit entrypoint. Cohorts, repeat purchase, returns and CLV (``cpbi run cohorts``).

Reads the gold tables, writes the cohort/repeat/returns/CLV insight tables (conf/base/tables_cohorts.yaml)
and one MLflow run with the retention heatmap, survival curve and CLV deciles. Parameters:
``analyses.cohorts`` in conf/base/analysis_cohorts.yaml (override one with ``--set``). The arguments are
those of ``cpbi run cohorts``: ``--env``, ``--conf-dir``, ``--source MAPPING.yaml``, ``--set KEY=VALUE``,
``--summary``, ``--help``.

Local mode, from the repository root after ``bash scripts/setup.sh``::

    export PYSPARK_PYTHON=$PWD/.venv/bin/python
    .venv/bin/spark-submit --master 'local[2]' --driver-memory 4g --conf spark.log.level=WARN \
        jobs/cohorts.py --env local --set analyses.cohorts.cohort_by=first_channel

On a cluster, ship the library and conf as for the other jobs (see jobs/silver_to_gold.py and
docs/spark-submit.md).
"""

from __future__ import annotations

import sys

from cpbi_spark.cli import submit

if __name__ == "__main__":
    sys.exit(submit("cohorts", sys.argv[1:]))
