"""Environment-variable interpolation in string values: ``${VAR}`` and ``${VAR:-default}``.

It runs after the merge, so an overlay may replace a value that references an unset variable.
``$${`` stands for a literal ``${``. An unset variable without default is a problem, as is a
``${`` that does not form a reference.

Example:
    >>> interpolate("${HOME_DIR:-/srv}/cpbi", {"HOME_DIR": "/home/ana"})
    ('/home/ana/cpbi', [])
    >>> interpolate("${BUCKET}/x", {})
    ('${BUCKET}/x', ['environment variable BUCKET is not set and has no default (${BUCKET:-default})'])
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from cpbi_spark.config.merge import KeyPath, MergedConfig, format_key_path
from cpbi_spark.errors import ConfigProblem

_TOKEN = re.compile(r"\$\$\{|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}|\$\{")


def interpolate(text: str, environ: Mapping[str, str]) -> tuple[str, list[str]]:
    """Substitute references in ``text``; return the new text and the reasons it failed."""
    reasons: list[str] = []

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "$${":
            return "${"
        name = match.group("name")
        if name is None:
            reasons.append("malformed '${': write ${VAR} or ${VAR:-default} ($${ for a literal ${)")
            return token
        if name in environ:
            return environ[name]
        default = match.group("default")
        if default is None:
            reasons.append(
                f"environment variable {name} is not set and has no default (${{{name}:-default}})"
            )
            return token
        return default

    return _TOKEN.sub(replace, text), reasons


def interpolate_config(merged: MergedConfig, environ: Mapping[str, str]) -> list[ConfigProblem]:
    """Interpolate every string value of ``merged.data`` in place; return the problems."""
    problems: list[ConfigProblem] = []

    def visit(node: Any, path: KeyPath) -> Any:
        if isinstance(node, dict):
            return {key: visit(value, (*path, key)) for key, value in node.items()}
        if isinstance(node, list):
            return [visit(item, (*path, index)) for index, item in enumerate(node)]
        if isinstance(node, str) and "${" in node:
            text, reasons = interpolate(node, environ)
            file = merged.origin(path)
            problems.extend(ConfigProblem(file, format_key_path(path), reason) for reason in reasons)
            return text
        return node

    merged.data = visit(merged.data, ())
    return problems
