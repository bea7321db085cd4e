"""Cache contents shared by several tasks (kept out of ``tasks.cache``, which every task imports: the code digest
follows imports, and only the tasks that read a model and an index should depend on these modules)."""

from __future__ import annotations

from pathlib import Path


def model_and_images(inputs: dict) -> dict:
    """Cache content of a step that reads a model and a run's index: the model's digest and the images table's."""
    from fruitlens.digests import file_digest_cached
    from fruitlens.layout import RunLayout
    from fruitlens.modelio import as_model_source

    images = Path(inputs["index_dir"]) / RunLayout(".").images_table.name
    return {"model": as_model_source(inputs["model"]).digest(), "images": file_digest_cached(images)}
