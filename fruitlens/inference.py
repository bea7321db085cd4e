"""Prediction and evaluation of a trained run: the `predictions` table, metrics, confusion matrix, galleries.

Images are read with the same conversion as training (:func:`fruitlens.inputs.decode_images`, i.e.
``read_rgb``): any size and mode in, (N, H, W, 3) [0, 1] at the card's size to the model.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fruitlens import metrics, tables

if TYPE_CHECKING:
    from fruitlens.modelio import ModelSource

log = logging.getLogger(__name__)

DEFAULT_TOP_K = 5


def predict_probs(model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """(N, H, W, 3) float32 [0, 1] -> (N, C) class probabilities (the model called directly, batched)."""
    from fruitlens.runs import predict_batches

    return predict_batches(model, images, batch_size)


def top_k(probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most probable classes per row, best first: (N, k) int indices and (N, k) probabilities."""
    k = max(1, min(k, probs.shape[1]))
    part = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(probs, part, axis=1), axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1)
    return idx, np.take_along_axis(probs, idx, axis=1)


def predictions_table(rows: pd.DataFrame, probs: np.ndarray, classes: Sequence[str], k: int = DEFAULT_TOP_K
                      ) -> pd.DataFrame:
    """The `predictions` table for ``rows`` (image_id, path, label) and their (N, C) probs.

    ``path`` is written absolute (``abs_path`` when the rows have it, as an index's rows do); an unknown
    label (None or "") is null, and so is ``correct``.
    """
    names = np.asarray(classes, dtype=object)
    idx, p = top_k(probs, k)
    labels = rows["label"].fillna("").astype(str).to_numpy()
    known = labels != ""
    pred = names[idx[:, 0]] if len(idx) else np.array([], dtype=object)
    paths = rows["abs_path"] if "abs_path" in rows else rows["path"]
    return pd.DataFrame({
        "image_id": rows["image_id"].to_numpy(),
        "path": [str(Path(p).expanduser().resolve()) for p in paths],
        "label": pd.Series(np.where(known, labels, None), dtype=object).to_numpy(),
        "pred_label": pred,
        "pred_prob": p[:, 0].astype(np.float32) if len(p) else np.array([], np.float32),
        "topk_labels": [list(r) for r in names[idx]],
        "topk_probs": [list(r) for r in p.astype(np.float32)],
        "correct": pd.Series([bool(c) if k else None for c, k in zip(labels == pred, known, strict=True)],
                             dtype=object).to_numpy(),
    })


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str],
                           probs: np.ndarray | None = None, k: int = DEFAULT_TOP_K) -> dict[str, Any]:
    """The metrics of metrics.json for class indices ``y_true``, ``y_pred`` (N,) into ``classes``.

    accuracy, num_images, per_class, macro, weighted and classes_absent as defined in
    :func:`fruitlens.metrics.classification_summary` (averages over the classes that occur), plus
    ``top<k>_accuracy`` when ``probs`` (N, C) has more than ``k`` classes.
    """
    names = np.asarray([str(c) for c in classes], dtype=object)
    frame = pd.DataFrame({"label": names[np.asarray(y_true, dtype=np.int64)],
                          "pred_label": names[np.asarray(y_pred, dtype=np.int64)]})
    summary = metrics.classification_summary(frame, list(names))
    out: dict[str, Any] = {"accuracy": summary.pop("accuracy"), "num_images": summary.pop("num_images")}
    if probs is not None and len(y_true) and probs.shape[1] > k:
        idx, _ = top_k(probs, k)
        out[f"top{k}_accuracy"] = float((idx == np.asarray(y_true)[:, None]).any(axis=1).mean())
    return out | summary


def confusion_long(conf: pd.DataFrame) -> pd.DataFrame:
    """A confusion matrix (rows true, columns predicted) as a long table (label, pred_label, count)."""
    names = np.asarray(conf.index, dtype=object)
    ii, jj = np.meshgrid(np.arange(len(names)), np.arange(len(names)), indexing="ij")
    return pd.DataFrame({"label": names[ii.ravel()], "pred_label": names[jj.ravel()],
                         "count": conf.to_numpy().ravel().astype(np.int64)})


def _rows_for(data_dir: str | os.PathLike, run_dir: Path, split: str) -> pd.DataFrame:
    from fruitlens.dataset import SPLITS, index_dataset

    if split not in (*SPLITS, "all"):
        raise ValueError(f"split {split!r}: expected one of {', '.join(SPLITS)} or all")
    previous = None
    meta_path = run_dir / "index" / "index.json"
    if meta_path.is_file():
        try:
            if tables.read_json(meta_path)["root"] == str(Path(data_dir).expanduser().resolve()):
                previous = tables.read_table(run_dir / "index" / "images.parquet")
        except (OSError, KeyError, ValueError) as exc:
            log.warning("ignoring the run's index: %s", exc)
    index = index_dataset(data_dir, previous=previous)
    rows = index.paths(None if split == "all" else split)
    if len(rows) == 0:
        found = sorted(set(index.usable["split"]))
        how = ("class folders without split folders: its test split is a seeded holdout of each class"
               if index.layout == "classes" else "split folders")
        raise ValueError(f"{data_dir}: no usable image in split {split!r}; splits found: {', '.join(found) or 'none'} "
                         f"(read as {how}); pass --split all to evaluate every image, e.g. with a model that was "
                         "not trained on this folder")
    return rows.reset_index(drop=True)


