"""evaluate_flow: predict one split with a trained model; metrics tables in the UI."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.artifacts import publish_eval_tables
from flows.settings import run_name, slug
from tasks.cache import fresh
from tasks.evaluate import evaluate_task, model_digest_task
from tasks.index import index_task


def _name() -> str:
    return run_name("evaluate", "split", "run_dir")


@flow(name="evaluate", flow_run_name=_name, log_prints=True)
def evaluate_flow(run_dir: str, data_dir: str, split: str = "test", out_dir: str | None = None,
                  artifacts: bool = True) -> dict:
    """Evaluate the model of ``run_dir`` on ``split`` into ``out_dir`` (default run_dir/eval); the metrics."""
    out = out_dir or str(Path(run_dir) / "eval")
    index_dir = str(Path(run_dir) / "index")
    index = fresh(index_task, Path(index_dir) / "index.json")(data_dir, index_dir)
    digest = model_digest_task(run_dir)
    evaluate = fresh(evaluate_task, Path(out) / "predictions.parquet", Path(out) / "metrics.json")
    result = evaluate(run_dir, data_dir, out, split, digest, index["digests"].get(split, ""))
    if artifacts:
        publish_eval_tables(out, prefix=f"{slug(Path(run_dir).name)}-")
    return result
