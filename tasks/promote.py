"""Compare the new model with the current one on the same test set; promote it when it is not worse."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE


@task(name="existing-model", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=1)
def existing_model(model: dict) -> dict:
    """What the pipeline knows of a model it did not train: its digest and classes (as the train task says)."""
    from fruitlens.modelio import as_model_source

    source = as_model_source(model)
    _, card = source.load()
    return {"run_dir": None, "model_digest": source.digest(card), "epochs": 0, "metrics": {},
            "classes": list(card.classes), "curves_path": ""}


@task(name="current-model", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def current_model_task(models_home: str, classes: list[str]) -> dict:
    """The current model's folder and digest when it can be compared with a model of ``classes``; else why not."""
    from fruitlens.promotion import comparable, current_dir
    from fruitlens.runs import model_digest

    ok, why = comparable(classes, models_home)
    folder = current_dir(models_home)
    if not ok:
        return {"run_dir": None, "model_digest": None, "note": why}
    return {"run_dir": str(folder), "model_digest": model_digest(folder), "note": ""}


@task(name="compare-models", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def compare_task(run_dir: str, new: dict, current: dict | None, metric: str, same_model: bool = False,
                 drift: dict | None = None, max_drift: float | None = None, sanity: dict | None = None) -> dict:
    """Write run_dir/comparison.parquet (metric, new, current, delta, promoted); the rows, whether to promote
    and the decision (``fruitlens.promotion.Decision``).

    ``same_model``: the new model is the current one (nothing retrained since it was promoted), so the
    comparison made when it was promoted stands and is returned unchanged; the decision is ``unchanged`` and
    nothing is promoted again. ``sanity``: {method: passed} of the randomisation test, one row each.
    """
    from fruitlens import tables
    from fruitlens.layout import RunLayout
    from fruitlens.promotion import compare_models, decide

    path = RunLayout(run_dir).comparison
    if same_model and path.is_file():
        table = tables.read_table(path)
        promote = bool(table["promoted"].iloc[0]) if len(table) else True
        table = table.drop(columns=["promoted"])
    else:
        table, promote = compare_models(new, current, metric, drift, max_drift, sanity)
        tables.write_table(table.assign(promoted=promote), path)
    rows = table.astype(object).where(table.notna(), None).to_dict("records")
    return {"rows": rows, "promote": bool(promote) and not same_model, "decision": decide(same_model, promote),
            "path": str(path)}


@task(name="promote", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def promote_task(run_dir: str, models_home: str, info: dict) -> str:
    """Copy the run's model to models_home/current and record it in current.json; the folder."""
    from fruitlens.promotion import promote_model

    return str(promote_model(run_dir, models_home, info))
