"""Customer lifetime value: BG/NBD (frequency) and Gamma-Gamma (spend) on scipy, with a holdout check."""

from __future__ import annotations

from cpbi_spark.analytics.cohorts.clv.bgnbd import BgNbdFit, fit_bgnbd
from cpbi_spark.analytics.cohorts.clv.gamma_gamma import GammaGammaFit, fit_gamma_gamma

__all__ = ["BgNbdFit", "GammaGammaFit", "fit_bgnbd", "fit_gamma_gamma"]
