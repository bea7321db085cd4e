"""Evaluate a model on one split."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.cache import content_cache, run_name


@task(name="model-digest", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def model_digest_task(run_dir: str) -> str:
    """sha256 of the run's model.keras (the cache key of everything computed from the model)."""
    from fruitlens.runs import model_digest

    return model_digest(run_dir)


@task(name="evaluate", cache_policy=content_cache("fruitlens.inference", "fruitlens.pipeline"), retries=1,
      retry_delay_seconds=1, persist_result=True, task_run_name=run_name("evaluate", "split", "out_dir"))
def evaluate_task(run_dir: str, data_dir: str, out_dir: str, split: str, model_digest: str, split_digest: str) -> dict:
    """Predict ``split`` and write predictions, metrics and confusion into ``out_dir``; the metrics."""
    from pathlib import Path

    from fruitlens import tables
    from fruitlens.inference import evaluate_run
    from fruitlens.pipeline import headline_metrics

    metrics = evaluate_run(run_dir, data_dir, out_dir, split=split)
    predictions = tables.read_table(Path(out_dir) / "predictions.parquet")
    return {"out_dir": out_dir, "metrics": dict(metrics), "headline": headline_metrics(predictions)}
