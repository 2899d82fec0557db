"""Recommended interventions: the analyses joined into ranked actions with their expected value.

``cpbi run interventions`` reads the insight tables of the cohorts, baskets and uplift analyses and
writes ``recommended_interventions`` (conf/base/tables_interventions.yaml; docs/interventions.md).
"""
