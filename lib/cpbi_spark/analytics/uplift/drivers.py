"""Purchase drivers: what goes with a customer buying again after the first purchase.

Outcome (``repurchase``): at least one SALE basket in the ``horizon_months`` UTC calendar months after the
month of the customer's first basket; only customers whose horizon ends by the last month in the data.

Features (built in Spark, one row per customer; every value is known at the first purchase, except the
randomised promotion assignment):

* ``loyalty_tier`` and ``country``: the customer version valid at the first purchase (SCD2 as-of);
* ``first_channel``: channel of the first basket; ``first_basket_weekend``: posted on Saturday/Sunday (UTC);
* ``first_basket_value`` (USD), ``first_basket_lines``, ``first_basket_departments``;
* ``first_basket_discount_pct``: ``1 - paid / reference`` over the first basket's lines, where the reference
  is the product's median unit price in the same currency over all sale lines (a price paid below the
  usual price is a discount, whatever its cause);
* ``signup_to_first_purchase_days``;
* ``promo_treatment_in_window``: assigned to a treatment arm of a randomised promotion exposed inside the
  outcome horizon (1) or not (0).

Attribution on a held-out split: permutation importance (drop in ROC AUC when one raw feature is shuffled,
mean and standard deviation over repeats) and SHAP values of the gradient-boosted model (mean absolute
log-odds contribution, globally and per segment; a categorical feature's one-hot columns are summed), plus
partial dependence (mean predicted probability with the feature set to each grid value) for the top drivers.

Wording: a driver is an **association** (customers with the feature repurchase more or less, other features
held in the model) unless the feature is a randomised assignment (``randomized_features``), in which case
its contrast is a randomised comparison.

Example:
    >>> frame = repurchase_frame(transactions, lines, customers, exposures, horizon_months=3)   # doctest: +SKIP
    >>> fitted = fit_driver_model(frame.toPandas(), model="gbt", test_share=0.3, seed=42)         # doctest: +SKIP
    >>> permutation_drivers(fitted, repeats=10, seed=42).head()                                    # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

CATEGORICAL = ["loyalty_tier", "first_channel", "country"]
NUMERIC = ["first_basket_weekend", "first_basket_discount_pct", "first_basket_value", "first_basket_lines",
           "first_basket_departments", "signup_to_first_purchase_days", "promo_treatment_in_window"]
OUTCOME = "repurchase"


def repurchase_frame(transactions: DataFrame, lines: DataFrame, customers: DataFrame, exposures: DataFrame,
                     horizon_months: int = 3) -> DataFrame:
    """One row per customer with a complete horizon: first-purchase features and ``repurchase`` (0/1)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    sales = transactions.filter(F.col("txn_type") == "SALE")
    month_index = lambda ts: F.year(ts) * 12 + F.month(ts) - 1  # noqa: E731
    ref_price = sales.groupBy("product_id", "currency").agg(
        F.percentile_approx(F.col("unit_price").cast("double"), 0.5, 1000).alias("_ref_price"))
    baskets = sales.groupBy("customer_id", "basket_id").agg(
        F.min("posted_ts").alias("basket_ts"), F.first("channel", ignorenulls=True).alias("channel"))
    first = (baskets.withColumn("_r", F.row_number().over(
        Window.partitionBy("customer_id").orderBy("basket_ts", "basket_id"))).filter("_r = 1").drop("_r"))
    first_lines = (
        sales.join(first.select("customer_id", "basket_id", "basket_ts"), ["customer_id", "basket_id"])
        .join(ref_price, ["product_id", "currency"], "left")
    )
    basket_stats = first_lines.groupBy("customer_id").agg(
        F.sum(F.col("amount_reporting").cast("double")).alias("first_basket_value"),
        F.count("*").cast("double").alias("first_basket_lines"),
        F.sum(F.col("amount").cast("double")).alias("_paid"),
        F.sum(F.col("quantity") * F.coalesce("_ref_price", F.col("unit_price").cast("double"))).alias("_reference"))
    depts = (lines.join(first.select("customer_id", "basket_id"), ["customer_id", "basket_id"])
             .groupBy("customer_id").agg(F.countDistinct("department").cast("double")
                                         .alias("first_basket_departments")))
    last_month = sales.agg(F.max(month_index(F.col("posted_ts"))).alias("_last")).first()["_last"]
    cust = first.select("customer_id", F.col("basket_ts").alias("first_ts"), F.col("channel").alias("first_channel"),
                        month_index(F.col("basket_ts")).alias("_m0"))
    if last_month is None:
        return cust.limit(0)
    cust = cust.filter(F.col("_m0") + horizon_months <= F.lit(int(last_month)))
    later = baskets.select("customer_id", month_index(F.col("basket_ts")).alias("_m"))
    repurchase = (cust.select("customer_id", "_m0").join(later, "customer_id")
                  .filter((F.col("_m") > F.col("_m0")) & (F.col("_m") <= F.col("_m0") + horizon_months))
                  .select("customer_id").distinct().withColumn(OUTCOME, F.lit(1)))
    versions = customers.select("customer_id", "loyalty_tier", "country", "signup_date", "valid_from", "valid_to")
    valid = ((F.col("valid_from") <= F.col("first_ts"))
             & (F.col("valid_to").isNull() | (F.col("first_ts") < F.col("valid_to"))))
    asof = (cust.select("customer_id", "first_ts").join(versions, "customer_id")
            .withColumn("_r", F.row_number().over(Window.partitionBy("customer_id").orderBy(
                F.when(valid, 0).otherwise(1), F.col("valid_from").asc())))
            .filter("_r = 1").select("customer_id", "loyalty_tier", "country", "signup_date"))
    treated = (
        cust.select("customer_id", "_m0")
        .join(exposures.filter(F.col("is_randomized") & ~F.col("is_control"))
              .select("customer_id", month_index(F.col("exposed_ts")).alias("_me")), "customer_id")
        .filter((F.col("_me") > F.col("_m0")) & (F.col("_me") <= F.col("_m0") + horizon_months))
        .select("customer_id").distinct().withColumn("_treated", F.lit(1.0))
    )
    frame = (cust.join(basket_stats, "customer_id", "left").join(depts, "customer_id", "left")
             .join(asof, "customer_id", "left").join(treated, "customer_id", "left")
             .join(repurchase, "customer_id", "left"))
    discount = F.when(F.col("_reference") > 0, 1.0 - F.col("_paid") / F.col("_reference")).otherwise(0.0)
    return frame.select(
        "customer_id",
        F.coalesce("loyalty_tier", F.lit("unknown")).alias("loyalty_tier"),
        F.coalesce("first_channel", F.lit("unknown")).alias("first_channel"),
        F.coalesce("country", F.lit("unknown")).alias("country"),
        F.dayofweek("first_ts").isin(1, 7).cast("double").alias("first_basket_weekend"),
        F.greatest(F.lit(0.0), F.least(F.lit(1.0), discount)).alias("first_basket_discount_pct"),
        F.coalesce("first_basket_value", F.lit(0.0)).alias("first_basket_value"),
        F.coalesce("first_basket_lines", F.lit(0.0)).alias("first_basket_lines"),
        F.coalesce("first_basket_departments", F.lit(0.0)).alias("first_basket_departments"),
        F.coalesce(F.datediff(F.to_date("first_ts"), F.col("signup_date")).cast("double"), F.lit(0.0))
        .alias("signup_to_first_purchase_days"),
        F.coalesce("_treated", F.lit(0.0)).alias("promo_treatment_in_window"),
        F.coalesce(OUTCOME, F.lit(0)).cast("int").alias(OUTCOME),
    )


