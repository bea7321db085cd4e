"""Every classification metric fruitlens reports, defined once: accuracy, per-class precision/recall/F1,
macro and weighted averages, the confusion matrix and the confused pairs.

Everyone who shows or compares these numbers (metrics.json, the report, the Prefect artifacts, model
promotion) computes them here, from a `predictions` table (label, pred_label per image).

Definitions:

- Rows with an empty ``label`` (unlabelled images) are left out. With ``classes`` (the model's classes),
  rows whose label is not one of them are left out too: the model cannot predict them.
- The classes a metric averages over are those that occur in the true labels or in the predictions
  (scikit-learn's default), in the order of ``classes`` when given, else sorted. A class of the model with
  no image and no prediction has no precision or recall and is left out of every average.
- ``macro_f1`` is the unweighted mean of the per-class F1 over those classes; ``weighted`` weighs each class
  by its support. Precision (recall) of a class never predicted (without images) is 0.
- No rounding: formatting is for whoever shows the numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

PER_CLASS_COLUMNS = ("class", "precision", "recall", "f1", "support")


@dataclass(frozen=True)
class ConfusedPair:
    """Images of class ``true`` predicted as ``pred``: ``count`` of the ``support`` images of ``true``."""

    true: str
    pred: str
    count: int
    support: int

    @property
    def share(self) -> float:
        return self.count / self.support if self.support else 0.0


def labelled(predictions: pd.DataFrame, classes: Sequence[str] | None = None) -> pd.DataFrame:
    """The rows metrics are computed on: a label, and (with ``classes``) a label the model knows.

    Raises:
        ValueError: ``predictions`` lacks a ``label`` or ``pred_label`` column.
    """
    missing = [c for c in ("label", "pred_label") if c not in predictions.columns]
    if missing:
        raise ValueError(f"predictions table without columns {missing}; expected the predictions schema")
    y = predictions["label"].fillna("").astype(str)
    keep = y != ""
    if classes is not None:
        keep &= y.isin({str(c) for c in classes})
    out = predictions[keep]
    return out.assign(label=out["label"].astype(str), pred_label=out["pred_label"].fillna("").astype(str))


def metric_labels(predictions: pd.DataFrame, classes: Sequence[str] | None = None) -> list[str]:
    """The classes metrics average over: those in the true labels or the predictions of the labelled rows."""
    rows = labelled(predictions, classes)
    seen = set(rows["label"]) | set(rows["pred_label"])
    if classes is None:
        return sorted(seen)
    ordered = [str(c) for c in classes]
    return [c for c in ordered if c in seen] + sorted(seen - set(ordered))


def per_class_metrics(predictions: pd.DataFrame, classes: Sequence[str] | None = None) -> pd.DataFrame:
    """Precision, recall, F1 and support per class, over :func:`metric_labels`.

    Counted here with scikit-learn's formulas and ``zero_division=0`` (``precision_recall_fscore_support``:
    F1 = 2 TP / (support + predicted), 0 where a denominator is 0), without importing it: scikit-learn and
    SciPy take a second or more to import, which every cached rerun would pay for its metrics artifacts.

    Returns:
        A table with columns class, precision, recall, f1 (floats in [0, 1]) and support (int).
    """
    rows = labelled(predictions, classes)
    labels = metric_labels(rows, classes)
    if not labels:
        return pd.DataFrame({c: pd.Series([], dtype=float if c != "class" else object) for c in PER_CLASS_COLUMNS})
    y, pred = rows["label"].to_numpy(dtype=object), rows["pred_label"].to_numpy(dtype=object)
    index = pd.Index(labels)
    hits = pd.Series(y[y == pred]).value_counts().reindex(index, fill_value=0).to_numpy(dtype=np.float64)
    support = pd.Series(y).value_counts().reindex(index, fill_value=0).to_numpy(dtype=np.int64)
    predicted = pd.Series(pred).value_counts().reindex(index, fill_value=0).to_numpy(dtype=np.float64)

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        return np.divide(num, den, out=np.zeros(len(labels)), where=den > 0)

    return pd.DataFrame({"class": labels, "precision": ratio(hits, predicted), "recall": ratio(hits, support),
                         "f1": ratio(2 * hits, support + predicted), "support": support.astype(int)})


def headline_metrics(predictions: pd.DataFrame, classes: Sequence[str] | None = None) -> dict[str, Any]:
    """accuracy, macro F1 and n (images counted): the numbers models are compared on."""
    rows = labelled(predictions, classes)
    if rows.empty:
        return {"accuracy": 0.0, "macro_f1": 0.0, "n": 0}
    pc = per_class_metrics(rows, classes)
    return {"accuracy": float((rows["label"] == rows["pred_label"]).mean()),
            "macro_f1": float(pc["f1"].mean()), "n": int(len(rows))}


def classification_summary(predictions: pd.DataFrame, classes: Sequence[str] | None = None) -> dict[str, Any]:
    """The metrics of ``metrics.json``: accuracy, num_images, per_class, macro, weighted.

    ``per_class`` maps each class of :func:`metric_labels` to precision, recall, f1-score and support;
    ``macro`` and ``weighted`` hold precision, recall and f1-score (``macro["f1-score"]`` is
    ``headline_metrics(...)["macro_f1"]``); ``classes_absent`` lists the ``classes`` with no image and no
    prediction (left out of the averages).
    """
    rows = labelled(predictions, classes)
    head = headline_metrics(rows, classes)
    pc = per_class_metrics(rows, classes)
    support = pc["support"].to_numpy(dtype=float)
    weights = support / support.sum() if support.sum() else support
    out: dict[str, Any] = {"accuracy": head["accuracy"] if len(rows) else float("nan"), "num_images": head["n"]}
    out["per_class"] = {r["class"]: {"precision": float(r["precision"]), "recall": float(r["recall"]),
                                     "f1-score": float(r["f1"]), "support": int(r["support"])}
                        for r in pc.to_dict("records")}
    out["macro"] = {"precision": float(pc["precision"].mean()) if len(pc) else 0.0,
                    "recall": float(pc["recall"].mean()) if len(pc) else 0.0, "f1-score": head["macro_f1"]}
    out["weighted"] = {m: float((pc[c].to_numpy() * weights).sum())
                       for m, c in (("precision", "precision"), ("recall", "recall"), ("f1-score", "f1"))}
    if classes is not None:
        out["classes_absent"] = [str(c) for c in classes if str(c) not in set(pc["class"])]
    return out


def confusion_matrix(predictions: pd.DataFrame, classes: Sequence[str] | None = None) -> pd.DataFrame:
    """Counts with rows the true class and columns the predicted class.

    Over ``classes`` (all of them, absent ones as zero rows and columns) when given, else over
    :func:`metric_labels`.
    """
    rows = labelled(predictions, classes)
    labels = [str(c) for c in classes] if classes is not None else metric_labels(rows)
    if rows.empty:
        return pd.DataFrame(0, index=pd.Index(labels), columns=pd.Index(labels), dtype=np.int64)
    conf = pd.crosstab(rows["label"], rows["pred_label"])
    conf = conf.reindex(index=labels, columns=labels, fill_value=0).fillna(0).astype(np.int64)
    conf.index.name, conf.columns.name = None, None
    return conf


def confusion_counts(predictions: pd.DataFrame, classes: Sequence[str] | None = None) -> pd.DataFrame:
    """Non-zero (true, pred_label, count, correct) rows: the diagonal first, then the mistakes, most first."""
    rows = labelled(predictions, classes)
    counts = rows.groupby(["label", "pred_label"]).size().reset_index(name="count")
    counts = counts.rename(columns={"label": "true"})
    counts["correct"] = counts["true"] == counts["pred_label"]
    return counts.sort_values(["correct", "count", "true"], ascending=[False, False, True], ignore_index=True)


def confused_pairs(predictions: pd.DataFrame, classes: Sequence[str] | None = None) -> list[ConfusedPair]:
    """Every (true, predicted) pair with at least one mistake, most cases first.

    Ties keep the order of :func:`metric_labels` (rows, then columns), so the result is deterministic.
    """
    conf = confusion_matrix(predictions, None if classes is None else metric_labels(predictions, classes))
    labels = list(conf.index)
    counts = conf.to_numpy()
    support = counts.sum(axis=1)
    off = counts.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")
    order = order[off.ravel()[order] > 0]
    rows, cols = np.divmod(order, off.shape[1])
    return [ConfusedPair(labels[i], labels[j], int(off[i, j]), int(support[i]))
            for i, j in zip(rows, cols, strict=True)]