def evaluate_run(run_dir, data_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                 split: str = "test", top_k_count: int = DEFAULT_TOP_K, batch_size: int = 256,
                 max_mistakes: int = 20, tta: str = "none") -> dict[str, Any]:
    """Predict one split of ``data_dir`` with a model and write the evaluation into ``out_dir``.

    ``tta``: ``none`` or ``flip`` (test-time augmentation: the mean of the image's and its mirror's
    probabilities; :func:`fruitlens.recipes.tta_probs`), recorded in metrics.json.

    ``run_dir``: a run folder, a model file, or a ``fruitlens.modelio.ModelSource``.

    Writes predictions.parquet (the `predictions` table), metrics.json (see :func:`classification_metrics`,
    plus the split, the dataset and images whose label is not one of the model's classes), confusion.parquet
    (label, pred_label, count), confusion.png and mistakes.png (the most confident wrong predictions).

    Returns:
        The metrics dict (with ``accuracy``).

    Raises:
        RunError: the run folder has no model/card. ValueError: unknown split or no image in it.
    """
    from fruitlens.inputs import decode_images
    from fruitlens.modelio import as_model_source
    from fruitlens.plots import plot_confusion, plot_gallery
    from fruitlens.recipes import check_tta, tta_probs

    check_tta(tta)
    source = as_model_source(run_dir)
    run, out = Path(source.spec), Path(out_dir)
    model, card = source.load()
    rows = _rows_for(data_dir, run, split)
    images_u8, errors = decode_images(rows["abs_path"], card.image_size)
    ok = np.array([not e for e in errors], dtype=bool)
    for path, err in zip(rows["path"][~ok], np.asarray(errors, dtype=object)[~ok], strict=True):
        log.warning("skipping unreadable image %s: %s", path, err)
    if not ok.any():
        raise ValueError(f"{split}: none of the {len(rows)} images could be read (first: {errors[0]}); "
                         "nothing evaluated")
    rows, images_u8 = rows[ok].reset_index(drop=True), images_u8[ok]
    class_of = {name: i for i, name in enumerate(card.classes)}
    known = rows["label"].map(class_of).notna().to_numpy()
    if len(rows) and not known.any():  # nothing to score: a wrong or missing class list, not accuracy nan
        have = sorted(set(rows["label"].astype(str)))
        raise ValueError(f"{data_dir}: none of the {len(rows)} images of split {split!r} has a label the model "
                         f"knows (its classes: {', '.join(map(str, card.classes[:8]))}"
                         f"{', ...' if len(card.classes) > 8 else ''}; the folders: {', '.join(have[:8])}"
                         f"{', ...' if len(have) > 8 else ''}); expected --classes naming the model's outputs "
                         "in order, as the class folders are named")
    images = images_u8.astype(np.float32) / 255.0
    probs = tta_probs(lambda x: predict_probs(model, x, batch_size), images, tta)
    preds = predictions_table(rows, probs, card.classes, top_k_count)

    y_true = rows["label"].map(class_of)[known].to_numpy(dtype=np.int64)
    y_pred = probs.argmax(axis=1)[known]
    tables.write_table(preds, out / "predictions.parquet", "predictions")
    result = classification_metrics(y_true, y_pred, card.classes, probs[known], top_k_count)
    result.update(split=split, data=str(Path(data_dir).expanduser().resolve()), unreadable=int((~ok).sum()),
                  unknown_label=int((~known).sum()), model_arch=card.arch, tta=tta)
    tables.write_json(out / "metrics.json", result)

    conf = metrics.confusion_matrix(preds, card.classes)
    tables.write_table(confusion_long(conf), out / "confusion.parquet")
    plot_confusion(conf.to_numpy(), card.classes, out / "confusion.png",
                   title=f"{card.arch}: {split} accuracy {result['accuracy']:.3f} (n={len(y_true)})")

    wrong = np.flatnonzero(np.array([c is False for c in preds["correct"]], dtype=bool) & known)
    wrong = wrong[np.argsort(-preds["pred_prob"].to_numpy()[wrong], kind="stable")][:max_mistakes]
    titles = [f"{preds['label'][i]} -> {preds['pred_label'][i]}\np={preds['pred_prob'][i]:.2f}" for i in wrong]
    plot_gallery([images[i] for i in wrong], titles, out / "mistakes.png",
                 suptitle=f"most confident mistakes ({len(wrong)} shown)", empty_text="no mistakes")
    return result


