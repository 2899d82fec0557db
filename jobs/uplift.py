r"""spark-submit entrypoint. Promotion uplift studies (``cpbi run uplift``) and purchase drivers (``cpbi run drivers``).

``uplift`` reads the gold promotion exposures and facts and writes the ``uplift_*`` insight tables
(conf/base/tables_uplift.yaml): experiment readouts with confidence intervals, SRM and balance checks,
observational labels, held-out uplift scores, Qini/AUUC evaluation and the targeting policy; plus one
MLflow run with plots and the registered models. ``drivers`` (first argument ``drivers``) writes
``purchase_drivers`` and ``purchase_driver_dependence``. Parameters: ``analyses.uplift`` /
``analyses.drivers`` in conf/base/analysis_uplift.yaml (override one with ``--set``). The other arguments
are those of ``cpbi run``: ``--env``, ``--conf-dir``, ``--source MAPPING.yaml``, ``--set KEY=VALUE``,
``--summary``, ``--help``.

Local mode, from the repository root after ``bash scripts/setup.sh``::

    export PYSPARK_PYTHON=$PWD/.venv/bin/python
    .venv/bin/spark-submit --master 'local[2]' --driver-memory 4g --conf spark.log.level=WARN \
        jobs/uplift.py --env local --set analyses.uplift.margin_rate=0.25
    .venv/bin/spark-submit --master 'local[2]' jobs/uplift.py drivers --env local
    # the Spark ML path whatever the data size:
    .venv/bin/spark-submit --master 'local[2]' jobs/uplift.py --env local --set analyses.uplift.engine=spark

On a cluster, ship the library and conf as for the other jobs (see jobs/silver_to_gold.py and
docs/spark-submit.md).
"""

from __future__ import annotations

import sys

from cpbi_spark.cli import submit

if __name__ == "__main__":
    args = sys.argv[1:]
    analysis = "uplift"
    if args and args[0] in ("uplift", "drivers"):
        analysis, args = args[0], args[1:]
    sys.exit(submit(analysis, args))
