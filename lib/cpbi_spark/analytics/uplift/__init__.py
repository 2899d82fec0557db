"""Promotion uplift studies and purchase drivers (``cpbi run uplift``, ``cpbi run drivers``).

Modules, in the order the job uses them:

* :mod:`.config` — the typed ``analyses.uplift`` / ``analyses.drivers`` settings;
* :mod:`.features` — Spark transforms: study units, outcomes in the response window, pre-period features,
  units of campaign test exports;
* :mod:`.readout` — experiment statistics (Welch, Newcombe, SRM, balance, multiple testing);
* :mod:`.observational` — readouts of non-randomised promotions (naive and propensity-weighted);
* :mod:`.learners` — T-, X- and DR-learners (scikit-learn on the driver) and a Spark ML T-learner;
* :mod:`.evaluate` — Qini curve and coefficient, AUUC, uplift@k on held-out scores;
* :mod:`.policy` — cost-aware arm choice per customer and its randomised evaluation;
* :mod:`.drivers` — repurchase model, permutation importance, SHAP, partial dependence;
* :mod:`.plots` — matplotlib figures for MLflow;
* :mod:`.job` — the two analyses: read gold, compute, write insight tables, track in MLflow.

Definitions and the wording rules (causal vs associational) are in ``docs/uplift.md``.
"""
