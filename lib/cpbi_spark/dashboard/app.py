"""The Streamlit script of ``cpbi dashboard``: sidebar filters and the pages of :mod:`cpbi_spark.dashboard.pages`.

Streamlit runs this file top to bottom on every interaction; everything expensive is cached in the pages
module. Its options (env, conf folder, overlays, overrides, role) arrive as JSON in the environment
variable ``CPBI_DASHBOARD_OPTIONS``, which ``cpbi dashboard`` sets.

Example:
    $ CPBI_DASHBOARD_OPTIONS='{"env": "local", "role": "analyst"}' streamlit run lib/cpbi_spark/dashboard/app.py
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import streamlit as st

from cpbi_spark.dashboard import OPTIONS_VARIABLE, PAGES
from cpbi_spark.dashboard.data import Filters
from cpbi_spark.dashboard.pages import PAGE_FUNCTIONS, Source, dashboard_source, sidebar


def _page(name: str, source: Source, filters: Filters) -> Callable[[], None]:
    render = PAGE_FUNCTIONS[name]

    def page() -> None:
        render(source, filters)

    page.__name__ = name  # Streamlit names a page after its function
    return page


def main() -> None:
    st.set_page_config(page_title="cpbi dashboard", layout="wide")
    options = json.loads(os.environ.get(OPTIONS_VARIABLE) or "{}")
    source = dashboard_source(json.dumps(options, sort_keys=True))
    filters = sidebar(source)
    pages = [st.Page(_page(name, source, filters), title=title, url_path=name, default=name == "overview")
             for name, title in PAGES.items()]
    st.navigation(pages, position="top").run()


main()
