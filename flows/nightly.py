"""nightly_flow: index -> train -> evaluate -> (amortised explainer) -> explain -> (amortised audit) -> visualize
-> sanity -> class evidence (and shortcut shares) -> compare (accuracy and explanation drift)/promote -> the
night's row in the trend -> run record -> report -> events (``fruitlens.alerts``).

``fruitlens run`` and ``fruitlens demo`` run it once; ``fruitlens serve`` serves it on a cron schedule and
``prefect.yaml`` deploys it to a work pool. Unchanged steps are Cached, so a night with no new data costs
seconds.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger

from flows.alerts import emit_alerts
from flows.artifacts import publish_comparison, publish_links, publish_summary, publish_trend
from flows.evaluate import evaluate_flow
from flows.explain import explain_flow
from flows.index import index_flow
from flows.settings import build_task_runner, run_name, slug, subflow
from flows.train import train_flow
from fruitlens.alerts import night_alerts
from fruitlens.batch.sanity import read_verdicts, sanity_methods
from fruitlens.config import PipelineConfig, model_source_fields
from fruitlens.layout import RunLayout
from fruitlens.promotion import default_models_home
from fruitlens.summary import run_summary
from fruitlens.typed import to_plain
from tasks.amortised import amortised_audit_task, amortised_train_task
from tasks.cache import fresh
from tasks.drift import drift_task
from tasks.evaluate import evaluate_task
from tasks.evidence import evidence_task
from tasks.nights import record_night_task
from tasks.promote import compare_task, current_model_task, existing_model, promote_task
from tasks.report import report_task, run_record_task
from tasks.sanity import discard_sanity_task, sanity_task
from tasks.stability import stability_task
from tasks.visualize import visualize_task


def _name() -> str:
    return run_name("nightly", "data_dir", "out_dir")


class Steps:
    """Runs the pipeline's steps and keeps the seconds each took (run.json's timings)."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def __call__(self, name: str, fn, *args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.timings[name] = round(time.perf_counter() - start, 3)


def compare_with_current(run: RunLayout, data_dir: str, cfg: PipelineConfig, home: str, train: dict,
                         new: dict) -> dict:
    """Evaluate the current model on the same split when it knows the same classes; compare; promote."""
    current = current_model_task(home, train["classes"])
    same = current["model_digest"] == train["model_digest"]
    old = None
    if current["run_dir"] and not same:
        evaluate = fresh(evaluate_task, run.eval_current_dir / "predictions.parquet")
        old = evaluate(model_source_fields(current["run_dir"]), data_dir, str(run.eval_current_dir),
                       cfg.split)["headline"]
    elif same:
        old = new["headline"]  # the same model: no need to evaluate it twice
    drift = None
    if current["run_dir"] and not same and cfg.drift_probe:
        drift = fresh(drift_task, run.drift)(model_source_fields(current["run_dir"]),
                                             model_source_fields(str(run.root)), str(run.index_dir),
                                             str(run.explain_dir), cfg.split, cfg.drift_probe, str(run.drift_dir))
    comparison = compare_task(str(run.root), new["headline"], old, cfg.promote_metric, same, drift, cfg.max_drift,
                              read_verdicts(run.sanity.root) or None)
    if comparison["promote"]:
        promote_task(str(run.root), home, {"model_digest": train["model_digest"], "metrics": new["headline"]})
    if current["note"]:
        get_run_logger().info("%s", current["note"])
    return {**comparison, "old": old, "note": current["note"], "models_home": home, "drift": drift, "same": same}


