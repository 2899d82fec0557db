"""Deterministic random streams: one independent numpy generator per (seed, purpose, part).

Each month, batch or table draws from its own stream, so the bytes of a file depend only on the
seed, the scale and what that file is, never on the order in which other files were produced.

Example:
    >>> a = derive_rng(42, "sales", 3).integers(0, 1000, 3)
    >>> b = derive_rng(42, "sales", 3).integers(0, 1000, 3)
    >>> bool((a == b).all())
    True
"""

from __future__ import annotations

import zlib

import numpy as np


def _key_to_int(key: str | int) -> int:
    if isinstance(key, bool) or not isinstance(key, (int, str)):
        raise TypeError(f"stream keys must be str or int, got {key!r}")
    if isinstance(key, int):
        if key < 0:
            raise ValueError(f"integer stream keys must be >= 0, got {key}")
        return key
    # crc32 rather than hash(): Python salts str hashes per process, which would break determinism.
    return zlib.crc32(key.encode("utf-8"))


def derive_rng(seed: int, *keys: str | int) -> np.random.Generator:
    """A generator seeded from ``seed`` and the stream ``keys`` (e.g. ``"sales", month_index``)."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), *(_key_to_int(k) for k in keys)]))
