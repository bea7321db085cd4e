"""The run report and the run record."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE


@task(name="report", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def report_task(run_dir: str) -> str:
    """Write run_dir/report.html; its path."""
    from fruitlens.report import build_report

    return str(build_report(run_dir))


@task(name="run-record", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def run_record_task(run_dir: str, config: dict, timings: dict, extra: dict) -> str:
    """Write run_dir/run.json (config, versions, seconds per step); its path."""
    from fruitlens.pipeline import write_run_json

    return str(write_run_json(run_dir, config=config, timings=timings, extra=extra))
