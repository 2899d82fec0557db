"""Apply dotted-key overrides (``{"storage.root": "/tmp/x"}``) on top of the merged config.

Spark settings contain dots themselves, so a dotted key is split on the longest existing key
at each level, and everything after ``spark.`` is one key: ``spark.spark.sql.shuffle.partitions``
sets ``spark`` -> ``spark.sql.shuffle.partitions``.

Example:
    >>> merged = MergedConfig()
    >>> merged.merge({"storage": {"root": "./a"}, "spark": {}}, "base.yaml")
    >>> apply_overrides(merged, {"storage.root": "/tmp/x", "spark.spark.driver.memory": "8g"})
    []
    >>> merged.data, merged.origin(("storage", "root"))
    ({'storage': {'root': '/tmp/x'}, 'spark': {'spark.driver.memory': '8g'}}, '<override>')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cpbi_spark.config.merge import KeyPath, MergedConfig, format_key_path
from cpbi_spark.errors import ConfigProblem

OVERRIDE_SOURCE = "<override>"
# Sections whose own keys contain dots: the rest of the dotted key is a single key there.
DOTTED_KEY_SECTIONS: frozenset[KeyPath] = frozenset({("spark",)})


def split_override_key(dotted: str, data: Mapping[str, Any]) -> KeyPath:
    """The key path a dotted override key designates in ``data``."""
    parts = dotted.split(".")
    path: list[str] = []
    node: Any = data
    while parts:
        existing = node if isinstance(node, Mapping) else {}
        # Prefer the longest run of parts that is already a key (keys with dots).
        for size in range(len(parts), 0, -1):
            candidate = ".".join(parts[:size])
            if candidate in existing:
                break
        else:
            size = len(parts) if tuple(path) in DOTTED_KEY_SECTIONS else 1
            candidate = ".".join(parts[:size])
        path.append(candidate)
        parts = parts[size:]
        node = existing.get(candidate)
    return tuple(path)


def apply_overrides(merged: MergedConfig, overrides: Mapping[str, Any]) -> list[ConfigProblem]:
    """Merge each override into ``merged`` (origin ``<override>``); return problems found."""
    problems: list[ConfigProblem] = []
    for dotted, value in overrides.items():
        if not isinstance(dotted, str) or not dotted or any(not part for part in dotted.split(".")):
            problems.append(
                ConfigProblem(OVERRIDE_SOURCE, str(dotted), "not a dotted key like 'storage.root'")
            )
            continue
        path = split_override_key(dotted, merged.data)
        blocked = _first_non_section(merged.data, path)
        if blocked is not None:
            reason = f"cannot set a key inside {format_key_path(blocked)!r}: it is a value, not a section"
            problems.append(ConfigProblem(OVERRIDE_SOURCE, dotted, reason))
            continue
        overlay: Any = value
        for part in reversed(path):
            overlay = {part: overlay}
        merged.merge(overlay, OVERRIDE_SOURCE)
    return problems


def _first_non_section(data: Mapping[str, Any], path: KeyPath) -> KeyPath | None:
    node: Any = data
    for index, part in enumerate(path[:-1]):
        node = node.get(part)
        if node is None:
            return None  # the sections will be created
        if not isinstance(node, Mapping):
            return path[: index + 1]
    return None
