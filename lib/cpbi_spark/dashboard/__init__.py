"""The interactive dashboard over the gold and insight tables (``cpbi dashboard``).

``launch`` starts a Streamlit server on :mod:`cpbi_spark.dashboard.app`; the app reads every table through
:class:`cpbi_spark.platform.access.SecureReader` as one role, computes the sales KPIs with
:mod:`cpbi_spark.metrics`, and shows the insight tables the analyses wrote. :mod:`.data` holds the reads
and computations (no Streamlit), :mod:`.charts` the Altair figures, :mod:`.pages` one function per page.

Example:
    $ cpbi dashboard --env local --role analyst --port 8501
    dashboard: http://127.0.0.1:8501 (env local, role analyst); Ctrl-C stops it
"""

from __future__ import annotations

OPTIONS_VARIABLE = "CPBI_DASHBOARD_OPTIONS"  # JSON handed from `cpbi dashboard` to the Streamlit script

PAGES = {  # url path -> title; the test checks every page by these titles
    "overview": "Overview",
    "baskets": "Baskets & cross-sell",
    "cohorts": "Cohorts & repeat purchase",
    "promotions": "Promotions & uplift",
    "interventions": "Interventions",
    "health": "Data health",
}
