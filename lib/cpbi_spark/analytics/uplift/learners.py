"""Uplift learners: T-, X- and doubly robust (DR) learners on the driver, and a Spark ML T-learner.

Arms are integer codes, ``0`` = control and ``1..K`` the treatment arms; every learner predicts an
``(n, K)`` matrix of conditional average treatment effects ``tau_k(x) = E[Y(k) - Y(0) | x]``.

* **T-learner**: one outcome model per arm, ``tau_k = mu_k(x) - mu_0(x)``.
* **X-learner** (Künzel et al. 2019): imputed effects ``y - mu_0(x)`` on arm-k rows and ``mu_k(x) - y`` on
  control rows, each regressed on ``x``; combined with the design propensity
  ``g_k = P(arm k | arm in {0, k})``: ``tau_k = g_k tau_0k + (1 - g_k) tau_1k``.
* **DR-learner** (Kennedy 2023): AIPW pseudo-outcome
  ``phi_k = mu_k - mu_0 + 1[A=k](y - mu_k)/p_k - 1[A=0](y - mu_0)/p_0`` with outcome models cross-fitted
  over two folds, regressed on ``x``. The propensities are the design's (empirical arm shares): this
  module serves randomised experiments only.

Base models (``base``): ``logistic`` = standardised L2 logistic regression (C=1) for binary outcomes and
ridge regression (alpha=1) for continuous ones and second stages; ``gbt`` = scikit-learn histogram
gradient boosting (depth 3, 150 rounds, learning rate 0.05, >= 50 rows per leaf).

The Spark ML T-learner (:class:`SparkTLearner`) fits one ``pyspark.ml`` model per arm on a Spark
DataFrame, so training data never reach the driver; with ``model="logistic"`` its penalty is set to the
scikit-learn one (``regParam = 1 / (C n_arm)``), which is what the tests compare.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(2000, 3)); arm = rng.integers(0, 2, 2000)
    >>> y = (rng.random(2000) < 0.2 + 0.2 * arm * (X[:, 0] > 0)).astype(float)
    >>> tau = TLearner("logistic", binary=True).fit(X, arm, y).predict(X)
    >>> tau.shape, bool(tau[X[:, 0] > 1, 0].mean() > tau[X[:, 0] < -1, 0].mean())
    ((2000, 1), True)
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

LOGISTIC_C = 1.0
RIDGE_ALPHA = 1.0
GBT_PARAMS: dict[str, Any] = {"max_depth": 3, "learning_rate": 0.05, "max_iter": 150, "min_samples_leaf": 50,
                              "l2_regularization": 1.0}


# Below this many rows scikit-learn's OpenMP/BLAS threads cost more than they save (thread start-up per
# call, and heavy oversubscription when Spark's workers share the cores): one thread is used.
SINGLE_THREAD_BELOW = 100_000


@contextlib.contextmanager
def threads_for(n_rows: int) -> Iterator[None]:
    """Limit native thread pools to one thread for small data (see :data:`SINGLE_THREAD_BELOW`)."""
    if n_rows >= SINGLE_THREAD_BELOW:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


def make_model(base: str, binary: bool, seed: int = 0) -> Any:
    """A fresh scikit-learn estimator for one outcome model (classifier when ``binary``)."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if base == "logistic":
        est = LogisticRegression(C=LOGISTIC_C, max_iter=2000) if binary else Ridge(alpha=RIDGE_ALPHA)
        return make_pipeline(StandardScaler(), est)
    if base == "gbt":
        cls = HistGradientBoostingClassifier if binary else HistGradientBoostingRegressor
        return cls(random_state=seed, early_stopping=False, **GBT_PARAMS)
    raise ValueError(f"unknown base model {base!r}; choose logistic or gbt")


class _ConstantModel:
    """Stands in for a model whose training outcome has one value (a classifier cannot fit it)."""

    def __init__(self, value: float):
        self.value = float(value)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.full(len(X), self.value)


def _fit(base: str, binary: bool, seed: int, X: np.ndarray, y: np.ndarray) -> Any:
    if len(y) == 0:
        raise ValueError("an arm without training rows cannot be modelled")
    if binary and np.unique(y).size < 2:
        return _ConstantModel(float(y[0]))
    return make_model(base, binary, seed).fit(X, y)


def _predict(model: Any, X: np.ndarray, binary: bool) -> np.ndarray:
    if isinstance(model, _ConstantModel):
        return model.predict(X)
    if binary:
        return model.predict_proba(X)[:, 1]
    return model.predict(X)