@dataclass
class FittedDrivers:
    """A fitted repurchase model with its train/test split (pandas frames of raw features)."""

    pipeline: Any
    features: list[str]
    categorical: list[str]
    X_train: pd.DataFrame
    X_test: pd.DataFrame
    y_train: np.ndarray
    y_test: np.ndarray
    test_auc: float
    model: str


def fit_driver_model(frame: pd.DataFrame, *, model: str = "gbt", test_share: float = 0.3, seed: int = 42,
                     categorical: Sequence[str] = CATEGORICAL, numeric: Sequence[str] = NUMERIC) -> FittedDrivers:
    """Fit the repurchase classifier (one-hot categoricals) on a seeded split stratified by the outcome."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    cats = [c for c in categorical if c in frame.columns and frame[c].nunique() > 1]
    nums = [c for c in numeric if c in frame.columns and frame[c].nunique() > 1]
    features = cats + nums
    X = frame[features].copy()
    for c in cats:
        X[c] = X[c].astype(str)
    for c in nums:
        X[c] = X[c].astype(float)
    y = frame[OUTCOME].to_numpy(dtype=int)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=test_share, random_state=seed, stratify=y)
    if model == "gbt":
        pre = ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), cats)],
                                remainder="passthrough", verbose_feature_names_out=False)
        est = HistGradientBoostingClassifier(max_depth=3, learning_rate=0.05, max_iter=200, min_samples_leaf=40,
                                             l2_regularization=1.0, random_state=seed, early_stopping=False)
    elif model == "logistic":
        pre = ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), cats),
                                 ("num", StandardScaler(), nums)], verbose_feature_names_out=False)
        est = LogisticRegression(C=1.0, max_iter=2000)
    else:
        raise ValueError(f"unknown driver model {model!r}; choose gbt or logistic")
    pipe = Pipeline([("prep", pre), ("model", est)]).fit(X_train, y_train)
    auc = float(roc_auc_score(y_test, pipe.predict_proba(X_test)[:, 1]))
    return FittedDrivers(pipe, features, cats, X_train, X_test, y_train, y_test, auc, model)


def permutation_drivers(fitted: FittedDrivers, *, repeats: int = 10, seed: int = 42) -> pd.DataFrame:
    """Permutation importance on the test split: mean and std of the ROC AUC drop per raw feature."""
    from sklearn.inspection import permutation_importance

    r = permutation_importance(fitted.pipeline, fitted.X_test, fitted.y_test, scoring="roc_auc",
                               n_repeats=repeats, random_state=seed)
    out = pd.DataFrame({"feature": fitted.features, "importance": r.importances_mean,
                        "importance_std": r.importances_std})
    out["rank"] = out["importance"].rank(ascending=False, method="first").astype(int)
    return out.sort_values("rank").reset_index(drop=True)


def _source_feature(column: str, categorical: Sequence[str]) -> str:
    for c in sorted(categorical, key=len, reverse=True):
        if column.startswith(f"{c}_"):
            return c
    return column


def shap_values(fitted: FittedDrivers, *, sample: int = 2000, seed: int = 42) -> tuple[pd.DataFrame, pd.DataFrame]:
    """SHAP values (log-odds) per raw feature for a seeded sample of test rows, and that sample."""
    import shap

    X = fitted.X_test.sample(n=min(sample, len(fitted.X_test)), random_state=seed)
    prep, model = fitted.pipeline.named_steps["prep"], fitted.pipeline.named_steps["model"]
    Z = np.asarray(prep.transform(X), dtype=float)
    names = list(prep.get_feature_names_out())
    if fitted.model == "gbt":
        values = np.asarray(shap.TreeExplainer(model).shap_values(Z))
    else:
        background = np.asarray(prep.transform(fitted.X_train), dtype=float)
        values = np.asarray(shap.LinearExplainer(model, background).shap_values(Z))
    if values.ndim == 3:  # some explainers return one matrix per class
        values = values[..., -1]
    per_column = pd.DataFrame(values, columns=names, index=X.index)
    grouped = per_column.T.groupby([_source_feature(n, fitted.categorical) for n in names]).sum().T
    return grouped[fitted.features], X


def _direction(feature: str, x: pd.Series, contribution: pd.Series, categorical: Sequence[str]) -> str:
    """Plain-language direction of a feature's SHAP contribution."""
    if feature in categorical:
        by_level = contribution.groupby(x.astype(str)).mean().sort_values()
        if len(by_level) < 2:
            return "single level"
        return f"highest for {by_level.index[-1]}, lowest for {by_level.index[0]}"
    values = x.astype(float)
    if values.nunique() < 2:
        return "constant"
    rho = float(pd.Series(values.to_numpy()).corr(pd.Series(contribution.to_numpy()), method="spearman"))
    if abs(rho) < 0.1:
        return "no clear direction"
    return "higher value -> more repurchase" if rho > 0 else "higher value -> less repurchase"


