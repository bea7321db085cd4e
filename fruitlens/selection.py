"""Which images get explained and shown: the one place that decides it.

A pipeline explains ``images_to_explain(predictions, limit=N)`` and the report shows, for each confused
pair and each class, the rows :func:`pair_rows` and :func:`class_rows` pick, preferring images that were
explained. Both follow the same rules, so with the same arguments the report shows exactly what was
explained:

- within a confused pair (true class taken for another), its mistakes, most confident first, and one right
  prediction of the class they were taken for;
- within a class, right predictions (most confident first) and its most confident mistake, if any.

All picks are deterministic: most confident first, ties by row order.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from fruitlens.metrics import confused_pairs, labelled

REQUIRED_COLUMNS = ("image_id", "label", "pred_label")


def pick_rows(rows: pd.DataFrame, n: int, explained: Iterable[str] = ()) -> pd.DataFrame:
    """Up to ``n`` rows: explained images first (when ``explained`` names any), then most confident first."""
    if rows.empty:
        return rows
    done = set(explained)
    key = rows["image_id"].astype(str).isin(done) if "image_id" in rows else False
    order = rows.assign(_explained=key)
    sort_cols = ["_explained"] + (["pred_prob"] if "pred_prob" in rows else [])
    order = order.sort_values(sort_cols, ascending=False, kind="stable")
    return order.drop(columns="_explained").head(n)


def pair_rows(predictions: pd.DataFrame, true: str, other: str, n: int, explained: Iterable[str] = ()
              ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``n`` mistakes ``true -> other`` shown for a confused pair, and one right ``other`` beside them."""
    done = set(explained)
    y, p = predictions["label"].astype(str), predictions["pred_label"].astype(str)
    return (pick_rows(predictions[(y == true) & (p == other)], n, done),
            pick_rows(predictions[(y == other) & (p == other)], 1, done))


def class_rows(predictions: pd.DataFrame, cls: str, n: int, explained: Iterable[str] = ()) -> pd.DataFrame:
    """The ``n`` images of class ``cls`` shown per class: right ones, and its surest mistake if any."""
    done = set(explained)
    y, p = predictions["label"].astype(str), predictions["pred_label"].astype(str)
    right = pick_rows(predictions[(y == cls) & (p == cls)], n, done)
    wrong = pick_rows(predictions[(y == cls) & (p != cls)], 1, done)
    return pd.concat([right.head(max(n - len(wrong), 1)), wrong]).head(n)


def _ids(rows: pd.DataFrame) -> list[str]:
    return rows["image_id"].astype(str).tolist()


def images_to_explain(predictions: pd.DataFrame, *, limit: int | None = None, samples_per_class: int = 2,
                      top_pairs: int = 5, per_pair: int = 2) -> list[str]:
    """The image ids to explain, in priority order, so the report can show an explained example of everything.

    Order: the mistakes of the ``top_pairs`` most confused pairs (``per_pair`` each, the surest first; every
    pair's first mistake before any pair's second), then round-robin across classes (sorted by name): one
    image of each class not yet covered, the right predictions of the classes the pairs were taken for,
    then the remaining images of :func:`class_rows` (``samples_per_class`` per class), one per class per
    round. With a ``limit``, the pairs' second and later mistakes give way where they would leave a class
    without any image: every class gets one whenever ``limit`` allows it.

    Args:
        predictions: the ``predictions`` table (image_id, label, pred_label; pred_prob ranks the picks).
        limit: the budget (at most this many ids); None for all the report can show.
        samples_per_class, top_pairs, per_pair: as ``fruitlens.report.build_report`` takes them.

    Returns:
        Image ids, without duplicates, most important first.

    Raises:
        ValueError: a column is missing, or a count is below 1 (``limit`` below 0).
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in predictions.columns]
    if missing:
        raise ValueError(f"predictions table without columns {missing}; expected the predictions schema")
    for name, value in (("samples_per_class", samples_per_class), ("top_pairs", top_pairs), ("per_pair", per_pair)):
        if value < 1:
            raise ValueError(f"{name}={value}: expected at least 1")
    if limit is not None and limit < 0:
        raise ValueError(f"limit={limit}: expected at least 0 or None")
    pred = labelled(predictions)
    classes = sorted(set(pred["label"]))
    pairs = confused_pairs(pred)[:top_pairs]
    mistakes = [_ids(pair_rows(pred, p.true, p.pred, per_pair)[0]) for p in pairs]
    by_rank = [ids[r] for r in range(per_pair) for ids in mistakes if r < len(ids)]  # firsts, then seconds...
    firsts, extras = by_rank[:len(mistakes)], by_rank[len(mistakes):]
    label_of = dict(zip(pred["image_id"].astype(str), pred["label"], strict=False))
    per_class = {c: _ids(class_rows(pred, c, samples_per_class)) for c in classes}
    covered = {label_of[i] for i in firsts}
    round0 = [per_class[c][0] for c in classes if c not in covered and per_class[c]]
    if limit is not None:
        room = max(0, limit - len(firsts) - len(round0))
        extras, later_extras = extras[:room], extras[room:]
    else:
        later_extras = []
    comparisons = [i for p in pairs for i in _ids(pair_rows(pred, p.true, p.pred, per_pair)[1])]
    rounds = [ids[r] for r in range(1, samples_per_class) for ids in per_class.values() if r < len(ids)]
    firsts_of_covered = [per_class[c][0] for c in classes if c in covered and per_class[c]]
    order = firsts + extras + round0 + comparisons + later_extras + firsts_of_covered + rounds
    chosen = list(dict.fromkeys(order))
    return chosen if limit is None else chosen[:limit]


def explain_budget(predictions: pd.DataFrame, limit: int) -> int:
    """How many images to explain for a report: ``limit``, raised to one per class when there are more classes.

    With 33 classes and the default 30, every class still gets an explained example.
    """
    labels = predictions["label"].dropna().astype(str)
    return max(int(limit), int(labels[labels != ""].nunique()))
