"""Typed cpbi configuration, loaded from ``conf/`` YAML with environment overlays.

``load_config`` reads ``conf/base/*.yaml``, merges ``conf/<env>/*.yaml`` (env from the argument,
``$CPBI_ENV`` or ``local``), optional extra files and dotted overrides, expands ``${VAR}`` and
validates everything once, raising a single :class:`~cpbi_spark.errors.ConfigError` that lists
every problem with the file and key path to fix.

Example:
    >>> from cpbi_spark.config import load_config
    >>> cfg = load_config(env="ci")                                   # doctest: +SKIP
    >>> cfg.table("raw_transactions").layer                           # doctest: +SKIP
    'bronze'
"""

from __future__ import annotations

from cpbi_spark.config.loader import default_conf_dir, known_envs, load_config, select_env
from cpbi_spark.config.masking import mask_secrets
from cpbi_spark.config.models import (
    LAYERS,
    CpbiConfig,
    Layer,
    MlflowConfig,
    ProjectConfig,
    SourceConfig,
    StorageConfig,
    TableConfig,
)

__all__ = [
    "LAYERS",
    "CpbiConfig",
    "Layer",
    "MlflowConfig",
    "ProjectConfig",
    "SourceConfig",
    "StorageConfig",
    "TableConfig",
    "default_conf_dir",
    "known_envs",
    "load_config",
    "mask_secrets",
    "select_env",
]