def shap_drivers(fitted: FittedDrivers, values: pd.DataFrame, X: pd.DataFrame, segment_column: str
                 ) -> pd.DataFrame:
    """Mean |SHAP| per feature globally (segment ``all``) and within each level of ``segment_column``."""
    rows = []
    segments = [("all", np.ones(len(X), dtype=bool))]
    if segment_column in X.columns:
        segments += [(str(level), (X[segment_column].astype(str) == str(level)).to_numpy())
                     for level in sorted(X[segment_column].astype(str).unique())]
    for name, mask in segments:
        mean_abs = values[mask].abs().mean()
        ranks = mean_abs.rank(ascending=False, method="first").astype(int)
        for f in fitted.features:
            rows.append({"segment": name, "feature": f, "importance": float(mean_abs[f]),
                         "importance_std": float(values.loc[mask, f].abs().std(ddof=1)) if mask.sum() > 1 else 0.0,
                         "rank": int(ranks[f]), "n": int(mask.sum()),
                         "direction": _direction(f, X.loc[mask, f], values.loc[mask, f], fitted.categorical)})
    return pd.DataFrame(rows)


def numeric_grid(values: np.ndarray, points: int = 10) -> list[float]:
    """Distinct values when there are at most ``points``, else 5%..95% quantiles without near-duplicates.

    >>> numeric_grid(np.array([0.0, 1.0, 1.0, 0.0]))
    [0.0, 1.0]
    >>> numeric_grid(np.r_[np.zeros(70), np.full(30, 0.2), [0.2001, 0.19999]], 3)
    [0.0, 0.2]
    """
    distinct = np.unique(values)
    if len(distinct) <= points:
        return distinct.tolist()
    qs = np.quantile(values, np.linspace(0.05, 0.95, points))
    # Quantiles of a clustered feature repeat up to noise: keep points at least 1% of the range apart.
    step = 0.01 * float(values.max() - values.min())
    grid: list[float] = []
    for q in qs:
        if not grid or q - grid[-1] > step:
            grid.append(float(round(q, 6)))
    return grid


