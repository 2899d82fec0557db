"""Deep-merge config layers while remembering which file set each key last.

Dicts merge recursively; lists and scalars replace. Every key path, leaf or section, maps to
the last file that set something at or below it, so a problem found later (by pydantic or a
cross-field check) can name the file to edit.

Example:
    >>> merged = MergedConfig()
    >>> merged.merge({"spark": {"a": "1", "b": "2"}, "tags": ["x"]}, "base.yaml")
    >>> merged.merge({"spark": {"b": "3"}, "tags": ["y"]}, "local.yaml")
    >>> merged.data
    {'spark': {'a': '1', 'b': '3'}, 'tags': ['y']}
    >>> merged.origin(("spark", "a")), merged.origin(("spark", "b")), merged.origin(("spark",))
    ('base.yaml', 'local.yaml', 'local.yaml')
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

KeyPath = tuple[Any, ...]


def format_key_path(path: KeyPath) -> str:
    """``("tables", "x", "keys", 0)`` -> ``"tables.x.keys[0]"``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(root)"


def iter_leaves(value: Any, prefix: KeyPath = ()) -> Iterator[tuple[KeyPath, Any]]:
    """Every (path, value) below ``value``; an empty dict counts as a leaf."""
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from iter_leaves(item, (*prefix, key))
    else:
        yield prefix, value


def _iter_paths(value: Any, prefix: KeyPath) -> Iterator[KeyPath]:
    # Sections too, not only leaves: a key found missing later is blamed on its section's file.
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _iter_paths(item, (*prefix, key))


class MergedConfig:
    """The merged raw config (``data``) and the origin file of every key path."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self._origins: dict[KeyPath, str] = {}

    def merge(self, overlay: Mapping[str, Any], source: str) -> None:
        """Merge ``overlay`` on top of the current data; ``source`` names it in problems."""
        self._merge_into(self.data, overlay, source, ())

    def origin(self, path: KeyPath, default: str = "") -> str:
        """The file that last set ``path`` or, for a key nobody set, its nearest set parent."""
        for end in range(len(path), 0, -1):
            found = self._origins.get(tuple(path[:end]))
            if found is not None:
                return found
        return default

    def _merge_into(
        self, target: dict[Any, Any], overlay: Mapping[Any, Any], source: str, prefix: KeyPath
    ) -> None:
        for key, value in overlay.items():
            path = (*prefix, key)
            current = target.get(key)
            if isinstance(value, Mapping) and isinstance(current, dict):
                self._merge_into(current, value, source, path)
            else:
                self._forget(path)
                target[key] = copy.deepcopy(dict(value) if isinstance(value, Mapping) else value)
                for inner in _iter_paths(target[key], path):
                    self._origins[inner] = source
            # Sections remember the last file that touched them, for keys found missing later.
            for end in range(len(path), 0, -1):
                self._origins[path[:end]] = source

    def _forget(self, path: KeyPath) -> None:
        # A replaced subtree keeps no origins of the old values (they no longer exist).
        size = len(path)
        for known in [k for k in self._origins if k[:size] == path]:
            del self._origins[known]
