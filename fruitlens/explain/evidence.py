"""Per-class evidence: where the model looks, class by class, when it is right and when it is wrong.

For every image of a split, Grad-CAM of the predicted class; per true class, the mean heatmap over its correctly
classified images and over its mistakes, and where the data has evidence masks the pointing game (the heatmap's
peak on the mask) and the evidence share (the share of heat on the mask). Written as the ``class_evidence``
table and one figure (``RUN/evidence/``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

EVIDENCE_SCHEMA = pa.schema([
    ("label", pa.string()),  # the true class
    ("group", pa.string()),  # correct | mistake
    ("images", pa.int32()),
    ("with_mask", pa.int32()),  # images with an evidence mask
    ("pointing_game", pa.float64()),  # share of heatmap peaks on the mask; null without masks
    ("evidence_share", pa.float64()),  # mean share of heat on the mask; null without masks
    # where the heat sits without masks (fruitlens.explain.shortcut): mean shares of heat and of area
    ("border_share", pa.float64()), ("border_area", pa.float64()),
    ("background_share", pa.float64()), ("background_area", pa.float64()),
])

GROUPS = ("correct", "mistake")


def evidence_figure(table: pd.DataFrame, means: dict[tuple[str, str], np.ndarray], class_names: Sequence[str]):
    """Mean Grad-CAM heatmap per class (rows) over its right predictions and its mistakes (columns)."""
    from fruitlens.plots import plt

    classes = [c for c in class_names if any((c, g) in means for g in GROUPS)]
    fig, axes = plt.subplots(len(classes), 2, figsize=(4.2, 1.9 * len(classes) + 0.6), squeeze=False)
    info = table.set_index(["label", "group"])
    for r, cls in enumerate(classes):
        for c, group in enumerate(GROUPS):
            ax = axes[r, c]
            ax.set_xticks([]), ax.set_yticks([])
            if (cls, group) in means:
                ax.imshow(means[(cls, group)], cmap="jet", vmin=0, vmax=1)
                row = info.loc[(cls, group)]
                extra = f", on mask {row['evidence_share']:.0%}" if pd.notna(row["evidence_share"]) else ""
                n = int(row["images"])
                ax.set_xlabel(f"{n} image{'s' if n != 1 else ''}{extra}", fontsize=8)
            else:
                ax.text(0.5, 0.5, "none", ha="center", va="center", fontsize=8, transform=ax.transAxes)
            if r == 0:
                ax.set_title(f"{group} predictions" if group == "correct" else "mistakes", fontsize=8)
            if c == 0:
                ax.set_ylabel(cls, fontsize=8)
    fig.suptitle("Mean Grad-CAM heatmap per true class\n(0 blue to 1 red; the share of heat on the evidence mask)",
                 fontsize=8)
    fig.tight_layout()
    return fig


def write_class_evidence(out_dir, table: pd.DataFrame, means, class_names: Sequence[str]) -> Path:
    """Write ``class_evidence.parquet`` and ``class_evidence.png`` into ``out_dir``; the table's path."""
    from fruitlens import tables
    from fruitlens.plots import save_figure

    out = Path(out_dir)
    if means:
        save_figure(evidence_figure(table, means, class_names), out / "class_evidence.png", dpi=110)
    return tables.write_table(table, out / "class_evidence.parquet", EVIDENCE_SCHEMA)


def write_shortcut(out_dir, evidence: pd.DataFrame) -> Path:
    """Write ``shortcut.parquet`` (``fruitlens.explain.shortcut``: per class, is the evidence on the border or the
    background?) from a ``class_evidence`` table into ``out_dir``; its path."""
    from fruitlens import tables
    from fruitlens.explain.shortcut import shortcut_table
    from fruitlens.layout import SHORTCUT_FILE

    return tables.write_table(shortcut_table(evidence), Path(out_dir) / SHORTCUT_FILE, "shortcut")
