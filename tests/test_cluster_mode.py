"""The jobs under ``spark-submit`` on a multi-process cluster (``local-cluster[2,1,1024]``).

A local-cluster master starts a standalone master, two worker JVMs and executors in their own
processes with their own Python workers, so anything that only works when driver and executors
share a process (driver-side state read inside a UDF, files written to a driver-only temp
folder, a session object shipped to a task) fails here. The library is shipped the way a real
cluster gets it: as a zip through ``--py-files``. Results are read back with delta-rs (not
Spark) and checked against the generator's manifest.

``local-cluster`` needs ``SPARK_HOME`` to point at a Spark distribution; pip's pyspark
package folder is one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from deltalake import DeltaTable

from cpbi_spark.config import load_config
from cpbi_spark.synth import generate

pytestmark = pytest.mark.slow
SCALE, SEED = 0.02, 3


def _zip_library(root: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted((root / "lib" / "cpbi_spark").rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                zf.write(path, path.relative_to(root / "lib"))
    return out


@pytest.fixture(scope="module")
def cluster_run(repo_root, tmp_path_factory):
    import pyspark

    root = tmp_path_factory.mktemp("cluster")
    manifest = generate(root, scale=SCALE, seed=SEED, batch=1)
    library = _zip_library(repo_root, root / "cpbi_spark.zip")
    # spark-submit puts the --py-files zip on the driver's and the workers' PYTHONPATH, which Python
    # searches before the venv's site-packages (where the editable install lives), so the shipped code
    # is what runs: an incomplete zip fails the job. Run from a folder outside the repository, with no
    # PYTHONPATH of our own.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SPARK_HOME", "MLFLOW_TRACKING_URI")}
    env.update(SPARK_HOME=str(Path(pyspark.__file__).parent), PYSPARK_PYTHON=sys.executable,
               PYSPARK_DRIVER_PYTHON=sys.executable, CPBI_CONF_DIR=str(repo_root / "conf"))
    spark_submit = Path(sys.executable).parent / "spark-submit"
    cmd = [str(spark_submit), "--master", "local-cluster[2,1,1024]", "--driver-memory", "1g",
           "--conf", "spark.log.level=WARN", "--conf", "spark.ui.enabled=false",
           "--driver-java-options", "-XX:-DontCompileHugeMethods",  # as docs/spark-submit.md says
           "--py-files", str(library), str(repo_root / "jobs" / "run_pipeline.py"),
           "--stages", "pipeline", "--env", "ci",
           "--set", f"storage.root={root / 'lake'}", "--set", f"storage.landing={root / 'landing'}",
           "--set", f"storage.outputs={root / 'outputs'}",
           # the platform recorder (sources A-D) runs in tests/test_platform_pipeline.py; off here for time
           "--set", "platform.enabled=false"]
    work = Path(pyspark.__file__).parent / "work"  # where a local cluster's workers keep executor logs
    before = set(work.glob("app-*")) if work.is_dir() else set()
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    apps = sorted(set(work.glob("app-*")) - before) if work.is_dir() else []
    yield {"root": root, "manifest": manifest, "proc": proc, "apps": apps}
    for app in apps:  # do not leave executor logs inside the installed package
        shutil.rmtree(app, ignore_errors=True)


def _table(root: Path, name: str) -> DeltaTable:
    config = load_config(env="ci", overrides={"storage.root": str(root / "lake")})
    return DeltaTable(config.table_path(name))  # read with delta-rs, not through the job's code path


def test_pipeline_runs_on_a_multi_process_cluster(cluster_run):
    proc = cluster_run["proc"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    for stage in ("bronze", "silver", "gold"):
        assert f"[{stage}] done" in proc.stdout, proc.stdout[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-6000:]


def test_executors_ran_in_their_own_processes(cluster_run):
    # Each worker of a local cluster starts the application's executors as separate JVMs and keeps
    # their logs under SPARK_HOME/work/<app id>/<executor id>/.
    assert cluster_run["proc"].returncode == 0
    executors = [d for app in cluster_run["apps"] for d in app.iterdir() if d.is_dir()]
    assert len(cluster_run["apps"]) == 1 and len(executors) >= 2, executors
    logs = "".join((d / "stderr").read_text(errors="replace") for d in executors if (d / "stderr").exists())
    assert "CoarseGrainedExecutorBackend" in logs
    assert _table(cluster_run["root"], "raw_transactions").file_uris(), "no data file in the bronze table"


def test_silver_and_gold_match_the_manifest(cluster_run):
    root, manifest = cluster_run["root"], cluster_run["manifest"]
    assert cluster_run["proc"].returncode == 0
    counts = manifest["row_counts"]
    raw = _table(root, "raw_transactions").to_pyarrow_table()
    assert raw.num_rows == counts["transactions"]["rows"]
    assert _table(root, "stg_transactions").to_pyarrow_table().num_rows == counts["transactions"]["valid"]
    quarantine = _table(root, "stage_quarantine").to_pyarrow_table().to_pylist()
    planted = sum(n for kind, n in manifest["dirty"]["transactions"].items() if kind != "duplicate")
    assert sum(1 for r in quarantine if r["source"] == "transactions") == planted
    recon = _table(root, "audit_recon").to_pyarrow_table().to_pylist()
    assert recon and all(r["status"] == "balanced" for r in recon), json.dumps(recon, default=str)[:2000]
