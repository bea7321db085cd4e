"""Per-class evidence runs: the mean Grad-CAM heatmap per class over its right predictions and its mistakes,
with the pointing game and evidence share where masks exist and where the heat sits without them (the table,
figure and writers: ``fruitlens.explain.evidence``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from fruitlens.batch.rows import evidence_masks, rows_from_index
from fruitlens.explain.evidence import EVIDENCE_SCHEMA, GROUPS, write_class_evidence, write_shortcut


def class_evidence(model, rows: pd.DataFrame, class_names: Sequence[str], size: tuple[int, int], *,
                   fit: str = "resize", batch: int = 256, layer: str | None = None
                   ) -> tuple[pd.DataFrame, dict[tuple[str, str], np.ndarray]]:
    """The ``class_evidence`` rows of the labelled ``rows`` and the mean heatmaps {(class, group): (h, w)}."""
    from fruitlens.batch.engine import read_chunk
    from fruitlens.explain.drift import evidence_share
    from fruitlens.explain.faithfulness import pointing_game
    from fruitlens.explain.gradcam import GradCAM
    from fruitlens.explain.shortcut import SHARE_COLUMNS, heat_shares

    rows = rows[rows["label"].isin(class_names)].reset_index(drop=True)
    cam = GradCAM(model, layer)
    sums: dict[tuple[str, str], np.ndarray] = {}
    stats: dict[tuple[str, str], dict[str, list]] = {}
    for start in range(0, len(rows), batch):
        images, part, _ = read_chunk(rows.iloc[start:start + batch], size, fit)
        if not len(part):
            continue
        result = cam.explain(images)
        masks = evidence_masks(part, size)
        shares = heat_shares(result.heatmaps, images)
        for i, (label, target) in enumerate(zip(part["label"], result.targets, strict=True)):
            key = (str(label), "correct" if class_names[int(target)] == label else "mistake")
            sums[key] = sums.get(key, 0) + result.heatmaps[i]
            s = stats.setdefault(key, {"n": [], "hit": [], "share": [], **{c: [] for c in SHARE_COLUMNS}})
            s["n"].append(1)
            for c in SHARE_COLUMNS:
                s[c].append(float(shares[c][i]))
            if i in masks:
                s["hit"].append(bool(pointing_game(result.heatmaps[i:i + 1], masks[i][None])[0]))
                s["share"].append(float(evidence_share(result.heatmaps[i:i + 1], masks[i][None].astype(np.float32))[0]))
    out = []
    for label in class_names:
        for group in GROUPS:
            s = stats.get((label, group))
            if s is None:
                continue
            out.append({"label": label, "group": group, "images": len(s["n"]), "with_mask": len(s["hit"]),
                        "pointing_game": float(np.mean(s["hit"])) if s["hit"] else None,
                        "evidence_share": float(np.nanmean(s["share"])) if s["share"] else None,
                        **{c: float(np.mean(s[c])) for c in SHARE_COLUMNS}})
    means = {k: v / len(stats[k]["n"]) for k, v in sums.items()}
    return pd.DataFrame(out, columns=EVIDENCE_SCHEMA.names), means


def evidence_run(source, index_dir, split: str, out_dir) -> str:
    """Per-class evidence of the model ``source`` (a ``ModelSource``) on ``split`` of the index; the table path."""
    model, card = source.load()
    rows = rows_from_index(index_dir, split)
    table, means = class_evidence(model, rows, list(card.classes), tuple(card.image_size), fit=card.fit)
    write_shortcut(out_dir, table)
    return str(write_class_evidence(out_dir, table, means, list(card.classes)))
