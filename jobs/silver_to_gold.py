r"""spark-submit entrypoint: silver -> gold: conformed facts, marts and reconciliation (``cpbi run gold``).

Accepts the arguments of ``cpbi run``: ``--env``, ``--conf-dir``, ``--source MAPPING.yaml``,
``--set KEY=VALUE``, ``--full-refresh``, ``--summary``, ``--help``.

Local mode, from the repository root after ``bash scripts/setup.sh``::

    export PYSPARK_PYTHON=$PWD/.venv/bin/python
    .venv/bin/spark-submit --master 'local[2]' --driver-memory 4g --conf spark.log.level=WARN \
        jobs/silver_to_gold.py --env local

Cluster recipes (shipping the library and the conf, the ``prod`` overlay, shared storage):
docs/spark-submit.md.
"""

from __future__ import annotations

import sys

from cpbi_spark.cli import submit

if __name__ == "__main__":
    sys.exit(submit("gold", sys.argv[1:]))
