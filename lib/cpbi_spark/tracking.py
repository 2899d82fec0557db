"""MLflow tracking: one place that points MLflow at the configured store.

The default store is a sqlite file under ``<storage.outputs>/mlruns``; ``mlflow.tracking_uri``
in conf overrides it, and ``MLFLOW_TRACKING_URI`` in the environment overrides both.

Example:
    >>> with tracked_run(ctx.config, "pipeline", params={"env": "local"}) as run:   # doctest: +SKIP
    ...     mlflow.log_metric("rows", 10)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cpbi_spark.config import CpbiConfig


def tracking_uri(config: CpbiConfig) -> str:
    # The operator's environment wins over the conf files, which win over the local default.
    env_uri = os.environ.get("MLFLOW_TRACKING_URI")
    if env_uri:
        return env_uri
    uri = config.mlflow_tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return uri


@contextlib.contextmanager
def tracked_run(config: CpbiConfig, run_name: str, *, params: Mapping[str, Any] | None = None,
                tags: Mapping[str, str] | None = None) -> Iterator[Any]:
    """Start an MLflow run in the configured experiment; yields the active run."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(config))
    artifacts = Path(config.storage.outputs) / "mlruns" / "artifacts"
    if mlflow.get_experiment_by_name(config.mlflow.experiment) is None:
        location = artifacts.as_uri() if "://" not in config.storage.outputs else None
        mlflow.create_experiment(config.mlflow.experiment, artifact_location=location)
    mlflow.set_experiment(config.mlflow.experiment)
    # Inside a pipeline run (cpbi run all) an analysis is a child run of it.
    nested = mlflow.active_run() is not None
    with mlflow.start_run(run_name=run_name, tags=dict(tags or {}), nested=nested) as run:
        if params:
            mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        yield run
