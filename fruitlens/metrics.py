"""Per-class, confusion and headline metrics of a predictions table (temporary home; see the report branch)."""

from __future__ import annotations

import pandas as pd


def per_class_metrics(predictions: pd.DataFrame) -> pd.DataFrame:
    """Precision, recall, F1 and support per class (true or predicted) from a `predictions` table."""
    labels = sorted(set(predictions["label"]) | set(predictions["pred_label"]))
    counts = pd.crosstab(predictions["label"], predictions["pred_label"]).reindex(index=labels, columns=labels,
                                                                                 fill_value=0)
    tp = pd.Series(counts.to_numpy().diagonal(), index=labels, dtype=float)
    support, predicted = counts.sum(axis=1).astype(float), counts.sum(axis=0).astype(float)
    precision = (tp / predicted).where(predicted > 0, 0.0)
    recall = (tp / support).where(support > 0, 0.0)
    f1 = (2 * precision * recall / (precision + recall)).where(precision + recall > 0, 0.0)
    return pd.DataFrame({"class": labels, "precision": precision.round(4).to_numpy(),
                         "recall": recall.round(4).to_numpy(), "f1": f1.round(4).to_numpy(),
                         "support": support.astype(int).to_numpy()})


def confusion_counts(predictions: pd.DataFrame) -> pd.DataFrame:
    """Non-zero (true, predicted, count) triples, most frequent mistakes first after the diagonal."""
    counts = predictions.groupby(["label", "pred_label"]).size().reset_index(name="count")
    counts = counts.rename(columns={"label": "true"})
    counts["correct"] = counts["true"] == counts["pred_label"]
    return counts.sort_values(["correct", "count", "true"], ascending=[False, False, True], ignore_index=True)


def headline_metrics(predictions: pd.DataFrame) -> dict[str, float]:
    """accuracy and macro F1 of a `predictions` table (the numbers models are compared on)."""
    if predictions.empty:
        return {"accuracy": 0.0, "macro_f1": 0.0, "n": 0}
    pc = per_class_metrics(predictions)
    acc = float((predictions["label"] == predictions["pred_label"]).mean())
    return {"accuracy": round(acc, 6), "macro_f1": round(float(pc["f1"].mean()), 6), "n": int(len(predictions))}