@flow(name="nightly", flow_run_name=_name, log_prints=True)
def nightly_flow(data_dir: str, out_dir: str, config: dict | None = None, models_home: str | None = None) -> dict:
    """The whole pipeline into the run folder ``out_dir`` with ``config`` (PipelineConfig fields).

    The new model becomes ``<models_home>/current`` (default ``<out_dir>/../models/<out_dir's name>``) only
    when it is not worse than the current one on the same test set; comparison.parquet and an artifact say how
    they did. Returns headline metrics, the decision (promoted, kept, unchanged, explained) and seconds per step.
    """
    cfg = PipelineConfig.from_dict(config)
    run = RunLayout(out_dir)
    home = str(models_home or cfg.models_home or default_models_home(out_dir))
    prefix = f"{slug(run.root.name)}-"
    step = Steps()
    index = step("index", subflow(index_flow), data_dir, str(run.index_dir))
    if cfg.model is None:
        train = step("train", subflow(train_flow), data_dir, str(run.root), cfg.train.to_dict())
        model = model_source_fields(str(run.root))
    else:  # an existing model is explained: nothing is trained, compared or promoted
        train, model = existing_model(cfg.model), cfg.model
    new = step("evaluate", subflow(evaluate_flow), str(run.root), data_dir, cfg.split, model=model)
    methods, explain_options = list(cfg.methods), to_plain(cfg.explain_options)
    if cfg.amortised_audit:  # the amortised explainer, trained beside the classifier, explains with the others
        folder = str(run.root / "amortised-explainer")
        trained = step("amortised_train", fresh(amortised_train_task, folder), model, str(run.index_dir),
                       explain_options["amortised"], folder)
        explain_options["amortised"] = {**explain_options["amortised"], "explainer": trained}
        methods += [] if "amortised" in methods else ["amortised"]
    explain = explain_flow.with_options(task_runner=build_task_runner(cfg.task_runner, cfg.dask_address))
    explained = step("explain", subflow(explain), model, str(run.index_dir), str(run.explain_dir),
                     methods, cfg.split, cfg.explain_limit, cfg.chunk_size, explain_options,
                     cfg.explain_select, str(run.predictions), prefix)
    if cfg.amortised_audit:
        step("amortised_audit", fresh(amortised_audit_task, run.explain.amortised_audit), model, str(run.index_dir),
             cfg.split, explain_options["amortised"], cfg.amortised_audit, cfg.amortised_agreement,
             cfg.amortised_top_k, str(run.explain_dir))
    if cfg.visualize and explained["first_image"]:
        step("visualize", fresh(visualize_task, run.visualize_dir), model, explained["first_image"]["path"],
             str(run.visualize_dir))
    if cfg.stability_images and "lime" in cfg.methods:
        step("lime_stability", fresh(stability_task, run.explain.stability), model, str(run.index_dir),
             str(run.explain_dir), cfg.split, cfg.stability_images, to_plain(cfg.explain_options.lime),
             str(run.explain.stability))
    checked = sanity_methods(cfg.methods, cfg.explain_options)
    if cfg.sanity_images and checked:
        step("sanity", fresh(sanity_task, run.sanity.verdicts), model, str(run.index_dir), str(run.explain_dir),
             cfg.split, cfg.sanity_images, list(checked), to_plain(cfg.explain_options), str(run.sanity.root))
    else:
        discard_sanity_task(str(run.sanity.root))
    if cfg.class_evidence:
        step("class_evidence", fresh(evidence_task, run.class_evidence), model, str(run.index_dir), cfg.split,
             str(run.evidence_dir))
    if cfg.model is None:
        comparison = step("compare", compare_with_current, run, data_dir, cfg, home, train, new)
    else:
        comparison = {"rows": [], "promote": False, "decision": "explained", "path": "", "old": None,
                      "models_home": home,
                      "note": f"explained the existing model {cfg.model['spec']}: nothing trained or promoted"}
    if comparison["rows"]:
        publish_comparison(comparison["rows"], comparison["decision"], prefix=prefix, note=comparison["note"])
    record = {"data_dir": str(data_dir), "models_home": home, "metrics": new["headline"],
              "promoted": comparison["promote"], "decision": comparison["decision"],
              "model_digest": train["model_digest"]}
    trend = step("trend", record_night_task, home, str(run.root), train["model_digest"], new["headline"],
                 sum(step.timings.values()), comparison["promote"], comparison.get("drift"))
    publish_trend(trend, prefix=prefix)
    run_record_task(str(run.root), cfg.to_dict(), step.timings, record)
    report = step("report", fresh(report_task, run.report), str(run.root)) if cfg.report else None
    emit_alerts(night_alerts(run.root, metrics=new["headline"], seconds=sum(step.timings.values()), report=report,
                             model_digest=train["model_digest"], comparison=comparison, metric=cfg.promote_metric,
                             max_drift=cfg.max_drift, trained=cfg.model is None), run.root)
    lines, images = run_summary(run.root, data_dir, cfg, index, train, explained, comparison, new["headline"],
                                comparison["old"])
    publish_summary(f"fruitlens run {run.root.name}", new["headline"], lines, images, prefix=prefix)
    links = {"report": report or "", "model": str(run.model), "predictions": str(run.predictions),
             "comparison": comparison["path"], "run-json": str(run.run_record), **explained["tables"]}
    publish_links(links, prefix=prefix)
    return {"metrics": new["headline"], "promoted": comparison["promote"], "decision": comparison["decision"],
            "timings": step.timings, "model_digest": train["model_digest"], "report": report, "models_home": home,
            "note": comparison["note"]}
