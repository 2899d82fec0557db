"""Load the cpbi configuration: base files, environment overlay, extra files, overrides.

Order (later wins): ``conf/base/*.yaml`` (sorted; a scalar section belongs to one base file, a mapping section such as
``tables`` may be split over several files as long as each entry is defined once),
``conf/<env>/*.yaml`` (sorted), ``extra_files`` in the given order, then ``overrides``. Dicts
merge recursively; lists and scalars replace. ``${VAR}`` / ``${VAR:-default}`` are expanded after
the merge. Everything found wrong is collected and raised as one :class:`ConfigError`.

Example:
    >>> from cpbi_spark.config import load_config
    >>> cfg = load_config(env="ci", overrides={"storage.root": "/tmp/lake"})   # doctest: +SKIP
    >>> cfg.storage.root, cfg.spark["spark.sql.shuffle.partitions"]           # doctest: +SKIP
    ('/tmp/lake', '2')
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from cpbi_spark.config.checks import Issue, check_mlflow, check_source, check_table
from cpbi_spark.config.interpolation import interpolate_config
from cpbi_spark.config.merge import MergedConfig, format_key_path
from cpbi_spark.config.models import CpbiConfig, MlflowConfig, StorageConfig, TableConfig
from cpbi_spark.config.overrides import apply_overrides
from cpbi_spark.config.partial_validation import source_for_checks, table_for_checks
from cpbi_spark.config.validation_errors import problems_from_validation_error
from cpbi_spark.config.yaml_files import read_yaml_file
from cpbi_spark.errors import ConfigError, ConfigProblem

ENV_VAR = "CPBI_ENV"
CONF_DIR_VAR = "CPBI_CONF_DIR"
DEFAULT_ENV = "local"
BASE_DIR = "base"
# Set by the loader; a file defining them would be silently ignored, so it is reported.
RESERVED_KEYS = ("env", "conf_dir")
_ENV_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def default_conf_dir() -> Path:
    """``$CPBI_CONF_DIR``, else ``./conf`` if it exists, else the repository's ``conf`` folder."""
    configured = os.environ.get(CONF_DIR_VAR)
    if configured:
        return Path(configured).expanduser()
    if Path("conf").is_dir():
        return Path("conf")
    # lib/cpbi_spark/config/loader.py -> repository root (fine for an editable install).
    return Path(__file__).resolve().parents[3] / "conf"


def select_env(env: str | None = None) -> str:
    """The environment: the argument, else ``$CPBI_ENV``, else ``local``."""
    return env or os.environ.get(ENV_VAR) or DEFAULT_ENV


def known_envs(conf_dir: Path) -> list[str]:
    """Environment names available under ``conf_dir`` (its folders except ``base``)."""
    if not conf_dir.is_dir():
        return []
    return sorted(p.name for p in conf_dir.iterdir() if p.is_dir() and p.name != BASE_DIR)


def load_config(
    conf_dir: str | Path | None = None,
    env: str | None = None,
    extra_files: Sequence[str | Path] = (),
    overrides: Mapping[str, Any] | None = None,
) -> CpbiConfig:
    """Load, merge, interpolate and validate the configuration; raise one ConfigError if anything is wrong.

    ``conf_dir`` defaults to :func:`default_conf_dir`, ``env`` to :func:`select_env`. ``extra_files``
    are overlays applied after the environment (e.g. a user's source mapping), later files winning.
    ``overrides`` maps dotted keys to values, applied last and reported as file ``<override>``.
    """
    folder = (Path(conf_dir).expanduser() if conf_dir is not None else default_conf_dir()).absolute()
    env_name = select_env(env)
    loading = _Loading(folder)
    if folder.is_dir():
        loading.read_base()
        loading.read_env(env_name)
    else:
        loading.problem(str(folder), "conf_dir", "the configuration folder does not exist")
    for extra in extra_files:
        loading.read_extra(Path(extra).expanduser().absolute())
    loading.problems += apply_overrides(loading.merged, overrides or {})
    loading.problems += interpolate_config(loading.merged, os.environ)
    if not folder.is_dir():
        # Without the folder every section would be "missing": that says nothing new.
        raise ConfigError(_ordered(loading.problems))
    config = loading.validate(env_name)
    if loading.problems or config is None:
        raise ConfigError(_ordered(loading.problems))
    return config


