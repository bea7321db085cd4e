"""Per-class evidence: the mean Grad-CAM heatmap of each class over its right predictions and its mistakes."""

from __future__ import annotations

from prefect import task

from tasks.cache import content_cache, run_folder_name
from tasks.keys import model_and_images


@task(name="class-evidence", cache_policy=content_cache(model_and_images), retries=1, retry_delay_seconds=1,
      persist_result=True, task_run_name=lambda: f"class-evidence-{run_folder_name()}")
def evidence_task(model: dict, index_dir: str, split: str, out_dir: str) -> str:
    """Write out_dir/class_evidence.parquet and class_evidence.png; the table's path."""
    from fruitlens.batch.evidence import evidence_run
    from fruitlens.modelio import as_model_source

    return evidence_run(as_model_source(model), index_dir, split, out_dir)
