"""nightly_flow: index -> train -> evaluate -> explain -> visualize -> compare/promote -> report.

``fruitlens run`` and ``fruitlens demo`` run it once; ``fruitlens serve`` serves it on a cron schedule and
``prefect.yaml`` deploys it to a work pool. Unchanged steps are Cached, so a night with no new data costs
seconds.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, get_run_logger

from flows.artifacts import publish_comparison, publish_links, publish_summary
from flows.evaluate import evaluate_flow
from flows.explain import explain_flow
from flows.index import index_flow
from flows.settings import build_task_runner, run_name, slug, subflow
from flows.train import train_flow
from fruitlens.config import PipelineConfig
from fruitlens.pipeline import explanation_pngs
from tasks.cache import fresh
from tasks.evaluate import evaluate_task
from tasks.promote import compare_task, current_model_task, promote_task
from tasks.report import digest_run_task, report_task, run_record_task
from tasks.visualize import visualize_task


def _name() -> str:
    return run_name("nightly", "data_dir", "out_dir")


@flow(name="nightly", flow_run_name=_name, log_prints=True)
def nightly_flow(data_dir: str, out_dir: str, config: dict | None = None, models_home: str | None = None) -> dict:
    """The whole pipeline into the run folder ``out_dir`` with ``config`` (PipelineConfig fields).

    The new model becomes ``<models_home>/current`` (default ``<out_dir>/../models``) only when it is not
    worse than the current one on the same test set; comparison.parquet and an artifact say how they did.
    Returns headline metrics, the promotion decision and seconds per step.
    """
    log = get_run_logger()
    cfg = PipelineConfig.from_dict(config)
    run = Path(out_dir)
    home = Path(models_home or cfg.models_home or run.resolve().parent / "models")
    prefix = f"{slug(run.name)}-"
    timings: dict[str, float] = {}

    def step(name, fn, *args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        timings[name] = time.perf_counter() - start
        return out

    index = step("index", subflow(index_flow), data_dir, str(run / "index"))
    train = step("train", subflow(train_flow), data_dir, str(run), cfg.train)
    new = step("evaluate", subflow(evaluate_flow), str(run), data_dir, cfg.split, artifacts=True)
    explain = subflow(explain_flow.with_options(task_runner=build_task_runner(cfg.task_runner, cfg.dask_address)))
    explained = step("explain", explain, str(run), data_dir, list(cfg.methods), cfg.split, cfg.explain_limit,
                     cfg.chunk_size, cfg.explain_options, select=cfg.explain_select)
    first = explained.get("first_image")
    if cfg.visualize and first:
        step("visualize", fresh(visualize_task, run / "visualize"), str(run), first["path"], str(run / "visualize"),
             train["model_digest"], first["sha256"])

    current = current_model_task(str(home))
    same = current is not None and current["model_digest"] == train["model_digest"]
    old = None
    if current is not None and not same:
        old = step("evaluate_current", fresh(evaluate_task, run / "eval_current" / "predictions.parquet"),
                   current["run_dir"], data_dir, str(run / "eval_current"), cfg.split, current["model_digest"],
                   index["digests"].get(cfg.split, ""))["headline"]
    elif same:
        old = new["headline"]  # the same model: no need to evaluate it twice
    comparison = compare_task(str(run), new["headline"], old, cfg.promote_metric, same)
    if comparison["promote"] and not same:
        promote_task(str(run), str(home), {"model_digest": train["model_digest"], "metrics": new["headline"]})
    publish_comparison(comparison["rows"], comparison["promote"], prefix=prefix)
    log.info("new %s %.4f vs current %s: %s", cfg.promote_metric, new["headline"][cfg.promote_metric],
             "none" if old is None else f"{old[cfg.promote_metric]:.4f}",
             "promoted" if comparison["promote"] else "kept the current model")

    record = {"data_dir": str(data_dir), "models_home": str(home), "metrics": new["headline"],
              "promoted": comparison["promote"], "model_digest": train["model_digest"]}
    run_record_task(str(run), cfg.to_dict(), timings, record)  # the report shows run.json
    if cfg.report:  # rebuilt when anything it shows changed (apart from run.json's timings)
        report = step("report", fresh(report_task, run / "report.html"), str(run), digest_run_task(str(run)))
    else:
        report = None
    images = [["training curves", str(run / "curves.png")], ["confusion matrix", str(run / "eval" / "confusion.png")]]
    images += [[f"{p.parent.name} {p.stem}", str(p)]
               for p in explanation_pngs(run / "explain", ["side_by_side", *cfg.methods], per_method=1)]
    lines = [f"- data: `{data_dir}`, {index['num_ok']} usable images ({index['num_bad']} unusable), "
             f"{len(index['classes'])} classes",
             f"- model: {cfg.train.get('arch')} at {cfg.train.get('image_size')} px, {train['epochs']} epochs, "
             f"digest `{train['model_digest'][:12]}`",
             "- explained: " + ", ".join(f"{m} {n} rows" for m, n in explained["rows"].items()),
             f"- current model: {'promoted this run' if comparison['promote'] else 'kept'} "
             f"({cfg.promote_metric} new {new['headline'][cfg.promote_metric]:.4f}"
             + ("" if old is None else f", current {old[cfg.promote_metric]:.4f}") + ")"]
    publish_summary(f"fruitlens run {run.name}", new["headline"], lines, images, prefix=prefix)
    links = {"report": report or "", "model": str(run / "model.keras"), "predictions": str(run / "eval" /
             "predictions.parquet"), "comparison": comparison["path"], "run-json": str(run / "run.json")}
    links |= {m: p for m, p in explained.items() if m in cfg.methods}
    summary = {"metrics": new["headline"], "promoted": comparison["promote"], "timings": timings,
               "model_digest": train["model_digest"], "report": report}
    run_record_task(str(run), cfg.to_dict(), timings, record)  # with the report's time
    publish_links(links, prefix=prefix)
    return summary
