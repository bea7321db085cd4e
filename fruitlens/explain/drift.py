"""Explanation drift between two models: does the new model look at the same evidence as the current one?

On a fixed probe set, both models explain each image for their own predicted class with Grad-CAM. Per image:

- ``heatmap_rank``: Spearman rank correlation of the two heatmaps;
- ``top_superpixel_agreement``: overlap of the 5 SLIC superpixels with the most Grad-CAM mass in each;
- ``old_evidence_share`` / ``new_evidence_share``: share of each heatmap's mass inside the evidence mask
  (where the data has masks), and their change;
- ``prediction_changed``.

An image's evidence *moved* when the rank correlation falls below :data:`DRIFT_RANK` or the evidence share
changes by :data:`DRIFT_SHARE` or more: the thresholds live here and nowhere else. Promotion can be held back
when too many probe images moved (``PipelineConfig.max_drift``, off by default; ``fruitlens.promotion``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from fruitlens.explain.sanity import rank_correlation, top_k_overlap

DRIFT_RANK = 0.5  # below: the two heatmaps rank the pixels differently
DRIFT_SHARE = 0.3  # at least: the share of evidence inside the mask changed this much
TOP_SUPERPIXELS = 5
N_SUPERPIXELS = 30

DRIFT_SCHEMA = pa.schema([
    ("image_id", pa.string()), ("path", pa.string()), ("label", pa.string()),
    ("old_pred", pa.string()), ("new_pred", pa.string()), ("prediction_changed", pa.bool_()),
    ("heatmap_rank", pa.float64()), ("top_superpixel_agreement", pa.float64()),
    ("old_evidence_share", pa.float64()), ("new_evidence_share", pa.float64()),
    ("evidence_share_change", pa.float64()), ("moved", pa.bool_()),
])


def evidence_share(heatmaps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(N,) share of each heatmap's mass inside its mask (NaN for an all-zero heatmap)."""
    total = heatmaps.sum(axis=(1, 2))
    inside = (heatmaps * masks).sum(axis=(1, 2))
    return np.divide(inside, total, out=np.full(len(total), np.nan), where=total > 0)


def superpixel_mass(heatmaps: np.ndarray, segments: np.ndarray) -> list[np.ndarray]:
    """Mean heat per superpixel of each image: a list of (S_i,) arrays."""
    return [np.bincount(s.ravel(), weights=h.ravel()) / np.maximum(np.bincount(s.ravel()), 1)
            for h, s in zip(heatmaps, segments, strict=True)]


def explanation_drift(old_model, new_model, images: np.ndarray, rows: pd.DataFrame, class_names: Sequence[str],
                      *, masks: dict[int, np.ndarray] | None = None, layer: str | None = None, seed: int = 0
                      ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The drift table of ``images`` (one row per image, DRIFT_SCHEMA) and both models' heatmaps (N, H, W).

    Args:
        old_model, new_model: Keras models taking (N, H, W, 3) in [0, 1] with the same classes.
        images: (N, H, W, 3) float in [0, 1] at the models' input size.
        rows: image_id, path and label (None when unknown) of each image.
        class_names: the models' classes in output order.
        masks: {position: (H, W) bool evidence mask} for the images that have one.
        layer: Grad-CAM's layer (None: each model's last conv layer).
        seed: the superpixels' seed.
    """
    from fruitlens.explain.gradcam import GradCAM
    from fruitlens.explain.segmentation import make_segmenter

    old = GradCAM(old_model, layer).explain(images)
    new = GradCAM(new_model, layer).explain(images)
    segments = make_segmenter("slic", n_superpixels=N_SUPERPIXELS).segment(images, seed=seed)
    old_sp, new_sp = superpixel_mass(old.heatmaps, segments), superpixel_mass(new.heatmaps, segments)
    n = len(images)
    old_share, new_share = np.full(n, np.nan), np.full(n, np.nan)
    if masks:
        pos = sorted(masks)
        m = np.stack([masks[i] for i in pos]).astype(np.float32)
        old_share[pos] = evidence_share(old.heatmaps[pos], m)
        new_share[pos] = evidence_share(new.heatmaps[pos], m)
    rank = rank_correlation(old.heatmaps, new.heatmaps)
    change = new_share - old_share
    moved = (rank < DRIFT_RANK) | (np.nan_to_num(np.abs(change)) >= DRIFT_SHARE)
    table = pd.DataFrame({
        "image_id": list(rows["image_id"]), "path": [str(p) for p in rows["path"]], "label": list(rows["label"]),
        "old_pred": [class_names[t] for t in old.targets], "new_pred": [class_names[t] for t in new.targets],
        "prediction_changed": old.targets != new.targets, "heatmap_rank": rank,
        "top_superpixel_agreement": [top_k_overlap(a, b, TOP_SUPERPIXELS) for a, b in zip(old_sp, new_sp, strict=True)],
        "old_evidence_share": old_share, "new_evidence_share": new_share, "evidence_share_change": change,
        "moved": moved})
    return table, old.heatmaps, new.heatmaps


def drift_summary(table: pd.DataFrame) -> dict:
    """Headline numbers of a drift table: images, moved share, mean rank correlation, classes whose evidence
    moved most ({class: moved share}, by the image's label, or the old prediction where unlabelled)."""
    if table is None or not len(table):
        return {"images": 0, "moved_share": 0.0, "mean_rank": None, "classes": {}}
    cls = table["label"].where(table["label"].notna(), table["old_pred"])
    per_class = table.groupby(cls)["moved"].mean().sort_values(ascending=False)
    return {"images": int(len(table)), "moved_share": float(table["moved"].mean()),
            "mean_rank": float(table["heatmap_rank"].mean()),
            "predictions_changed": int(table["prediction_changed"].sum()),
            "classes": {str(k): float(v) for k, v in per_class.items() if v > 0}}


def write_drift(out_dir, table: pd.DataFrame, images: np.ndarray, old_maps: np.ndarray, new_maps: np.ndarray,
                *, top: int = 4) -> pd.DataFrame:
    """Write ``drift.parquet`` and, for the ``top`` images whose evidence moved most, a picture old vs new
    (``pictures/<stem>.png``: photo, current model's Grad-CAM, new model's); returns the table with
    ``picture_path`` (relative to ``out_dir``)."""
    from pathlib import Path

    from fruitlens import plots, tables
    from fruitlens.layout import picture_stem
    from fruitlens.overlays import heat_on_photo, with_colorbar

    out = Path(out_dir)
    order = np.argsort(table["heatmap_rank"].to_numpy(), kind="stable")[:top]
    pictures = [None] * len(table)
    for i in order:
        r = table.iloc[i]
        stem = picture_stem(r["path"], r["image_id"])
        panels = [("photo", images[i]),
                  (f"current: {r['old_pred']}", heat_on_photo(images[i], old_maps[i])),
                  (f"new: {r['new_pred']}", heat_on_photo(images[i], new_maps[i]))]
        path = out / "pictures" / f"{stem}.png"
        picture = with_colorbar(plots.side_by_side(panels, height=160), "jet", ("Grad-CAM low", "high"))
        plots.save_png(picture, path,
                       f"{Path(str(r['path'])).name}: Grad-CAM of the current and the new model, rank correlation "
                       f"{r['heatmap_rank']:.2f}")
        pictures[i] = path.relative_to(out).as_posix()
    table = table.assign(picture_path=pictures)
    tables.write_table(table, out / "drift.parquet", DRIFT_SCHEMA)
    return table
