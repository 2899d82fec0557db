r"""spark-submit entrypoint: bronze -> silver: type, validate, quarantine, deduplicate, SCD2 (``cpbi run silver``).

The arguments are those of ``cpbi run silver``: ``--env``, ``--conf-dir``, ``--source MAPPING.yaml``,
``--set KEY=VALUE``, ``--full-refresh``, ``--summary``, ``--help``.

Local mode, from the repository root after ``bash scripts/setup.sh``::

    export PYSPARK_PYTHON=$PWD/.venv/bin/python
    .venv/bin/spark-submit --master 'local[2]' --driver-memory 4g --conf spark.log.level=WARN \
        jobs/bronze_to_silver.py --env local
    .venv/bin/spark-submit --master 'local[2]' jobs/bronze_to_silver.py --help

On a cluster (prod overlay; storage locations from CPBI_STORAGE_ROOT / CPBI_LANDING / CPBI_OUTPUTS,
MLflow server from MLFLOW_TRACKING_URI; Delta's jars from --packages or the cluster image), either
ship the library as a zip when the cluster's Python already has the dependencies::

    mkdir -p dist && python -m zipfile -c dist/cpbi_spark.zip lib/cpbi_spark
    (cd conf && python -m zipfile -c ../dist/conf.zip base prod)
    spark-submit --master yarn --deploy-mode cluster \
        --packages io.delta:delta-spark_2.13:<delta-spark version> \
        --py-files dist/cpbi_spark.zip --archives dist/conf.zip#conf \
        jobs/bronze_to_silver.py --env prod --conf-dir conf

or ship a packed virtualenv holding cpbi-spark and every dependency (e.g. made with venv-pack)::

    spark-submit --master yarn --deploy-mode cluster \
        --packages io.delta:delta-spark_2.13:<delta-spark version> \
        --archives dist/cpbi-venv.tar.gz#environment,dist/conf.zip#conf \
        --conf spark.pyspark.python=./environment/bin/python \
        jobs/bronze_to_silver.py --env prod --conf-dir conf

See the README section "Running with spark-submit" and docs/spark-submit.md.
"""

from __future__ import annotations

import sys

from cpbi_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", "silver", *sys.argv[1:]]))
