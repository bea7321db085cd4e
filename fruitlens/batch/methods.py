"""The explanation methods of batch runs: each turns one chunk of images into table rows and PNGs.

The methods themselves are ``fruitlens.registry.METHODS``; their rows come in two shapes (the spec's
``table``), each written by one function of the same signature (:data:`RUNNERS`)::

    run(method, model, card, images, rows, options, out) -> (pd.DataFrame, Drawing)

``images`` is (N, H, W, 3) float32 in [0, 1] at the model's input size; ``rows`` has image_id, path,
label (None when unknown), mask_path and sha256; ``options`` is the method's options dataclass
(``fruitlens.config``); PNGs go under ``out`` (an ``ExplainLayout``). The returned rows follow the method's
table schema (``fruitlens.tables.SCHEMAS``) and name the PNGs that the returned ``Drawing`` writes when it is
called: the model's work and the pictures are separate, so that the engine can draw one chunk in another
process while the model works on the next (a Drawing pickles: a ``functools.partial`` of a function of
``fruitlens.batch.pictures``). A method reads no other method's files: pictures that combine methods are
composed afterwards (``pictures.write_side_by_side``).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable

import numpy as np
import pandas as pd

from fruitlens import tables
from fruitlens.batch import pictures
from fruitlens.batch.rows import evidence_masks
from fruitlens.layout import ExplainLayout
from fruitlens.lime_options import LimeOptions
from fruitlens.method_options import HeatmapOptions
from fruitlens.registry import METHODS, title, variant_of

Drawing = Callable[[], object]  # writes one method's PNGs of one chunk (picklable)


def image_seed(seed: int, image_id: str) -> tuple[int, int]:
    """The seed of one image in batch runs: (seed, 64-bit hash of its image id), independent of chunking."""
    return int(seed), int.from_bytes(hashlib.sha1(str(image_id).encode()).digest()[:8], "big")


def _base_columns(rows: pd.DataFrame) -> dict[str, list]:
    return {"image_id": list(rows["image_id"]), "path": list(rows["path"]), "true_label": list(rows["label"])}


# ------------------------------------------------------------------------------------ LIME


def _lime_faithfulness(model, images: np.ndarray, results, options: LimeOptions, ids: list[str]) -> np.ndarray:
    """(N, 2) deletion and insertion AUCs of each image's top-label superpixel weights (NaN when off)."""
    if options.faithfulness_steps < 1 or not results:
        return np.full((len(results), 2), np.nan)
    from fruitlens.explain.faithfulness import deletion_insertion, saliency_from_superpixels

    top = np.array([res.labels[0] for res in results])
    saliency = saliency_from_superpixels(np.stack([res.segments for res in results]),
                                         [res.weights[label] for res, label in zip(results, top, strict=True)])
    curves = deletion_insertion(model, images, saliency, top, steps=options.faithfulness_steps,
                                seed=[image_seed(options.seed, i) for i in ids])
    return np.stack([curves.deletion_auc, curves.insertion_auc], axis=1)


def run_lime(method: str, model, card, images: np.ndarray, rows: pd.DataFrame, options: LimeOptions,
             out: ExplainLayout) -> tuple[pd.DataFrame, Drawing]:
    """LIME rows (one per explained label and superpixel) of one chunk, and the drawing of its pictures.

    Beyond the ``lime`` schema the rows carry label_index, rank, pixels, selected, segments_path,
    picture_path, ``evidence`` (share of the superpixel inside the evidence mask; NaN without one) and
    deletion_auc / insertion_auc (on the top label's rows; NaN on the others).
    """
    from fruitlens.explain.segmentation import make_segmenter

    ids = [str(i) for i in rows["image_id"]]
    segmenter = make_segmenter(options.segmenter, **options.segmenter_params)
    at_photo = lime_segments(images, rows, card, segmenter, options.seed)
    results = METHODS[method].build(model, options).explain(
        images, segments=np.stack([s.coarse for s in at_photo]), seeds=[image_seed(options.seed, i) for i in ids])
    faith = _lime_faithfulness(model, images, results, options, ids)
    masks = evidence_masks(rows, card.image_size)
    files = pictures.lime_files(out, rows, options)
    frames = []
    for i, res in enumerate(results):
        df = res.to_rows(ids[i], card.classes, path=rows["path"].iloc[i], true_label=rows["label"].iloc[i])
        df["segmenter"] = f"{segmenter.name}@{at_photo[i].fine.shape[1]}x{at_photo[i].fine.shape[0]}"
        df["segments_path"] = files[i]["segments"]
        df["picture_path"] = files[i].get("outline")
        is_top = (df["label_index"] == res.labels[0]).to_numpy()
        df["deletion_auc"] = np.where(is_top, faith[i, 0], np.nan)
        df["insertion_auc"] = np.where(is_top, faith[i, 1], np.nan)
        if i in masks:
            s = res.num_superpixels
            inside = np.bincount(res.segments.ravel(), weights=masks[i].ravel(), minlength=s)
            share = inside / df["pixels"].to_numpy()[:s]
            df["evidence"] = np.tile(share, len(res.labels))
        else:
            df["evidence"] = np.nan
        frames.append(df)
    frame = pd.concat(frames, ignore_index=True) if frames else tables.LIME_SCHEMA.empty_table().to_pandas()
    return frame, functools.partial(pictures.write_lime, out, rows, images, results, card, options,
                                    fine=[s.fine for s in at_photo])


