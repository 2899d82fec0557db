"""The scheduling examples in scripts/schedule/ run jobs that exist and accept their arguments.

With Airflow installed the DAG is imported and its task graph checked; without it (the default
test environment) the job files are read from the DAG's source. Every job is then started with
``--help`` the way the scheduler would start it (no Spark application is created for ``--help``).
"""

from __future__ import annotations

import ast
import importlib.util
import re
import shlex
import subprocess
import sys

import pytest

DAG_FILE = "scripts/schedule/cpbi_daily_dag.py"
CRON_FILE = "scripts/schedule/cpbi_daily.sh"


def _dag_jobs(repo_root) -> dict[str, list[tuple[str, str]]]:
    tree = ast.parse((repo_root / DAG_FILE).read_text())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) \
                and node.targets[0].id in ("STAGES", "ANALYSES", "MAINTENANCE"):
            out[node.targets[0].id] = [tuple(t) for t in ast.literal_eval(node.value)]
    return out


def _cron_jobs(repo_root) -> list[str]:
    """``jobs/<file>.py [analysis]`` per entry of the cron script's loop."""
    text = (repo_root / CRON_FILE).read_text()
    match = re.search(r"^for job in (.+); do$", text, re.M)
    assert match, "the cron script's job loop was not found"
    out = []
    for entry in shlex.split(match.group(1)):
        file, *args = entry.split()
        out.append(" ".join([f"jobs/{file}.py", *args]))
    return out


def _stage_of(repo_root, job: str) -> str:
    """The stage a scheduled job runs: its first argument, else the stage its file submits."""
    file, *args = job.split()
    if args:
        return args[0]
    match = re.search(r'submit\("([\w,]+)"', (repo_root / file).read_text())
    assert match, f"{file} does not call submit(<stage>, ...)"
    return match.group(1)


def test_dag_and_cron_run_the_stages_then_every_analysis(repo_root):
    from cpbi_spark.analytics import ANALYSES

    jobs = _dag_jobs(repo_root)
    stages = [job for _, job in jobs["STAGES"]]
    assert [_stage_of(repo_root, job) for job in stages] == ["bronze", "silver", "gold"]
    cron = _cron_jobs(repo_root)
    assert cron[:3] == stages
    assert cron[3:] == [job for _, job in jobs["ANALYSES"]]
    # every registered analysis is scheduled, each task runs the analysis it is named after
    assert [_stage_of(repo_root, job) for _, job in jobs["ANALYSES"]] == [task for task, _ in jobs["ANALYSES"]]
    assert {task for task, _ in jobs["ANALYSES"]} == set(ANALYSES)
    # and the weekly table upkeep, in both
    assert jobs["MAINTENANCE"] == [("maintain_tables", "jobs/maintain_tables.py")]
    cron_text = (repo_root / CRON_FILE).read_text()
    assert re.search(r"^\s+\.venv/bin/spark-submit .* jobs/maintain_tables\.py --env", cron_text, re.M)


def test_every_scheduled_job_exists_and_accepts_help(repo_root):
    jobs = {job for group in _dag_jobs(repo_root).values() for _, job in group} | set(_cron_jobs(repo_root))
    assert len(jobs) >= 6
    for job in sorted(jobs):
        file, *args = job.split()
        assert (repo_root / file).is_file(), job
        proc = subprocess.run([sys.executable, file, *args, "--help"], cwd=repo_root, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, (job, proc.stderr[-2000:])
        usage = "usage: cpbi maintain" if file.endswith("maintain_tables.py") else "usage: cpbi run"
        assert usage in proc.stdout and "--env" in proc.stdout, (job, proc.stdout[:500])


def test_cron_script_is_valid_bash(repo_root):
    proc = subprocess.run(["bash", "-n", str(repo_root / CRON_FILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(importlib.util.find_spec("airflow") is None,
                    reason="Airflow is not installed in the test environment; the DAG's jobs are checked from "
                           "its source instead (test_every_scheduled_job_exists_and_accepts_help)")
def test_dag_imports_in_airflow(repo_root):
    spec = importlib.util.spec_from_file_location("cpbi_daily_dag", repo_root / DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = module.dag
    assert dag.dag_id == "cpbi_daily"
    assert dag.get_task("silver_to_gold").upstream_task_ids == {"bronze_to_silver"}
    assert dag.get_task("cohorts").upstream_task_ids == {"silver_to_gold"}
    assert dag.get_task("drivers").upstream_task_ids == {"uplift"}
    assert dag.get_task("maintain_tables").upstream_task_ids == {"report"}
