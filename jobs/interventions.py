r"""spark-submit entrypoint. Recommended interventions (``cpbi run interventions``).

Reads the insight tables of the cohorts, baskets and uplift jobs (run them first), writes the ranked
``recommended_interventions`` table (conf/base/tables_interventions.yaml; docs/interventions.md) and one
MLflow run. Parameters: ``analyses.interventions`` in conf/base/analysis_interventions.yaml. The
arguments are those of ``cpbi run interventions``: ``--env``, ``--conf-dir``, ``--source MAPPING.yaml``,
``--set KEY=VALUE``, ``--summary``, ``--help``.

Local mode, from the repository root after ``bash scripts/setup.sh``::

    export PYSPARK_PYTHON=$PWD/.venv/bin/python
    .venv/bin/spark-submit --master 'local[2]' --driver-memory 4g --conf spark.log.level=WARN \
        jobs/interventions.py --env local --set analyses.interventions.horizon_days=30

On a cluster, ship the library and conf as for the other jobs (see jobs/silver_to_gold.py and
docs/spark-submit.md).
"""

from __future__ import annotations

import sys

from cpbi_spark.cli import submit

if __name__ == "__main__":
    sys.exit(submit("interventions", sys.argv[1:]))
