"""MLflow tracking: one place that points MLflow at the configured store.

The default store is a sqlite file under ``<storage.outputs>/mlruns``; ``mlflow.tracking_uri``
in conf overrides it, and ``MLFLOW_TRACKING_URI`` in the environment overrides both.

Example:
    >>> with tracked_run(ctx.config, "pipeline", params={"env": "local"}) as run:   # doctest: +SKIP
    ...     mlflow.log_metric("rows", 10)
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cpbi_spark.config import CpbiConfig

_log = logging.getLogger("cpbi.tracking")
_WARMING: dict[str, threading.Thread] = {}  # tracking URI -> the thread opening its store (see warm_up)


def tracking_uri(config: CpbiConfig) -> str:
    # The operator's environment wins over the conf files, which win over the local default.
    env_uri = os.environ.get("MLFLOW_TRACKING_URI")
    if env_uri:
        return env_uri
    uri = config.mlflow_tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return uri


def warm_up(config: CpbiConfig) -> threading.Thread | None:
    """Import MLflow and open the configured tracking store in a background thread (once per process and
    store); None when that was started already.

    Importing MLflow and opening its store (a sqlite store checks its schema) costs a few seconds of driver
    time. Started while the Spark session starts (the driver mostly waits for the JVM then), it is done by
    the time the run is tracked. :func:`tracked_run` waits for it, so the store is never opened twice at
    once. A failure here is left to :func:`tracked_run`, which opens the store again and reports it.

    Example:
        >>> warm_up(ctx.config)   # doctest: +SKIP
        <Thread(cpbi-mlflow-warm-up, started daemon ...)>
    """
    uri = tracking_uri(config)
    if uri in _WARMING:
        return None

    def open_store() -> None:
        try:
            from mlflow.tracking import MlflowClient

            MlflowClient(tracking_uri=uri).get_experiment_by_name(config.mlflow.experiment)
        except Exception:  # reported by tracked_run, which needs the store
            _log.debug("opening the MLflow tracking store in the background failed", exc_info=True)

    thread = threading.Thread(target=open_store, name="cpbi-mlflow-warm-up", daemon=True)
    _WARMING[uri] = thread
    thread.start()
    return thread


@contextlib.contextmanager
def tracked_run(config: CpbiConfig, run_name: str, *, params: Mapping[str, Any] | None = None,
                tags: Mapping[str, str] | None = None) -> Iterator[Any]:
    """Start an MLflow run in the configured experiment; yields the active run."""
    uri = tracking_uri(config)
    if uri in _WARMING:
        _WARMING[uri].join()  # the store is opened by one thread at a time
    import mlflow

    mlflow.set_tracking_uri(uri)
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
