"""Read one YAML config file into a dict, reporting problems instead of raising.

Syntax errors and keys repeated in one mapping (PyYAML silently keeps the last one) are
reported with their line, so the author can jump to it. Column types may be written unquoted
in flow mappings, ``{amount: decimal(18,2)}``: YAML splits them at the comma, the reader joins
them back.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "x.yaml"
    >>> _ = path.write_text("engine: auto\\nengine: delta-rs\\n")
    >>> data, problems = read_yaml_file(path)
    >>> [p.reason for p in problems]
    ["key 'engine' is repeated (line 2; first at line 1)"]
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from cpbi_spark.errors import ConfigProblem


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that records repeated keys instead of keeping the last one silently."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.repeated: list[tuple[str, int, int]] = []  # (key, line, first line), 1-based

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if node.flow_style:
            node.value = _join_split_decimals(node.value)
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.setdefault(key, line)
            except TypeError:  # unhashable key: let SafeLoader report it
                continue
            if first != line:
                self.repeated.append((str(key), line, first))
        return super().construct_mapping(node, deep=deep)


_DECIMAL_HEAD = re.compile(r"^decimal\(\s*\d+\s*$")
_DECIMAL_TAIL = re.compile(r"^\s*\d+\s*\)$")


def _is_plain(node: yaml.Node, pattern: re.Pattern[str] | None = None) -> bool:
    return (
        isinstance(node, yaml.ScalarNode)
        and node.style is None
        and (pattern.match(node.value) is not None if pattern else node.value in ("", "~", "null"))
    )


def _join_split_decimals(pairs: list[tuple[yaml.Node, yaml.Node]]) -> list[tuple[yaml.Node, yaml.Node]]:
    """Undo YAML's split of ``{amount: decimal(18,2)}`` into ``decimal(18`` and a key ``2)``.

    In flow style a comma always ends a plain scalar, so the natural way of writing a column
    type would need quotes. Only unquoted scalars in exactly that shape are joined.
    """
    joined: list[tuple[yaml.Node, yaml.Node]] = []
    index = 0
    while index < len(pairs):
        key, value = pairs[index]
        if index + 1 < len(pairs) and _is_plain(value, _DECIMAL_HEAD):
            tail_key, tail_value = pairs[index + 1]
            if _is_plain(tail_key, _DECIMAL_TAIL) and _is_plain(tail_value):
                text = re.sub(r"\s+", "", f"{value.value},{tail_key.value}")
                value = yaml.ScalarNode("tag:yaml.org,2002:str", text, value.start_mark, tail_key.end_mark)
                index += 1
        joined.append((key, value))
        index += 1
    return joined


def read_yaml_file(path: Path) -> tuple[dict[str, Any] | None, list[ConfigProblem]]:
    """Parse ``path``; return ``(data, problems)`` where data is None if the file is unusable.

    An empty file (or one with only comments) is an empty dict.
    """
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [ConfigProblem(file, "(file)", f"cannot read the file: {exc}")]
    loader = _StrictLoader(text)
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            # The context mark is where the broken construct began, often the line to fix.
            started = f" started at line {exc.context_mark.line + 1}" if exc.context_mark else ""
            what = f"{exc.problem} ({exc.context}{started})"
        if mark is None:
            return None, [ConfigProblem(file, "(file)", f"YAML syntax error: {what}")]
        line, column = mark.line + 1, mark.column + 1
        return None, [
            ConfigProblem(file, f"line {line}", f"YAML syntax error at line {line}, column {column}: {what}")
        ]
    except yaml.YAMLError as exc:
        return None, [ConfigProblem(file, "(file)", f"YAML error: {exc}")]
    finally:
        loader.dispose()
    problems = [
        ConfigProblem(file, f"line {line}", f"key {key!r} is repeated (line {line}; first at line {first})")
        for key, line, first in loader.repeated
    ]
    if data is None:
        return {}, problems
    if not isinstance(data, dict):
        kind = type(data).__name__
        problems.append(ConfigProblem(file, "(file)", f"must hold a mapping of sections, not a {kind}"))
        return None, problems
    return data, problems
