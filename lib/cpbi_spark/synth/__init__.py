"""Deterministic synthetic retailer with planted truths, written as landing files (no Spark).

Example:
    >>> from cpbi_spark.synth import generate
    >>> manifest = generate("/tmp/cpbi-synth", scale=0.05, seed=42)   # doctest: +SKIP
    >>> manifest["truths"]["basket_pairs"]["pairs"][0]["lift"]          # doctest: +SKIP
    6.071731

See README.md next to this file for the file layout, columns, dirty-record kinds and manifest.
"""

from __future__ import annotations

from cpbi_spark.synth.generator import MANIFEST_NAMES, generate
from cpbi_spark.synth.params import GENERATOR_VERSION

__all__ = ["GENERATOR_VERSION", "MANIFEST_NAMES", "generate"]
