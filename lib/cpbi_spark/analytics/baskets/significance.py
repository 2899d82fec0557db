"""Is a rule more than chance? A test of independence per rule, corrected for testing many rules.

Each rule ``A -> C`` of a scope with ``n`` baskets has the 2x2 table

==========  ================  =========================
            C in basket       C not in basket
A in        a = n_AC          b = n_A - n_AC
A not in    c = n_C - n_AC    d = n - n_A - n_C + n_AC
==========  ================  =========================

- ``fisher``: Fisher's exact test, one-sided (more co-occurrence than independence predicts, the
  direction a cross-sell cares about): ``p = P(X >= a)`` for X hypergeometric(n, n_A, n_C), computed
  vectorised as ``hypergeom.sf(a - 1, n, n_A, n_C)`` (equal to ``scipy.stats.fisher_exact(...,
  alternative="greater")``).
- ``chi2``: Pearson's chi-square with one degree of freedom (two-sided, no continuity correction),
  ``X2 = n (ad - bc)^2 / (n_A n_C (n - n_A) (n - n_C))``.

The p-values of a scope (one family: all its rules) are corrected with statsmodels'
``multipletests`` (Benjamini-Hochberg false discovery rate by default). A rule is flagged
``low_expected_count`` when any expected cell ``row total * column total / n`` is below
``min_expected_count`` (Cochran's rule: the chi-square approximation is unreliable there, and the
rule rests on very few baskets).

Example:
    >>> r = pd.DataFrame({"scope": ["s"], "n_baskets": [100], "antecedent_count": [10],
    ...                   "consequent_count": [10], "support_count": [6]})
    >>> out = add_significance(r, test="fisher", correction="fdr_bh", alpha=0.05)
    >>> bool(out.loc[0, "is_significant"]), round(float(out.loc[0, "expected_count"]), 2)
    (True, 1.0)
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def fisher_greater(n: np.ndarray, n_a: np.ndarray, n_c: np.ndarray, n_ac: np.ndarray) -> np.ndarray:
    """One-sided Fisher exact p-values, vectorised (hypergeometric upper tail).

    >>> round(float(fisher_greater(np.array([8]), np.array([4]), np.array([4]), np.array([4]))[0]) * 70, 12)
    1.0
    """
    from scipy.stats import hypergeom

    return np.clip(hypergeom.sf(n_ac - 1, n, n_a, n_c), 0.0, 1.0)


def chi2_test(n: np.ndarray, n_a: np.ndarray, n_c: np.ndarray, n_ac: np.ndarray) -> np.ndarray:
    """Pearson chi-square p-values (1 df, no continuity correction), vectorised; 1 for degenerate tables."""
    from scipy.stats import chi2

    n, n_a, n_c, n_ac = (np.asarray(x, dtype=np.float64) for x in (n, n_a, n_c, n_ac))
    a, b, c = n_ac, n_a - n_ac, n_c - n_ac
    d = n - n_a - n_c + n_ac
    denom = n_a * n_c * (n - n_a) * (n - n_c)
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = np.where(denom > 0, n * (a * d - b * c) ** 2 / denom, 0.0)
    return np.where(denom > 0, chi2.sf(stat, 1), 1.0)


def min_expected_cell(n: np.ndarray, n_a: np.ndarray, n_c: np.ndarray) -> np.ndarray:
    """Smallest expected count of the four cells under independence."""
    n, n_a, n_c = (np.asarray(x, dtype=np.float64) for x in (n, n_a, n_c))
    cells = np.stack([n_a * n_c, n_a * (n - n_c), (n - n_a) * n_c, (n - n_a) * (n - n_c)]) / n
    return cells.min(axis=0)


def correct(p_values: np.ndarray, method: str, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """(adjusted p-values, reject) of one family; ``method="none"`` leaves them as they are."""
    p = np.asarray(p_values, dtype=np.float64)
    if method == "none" or len(p) == 0:
        return p.copy(), p <= alpha
    from statsmodels.stats.multitest import multipletests

    reject, adjusted, _, _ = multipletests(p, alpha=alpha, method=method)
    return adjusted, reject


def add_significance(rules: pd.DataFrame, *, test: str = "fisher", correction: str = "fdr_bh",
                     alpha: float = 0.05, min_expected_count: float = 5.0) -> pd.DataFrame:
    """Add ``expected_count``, ``low_expected_count``, ``test``, ``p_value``, ``p_adjusted``, ``is_significant``.

    The correction runs per ``scope`` (each scope is its own analysis and family of hypotheses).
    """
    out = rules.copy()
    n = out["n_baskets"].to_numpy(dtype=np.int64)
    n_a = out["antecedent_count"].to_numpy(dtype=np.int64)
    n_c = out["consequent_count"].to_numpy(dtype=np.int64)
    n_ac = out["support_count"].to_numpy(dtype=np.int64)
    if test == "fisher":
        p = fisher_greater(n, n_a, n_c, n_ac)
    elif test == "chi2":
        p = chi2_test(n, n_a, n_c, n_ac)
    else:
        raise ValueError(f"unknown test {test!r}")
    out["expected_count"] = n_a.astype(np.float64) * n_c / n
    out["low_expected_count"] = min_expected_cell(n, n_a, n_c) < min_expected_count
    out["test"] = test
    out["p_value"] = p
    adjusted = np.empty(len(out), dtype=np.float64)
    reject = np.zeros(len(out), dtype=bool)
    for _, idx in out.groupby("scope", sort=False).indices.items():
        adjusted[idx], reject[idx] = correct(p[idx], correction, alpha)
    out["p_adjusted"] = adjusted
    out["is_significant"] = reject
    return out
