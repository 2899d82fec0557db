"""What every analysis does with its ``analyses.<name>`` block: validate it once, name its file, log it.

Each analysis declares a pydantic model for its block. :func:`validate_section` turns the raw mapping
into that model and collects *every* problem (per-key ones from pydantic plus the rules that relate
several keys, given as ``cross``) into one :class:`~cpbi_spark.errors.ConfigError` naming the file
and the key path. :func:`defining_file` finds the file that sets the block, so the error points at
the file to edit; :func:`flat_params` gives the MLflow parameters.

Example:
    >>> from pydantic import BaseModel
    >>> class Demo(BaseModel):
    ...     k: int = 3
    >>> validate_section(Demo, {"k": 5}, "demo", "conf/base/analysis_demo.yaml").k
    5
    >>> try:
    ...     validate_section(Demo, {"k": "x"}, "demo", "conf/base/analysis_demo.yaml")
    ... except ConfigError as exc:
    ...     print(exc.problems[0].key)
    analyses.demo.k
    >>> flat_params(Demo())
    {'k': 3}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from cpbi_spark.errors import ConfigError, ConfigProblem

if TYPE_CHECKING:
    from cpbi_spark.config import CpbiConfig

M = TypeVar("M", bound=BaseModel)
# (key path below analyses.<name>, reason) for each rule relating several keys that does not hold
CrossCheck = Callable[[Any], Iterable[tuple[str, str]]]


def defining_file(config: CpbiConfig, name: str, default: str) -> str:
    """The YAML file that sets ``analyses.<name>`` (an environment overlay wins over base), else ``default``."""
    import yaml

    found = str(Path(config.conf_dir) / "base" / default)
    folder = Path(config.conf_dir)
    for sub in ("base", config.env):
        for path in sorted((folder / sub).glob("*.yaml")):
            try:
                data = yaml.safe_load(path.read_text()) or {}
            except (OSError, yaml.YAMLError):
                continue
            if isinstance(data, dict) and isinstance(data.get("analyses"), dict) and name in data["analyses"]:
                found = str(path)
    return found


def validate_section(model: type[M], raw: Any, name: str, file: str, *,
                     cross: CrossCheck | None = None, cross_raw: CrossCheck | None = None,
                     origin: Callable[[tuple[Any, ...]], str] | None = None) -> M:
    """Validate a raw ``analyses.<name>`` mapping into ``model``; one ConfigError with every problem.

    ``cross`` checks the parsed model (run only when it parsed); ``cross_raw`` checks the raw mapping
    (run always, so its problems are reported together with per-key type errors). ``origin(key path)``
    names the file that set a key (``CpbiConfig.origin``: an overlay, a ``--source`` file or
    ``<override>``); without it every problem names ``file``.
    """
    from cpbi_spark.config.validation_errors import problems_from_validation_error

    where = origin or (lambda _path: file)
    problems: list[ConfigProblem] = []
    parsed: M | None = None
    try:
        parsed = model.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        problems += problems_from_validation_error(exc, where, model, prefix=("analyses", name))
    checks = [(cross_raw, raw)] + ([(cross, parsed)] if parsed is not None else [])
    for check, value in checks:
        if check is not None:
            problems += [ConfigProblem(where(("analyses", name, *key.split("."))), f"analyses.{name}.{key}", reason)
                         for key, reason in check(value)]
    if problems or parsed is None:
        raise ConfigError(problems or [ConfigProblem(file, f"analyses.{name}", "invalid")])
    return parsed


def origin_in(config: CpbiConfig, default_file: str) -> Callable[[tuple[Any, ...]], str]:
    """``origin(key path)`` over a loaded configuration, ``default_file`` for keys nobody set."""
    return lambda path: config.origin(tuple(path), default_file)


def flat_params(model: BaseModel) -> dict[str, Any]:
    """Flat ``{dotted.key: value}`` of a settings model, for MLflow parameters."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out[prefix] = value

    walk("", model.model_dump(mode="json"))
    return out