class _Loading:
    """State of one load: merged data, origins and the problems found so far."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.merged = MergedConfig()
        self.problems: list[ConfigProblem] = []
        # A file that could not be parsed leaves the merge incomplete: "missing" is then no news.
        self.incomplete = False

    def problem(self, file: str, key: str, reason: str) -> None:
        self.problems.append(ConfigProblem(file, key, reason))

    def read_base(self) -> None:
        base = self.folder / BASE_DIR
        if not base.is_dir():
            self.problem(str(base), "(folder)", "the base configuration folder does not exist")
            return
        files = self._yaml_files(base)
        if not files:
            self.problem(str(base), "(folder)", "holds no *.yaml file")
        owners: dict[str, str] = {}
        entries: dict[str, dict[str, str]] = {}  # section -> entry name -> file (mapping sections)
        for path in files:
            data = self._read(path)
            if data is None:
                continue
            for section in list(data):
                value = data[section]
                if section in owners and isinstance(value, dict) and section in entries:
                    # A mapping section (tables, sources, analyses, ...) may be split over several base
                    # files, e.g. one file of tables per domain; an entry belongs to one file.
                    for entry in list(value):
                        if entry in entries[section]:
                            reason = f"already defined in {entries[section][entry]}; an entry belongs to one base file"
                            self.problem(str(path), f"{section}.{entry}", reason)
                            del value[entry]
                        else:
                            entries[section][entry] = str(path)
                elif section in owners:
                    reason = (
                        f"section already defined in {owners[section]}; a section belongs to one base file"
                    )
                    self.problem(str(path), str(section), reason)
                    del data[section]  # keep the first definition, so later checks are not noise
                else:
                    owners[section] = str(path)
                    if isinstance(value, dict):
                        entries[section] = {entry: str(path) for entry in value}
            self.merged.merge(data, str(path))

    def read_env(self, env: str) -> None:
        if env == BASE_DIR or not _ENV_NAME.match(env):
            self.problem(str(self.folder), "env", f"invalid environment name {env!r}")
            return
        env_dir = self.folder / env
        if not env_dir.is_dir():
            known = ", ".join(known_envs(self.folder)) or "none"
            reason = f"unknown environment {env!r}: there is no folder {env_dir} (environments: {known})"
            self.problem(str(env_dir), "env", reason)
            return
        for path in self._yaml_files(env_dir):
            data = self._read(path)
            if data is not None:
                self.merged.merge(data, str(path))

    def read_extra(self, path: Path) -> None:
        if not path.is_file():
            self.problem(str(path), "(file)", "the extra configuration file does not exist")
            return
        data = self._read(path)
        if data is not None:
            info = data.get("mapping")
            if isinstance(info, dict) and info.get("replaces_sources", True) and isinstance(data.get("sources"), dict):
                # A source mapping (a file with a `mapping:` section) describes the user's export completely:
                # it replaces the built-in sources instead of merging into them (whose columns would
                # otherwise be required too). Other extra files merge like overlays.
                self.merged.data.pop("sources", None)
                self.merged._forget(("sources",))
            self.merged.merge(data, str(path))

    def _yaml_files(self, folder: Path) -> list[Path]:
        for ignored in sorted(folder.glob("*.yml")):
            self.problem(str(ignored), "(file)", "ignored: only *.yaml files are read (rename it)")
        return sorted(p for p in folder.glob("*.yaml") if p.is_file())

    def _read(self, path: Path) -> dict[str, Any] | None:
        data, problems = read_yaml_file(path)
        self.problems += problems
        if data is None:
            self.incomplete = True
            return None
        for key in RESERVED_KEYS:
            if key in data:
                self.problem(str(path), key, "set by the loader; remove it (choose the env with CPBI_ENV)")
                del data[key]
        return data

    def _origin(self, path: tuple[Any, ...]) -> str:
        return self.merged.origin(path, default=str(self.folder / BASE_DIR))

    @staticmethod
    def _validated(model: type[BaseModel], data: Any) -> Any:
        """``model`` built from ``data``, or None: its errors are reported by the whole-config pass."""
        try:
            return model.model_validate(data)
        except ValidationError:
            return None

    def validate(self, env: str) -> CpbiConfig | None:
        data = {**self.merged.data, "env": env, "conf_dir": str(self.folder)}
        config: CpbiConfig | None = None
        try:
            config = CpbiConfig.model_validate(data)
        except ValidationError as exc:
            found = problems_from_validation_error(exc, self._origin, CpbiConfig)
            if self.incomplete:
                found = [p for p in found if p.reason != "required key is missing"]
            self.problems += found
        self._add_issues(self._cross_checks(data))
        if config is not None:
            config._origins = self.merged
        return config

    def _cross_checks(self, data: Mapping[str, Any]) -> list[Issue]:
        # Items are checked one by one, so a broken table does not hide the rules of the others.
        issues: list[Issue] = []
        raw_tables = data.get("tables") if isinstance(data.get("tables"), dict) else {}
        tables: dict[str, TableConfig] = {}
        for name, raw in raw_tables.items():
            table = table_for_checks(raw)
            if table is not None:
                tables[name] = table
                issues += check_table(str(name), table)
        raw_sources = data.get("sources") if isinstance(data.get("sources"), dict) else {}
        for name, raw in raw_sources.items():
            source = source_for_checks(raw)
            if source is not None:
                # With a file unparsed, the table may be declared there: existence is unknown.
                names = None if self.incomplete else list(raw_tables)
                issues += check_source(str(name), source, names, tables)
        storage = self._validated(StorageConfig, data.get("storage"))
        mlflow = self._validated(MlflowConfig, data.get("mlflow") or {})
        if storage is not None and mlflow is not None:
            issues += check_mlflow(storage, mlflow)
        return issues

    def _add_issues(self, issues: list[Issue]) -> None:
        for path, reason in issues:
            self.problem(self._origin(path), format_key_path(path), reason)


def _ordered(problems: list[ConfigProblem]) -> list[ConfigProblem]:
    """Problems grouped by file, then by item (``tables.x``), in discovery order; no repeats."""
    unique = list(dict.fromkeys(problems))
    return sorted(unique, key=lambda p: (p.file, p.key.split(".")[:2]))
