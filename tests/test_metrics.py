"""fruitlens.metrics, the one definition of the numbers: hand-computed values, a model class that never
occurs, and agreement of metrics.json (inference), headline_metrics and the report on macro F1."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from fruitlens import metrics, tables
from fruitlens.card import ModelCard, write_card
from fruitlens.inference import classification_metrics
from fruitlens.report import build_report

MODEL_CLASSES = ["a", "b", "c", "d"]  # "d" has no image and is never predicted


def _pred(labels: str, preds: str) -> pd.DataFrame:
    return pd.DataFrame({"image_id": [f"i{k}" for k in range(len(labels))], "path": [f"{k}.png" for k in
                                                                                   range(len(labels))],
                         "label": list(labels), "pred_label": list(preds),
                         "pred_prob": np.linspace(0.9, 0.5, len(labels)).astype(np.float32),
                         "correct": [t == p for t, p in zip(labels, preds, strict=True)]})


PRED = _pred("aabbbc", "abbbba")  # a: 1 of 2 right; b: 3 of 3; c: 0 of 1 (taken for a)


def test_per_class_hand_computed_over_the_classes_that_occur():
    pc = metrics.per_class_metrics(PRED, MODEL_CLASSES).set_index("class")
    assert list(pc.index) == ["a", "b", "c"]  # "d" occurs nowhere
    assert pc.loc["a", "precision"] == pytest.approx(1 / 2) and pc.loc["a", "recall"] == pytest.approx(1 / 2)
    assert pc.loc["b", "precision"] == pytest.approx(3 / 4) and pc.loc["b", "recall"] == 1.0
    assert pc.loc["c", "f1"] == 0.0 and pc["support"].tolist() == [2, 3, 1]
    f1 = [0.5, 2 * 0.75 / 1.75, 0.0]
    head = metrics.headline_metrics(PRED, MODEL_CLASSES)
    assert head == {"accuracy": pytest.approx(4 / 6), "macro_f1": pytest.approx(np.mean(f1)), "n": 6}
    assert head["macro_f1"] == pytest.approx(f1_score(PRED["label"], PRED["pred_label"], average="macro"))
    assert metrics.headline_metrics(PRED)["macro_f1"] == head["macro_f1"]  # without the class list: the same


def test_macro_f1_agrees_in_metrics_json_headline_and_report(tmp_path):
    idx = {c: i for i, c in enumerate(MODEL_CLASSES)}
    y_true, y_pred = PRED["label"].map(idx).to_numpy(), PRED["pred_label"].map(idx).to_numpy()
    written = classification_metrics(y_true, y_pred, MODEL_CLASSES)  # what evaluate_run writes to metrics.json
    head = metrics.headline_metrics(PRED, MODEL_CLASSES)
    assert written["macro"]["f1-score"] == head["macro_f1"] and written["accuracy"] == head["accuracy"]
    assert set(written["per_class"]) == {"a", "b", "c"} and written["classes_absent"] == ["d"]
    # the old definition (every class of the model) would have said 3/4 of this
    assert head["macro_f1"] != pytest.approx(np.mean([*metrics.per_class_metrics(PRED)["f1"], 0.0]))

    write_card(tmp_path, ModelCard(classes=tuple(MODEL_CLASSES), image_size=(8, 8), arch="tiny"))
    tables.write_table(PRED.assign(topk_labels=[[p] for p in PRED["pred_label"]],
                                   topk_probs=[[float(p)] for p in PRED["pred_prob"]]),
                       tmp_path / "eval" / "predictions.parquet", "predictions")
    tables.write_json(tmp_path / "eval" / "metrics.json", written)
    page = build_report(tmp_path).read_text(encoding="utf-8")
    tile = re.search(r'<div class="big">([^<]*)</div><div class="small">macro F1</div>', page).group(1)
    assert tile == f"{head['macro_f1']:.3f}"
    foot = re.search(r"<td>macro average</td>(?:<td[^>]*>[^<]*</td>){2}<td data-v=\"([^\"]+)\"", page).group(1)
    assert float(foot) == head["macro_f1"]
    assert "1 of the model's classes have no image and no prediction here" in page and ": d." in page


def test_labels_the_model_does_not_know_and_unlabelled_rows_are_left_out():
    unlabelled = _pred("a", "a").assign(label="")
    pred = pd.concat([PRED, _pred("xx", "ab"), unlabelled], ignore_index=True)
    assert metrics.headline_metrics(pred, MODEL_CLASSES) == metrics.headline_metrics(PRED, MODEL_CLASSES)
    assert metrics.headline_metrics(pred)["n"] == 8  # without the class list only the unlabelled row goes
    with pytest.raises(ValueError, match="pred_label"):
        metrics.headline_metrics(PRED.drop(columns="pred_label"))
    assert metrics.headline_metrics(PRED.head(0)) == {"accuracy": 0.0, "macro_f1": 0.0, "n": 0}


def test_confusion_counts_matrix_and_pairs():
    cc = metrics.confusion_counts(PRED)
    assert list(cc.columns) == ["true", "pred_label", "count", "correct"] and cc["count"].sum() == 6
    assert cc[~cc["correct"]][["true", "pred_label", "count"]].values.tolist() == [["a", "b", 1], ["c", "a", 1]]
    conf = metrics.confusion_matrix(PRED, MODEL_CLASSES)
    assert list(conf.index) == MODEL_CLASSES and conf.loc["d"].sum() == 0 and conf.to_numpy().trace() == 4
    pairs = metrics.confused_pairs(PRED, MODEL_CLASSES)
    assert [(p.true, p.pred, p.count, p.support) for p in pairs] == [("a", "b", 1, 2), ("c", "a", 1, 1)]
    assert pairs[1].share == 1.0
    more = _pred("aabbbcc", "abbbbaa")
    assert metrics.confused_pairs(more)[0].true == "c"  # 2 cases before 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_class_metrics_equal_scikit_learns_without_importing_it(seed):
    """The same numbers as precision_recall_fscore_support(zero_division=0), bit for bit, also for a class that
    is never predicted and one that has no images; and computing them imports neither scikit-learn nor SciPy."""
    import subprocess
    import sys

    from sklearn.metrics import precision_recall_fscore_support

    rng = np.random.default_rng(seed)
    classes = ["a", "b", "c", "d", "e"]
    y = rng.choice(classes[:4], 60)  # "e" has no image
    pred = np.where(rng.random(60) < 0.6, y, rng.choice(["a", "b", "e"], 60))  # "c", "d" rarely predicted
    pred[y == "d"] = "a"  # "d" is never predicted
    table = pd.DataFrame({"label": y, "pred_label": pred})
    ours = metrics.per_class_metrics(table)
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=list(ours["class"]), zero_division=0)
    assert list(ours["class"]) == sorted(set(y) | set(pred))
    np.testing.assert_array_equal(ours["precision"], p)
    np.testing.assert_array_equal(ours["recall"], r)
    np.testing.assert_array_equal(ours["f1"], f)
    np.testing.assert_array_equal(ours["support"], s)
    code = ("import sys, pandas as pd; from fruitlens.metrics import per_class_metrics; "
            "per_class_metrics(pd.DataFrame({'label': ['a', 'b'], 'pred_label': ['a', 'a']})); "
            "print(sorted(m for m in ('sklearn', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
