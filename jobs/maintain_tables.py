r"""spark-submit entrypoint: table upkeep, compaction of small files and vacuum (``cpbi maintain``).

Run it on its own schedule (weekly, say), not while a pipeline job writes the same tables.
Accepts the arguments of ``cpbi maintain``: ``--table NAME`` (repeatable), ``--dry-run``, ``--env``,
``--conf-dir``, ``--source MAPPING.yaml``, ``--set KEY=VALUE`` (e.g. ``--set maintenance.retention_hours=720``),
``--help``. Fails (exit code 2) when a table could not be compacted (a concurrent commit), after the others.

Local mode, from the repository root after ``bash scripts/setup.sh``::

    export PYSPARK_PYTHON=$PWD/.venv/bin/python
    .venv/bin/spark-submit --master 'local[2]' --conf spark.log.level=WARN jobs/maintain_tables.py --env local

Cluster recipes (shipping the library and the conf, the ``prod`` overlay, shared storage):
docs/spark-submit.md.
"""

from __future__ import annotations

import sys

from cpbi_spark.cli import submit

if __name__ == "__main__":
    sys.exit(submit("", sys.argv[1:], command="maintain"))