class UpliftLearner:
    """Common interface: ``fit(X, arm, y)`` then ``predict(X) -> (n, K)`` effects vs control."""

    name = "uplift"

    def __init__(self, base: str = "logistic", binary: bool = True, seed: int = 0):
        self.base, self.binary, self.seed = base, binary, seed
        self.n_treatments = 0

    def _arms(self, arm: np.ndarray) -> int:
        arm = np.asarray(arm)
        k = int(arm.max()) if arm.size else 0
        missing = [a for a in range(k + 1) if not np.any(arm == a)]
        if k < 1 or missing:
            raise ValueError(f"every arm 0..{k} needs training rows (missing {missing or [1]})")
        self.n_treatments = k
        return k

    def fit(self, X: np.ndarray, arm: np.ndarray, y: np.ndarray) -> UpliftLearner:
        raise NotImplementedError

    def predict(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class TLearner(UpliftLearner):
    """One outcome model per arm; effect = difference of the arm's and the control's predictions."""

    name = "t_learner"

    def fit(self, X: np.ndarray, arm: np.ndarray, y: np.ndarray) -> TLearner:
        k = self._arms(arm)
        self.models_ = [_fit(self.base, self.binary, self.seed, X[arm == a], y[arm == a]) for a in range(k + 1)]
        return self

    def outcome(self, X: np.ndarray) -> np.ndarray:
        """Predicted outcome per arm, ``(n, K + 1)`` (column 0 = control)."""
        return np.column_stack([_predict(m, X, self.binary) for m in self.models_])

    def predict(self, X: np.ndarray) -> np.ndarray:
        mu = self.outcome(X)
        return mu[:, 1:] - mu[:, [0]]


class XLearner(UpliftLearner):
    """Künzel's X-learner with the design propensity of each arm against control."""

    name = "x_learner"

    def fit(self, X: np.ndarray, arm: np.ndarray, y: np.ndarray) -> XLearner:
        k = self._arms(arm)
        mu = TLearner(self.base, self.binary, self.seed).fit(X, arm, y)
        self.stage2_: list[tuple[Any, Any, float]] = []
        control = arm == 0
        for a in range(1, k + 1):
            treated = arm == a
            d1 = y[treated] - _predict(mu.models_[0], X[treated], self.binary)
            d0 = _predict(mu.models_[a], X[control], self.binary) - y[control]
            tau1 = _fit(self.base, False, self.seed, X[treated], d1)
            tau0 = _fit(self.base, False, self.seed, X[control], d0)
            g = treated.sum() / (treated.sum() + control.sum())
            self.stage2_.append((tau0, tau1, float(g)))
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.column_stack([g * tau0.predict(X) + (1 - g) * tau1.predict(X) for tau0, tau1, g in self.stage2_])


class DRLearner(UpliftLearner):
    """Doubly robust learner: AIPW pseudo-outcomes (cross-fitted outcome models) regressed on x."""

    name = "dr_learner"

    def fit(self, X: np.ndarray, arm: np.ndarray, y: np.ndarray) -> DRLearner:
        k = self._arms(arm)
        n = len(y)
        p = np.array([np.mean(arm == a) for a in range(k + 1)])
        mu = np.zeros((n, k + 1))
        half = np.random.default_rng(self.seed).random(n) < 0.5
        for train, score in ((half, ~half), (~half, half)):
            # Each half's outcome predictions come from models fitted on the other half.
            if not all(np.any(arm[train] == a) for a in range(k + 1)):
                train = np.ones(n, dtype=bool)
            t = TLearner(self.base, self.binary, self.seed).fit(X[train], arm[train], y[train])
            mu[score] = t.outcome(X[score])
        self.final_ = []
        for a in range(1, k + 1):
            phi = (mu[:, a] - mu[:, 0] + (arm == a) * (y - mu[:, a]) / p[a]
                   - (arm == 0) * (y - mu[:, 0]) / p[0])
            self.final_.append(_fit(self.base, False, self.seed, X, phi))
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.column_stack([m.predict(X) for m in self.final_])


LEARNERS: dict[str, type[UpliftLearner]] = {"t_learner": TLearner, "x_learner": XLearner, "dr_learner": DRLearner}


def make_learner(name: str, base: str, binary: bool, seed: int) -> UpliftLearner:
    """A learner by its config name (``t_learner``, ``x_learner``, ``dr_learner``)."""
    try:
        return LEARNERS[name](base, binary, seed)
    except KeyError:
        raise ValueError(f"unknown learner {name!r}; choose one of {', '.join(LEARNERS)}") from None


# --------------------------------------------------------------------------- held-out scoring
def fold_ids(keys: Sequence[str], folds: int, seed: int) -> np.ndarray:
    """Deterministic fold of each key in ``0..folds-1`` (SHA-1 of seed and key: independent of row order).

    >>> fold_ids(["C1", "C2", "C3"], 4, 42).tolist() == fold_ids(["C3", "C2", "C1"], 4, 42)[::-1].tolist()
    True
    """
    out = np.empty(len(keys), dtype=np.int64)
    for i, key in enumerate(keys):
        digest = hashlib.sha1(f"{seed}:{key}".encode()).digest()
        out[i] = int.from_bytes(digest[:8], "big") % folds
    return out


def holdout_mask(keys: Sequence[str], share: float, seed: int) -> np.ndarray:
    """``True`` for the held-out keys (a deterministic ``share`` of them, by hash)."""
    buckets = fold_ids(keys, 1_000_000, seed)
    return buckets < round(share * 1_000_000)


def out_of_fold(factory: Callable[[], UpliftLearner], X: np.ndarray, arm: np.ndarray, y: np.ndarray,
                fold: np.ndarray, scored_folds: Sequence[int]) -> np.ndarray:
    """Effects predicted for the rows of each ``scored_folds`` fold by a learner fitted on the other rows.

    Rows of folds that are not scored (the training part of a holdout split) get NaN.
    """
    k = int(arm.max())
    out = np.full((len(y), k), np.nan)
    for f in scored_folds:
        test = fold == f
        if test.any():
            out[test] = factory().fit(X[~test], arm[~test], y[~test]).predict(X[test])
    return out


# --------------------------------------------------------------------------- Spark ML
class SparkTLearner:
    """T-learner on Spark ML: one ``pyspark.ml`` model per arm; scoring adds ``uplift__<arm>`` columns.

    ``df`` must hold the ``features`` columns (numeric), an ``arm`` column (names) and the label.
    ``model``: ``logistic`` (LogisticRegression / LinearRegression) or ``gbt`` (GBTClassifier / GBTRegressor).
    ``reg_param=None`` matches the scikit-learn penalty (``1 / (C n)`` resp. ``alpha / n`` per arm).
    """

    name = "t_learner_spark"

    def __init__(self, features: Sequence[str], arms: Sequence[str], *, binary: bool, label: str,
                 model: str = "logistic", reg_param: float | None = None, max_iter: int = 100,
                 max_depth: int = 4, seed: int = 0):
        if len(arms) < 2:
            raise ValueError("a T-learner needs the control arm and at least one treatment arm")
        self.features, self.arms = list(features), list(arms)
        self.binary, self.label, self.model = binary, label, model
        self.reg_param, self.max_iter, self.max_depth, self.seed = reg_param, max_iter, max_depth, seed
        self.models_: dict[str, Any] = {}

    def _assembled(self, df: DataFrame) -> DataFrame:
        from pyspark.ml.feature import VectorAssembler

        return VectorAssembler(inputCols=self.features, outputCol="_features", handleInvalid="keep").transform(df)

    def _estimator(self, n: int, i: int) -> Any:
        from pyspark.ml.classification import GBTClassifier, LogisticRegression
        from pyspark.ml.regression import GBTRegressor, LinearRegression

        cols = {"featuresCol": "_features", "labelCol": self.label, "predictionCol": f"_pred{i}"}
        if self.model == "gbt":
            params = {**cols, "maxDepth": self.max_depth, "maxIter": self.max_iter, "seed": self.seed}
            if self.binary:
                # The Python constructor does not take the output column names; the setters do.
                return GBTClassifier(**params).setProbabilityCol(f"_prob{i}").setRawPredictionCol(f"_raw{i}")
            return GBTRegressor(**params)
        if self.binary:
            reg = self.reg_param if self.reg_param is not None else 1.0 / (LOGISTIC_C * n)
            # Spark's default tolerance (1e-6): each L-BFGS iteration is one distributed pass over the data.
            return LogisticRegression(probabilityCol=f"_prob{i}", rawPredictionCol=f"_raw{i}", regParam=reg,
                                      elasticNetParam=0.0, standardization=True, maxIter=self.max_iter,
                                      tol=1e-6, **cols)
        reg = self.reg_param if self.reg_param is not None else RIDGE_ALPHA / n
        return LinearRegression(regParam=reg, elasticNetParam=0.0, standardization=True, maxIter=self.max_iter,
                                **cols)

    def fit(self, df: DataFrame) -> SparkTLearner:
        from pyspark.sql import functions as F

        data = self._assembled(df.select(*self.features, "arm", F.col(self.label).cast("double").alias(self.label)))
        counts = {r["arm"]: r["count"] for r in data.groupBy("arm").count().collect()}
        missing = [a for a in self.arms if not counts.get(a)]
        if missing:
            raise ValueError(f"arms without training rows: {missing}")
        for i, a in enumerate(self.arms):
            self.models_[a] = self._estimator(int(counts[a]), i).fit(data.filter(F.col("arm") == a))
        return self

    def transform(self, df: DataFrame, prefix: str = "") -> DataFrame:
        """``df`` plus ``<prefix>mu__<arm>`` (predicted outcome) and ``<prefix>uplift__<arm>`` per treatment arm."""
        from pyspark.ml.functions import vector_to_array
        from pyspark.sql import functions as F

        out = self._assembled(df)
        for i, a in enumerate(self.arms):
            out = self.models_[a].transform(out)
            value = vector_to_array(F.col(f"_prob{i}"))[1] if self.binary else F.col(f"_pred{i}")
            out = out.withColumn(f"{prefix}mu__{a}", value.cast("double"))
            out = out.drop(*[c for c in (f"_prob{i}", f"_raw{i}", f"_pred{i}") if c in out.columns])
        control = self.arms[0]
        for a in self.arms[1:]:
            out = out.withColumn(f"{prefix}uplift__{a}", F.col(f"{prefix}mu__{a}") - F.col(f"{prefix}mu__{control}"))
        return out.drop("_features")
