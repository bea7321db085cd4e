"""Drift runs: the probe set of a run and the explanation drift of two models on it (the measures:
``fruitlens.explain.drift``)."""

from __future__ import annotations

import pandas as pd

from fruitlens.batch.rows import evidence_masks, rows_from_index
from fruitlens.explain.drift import drift_summary, explanation_drift, write_drift


def probe_content(rows) -> list[str]:
    """What a cache key needs of probe images: ``<image id>:<sha256>`` of each, in order."""
    return [f"{i}:{s}" for i, s in zip(rows["image_id"], rows["sha256"], strict=True)]


def probe_rows(index_dir, split: str, explain_dir, n: int) -> pd.DataFrame:
    """The probe set: the first ``n`` (by image id) of the images explained in ``explain_dir``, with their
    index rows (path, label, mask_path, sha256); every usable image of ``split`` when none was explained."""
    from pathlib import Path

    from fruitlens import tables
    from fruitlens.layout import ExplainLayout

    rows = rows_from_index(index_dir, split)
    ids: set[str] = set()
    for method in ("gradcam", "lime"):
        path = ExplainLayout(Path(explain_dir)).table(method)
        if path.is_file():
            ids |= set(tables.read_table(path)["image_id"].astype(str))
    if ids:
        rows = rows[rows["image_id"].astype(str).isin(ids)]
    return rows.sort_values("image_id", ignore_index=True).head(n)


def drift_run(old_source, new_source, rows: pd.DataFrame, out_dir) -> dict:
    """Explain ``rows`` with both models (``fruitlens.modelio.ModelSource``s), write the drift table and pictures
    into ``out_dir``; returns ``drift_summary`` plus the table's path."""
    from pathlib import Path

    from fruitlens.batch.engine import read_chunk

    old_model, old_card = old_source.load()
    new_model, card = new_source.load()
    if tuple(old_card.classes) != tuple(card.classes) or tuple(old_card.image_size) != tuple(card.image_size):
        return {"images": 0, "moved_share": 0.0, "mean_rank": None, "classes": {}, "path": ""}
    images, rows, _ = read_chunk(rows, card.image_size, card.fit)
    if not len(rows):
        return {"images": 0, "moved_share": 0.0, "mean_rank": None, "classes": {}, "path": ""}
    table, old_maps, new_maps = explanation_drift(old_model, new_model, images, rows, card.classes,
                                                  masks=evidence_masks(rows, card.image_size))
    write_drift(out_dir, table, images, old_maps, new_maps)
    return {**drift_summary(table), "path": str(Path(out_dir) / "drift.parquet")}
