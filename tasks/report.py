"""The run report and the run record."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.cache import content_cache, run_name


@task(name="digest-run", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def digest_run_task(run_dir: str) -> str:
    """Content digest of what the report shows: every file of the run folder but run.json and the report."""
    from fruitlens.pipeline import run_digest

    return run_digest(run_dir)


@task(name="report", cache_policy=content_cache("fruitlens.report"), retries=2, retry_delay_seconds=1,
      persist_result=True, task_run_name=run_name("report", "run_dir"))
def report_task(run_dir: str, content_digest: str) -> str:
    """Write run_dir/report.html; its path. ``content_digest`` (of the run folder) keys the cache."""
    from fruitlens.report import build_report

    return str(build_report(run_dir))


@task(name="run-record", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def run_record_task(run_dir: str, config: dict, timings: dict, extra: dict) -> str:
    """Write run_dir/run.json (config, versions, seconds per step); its path."""
    from fruitlens.pipeline import write_run_json

    return str(write_run_json(run_dir, config=config, timings=timings, extra=extra))
