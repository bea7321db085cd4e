"""Trends across nights: the run's row in the models home's nights table, and the trend in the run folder."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE


@task(name="record-night", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def record_night_task(models_home: str, run_dir: str, model_digest: str, metrics: dict, seconds: float,
                      promoted: bool, drift: dict | None) -> list[dict]:
    """Add the run's row to models_home/nights.parquet; write RUN/trend/; the table as records, newest first."""
    from fruitlens.nights import night_of_run, record_night, trend_rows, write_trend

    night = night_of_run(run_dir, model_digest=model_digest, metrics=metrics, seconds=seconds, promoted=promoted,
                         drift=drift)
    table = record_night(models_home, night)
    write_trend(run_dir, table)
    return trend_rows(table)
