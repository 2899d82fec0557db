r"""spark-submit entrypoint of the basket analysis (``cpbi run baskets``).

Reads the gold table ``fact_basket_lines`` (plus ``dim_customer`` and ``dim_product``), writes the insight
tables ``basket_scopes``, ``basket_itemsets``, ``basket_rules``, ``basket_recommendations`` and
``basket_recommendation_eval`` and an MLflow run. Parameters: ``analyses.baskets`` in
``conf/base/analysis_baskets.yaml`` (see docs/baskets.md); override one with ``--set``, e.g.
``--set analyses.baskets.min_support=0.01``.

Local mode, from the repository root after ``bash scripts/setup.sh``::

    export PYSPARK_PYTHON=$PWD/.venv/bin/python
    .venv/bin/spark-submit --master 'local[2]' --driver-memory 4g jobs/baskets.py --env local

The other arguments are those of ``cpbi run``: ``--env``, ``--conf-dir``, ``--source``, ``--set``.
"""

from __future__ import annotations

import sys

from cpbi_spark.cli import submit

if __name__ == "__main__":
    sys.exit(submit("baskets", sys.argv[1:]))
