"""How far to trust a LIME picture at the run's options: the same images explained under two seeds.

The explainer is the run's own (``LimeExplainer.from_options`` with the run's ``LimeOptions``: adaptive,
design, control variate and all) and the superpixels are the batch run's (``batch.methods.lime_segments``: the
photo segmented at its working size, mapped to the model's input), so the first seed's explanation of an image
is the one in ``lime.parquet`` (the same image seed, the same superpixels). The second seed keeps those
superpixels and the class (the first seed's top one) and draws other rows. Per image: the share of the top-5
superpixels both seeds agree on, the rank correlation of all superpixel weights, and the rows each seed used.
Written as the ``stability`` table (``RUN/explain/stability.parquet``) and summed up in one line of the report,
which says which options it measured.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from fruitlens.explain.sanity import TOP_K, rank_correlation, top_k_overlap

STABILITY_SCHEMA = pa.schema([
    ("image_id", pa.string()), ("path", pa.string()), ("label", pa.string()),  # label: the explained class
    ("num_samples", pa.int32()),  # the options' budget (the most rows per image when adaptive)
    ("seed_a", pa.int32()), ("seed_b", pa.int32()),  # the options' seed and the second one
    ("samples_a", pa.int32()), ("samples_b", pa.int32()),  # rows each seed used (below the budget when adaptive)
    ("top_k_overlap", pa.float64()), ("rank_correlation", pa.float64()),
    ("options", pa.string()),  # the LIME options measured, in words (LimeOptions.describe)
])


def explain_twice(model, images: np.ndarray, rows: pd.DataFrame, card, options,
                  seeds: tuple[int, int]) -> tuple[list, list]:
    """LIME explanations of ``images`` under ``seeds[0]`` (as ``lime.parquet``'s, when it is the options' seed)
    and ``seeds[1]`` (the first's top class, the same superpixels); image i is seeded by its image id."""
    from fruitlens.batch.methods import image_seed, lime_segments
    from fruitlens.explain.segmentation import make_segmenter
    from fruitlens.registry import METHODS

    ids = [str(i) for i in rows["image_id"]]
    explainer = METHODS["lime"].build(model, options)
    seeds_a, seeds_b = ([image_seed(s, i) for i in ids] for s in seeds)
    segmenter = make_segmenter(options.segmenter, **options.segmenter_params)
    segments = np.stack([s.coarse for s in lime_segments(images, rows, card, segmenter, options.seed)])
    a = explainer.explain(images, seeds=seeds_a, segments=segments)
    b = explainer.explain(images, [e.labels[0] for e in a], seeds=seeds_b, segments=segments)
    return a, b


def lime_stability(model, images: np.ndarray, rows: pd.DataFrame, card, options,
                   seeds: tuple[int, int] | None = None) -> pd.DataFrame:
    """The ``stability`` rows of ``images`` (read from ``rows``' files at the input size and fit of ``card``,
    a ``ModelCard``) under the LIME ``options`` (``LimeOptions``) with two seeds (default: the options' seed and
    the next one), segmented as the batch run segments them."""
    seeds = (options.seed, options.seed + 1) if seeds is None else seeds
    ids = [str(i) for i in rows["image_id"]]
    a, b = explain_twice(model, images, rows, card, options, seeds)
    class_names = list(card.classes)
    overlap, rank = [], []
    for ea, eb in zip(a, b, strict=True):
        wa, wb = ea.weights[ea.labels[0]], eb.weights[ea.labels[0]]
        overlap.append(top_k_overlap(wa, wb, TOP_K))
        rank.append(float(rank_correlation(wa[None], wb[None])[0]))
    return pd.DataFrame({"image_id": ids, "path": [str(p) for p in rows["path"]],
                         "label": [class_names[e.labels[0]] for e in a], "num_samples": np.int32(options.num_samples),
                         "seed_a": np.int32(seeds[0]), "seed_b": np.int32(seeds[1]),
                         "samples_a": np.array([e.num_samples for e in a], np.int32),
                         "samples_b": np.array([e.num_samples for e in b], np.int32),
                         "top_k_overlap": overlap, "rank_correlation": rank, "options": options.describe()})


def stability_line(table: pd.DataFrame | None) -> str:
    """One sentence on a ``stability`` table ("" when there is none): which options, how many rows, how close."""
    if table is None or not len(table):
        return ""
    if "options" in table.columns:
        used = pd.concat([table["samples_a"], table["samples_b"]])
        how = (f"LIME with the run's options ({table['options'].iloc[0]}: {used.mean():,.0f} samples per image "
               "on average)")
    else:  # a table written before the options were recorded
        how = f"LIME at {int(table['num_samples'].iloc[0]):,} samples"
    return (f"{how}, the same {len(table):,} images under two seeds: "
            f"the top-{TOP_K} superpixels agree on {table['top_k_overlap'].mean():.0%} on average (lowest "
            f"{table['top_k_overlap'].min():.0%}), rank correlation of the weights "
            f"{table['rank_correlation'].mean():.2f}.")


def stability_run(source, rows: pd.DataFrame, options, out_path) -> str:
    """Explain ``rows`` with the model ``source`` under two seeds; write the table to ``out_path``; its path."""
    from fruitlens import tables
    from fruitlens.batch.engine import read_chunk

    model, card = source.load()
    images, rows, _ = read_chunk(rows, card.image_size, card.fit)
    table = lime_stability(model, images, rows, card, options) \
        if len(rows) else STABILITY_SCHEMA.empty_table().to_pandas()
    return str(tables.write_table(table, out_path, STABILITY_SCHEMA))
