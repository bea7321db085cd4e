"""fruitlens.selection: the images to explain, in priority order, within a budget."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fruitlens.selection import class_rows, images_to_explain, pair_rows


def _predictions(n_classes: int, per_class: int = 3, mistakes: int = 0) -> pd.DataFrame:
    """``per_class`` right images per class; the first class also has ``mistakes`` taken for the second."""
    rng = np.random.default_rng(0)
    classes = [f"class_{k:03d}" for k in range(n_classes)]
    labels = [c for c in classes for _ in range(per_class)] + [classes[0]] * mistakes
    preds = [c for c in classes for _ in range(per_class)] + [classes[1]] * mistakes
    return pd.DataFrame({"image_id": [f"img{k:04d}" for k in range(len(labels))], "label": labels,
                         "pred_label": preds, "pred_prob": rng.uniform(0.5, 1.0, len(labels))})


def _labels(pred: pd.DataFrame, ids: list[str]) -> list[str]:
    return pred.set_index("image_id").loc[ids, "label"].tolist()


def test_every_class_gets_an_image_within_the_budget():
    pred = _predictions(33)
    chosen = images_to_explain(pred, limit=33)
    assert len(chosen) == 33 and set(_labels(pred, chosen)) == set(pred["label"])
    thirty = images_to_explain(pred, limit=30)  # budget below the classes: 30 classes, one each
    assert len(set(_labels(pred, thirty))) == 30
    assert len(images_to_explain(pred)) == 2 * 33  # no budget: samples_per_class each


def test_confused_pairs_mistakes_come_first_and_every_class_still_fits():
    pred = _predictions(33, mistakes=3)
    wrong = pred[pred["label"] != pred["pred_label"]].sort_values("pred_prob", ascending=False)
    everything = images_to_explain(pred)
    assert everything[:2] == wrong["image_id"].tolist()[:2]  # per_pair=2, surest first
    chosen = images_to_explain(pred, limit=33)
    assert chosen[0] == wrong["image_id"].iloc[0]  # the surest mistake first
    assert set(_labels(pred, chosen)) == set(pred["label"])  # its second mistake gave way to a class
    roomy = images_to_explain(pred, limit=40)
    assert roomy[:2] == wrong["image_id"].tolist()[:2] and set(_labels(pred, roomy)) == set(pred["label"])
    assert chosen == images_to_explain(pred.sample(frac=1.0, random_state=3), limit=33)  # row order is no matter


def test_pair_and_class_rows_prefer_explained_images():
    pred = _predictions(3, mistakes=3)
    mistakes, right = pair_rows(pred, "class_000", "class_001", 2)
    assert len(mistakes) == 2 and (mistakes["pred_label"] == "class_001").all() and len(right) == 1
    assert right["label"].iloc[0] == "class_001" and right["pred_label"].iloc[0] == "class_001"
    least = mistakes.sort_values("pred_prob")["image_id"].iloc[0]
    other = set(pred[(pred["label"] == "class_000") & (pred["pred_label"] == "class_001")]["image_id"]) - set(
        mistakes["image_id"])
    preferred, _ = pair_rows(pred, "class_000", "class_001", 1, explained=other)
    assert preferred["image_id"].tolist() == sorted(other) and least not in preferred["image_id"].tolist()
    rows = class_rows(pred, "class_000", 2)
    assert rows["pred_label"].tolist() == ["class_000", "class_001"]  # a right one and its surest mistake


@pytest.mark.parametrize("kwargs, match", [({"limit": -1}, "limit=-1"), ({"top_pairs": 0}, "top_pairs=0"),
                                           ({"samples_per_class": 0}, "samples_per_class=0")])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        images_to_explain(_predictions(2), **kwargs)
    with pytest.raises(ValueError, match="image_id"):
        images_to_explain(_predictions(2).drop(columns="image_id"))


def test_the_budget_grows_to_one_image_per_class():
    import pandas as pd

    from fruitlens.selection import explain_budget

    pred = pd.DataFrame({"label": [f"c{i}" for i in range(33)] + ["", None], "pred_label": ["c0"] * 35})
    assert explain_budget(pred, 30) == 33 and explain_budget(pred, 40) == 40