def predict_files(model: ModelSource | str | os.PathLike, files: Sequence[str | os.PathLike],
                  out_dir: str | os.PathLike, *, top_k_count: int = DEFAULT_TOP_K, batch_size: int = 256,
                  annotate: bool = True, labels: Sequence[str | None] | None = None,
                  progress: Callable[[int, int], None] | None = None, tta: str = "none") -> pd.DataFrame:
    """Predict image files of any size and mode; write predictions.parquet and annotated copies.

    Args:
        model: a :class:`~fruitlens.modelio.ModelSource`, or its spec (a run folder, a model file or folder,
            ``imagenet:<app>``). Photos are brought to the model's size with its card's ``fit``.
        files: image files.
        out_dir: where predictions.parquet and ``annotated/`` go.
        labels: the true label of each file, None where unknown (the default: all unknown). Unknown labels
            are null in the table (as ``true_label`` in the explain tables), and so is ``correct``.
        progress: called as ``progress(done, total)`` once the files are read and predicted (done = 0) and after
            each annotated copy.
        tta: ``none`` or ``flip`` (test-time augmentation: the mean of the image's and its mirror's
            probabilities), the same code as :func:`evaluate_run`'s (:func:`fruitlens.recipes.tta_probs`).

    Annotated copies (``out_dir/annotated/<stem>.png``) are the original image (converted to RGB, enlarged
    if small, read at a long side of at most ``plots.ANNOTATED_MAX_SIDE`` if large) with the predicted label and
    probability drawn on it. Unreadable files get a row with an ``error`` and no prediction; they never stop
    the run unless no file at all could be read.

    Returns:
        The predictions table (plus an ``error`` column).

    Raises:
        ValueError: the model cannot be loaded (ModelSourceError), or none of the files could be read.
    """
    from fruitlens.dataset import image_id
    from fruitlens.images import read_rgb
    from fruitlens.modelio import as_model_source, read_fitted
    from fruitlens.plots import ANNOTATED_MAX_SIDE, save_png
    from fruitlens.plots import annotate as draw_label
    from fruitlens.recipes import check_tta, tta_probs

    check_tta(tta)
    model, card = as_model_source(model).load()
    out = Path(out_dir)
    paths = [Path(f).expanduser().resolve() for f in files]
    images, errors = read_fitted(paths, card.image_size, card.fit)
    ok = np.array([not e for e in errors], dtype=bool)
    if not ok.any():
        first = f" (first: {errors[0]})" if errors else ""
        raise ValueError(f"none of the {len(paths)} files could be read{first}")
    known = list(labels) if labels is not None else [None] * len(paths)
    if len(known) != len(paths):
        raise ValueError(f"labels: {len(known)} for {len(paths)} files; expected one per file")
    rows = pd.DataFrame({"image_id": [image_id(str(p)) for p in paths], "path": [str(p) for p in paths],
                         "label": known})
    probs = np.full((len(paths), card.num_classes), np.nan, dtype=np.float32)
    probs[ok] = tta_probs(lambda x: predict_probs(model, x, batch_size), images[ok], tta)
    table = predictions_table(rows, np.nan_to_num(probs, nan=0.0), card.classes, top_k_count)
    table.loc[~ok, "pred_label"] = ""
    table.loc[~ok, "pred_prob"] = np.float32(np.nan)
    table["topk_labels"] = [labels if good else [] for labels, good in zip(table["topk_labels"], ok, strict=True)]
    table["topk_probs"] = [probs_k if good else [] for probs_k, good in zip(table["topk_probs"], ok, strict=True)]
    labelled = np.array([bool(v) for v in known], dtype=bool)
    table["label"] = pd.Series([v if v else None for v in known], dtype=object)  # unknown: null, not ""
    table["correct"] = pd.Series([bool(c) if lab and good else None  # unlabelled: unknown, not wrong
                                  for c, lab, good in zip(table["correct"], labelled, ok, strict=True)], dtype=object)
    table["error"] = errors
    tables.write_table(table, out / "predictions.parquet", "predictions")
    if annotate:
        from fruitlens.layout import picture_stem

        todo = np.flatnonzero(ok)
        if progress is not None:
            progress(0, len(todo))
        for done, i in enumerate(todo, 1):
            name = picture_stem(paths[i], table["image_id"][i])  # d1/a.jpg and d2/a.jpg: two copies
            try:
                original = read_rgb(paths[i], max_side=ANNOTATED_MAX_SIDE)  # bounded working size
            except ValueError as exc:
                log.warning("cannot annotate %s: %s", paths[i], exc)
                continue
            text = f"{table['pred_label'][i]} {table['pred_prob'][i]:.0%}"
            save_png(draw_label(original, text), out / "annotated" / f"{name}.png")
            if progress is not None:
                progress(done, len(todo))
    return table