def lime_segments(images: np.ndarray, rows: pd.DataFrame, card, segmenter, seed: int) -> list:
    """LIME's superpixels of each image, segmented on its photo at the working size
    (``segmentation.photo_segments``); an image whose file cannot be read again is segmented as the model sees it."""
    from fruitlens.explain.segmentation import PhotoSegments, photo_segments
    from fruitlens.images import read_rgb

    out = []
    for image, path, image_id in zip(images, rows["path"], rows["image_id"], strict=True):
        s = int(np.random.SeedSequence(image_seed(seed, str(image_id))).generate_state(1)[0])
        try:
            photo = read_rgb(path)
        except (OSError, ValueError):
            seg = segmenter.segment(image, s)
            out.append(PhotoSegments(coarse=seg, fine=seg))
            continue
        out.append(photo_segments(photo, card.image_size, segmenter, fit=getattr(card, "fit", "resize"), seed=s))
    return out


# ------------------------------------------------------------------------------------ heatmap methods


def run_heatmap(method: str, model, card, images: np.ndarray, rows: pd.DataFrame, options: HeatmapOptions,
                out: ExplainLayout) -> tuple[pd.DataFrame, Drawing]:
    """Rows of a heatmap method (Grad-CAM and its variants, gradients, perturbations), one per image, of one
    chunk, and the drawing of its pictures (under ``<method>/``).

    Columns: image_id, path, label (explained class), layer (``input`` for pixel methods), heatmap_path,
    overlay_path, peak_y, peak_x (at the model's input size), deletion_auc, insertion_auc, true_label,
    target_prob, method, variant, pointing_hit (None without a mask), passes (model passes per image) and
    convergence (the adaptive methods' stopping statistic; both null where a method does not report them).
    """
    from fruitlens.explain.faithfulness import deletion_insertion, pointing_game

    result = METHODS[method].build(model, options).explain(images)
    faith = deletion_insertion(model, images, result.heatmaps, result.targets, steps=max(options.faithfulness_steps, 1),
                               baseline=options.baseline, batch_size=options.batch_size,
                               seed=[image_seed(options.seed, i) for i in rows["image_id"]])
    masks = evidence_masks(rows, card.image_size)
    hits: list = [None] * len(rows)
    if masks:
        where = sorted(masks)
        for i, hit in zip(where, pointing_game(result.heatmaps[where], np.stack([masks[i] for i in where])),
                          strict=True):
            hits[i] = bool(hit)
    variant = variant_of(method, options)
    files = pictures.cam_files(out, rows, method)
    draw = functools.partial(pictures.write_cam, out, rows, images, result, card, options, faith.deletion[:, 0],
                             method=method, title=title(variant))
    peaks = result.peaks
    off = options.faithfulness_steps < 1
    return pd.DataFrame({
        **_base_columns(rows),
        "label": [card.classes[t] for t in result.targets], "layer": result.layer,
        "heatmap_path": [f["heatmap"] for f in files], "overlay_path": [f["overlay"] for f in files],
        "peak_y": peaks[:, 0].astype(np.int32), "peak_x": peaks[:, 1].astype(np.int32),
        "deletion_auc": np.full(len(rows), np.nan) if off else faith.deletion_auc.astype(float),
        "insertion_auc": np.full(len(rows), np.nan) if off else faith.insertion_auc.astype(float),
        "target_prob": faith.deletion[:, 0].astype(float), "method": method, "variant": variant,
        "pointing_hit": hits,
        "passes": _per_image(result.passes, len(rows), "Int32"),
        "convergence": _per_image(result.convergence, len(rows), "Float64"),
    }), draw


def _per_image(values, n: int, dtype: str) -> pd.Series:
    """A per-image column of a result (nullable: all null where the method does not report it)."""
    return pd.Series([None] * n if values is None else np.asarray(values).tolist(), dtype=dtype)


def _explainer_code() -> None:
    """Never called: the modules of the registry's explainers (``MethodSpec.explainer``, loaded by name), imported
    here so that the code digest of batch runs, which follows imports, covers them (and a config change, which
    imports the registry, does not reach them). ``tests/test_layers.py`` keeps it equal to the registry."""
    from fruitlens.explain import amortised, gradcam, gradients, lime, perturbation  # noqa: F401


#: the function that writes each kind of rows (a ``MethodSpec.table``)
RUNNERS: dict[str, Callable[..., tuple[pd.DataFrame, Drawing]]] = {"lime": run_lime, "gradcam": run_heatmap}


def run_method(method: str, model, card, images: np.ndarray, rows: pd.DataFrame, options,
               out: ExplainLayout) -> tuple[pd.DataFrame, Drawing]:
    """The rows and the drawing of ``method`` (a name in ``fruitlens.registry.METHODS``) on one chunk."""
    return RUNNERS[METHODS[method].table](method, model, card, images, rows, options, out)
