"""The fitted uplift models of one promotion as an MLflow ``pyfunc`` model (imported only when logging).

``predict`` takes the feature columns (one row per customer, as in ``uplift_scores``' inputs) and returns,
per treatment arm, the predicted conversion uplift, net-revenue uplift (USD) and expected incremental profit
(``margin_rate * revenue uplift - cost per contact``), plus the recommended arm (``no_contact`` when no arm
is expected to pay for its contact).

Example:
    >>> model = UpliftPolicyModel(features, arms, conversion, revenue, costs, 0.3)        # doctest: +SKIP
    >>> model.predict(None, frame[features]).columns[-1]                                   # doctest: +SKIP
    'recommended_arm'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from cpbi_spark.analytics.uplift.policy import NO_CONTACT, choose_arms, expected_profit


class UpliftPolicyModel(mlflow.pyfunc.PythonModel):
    """Conversion and net-revenue uplift learners of one promotion with its targeting rule."""

    def __init__(self, features: Sequence[str], arms: Sequence[str], conversion: Any, revenue: Any,
                 costs: Sequence[float], margin_rate: float, min_profit: float = 0.0):
        self.features, self.arms = list(features), list(arms)
        self.conversion, self.revenue = conversion, revenue
        self.costs, self.margin_rate, self.min_profit = list(costs), float(margin_rate), float(min_profit)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        X = model_input[self.features].to_numpy(dtype=float)
        tau_c = self.conversion.predict(X)
        tau_r = self.revenue.predict(X)
        profit = expected_profit(tau_r, self.costs, self.margin_rate)
        choice = choose_arms(profit, self.min_profit)
        out: dict[str, Any] = {}
        for k, arm in enumerate(self.arms[1:]):
            out[f"conversion_uplift__{arm}"] = tau_c[:, k]
            out[f"revenue_uplift__{arm}"] = tau_r[:, k]
            out[f"expected_profit__{arm}"] = profit[:, k]
        names = np.array([NO_CONTACT, *self.arms[1:]], dtype=object)
        out["recommended_arm"] = names[choice]
        return pd.DataFrame(out, index=model_input.index)


def pip_requirements() -> list[str]:
    """Pinned requirements of the logged models (explicit, so MLflow does not re-import the model to infer them)."""
    from importlib import metadata

    return [f"{pkg}=={metadata.version(pkg)}" for pkg in ("scikit-learn", "numpy", "pandas", "mlflow")]
