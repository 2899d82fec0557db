"""BG/NBD and Gamma-Gamma written on scipy: published CDNOW values, brute-force integrals, simulations.

No Spark here: the models take one row per customer (numpy). Every expectation comes from the paper,
from an independent numerical integration of the model's definition, or from data simulated here with
known parameters - never from the code under test.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats

from cpbi_spark.analytics.cohorts.clv import bgnbd, gamma_gamma
from cpbi_spark.analytics.cohorts.clv.model import clv_deciles, holdout_check, score_customers

CDNOW = Path(__file__).parent / "data" / "cohorts_cdnow_calibration.txt"
PUBLISHED = (0.243, 4.414, 0.793, 2.426)  # Fader, Hardie & Lee (2005), CDNOW, weeks 1-39
PUBLISHED_LL = -9582.4


def read_cdnow() -> pd.DataFrame:
    """Parse the compact fixture (format in its header); ids must run 1..2357 without a gap."""
    rows, expected_id = [], 1
    for line in CDNOW.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        head, body = line.split("|")
        T, first = head.split()
        assert int(first) == expected_id
        for token in body.split():
            if token.startswith("0"):
                n = int(token[2:]) if "*" in token else 1
                rows += [(0, 0.0, float(T))] * n
            else:
                x, t_x = token.split(":")
                rows.append((int(x), float(t_x), float(T)))
        expected_id = len(rows) + 1
    return pd.DataFrame(rows, columns=["x", "t_x", "T"])


@pytest.fixture(scope="module")
def cdnow() -> pd.DataFrame:
    data = read_cdnow()
    # Published summary of the sample: 2,357 customers and 2,457 repeat purchases in weeks 1-39.
    assert len(data) == 2357 and data["x"].sum() == 2457
    return data


def test_bgnbd_log_likelihood_matches_published_cdnow_value(cdnow):
    ll = bgnbd.log_likelihood(PUBLISHED, cdnow["x"], cdnow["t_x"], cdnow["T"])
    assert ll == pytest.approx(PUBLISHED_LL, abs=0.05)


def test_bgnbd_fit_recovers_published_cdnow_estimates(cdnow):
    fit = bgnbd.fit_bgnbd(cdnow["x"], cdnow["t_x"], cdnow["T"])
    assert fit.converged
    assert fit.params == pytest.approx(PUBLISHED, rel=0.01)
    assert fit.log_likelihood == pytest.approx(PUBLISHED_LL, abs=0.05)
    assert fit.n_customers == 2357


def _brute_force_likelihood(params, x, t_x, T) -> float:
    """Integrate the individual BG/NBD likelihood over lambda ~ Gamma(r, alpha) and p ~ Beta(a, b).

    Given (lambda, p): alive at T with x purchases: (1-p)^x lambda^x e^(-lambda T); dropped out after the
    x-th purchase at t_x: p (1-p)^(x-1) lambda^x e^(-lambda t_x). lambda and p are independent, so each
    term is a product of two one-dimensional integrals, done numerically here.
    """
    r, alpha, a, b = params

    def over_p(f) -> float:
        return integrate.quad(lambda p: f(p) * stats.beta.pdf(p, a, b), 0, 1, epsabs=1e-14, limit=200)[0]

    def over_lam(f) -> float:
        return integrate.quad(lambda lam: f(lam) * stats.gamma.pdf(lam, r, scale=1 / alpha), 0, np.inf,
                              epsabs=1e-14, limit=200)[0]

    alive = over_p(lambda p: (1 - p) ** x) * over_lam(lambda lam: lam ** x * math.exp(-lam * T))
    if x == 0:
        return alive
    dead = over_p(lambda p: p * (1 - p) ** (x - 1)) * over_lam(lambda lam: lam ** x * math.exp(-lam * t_x))
    return alive + dead


@pytest.mark.parametrize(("x", "t_x", "T"), [(0, 0.0, 30.0), (1, 5.0, 38.0), (4, 20.5, 32.0), (7, 36.0, 38.5)])
def test_bgnbd_likelihood_matches_numerical_integration(x, t_x, T):
    params = (1.3, 6.0, 1.7, 3.2)
    closed = math.exp(bgnbd.log_likelihood_terms(params, [x], [t_x], [T])[0])
    assert closed == pytest.approx(_brute_force_likelihood(params, x, t_x, T), rel=1e-5)


def simulate_bgnbd(params, n: int, T_cal: np.ndarray, horizon: float, rng: np.random.Generator) -> pd.DataFrame:
    """Customers of the BG/NBD story: (x, t_x, T) in calibration and purchases in (T, T + horizon]."""
    r, alpha, a, b = params
    lam = rng.gamma(r, 1 / alpha, size=n)
    p = rng.beta(a, b, size=n)
    rows = []
    for i in range(n):
        t, times = 0.0, []
        end = T_cal[i] + horizon
        while True:
            t += rng.exponential(1 / lam[i])
            if t > end:
                break
            times.append(t)
            if rng.random() < p[i]:  # drops out right after this purchase
                break
        cal = [s for s in times if s <= T_cal[i]]
        rows.append((len(cal), cal[-1] if cal else 0.0, T_cal[i], len(times) - len(cal)))
    return pd.DataFrame(rows, columns=["x", "t_x", "T", "holdout"])


@pytest.fixture(scope="module")
def simulated() -> tuple[tuple[float, ...], pd.DataFrame]:
    truth = (0.8, 6.0, 2.5, 6.0)
    rng = np.random.default_rng(7)
    n = 6000
    return truth, simulate_bgnbd(truth, n, rng.uniform(20, 52, size=n), 26.0, rng)


def test_bgnbd_recovers_simulated_parameters(simulated):
    truth, data = simulated
    fit = bgnbd.fit_bgnbd(data["x"], data["t_x"], data["T"])
    assert fit.converged
    # r and alpha are tight at n = 6000; a and b are weaker (dropout is seen only through silence).
    assert fit.r == pytest.approx(truth[0], rel=0.15)
    assert fit.alpha == pytest.approx(truth[1], rel=0.2)
    assert fit.a == pytest.approx(truth[2], rel=0.5)
    assert fit.b == pytest.approx(truth[3], rel=0.5)
    # The MLE is at least as likely as the truth.
    assert fit.log_likelihood >= bgnbd.log_likelihood(truth, data["x"], data["t_x"], data["T"]) - 1e-6


def test_bgnbd_holdout_prediction_within_ten_percent_on_simulated_data(simulated):
    _, data = simulated
    fit = bgnbd.fit_bgnbd(data["x"], data["t_x"], data["T"])
    check = holdout_check(data, fit, holdout_units=26.0, deciles=10)
    assert check.actual == data["holdout"].sum()
    assert abs(check.error) < 0.10
    top, bottom = check.by_decile.iloc[0], check.by_decile.iloc[-1]
    assert top["actual"] > 5 * max(bottom["actual"], 1)  # the ranking separates heavy from light buyers
    assert check.by_decile["customers"].sum() == len(data)


def test_bgnbd_closed_forms_by_hand():
    params = (0.5, 4.0, 2.0, 3.0)
    assert bgnbd.p_alive(params, [0], [0.0], [10.0])[0] == 1.0  # no repeat: cannot have dropped out
    # x = 2, t_x = 3, T = 10: 1 / (1 + a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x))
    expected = 1 / (1 + 2 / 4 * (14 / 7) ** 2.5)
    assert bgnbd.p_alive(params, [2], [3.0], [10.0])[0] == pytest.approx(expected)
    # P(X(t) = n) is a distribution over n, and its mean is E[X(t)].
    probs = np.array([bgnbd.prob_purchases(params, n, 20.0) for n in range(400)])
    assert probs.sum() == pytest.approx(1.0, abs=1e-9)
    assert (probs * np.arange(400)).sum() == pytest.approx(bgnbd.expected_purchases_new(params, 20.0), rel=1e-8)
    # A just-acquired customer (x = t_x = T = 0) is expected to buy what a new customer buys.
    assert bgnbd.expected_purchases(params, 20.0, [0], [0.0], [0.0])[0] == pytest.approx(
        bgnbd.expected_purchases_new(params, 20.0))
    with pytest.raises(ValueError, match="a > 1"):
        bgnbd.expected_purchases((0.5, 4.0, 0.9, 3.0), 5.0, [1], [1.0], [2.0])


def test_gamma_gamma_likelihood_matches_numerical_integration():
    params = (6.25, 3.74, 15.44)  # the CDNOW estimates of Fader, Hardie & Lee (2005b)
    for x, m in [(1, 20.0), (3, 35.5), (8, 12.0)]:
        # mean of x Gamma(p, nu) values ~ Gamma(p x, rate x nu); nu ~ Gamma(q, rate gamma)
        def f(nu: float, x: int = x, m: float = m) -> float:
            return (stats.gamma.pdf(m, params[0] * x, scale=1 / (x * nu))
                    * stats.gamma.pdf(nu, params[1], scale=1 / params[2]))

        value, _ = integrate.quad(f, 0, np.inf, epsabs=1e-14, limit=200)
        closed = math.exp(gamma_gamma.log_likelihood_terms(params, [x], [m])[0])
        assert closed == pytest.approx(value, rel=1e-6)


def test_gamma_gamma_recovers_simulated_parameters():
    p, q, g = 6.0, 4.0, 15.0
    rng = np.random.default_rng(11)
    n = 4000
    nu = rng.gamma(q, 1 / g, size=n)
    x = rng.integers(1, 12, size=n)
    m = np.array([rng.gamma(p, 1 / nu[i], size=x[i]).mean() for i in range(n)])
    fit = gamma_gamma.fit_gamma_gamma(x, m)
    assert fit.converged
    assert fit.population_mean == pytest.approx(p * g / (q - 1), rel=0.05)
    # p and gamma trade off against each other (weakly identified); q and the mean are tight.
    assert fit.q == pytest.approx(q, rel=0.2)
    assert (fit.p, fit.gamma) == pytest.approx((p, g), rel=0.5)
    assert fit.log_likelihood >= gamma_gamma.log_likelihood((p, q, g), x, m) - 1e-6
    # No transactions: the population mean; many: close to the customer's own mean.
    assert gamma_gamma.conditional_expected_value(fit.params, [0], [0.0])[0] == pytest.approx(fit.population_mean)
    assert gamma_gamma.conditional_expected_value((6.0, 4.0, 15.0), [1000], [50.0])[0] == pytest.approx(50.0, rel=0.01)


def test_clv_scoring_and_deciles_by_hand():
    summary = pd.DataFrame({"customer_id": ["a", "b"], "x": [0.0, 3.0], "t_x": [0.0, 9.0], "T": [10.0, 10.0],
                            "m_x": [None, 20.0]})
    bg = bgnbd.BgNbdFit(0.5, 4.0, 2.0, 3.0, 0.0, 2, True)
    gg = gamma_gamma.GammaGammaFit(6.0, 4.0, 15.0, 0.0, 1, True)
    scored = score_customers(summary, bg, gg, horizon_days=14, unit_days=7, annual_discount_rate=0.0, margin=0.5)
    # Without discounting, CLV = margin * E[value] * E[purchases over the horizon (2 weeks)].
    e_b = bgnbd.expected_purchases(bg.params, 2.0, [3.0], [9.0], [10.0])[0]
    value_b = 6.0 * (15.0 + 3 * 20.0) / (6.0 * 3 + 4.0 - 1)
    assert scored.loc[1, "clv"] == pytest.approx(0.5 * value_b * e_b)
    assert scored.loc[0, "expected_value_per_purchase"] == pytest.approx(6.0 * 15.0 / 3.0)
    deciles, decile_of = clv_deciles(scored, deciles=2)
    assert list(decile_of) == [2, 1] and deciles["clv_share"].sum() == pytest.approx(1.0)
