"""How far to trust a LIME picture at the chosen sample count: the same images explained under two seeds.

Per image (same superpixels, same class: the predicted one), the share of the top-5 superpixels both seeds
agree on and the rank correlation of all superpixel weights. Written as the ``stability`` table
(``RUN/explain/stability.parquet``) and summed up in one line of the report.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from fruitlens.explain.sanity import TOP_K, rank_correlation, top_k_overlap

STABILITY_SCHEMA = pa.schema([
    ("image_id", pa.string()), ("path", pa.string()), ("label", pa.string()),  # label: the explained class
    ("num_samples", pa.int32()), ("seed_a", pa.int32()), ("seed_b", pa.int32()),
    ("top_k_overlap", pa.float64()), ("rank_correlation", pa.float64()),
])


def lime_stability(model, images: np.ndarray, rows: pd.DataFrame, class_names: Sequence[str], options,
                   seeds: tuple[int, int] = (0, 1)) -> pd.DataFrame:
    """The ``stability`` rows of ``images`` under LIME ``options`` (``LimeOptions``) with two seeds."""
    from fruitlens.explain.lime import explain_lime
    from fruitlens.explain.segmentation import make_segmenter

    segments = make_segmenter(options.segmenter, **options.segmenter_params).segment(images, seed=seeds[0])
    common = {"segments": segments, "num_samples": options.num_samples, "hide_color": options.fill,
              "batch_size": options.batch_size, "num_features": options.num_features,
              "feature_selection": options.feature_selection}
    a = explain_lime(model, images, seed=seeds[0], **common)
    b = explain_lime(model, images, labels=[e.labels[0] for e in a], seed=seeds[1], **common)
    overlap, rank = [], []
    for ea, eb in zip(a, b, strict=True):
        wa, wb = ea.weights[ea.labels[0]], eb.weights[ea.labels[0]]
        overlap.append(top_k_overlap(wa, wb, TOP_K))
        rank.append(float(rank_correlation(wa[None], wb[None])[0]))
    return pd.DataFrame({"image_id": list(rows["image_id"]), "path": [str(p) for p in rows["path"]],
                         "label": [class_names[e.labels[0]] for e in a], "num_samples": np.int32(options.num_samples),
                         "seed_a": np.int32(seeds[0]), "seed_b": np.int32(seeds[1]), "top_k_overlap": overlap,
                         "rank_correlation": rank})


def stability_line(table: pd.DataFrame | None) -> str:
    """One sentence on a ``stability`` table ("" when there is none)."""
    if table is None or not len(table):
        return ""
    return (f"LIME at {int(table['num_samples'].iloc[0]):,} samples, the same {len(table):,} images under two seeds: "
            f"the top-{TOP_K} superpixels agree on {table['top_k_overlap'].mean():.0%} on average (lowest "
            f"{table['top_k_overlap'].min():.0%}), rank correlation of the weights "
            f"{table['rank_correlation'].mean():.2f}.")


def stability_run(source, rows: pd.DataFrame, options, out_path) -> str:
    """Explain ``rows`` with the model ``source`` under two seeds; write the table to ``out_path``; its path."""
    from fruitlens import tables
    from fruitlens.batch.engine import read_chunk

    model, card = source.load()
    images, rows, _ = read_chunk(rows, card.image_size, card.fit)
    table = lime_stability(model, images, rows, list(card.classes), options, (options.seed, options.seed + 1)) \
        if len(rows) else pd.DataFrame(columns=STABILITY_SCHEMA.names)
    return str(tables.write_table(table, out_path, STABILITY_SCHEMA))
