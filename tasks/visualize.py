"""Activation and filter grids for one image."""

from __future__ import annotations

from prefect import task

from tasks.cache import content_cache, run_name


@task(name="visualize", cache_policy=content_cache("fruitlens.explain.activations", "fruitlens.explain.filters"),
      retries=1, retry_delay_seconds=1, persist_result=True, task_run_name=run_name("visualize", "run_dir"))
def visualize_task(run_dir: str, image_path: str, out_dir: str, model_digest: str, image_sha256: str) -> list[str]:
    """Write activations/<layer>.png and filters/<layer>.png under ``out_dir``; their paths."""
    from fruitlens.explain.activations import visualize_run

    return [str(p) for p in visualize_run(run_dir, image_path, out_dir)]
