"""Monthly activity model: who buys in which month (planted truths #2 retention and #5 drivers).

A customer is always active in the month of the first purchase (period k = 0). In a later month
(k >= 1) the customer is active with probability

    p_i(k) = sigmoid(alpha_k + beta_tier[tier] + beta_channel[first channel]
                     + beta_discount * first_basket_discount + 0 * first_basket_weekend)

independently across months; an active month has ``1 + Poisson(lambda_i)`` baskets at uniform days.
A promotion exposure replaces the baskets inside its response window (see ``promotions``), which
changes that month's activity probability in a way that is still exact (``p_active_exposed``).

Example:
    >>> round(float(sigmoid(ALPHA[1])), 2), round(float(sigmoid(ALPHA[12])), 2)
    (0.43, 0.19)
"""

from __future__ import annotations

import numpy as np

from cpbi_spark.synth.params import CHANNELS, TIERS

MAX_PERIOD = 24


def _reference_curve(k: np.ndarray) -> np.ndarray:
    """Activity probability of the reference customer (bronze, store, no discount) at period k >= 1."""
    return 0.18 + 0.25 * np.exp(-(k - 1) / 3.0)


_K = np.arange(MAX_PERIOD + 1)
_CURVE = np.where(_K >= 1, _reference_curve(np.maximum(_K, 1)), 1.0)
#: alpha_k for k = 0..MAX_PERIOD (alpha_0 is unused: period 0 is active by definition)
ALPHA = np.log(_CURVE / np.where(_K >= 1, 1 - _CURVE, 1.0))
COEF_TIER: dict[str, float] = {"bronze": 0.0, "silver": 0.25, "gold": 0.5, "platinum": 0.8}
COEF_CHANNEL: dict[str, float] = {"store": 0.0, "online": -0.3, "mobile": 0.2}
COEF_FIRST_DISCOUNT = -0.5  # discount-acquired customers come back less often
COEF_FIRST_WEEKEND = 0.0  # planted as having NO effect
LAMBDA_TIER_MULT: dict[str, float] = {"bronze": 1.0, "silver": 1.2, "gold": 1.5, "platinum": 2.0}


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def activity_offset(tier0: np.ndarray, chan0: np.ndarray, first_discount: np.ndarray,
                    first_weekend: np.ndarray) -> np.ndarray:
    """Customer part of the activity log-odds (everything except alpha_k)."""
    tier = np.array([COEF_TIER[t] for t in TIERS])[tier0]
    chan = np.array([COEF_CHANNEL[c] for c in CHANNELS])[chan0]
    return tier + chan + COEF_FIRST_DISCOUNT * first_discount + COEF_FIRST_WEEKEND * first_weekend


def p_background(acq_month: np.ndarray, offset: np.ndarray, month: int) -> np.ndarray:
    """P(active in ``month``) without promotions: 0 before acquisition, 1 at k = 0, p_i(k) after."""
    k = month - acq_month
    p = sigmoid(ALPHA[np.clip(k, 1, MAX_PERIOD)] + offset)
    return np.where(k < 0, 0.0, np.where(k == 0, 1.0, p))


def window_prob(p: np.ndarray, lam: np.ndarray, f: float) -> np.ndarray:
    """P(>= 1 background basket inside a window covering share ``f`` of the month).

    Given activity, n = 1 + Poisson(lam) baskets fall in the window independently with prob f, so
    P(none inside) = E[(1 - f)^n] = (1 - f) exp(-lam f).
    """
    return p * (1.0 - (1.0 - f) * np.exp(-lam * f))


def p_active_exposed(p: np.ndarray, lam: np.ndarray, f: float, conv: np.ndarray) -> np.ndarray:
    """P(active in the month) when background baskets inside the window are replaced by conversions.

    P(no background basket outside the window) = 1 - p (1 - E[f^n]) with E[f^n] = f exp(-lam (1 - f)).
    """
    outside = p * (1.0 - f * np.exp(-lam * (1.0 - f)))
    return 1.0 - (1.0 - outside) * (1.0 - conv)


def calibrate_lambda0(acq_month: np.ndarray, offset: np.ndarray, lam_mult: np.ndarray, months: list[int],
                      lines_per_basket: float, target_lines: float) -> float:
    """Base basket intensity so that expected lines over ``months`` hit ``target_lines`` (>= 0)."""
    a = b = 0.0
    for m in months:
        p = p_background(acq_month, offset, m)
        a += float(p.sum())
        b += float((p * lam_mult).sum())
    lam0 = (target_lines / lines_per_basket - a) / b if b > 0 else 0.0
    return float(min(max(lam0, 0.0), 5.0))
