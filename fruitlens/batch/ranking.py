"""Faithfulness of every explanation method of a run in one table, so that methods can be ranked.

Composed after the methods ran (no method reads another's files): :func:`write_faithfulness` reads each
method table of an explanation folder (``<method>.parquet``) and writes ``faithfulness.parquet``, one row per
method and variant:

- deletion_auc (mean over images; lower is more faithful), insertion_auc (mean; higher is more faithful),
- pointing_game: the share of images with an evidence mask whose heatmap peak falls inside it (null where no
  image has a mask, and for LIME, which has no single peak),
- rank: 1 = the most faithful by the mean of the method's ranks on the three scores it has (ties share a rank).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from fruitlens import tables
from fruitlens.layout import ExplainLayout

FAITHFULNESS = "faithfulness"


def faithfulness_rows(out_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per (method, variant) of the method tables in ``out_dir`` (schema ``faithfulness``)."""
    from fruitlens.registry import METHODS

    out = ExplainLayout(out_dir)
    rows = []
    for method in METHODS:
        path = out.table(method)
        if not path.is_file():
            continue
        df = tables.read_table(path)
        if df.empty or "deletion_auc" not in df.columns:
            continue
        if method == "lime":  # the top label's rows carry the AUCs (one per image)
            df = df.dropna(subset=["deletion_auc"]).drop_duplicates("image_id").assign(variant="lime")
        df = df.dropna(subset=["deletion_auc", "insertion_auc"], how="all")  # --faithfulness-steps 0: not measured
        if df.empty:
            continue
        variants = df["variant"] if "variant" in df.columns else pd.Series(method, index=df.index)
        for variant, part in df.groupby(variants.fillna(method), sort=True):
            hits = part["pointing_hit"].dropna().astype(bool) if "pointing_hit" in part.columns else pd.Series([])
            rows.append({"method": method, "variant": str(variant), "images": int(part["image_id"].nunique()),
                         "deletion_auc": float(part["deletion_auc"].mean()),
                         "insertion_auc": float(part["insertion_auc"].mean()),
                         "pointing_game": float(hits.mean()) if len(hits) else np.nan,
                         "pointed": int(len(hits))})
    frame = pd.DataFrame(rows, columns=[f.name for f in tables.FAITHFULNESS_SCHEMA if f.name != "rank"])
    if frame.empty:
        return tables.FAITHFULNESS_SCHEMA.empty_table().to_pandas()
    ranks = pd.concat([frame["deletion_auc"].rank(), frame["insertion_auc"].rank(ascending=False),
                       frame["pointing_game"].rank(ascending=False)], axis=1).mean(axis=1, skipna=True)
    frame["rank"] = ranks.rank(method="min").astype(np.int32)
    frame = frame.astype({"images": np.int32, "pointed": np.int32})
    return frame.sort_values(["rank", "method", "variant"]).reset_index(drop=True)


def write_faithfulness(out_dir: str | os.PathLike) -> Path:
    """``faithfulness.parquet`` of ``out_dir``, written atomically (schema checked)."""
    out = ExplainLayout(out_dir)
    return tables.write_table(faithfulness_rows(out_dir), out.table(FAITHFULNESS), FAITHFULNESS)
