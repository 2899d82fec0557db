r"""spark-submit entrypoint: bronze -> silver -> gold, then the registered analyses (``cpbi run all``).

Accepts the arguments of ``cpbi run``: ``--env``, ``--conf-dir``, ``--source MAPPING.yaml``,
``--set KEY=VALUE``, ``--full-refresh``, ``--summary``, ``--help``.

``--stages LIST`` runs other stages in one application, e.g. ``--stages pipeline`` (the three
stages without the analyses) or ``--stages silver,gold``.

Local mode, from the repository root after ``bash scripts/setup.sh``::

    export PYSPARK_PYTHON=$PWD/.venv/bin/python
    .venv/bin/spark-submit --master 'local[2]' --driver-memory 4g --conf spark.log.level=WARN \
        jobs/run_pipeline.py --env local

Cluster recipes (shipping the library and the conf, the ``prod`` overlay, shared storage):
docs/spark-submit.md.
"""

from __future__ import annotations

import sys

from cpbi_spark.cli import submit

if __name__ == "__main__":
    sys.exit(submit("all", sys.argv[1:]))
