"""Drift runs: the explanation drift of two models on a run's probe set (the probe rows: ``fruitlens.batch.rows``;
the measures: ``fruitlens.explain.drift``)."""

from __future__ import annotations

import pandas as pd

from fruitlens.batch.rows import evidence_masks
from fruitlens.explain.drift import drift_summary, explanation_drift, write_drift


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
