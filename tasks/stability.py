"""LIME stability: a sample of the explained images explained again under two seeds."""

from __future__ import annotations

from prefect import task

from tasks.cache import content_cache, run_folder_name


def _model_and_probe(inputs: dict) -> dict:
    from fruitlens.batch.rows import probe_content, probe_rows
    from fruitlens.modelio import as_model_source

    rows = probe_rows(inputs["index_dir"], inputs["split"], inputs["explain_dir"], inputs["images"])
    return {"model": as_model_source(inputs["model"]).digest(),
            "probe": probe_content(rows)}


@task(name="lime-stability", cache_policy=content_cache(_model_and_probe), retries=1, retry_delay_seconds=1,
      persist_result=True, task_run_name=lambda: f"lime-stability-{run_folder_name('explain_dir')}")
def stability_task(model: dict, index_dir: str, explain_dir: str, split: str, images: int, lime: dict,
                   out_path: str) -> str:
    """Write the stability table of the first ``images`` explained images to ``out_path``; its path."""
    from fruitlens.batch.rows import probe_rows
    from fruitlens.batch.stability import stability_run
    from fruitlens.lime_options import LimeOptions
    from fruitlens.modelio import as_model_source
    from fruitlens.typed import build

    rows = probe_rows(index_dir, split, explain_dir, images)
    return stability_run(as_model_source(model), rows, build(LimeOptions, lime), out_path)
