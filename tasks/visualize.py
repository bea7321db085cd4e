"""Activation and filter grids for one image."""

from __future__ import annotations

from prefect import task

from tasks.cache import content_cache, run_folder_name


def _model_and_image(inputs: dict) -> dict:
    from fruitlens.digests import file_digest_cached
    from fruitlens.modelio import as_model_source

    return {"model": as_model_source(inputs["model"]).digest(), "image": file_digest_cached(inputs["image_path"])}


@task(name="visualize", cache_policy=content_cache(_model_and_image), retries=1, retry_delay_seconds=1,
      persist_result=True, task_run_name=lambda: f"visualize-{run_folder_name()}")
def visualize_task(model: dict, image_path: str, out_dir: str) -> list[str]:
    """Write activations/<layer>.png and filters/<layer>.png under ``out_dir``; their paths."""
    from fruitlens.explain.activations import visualize_run
    from fruitlens.modelio import as_model_source

    return [str(p) for p in visualize_run(as_model_source(model), image_path, out_dir)]
