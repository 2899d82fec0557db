"""Cohorts, repeat purchase, returns and customer lifetime value (``cpbi run cohorts``).

Modules: :mod:`config` (YAML section), :mod:`population` (lines, first purchase, cohort), :mod:`cohorts`
(cohort x period tables), :mod:`repeat`, :mod:`survival` (Kaplan-Meier), :mod:`rfm`, :mod:`returns`,
:mod:`clv` (BG/NBD, Gamma-Gamma, holdout check), :mod:`plots` and :mod:`job` (the only I/O).
Definitions of every metric: docs/cohorts.md.
"""
