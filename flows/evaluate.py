"""evaluate_flow: predict one split with a trained model; metrics tables in the UI."""

from __future__ import annotations

from prefect import flow

from flows.artifacts import publish_eval_tables
from flows.settings import run_name, slug
from fruitlens.config import model_source_fields
from fruitlens.layout import METRICS_FILE, PREDICTIONS_FILE, RunLayout
from tasks.cache import fresh
from tasks.evaluate import evaluate_task


def _name() -> str:
    return run_name("evaluate", "split", "run_dir")


@flow(name="evaluate", flow_run_name=_name, log_prints=True)
def evaluate_flow(run_dir: str, data_dir: str, split: str = "test", out_dir: str | None = None,
                  artifacts: bool = True, model: dict | None = None) -> dict:
    """Evaluate ``model`` (ModelSource fields; default the run's own) on ``split`` into ``out_dir`` (default
    run_dir/eval); the metrics."""
    out = RunLayout(run_dir).eval_dir if out_dir is None else RunLayout(out_dir).root
    model = model_source_fields(model or run_dir)
    result = fresh(evaluate_task, out / PREDICTIONS_FILE, out / METRICS_FILE)(model, data_dir, str(out), split)
    if artifacts:
        publish_eval_tables(str(out), prefix=f"{slug(RunLayout(run_dir).root.name)}-")
    return result