def partial_dependence(fitted: FittedDrivers, features: Sequence[str], *, grid_points: int = 10,
                       sample: int = 2000, seed: int = 42) -> pd.DataFrame:
    """Mean predicted repurchase probability with ``feature`` set to each grid value (all other columns kept).

    Grid: every level of a categorical feature; for a numeric one its distinct values when there are at
    most ``grid_points`` of them, else the 5%..95% quantiles.
    """
    X = fitted.X_train.sample(n=min(sample, len(fitted.X_train)), random_state=seed)
    rows = []
    for f in features:
        if f in fitted.categorical:
            grid: list[Any] = sorted(X[f].astype(str).unique())
        else:
            grid = numeric_grid(X[f].to_numpy(dtype=float), grid_points)
        for i, v in enumerate(grid):
            Xv = X.copy()
            Xv[f] = v
            p = float(fitted.pipeline.predict_proba(Xv)[:, 1].mean())
            rows.append({"feature": f, "point": i, "value": str(v),
                         "value_numeric": None if f in fitted.categorical else float(v),
                         "average_prediction": p})
    return pd.DataFrame(rows)


def evidence(feature: str, randomized_features: Sequence[str]) -> str:
    """``randomised`` for randomised assignments, else ``association``."""
    return "randomised" if feature in randomized_features else "association"
