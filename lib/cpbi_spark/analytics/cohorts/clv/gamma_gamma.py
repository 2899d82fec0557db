"""The Gamma-Gamma model of spend per transaction (Fader, Hardie & Lee 2005, "RFM and CLV"), on scipy.

Each transaction value is Gamma(p, nu) with the customer's ``nu ~ Gamma(q, gamma)``; spend is assumed
independent of frequency. Given ``x`` repeat transactions of mean value ``m_x``, the density of
``m_x`` is

    f(m_x | p, q, gamma, x) = G(p x + q) / (G(p x) G(q)) * gamma^q m_x^(p x - 1) x^(p x) / (gamma + m_x x)^(p x + q)

and the expected value of a customer's future transaction is ``(p (gamma + x m_x)) / (p x + q - 1)``:
a weighted mean of the population mean ``p gamma / (q - 1)`` and the customer's own ``m_x``.

Example:
    >>> fit = fit_gamma_gamma(x, m_x)                                # doctest: +SKIP
    >>> conditional_expected_value(fit.params, x, m_x)               # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GammaGammaFit:
    p: float
    q: float
    gamma: float
    log_likelihood: float
    n_customers: int
    converged: bool
    message: str = ""

    @property
    def params(self) -> tuple[float, float, float]:
        return (self.p, self.q, self.gamma)

    @property
    def population_mean(self) -> float:
        """E[M] = p gamma / (q - 1) (infinite when q <= 1)."""
        return self.p * self.gamma / (self.q - 1) if self.q > 1 else float("inf")

    def as_dict(self) -> dict[str, float]:
        return {"p": self.p, "q": self.q, "gamma": self.gamma, "log_likelihood": self.log_likelihood,
                "n_customers": float(self.n_customers)}


def log_likelihood_terms(params: Sequence[float], x, m_x) -> np.ndarray:
    """Log-density of each customer's mean spend (customers with x >= 1 and m_x > 0 only)."""
    from scipy.special import gammaln

    p, q, gamma = (float(v) for v in params)
    x = np.asarray(x, dtype=float)
    m = np.asarray(m_x, dtype=float)
    px = p * x
    return (gammaln(px + q) - gammaln(px) - gammaln(q) + q * np.log(gamma) + (px - 1) * np.log(m)
            + px * np.log(x) - (px + q) * np.log(gamma + m * x))


def log_likelihood(params: Sequence[float], x, m_x) -> float:
    return float(np.sum(log_likelihood_terms(params, x, m_x)))


def fit_gamma_gamma(x, m_x, init: Sequence[float] = (1.0, 1.0, 1.0)) -> GammaGammaFit:
    """Maximum likelihood over log-parameters; rows need x >= 1 and m_x > 0."""
    from scipy.optimize import minimize

    x = np.asarray(x, dtype=float)
    m = np.asarray(m_x, dtype=float)
    if len(x) == 0 or np.any(x < 1) or np.any(m <= 0):
        raise ValueError("Gamma-Gamma needs customers with x >= 1 repeat transactions and a positive mean value")
    start = np.log(np.array([init[0], init[1], max(init[2], float(np.mean(m)))]))

    def nll(theta: np.ndarray) -> float:
        value = -log_likelihood(np.exp(theta), x, m)
        return value if np.isfinite(value) else 1e300

    res = minimize(nll, start, method="L-BFGS-B", bounds=[(-10.0, 25.0)] * 3)
    if not res.success:
        polish = minimize(nll, res.x, method="Nelder-Mead", options={"maxiter": 4000, "xatol": 1e-8, "fatol": 1e-8})
        if polish.fun <= res.fun:
            res = polish
    p, q, gamma = np.exp(res.x)
    return GammaGammaFit(float(p), float(q), float(gamma), float(-res.fun), len(x), bool(res.success),
                         str(res.message))


def conditional_expected_value(params: Sequence[float], x, m_x) -> np.ndarray:
    """E[value of a future transaction | x, m_x]; x = 0 gives the population mean p gamma / (q - 1)."""
    p, q, gamma = (float(v) for v in params)
    x = np.asarray(x, dtype=float)
    m = np.where(x > 0, np.asarray(m_x, dtype=float), 0.0)
    return p * (gamma + x * m) / (p * x + q - 1)
