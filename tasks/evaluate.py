"""Evaluate a model on one split."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from tasks.cache import content_cache, run_name


def _model_and_data(inputs: dict) -> dict:
    from fruitlens.digests import tree_digest
    from fruitlens.modelio import as_model_source

    return {"model": as_model_source(inputs["model"]).digest(), "data": tree_digest(inputs["data_dir"])}


@task(name="evaluate", cache_policy=content_cache(_model_and_data), retries=1, retry_delay_seconds=1,
      persist_result=True, task_run_name=run_name("evaluate", "split", "out_dir"))
def evaluate_task(model: dict, data_dir: str, out_dir: str, split: str) -> dict:
    """Predict ``split`` with ``model`` (ModelSource fields); predictions, metrics and confusion in ``out_dir``."""
    from fruitlens import tables
    from fruitlens.inference import evaluate_run
    from fruitlens.layout import PREDICTIONS_FILE
    from fruitlens.metrics import headline_metrics
    from fruitlens.modelio import as_model_source

    metrics = evaluate_run(as_model_source(model), data_dir, out_dir, split=split)
    predictions = tables.read_table(Path(out_dir) / PREDICTIONS_FILE)
    return {"out_dir": out_dir, "metrics": dict(metrics), "headline": headline_metrics(predictions)}
