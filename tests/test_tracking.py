"""MLflow tracking: the store opened in the background while a run starts is the one its runs go to."""

from __future__ import annotations

from pathlib import Path

from cpbi_spark.config import load_config

REPO_CONF = Path(__file__).resolve().parents[1] / "conf"


def test_the_store_warmed_up_in_the_background_receives_the_tracked_run(tmp_path, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    from cpbi_spark.tracking import tracked_run, tracking_uri, warm_up

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = load_config(REPO_CONF, env="ci", overrides={"storage.root": str(tmp_path / "lake"),
                                                      "storage.outputs": str(tmp_path / "out")})
    uri = tracking_uri(cfg)
    assert uri == f"sqlite:///{tmp_path}/out/mlruns/mlflow.db"
    thread = warm_up(cfg)
    assert thread is not None and warm_up(cfg) is None  # opened once per process and store
    with tracked_run(cfg, "warm", params={"stages": "bronze"}) as run:
        assert not thread.is_alive()  # tracked_run waited for the store to be opened
        mlflow.log_metric("rows", 3.0)
    assert (tmp_path / "out" / "mlruns" / "mlflow.db").is_file()
    stored = MlflowClient(uri).get_run(run.info.run_id)
    assert stored.data.metrics["rows"] == 3.0 and stored.data.params["stages"] == "bronze"
    assert MlflowClient(uri).get_experiment(stored.info.experiment_id).name == cfg.mlflow.experiment
