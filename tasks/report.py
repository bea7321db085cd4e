"""The run record and the run report."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.cache import content_cache, run_name


def _shown(inputs: dict) -> dict:
    from fruitlens.digests import run_digest

    return {"run": run_digest(inputs["run_dir"])}


@task(name="report", cache_policy=content_cache(_shown), retries=2, retry_delay_seconds=1, persist_result=True,
      task_run_name=run_name("report", "run_dir"))
def report_task(run_dir: str) -> str:
    """Write run_dir/report.html (rebuilt when anything it shows changed); its path."""
    from fruitlens.report import build_report

    return str(build_report(run_dir))


@task(name="run-record", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def run_record_task(run_dir: str, config: dict, timings: dict, extra: dict) -> str:
    """Write run_dir/run.json (config, versions, seconds per step); its path."""
    from fruitlens.summary import write_run_json

    return str(write_run_json(run_dir, config=config, timings=timings, extra=extra))
