"""Hide secret-looking values before a configuration is printed or logged.

A value is hidden when its key contains one of :data:`SECRET_MARKERS`, and a password inside
a URI (``scheme://user:password@host``) is hidden wherever it appears.

Example:
    >>> mask_secrets({"spark": {"spark.hadoop.fs.s3a.secret.key": "abc"}, "uri": "postgresql://u:pw@db/x"})
    {'spark': {'spark.hadoop.fs.s3a.secret.key': '***'}, 'uri': 'postgresql://u:***@db/x'}
"""

from __future__ import annotations

import re
from typing import Any

SECRET_MARKERS: tuple[str, ...] = ("password", "secret", "token", "salt")
MASK = "***"
_URI_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]+:)[^@/\s]+@")


def is_secret_key(key: object) -> bool:
    """True when a key name suggests its value is a secret (``db_password``, ``hash_salt``, ...)."""
    lowered = str(key).lower()
    return any(marker in lowered for marker in SECRET_MARKERS)


def mask_secrets(value: Any, key: object = "") -> Any:
    """A copy of ``value`` with secret-looking values replaced by ``***``."""
    if isinstance(value, dict):
        return {k: mask_secrets(v, k) for k, v in value.items()}
    if isinstance(value, list):
        # Items of a secret list are hidden one by one, keeping the list's shape visible.
        return [mask_secrets(item, key) for item in value]
    if value is not None and is_secret_key(key):
        return MASK
    if isinstance(value, str):
        return _URI_PASSWORD.sub(lambda m: f"{m.group('head')}{MASK}@", value)
    return value
