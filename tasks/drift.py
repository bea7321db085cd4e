"""Explanation drift: the new and the current model explain the same probe images; did the evidence move?"""

from __future__ import annotations

from prefect import task

from tasks.cache import content_cache, run_folder_name


def _models_and_probe(inputs: dict) -> dict:
    from fruitlens.batch.rows import probe_content, probe_rows
    from fruitlens.modelio import as_model_source

    rows = probe_rows(inputs["index_dir"], inputs["split"], inputs["explain_dir"], inputs["probe"])
    return {"old": as_model_source(inputs["old_model"]).digest(), "new": as_model_source(inputs["new_model"]).digest(),
            "probe": probe_content(rows)}


@task(name="explanation-drift", cache_policy=content_cache(_models_and_probe), retries=1, retry_delay_seconds=1,
      persist_result=True, task_run_name=lambda: f"drift-{run_folder_name()}")
def drift_task(old_model: dict, new_model: dict, index_dir: str, explain_dir: str, split: str, probe: int,
               out_dir: str) -> dict:
    """Write out_dir/drift.parquet and the pictures of the images whose evidence moved most; the summary."""
    from fruitlens.batch.drift import drift_run
    from fruitlens.batch.rows import probe_rows
    from fruitlens.modelio import as_model_source

    rows = probe_rows(index_dir, split, explain_dir, probe)
    return drift_run(as_model_source(old_model), as_model_source(new_model), rows, out_dir)
