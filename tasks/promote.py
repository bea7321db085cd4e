"""Compare the new model with the current one on the same test set; promote it when it is not worse."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE


@task(name="current-model", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def current_model_task(models_home: str) -> dict | None:
    """The current model's folder and digest, or None when no model has been promoted yet."""
    from fruitlens.pipeline import current_dir
    from fruitlens.runs import MODEL_FILE, model_digest

    folder = current_dir(models_home)
    if not (folder / MODEL_FILE).is_file():
        return None
    return {"run_dir": str(folder), "model_digest": model_digest(folder)}


@task(name="compare-models", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def compare_task(run_dir: str, new: dict, current: dict | None, metric: str) -> dict:
    """Write run_dir/comparison.parquet (metric, new, current, delta); the rows and the decision."""
    from pathlib import Path

    from fruitlens import tables
    from fruitlens.pipeline import compare_models

    table, promote = compare_models(new, current, metric)
    path = tables.write_table(table.assign(promoted=promote), Path(run_dir) / "comparison.parquet")
    return {"rows": table.to_dict("records"), "promote": bool(promote), "path": str(path)}


@task(name="promote", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def promote_task(run_dir: str, models_home: str, info: dict) -> str:
    """Copy the run's model to models_home/current and record it in current.json; the folder."""
    from fruitlens.pipeline import promote_model

    return str(promote_model(run_dir, models_home, info))
