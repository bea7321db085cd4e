"""The nightly's sanity check: the randomisation test (``fruitlens.explain.sanity``) of the run's own methods
on a small probe set, written where ``fruitlens sanity --out RUN/sanity`` writes it, so the report shows it.

Every method of the run is checked (Grad-CAM under its variant's name), each built from the run's own options
by its ``from_options`` (``fruitlens.registry``): LIME adaptive as in ``lime.parquet``, on the superpixels the
run's explain makes (each photo segmented at its working size, :func:`sanity_segments`), Grad-CAM at its layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd


def sanity_methods(methods: Sequence[str], options) -> tuple[str, ...]:
    """The randomisation-test names of the run's ``methods`` (Grad-CAM: its variant, from ``ExplainOptions``)."""
    return tuple(options.gradcam.variant if m == "gradcam" else m for m in methods)


def sanity_segments(images, rows: pd.DataFrame, card, lime_options) -> np.ndarray:
    """(N, H, W) int superpixels of ``images`` exactly as the run's explain makes them with ``lime_options``
    (``fruitlens.batch.methods.lime_segments``: each photo file segmented at its working size, mapped to the
    model's input; seeded by image id)."""
    from fruitlens.batch.methods import lime_segments
    from fruitlens.explain.segmentation import make_segmenter

    segmenter = make_segmenter(lime_options.segmenter, **lime_options.segmenter_params)
    return np.stack([s.coarse for s in lime_segments(images, rows, card, segmenter, lime_options.seed)])


def sanity_run(source, rows: pd.DataFrame, methods: Sequence[str], options, out_dir, seed: int = 0) -> str:
    """The randomisation test of ``methods`` (sanity names) on ``rows`` with the model ``source`` and the run's
    ``options`` (``ExplainOptions``); writes ``out_dir`` (``SanityLayout``); the verdicts file's path."""
    from fruitlens.batch.engine import read_chunk
    from fruitlens.explain import sanity
    from fruitlens.layout import SanityLayout

    model, card = source.load()
    images, rows, _ = read_chunk(rows, card.image_size, card.fit)
    if not len(rows):
        raise ValueError(f"sanity probe of {len(rows)} readable images: expected at least 1")
    segments = sanity_segments(images, rows, card, options.lime) if "lime" in methods else None
    result = sanity.run_sanity(model, images, methods=list(methods), options=options, seed=seed,
                               lime_segments=segments)
    sanity.write_sanity(result, images, rows, out_dir, class_names=list(card.classes), seed=seed)
    return str(SanityLayout(Path(out_dir)).verdicts)


def discard_sanity(out_dir) -> list[str]:
    """Remove a sanity folder's three files (not the folder, nothing else); the paths removed.

    A nightly that does not run the check this time must not report an earlier night's verdicts, made with
    another model, as this model's.
    """
    from fruitlens.layout import SanityLayout

    removed = []
    for path in SanityLayout(Path(out_dir)).files:
        if path.is_file():
            path.unlink()
            removed.append(str(path))
    return removed


def read_verdicts(out_dir) -> dict[str, bool]:
    """{method: passed} from a sanity folder's verdicts.json; {} when there is none."""
    from fruitlens import tables
    from fruitlens.layout import SanityLayout

    path = SanityLayout(Path(out_dir)).verdicts
    if not path.is_file():
        return {}
    return {str(v["method"]): bool(v["passed"]) for v in tables.read_json(path).get("verdicts", [])}


def verdict_words(verdicts: Mapping[str, bool]) -> str:
    """``Grad-CAM passes, LIME FAILS`` ("" without verdicts)."""
    from fruitlens.sanity_names import method_title

    return ", ".join(f"{method_title(m)} {'passes' if ok else 'FAILS'}" for m, ok in verdicts.items())
