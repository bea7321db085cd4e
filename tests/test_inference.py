"""Evaluation and prediction: predictions table, metrics, confusion, galleries, annotated copies, CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fruitlens import tables
from fruitlens.cli import main
from fruitlens.inference import classification_metrics, evaluate_run, predict_files, predictions_table, top_k
from fruitlens.synthetic import CLASSES
from tests.helpers import tiny_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("run"), classes=CLASSES, image_size=(16, 12))


def test_top_k_hand_computed():
    probs = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]], dtype=np.float32)
    idx, p = top_k(probs, 2)
    np.testing.assert_array_equal(idx, [[1, 2], [0, 2]])
    np.testing.assert_allclose(p, [[0.6, 0.3], [0.5, 0.3]])
    assert top_k(probs, 10)[0].shape == (2, 3)


def test_predictions_table_schema_and_correct():
    rows = pd.DataFrame({"image_id": ["a", "b"], "path": ["x/1.png", "x/2.png"], "label": ["cat", "dog"]})
    probs = np.array([[0.9, 0.1], [0.8, 0.2]], dtype=np.float32)
    table = predictions_table(rows, probs, ["cat", "dog"], k=2)
    assert list(table.columns) == tables.PREDICTIONS_SCHEMA.names
    assert table["pred_label"].tolist() == ["cat", "cat"] and table["correct"].tolist() == [True, False]
    assert table["topk_labels"][1] == ["cat", "dog"]
    tables.to_arrow(table, tables.PREDICTIONS_SCHEMA)  # fits the schema


def test_metrics_hand_computed():
    y_true = np.array([0, 0, 1, 1, 2])
    y_pred = np.array([0, 1, 1, 1, 0])
    m = classification_metrics(y_true, y_pred, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["per_class"]["a"]["precision"] == pytest.approx(0.5) and m["per_class"]["a"]["recall"] == 0.5
    assert m["per_class"]["b"]["precision"] == pytest.approx(2 / 3) and m["per_class"]["b"]["recall"] == 1.0
    assert m["per_class"]["c"]["f1-score"] == 0.0 and m["per_class"]["c"]["support"] == 1
    f1 = [0.5, 0.8, 0.0]
    assert m["macro"]["f1-score"] == pytest.approx(np.mean(f1))
    assert m["weighted"]["f1-score"] == pytest.approx(np.average(f1, weights=[2, 2, 1]))


def test_evaluate_run_writes_everything(run_dir, demo_dir, tmp_path):
    metrics = evaluate_run(run_dir, demo_dir, tmp_path)
    for name in ("predictions.parquet", "metrics.json", "confusion.parquet", "confusion.png", "mistakes.png"):
        assert (tmp_path / name).is_file(), name
    preds = tables.read_table(tmp_path / "predictions.parquet")
    assert len(preds) == 6 * 4 and set(preds["label"]) == set(CLASSES)
    assert metrics["accuracy"] == pytest.approx(preds["correct"].mean())
    assert set(metrics["per_class"]) == set(CLASSES) and metrics["split"] == "test"
    assert tables.read_json(tmp_path / "metrics.json")["accuracy"] == pytest.approx(metrics["accuracy"])
    conf = tables.read_table(tmp_path / "confusion.parquet")
    assert len(conf) == 36 and conf["count"].sum() == len(preds)
    diag = conf[conf["label"] == conf["pred_label"]]["count"].sum()
    assert diag == preds["correct"].sum()
    assert all(len(t) == min(5, 6) for t in preds["topk_labels"])


def test_evaluate_bad_split_is_one_line(run_dir, demo_dir, tmp_path, capsys):
    assert main(["evaluate", "--model", str(run_dir), "--data", str(demo_dir), "--split", "val",
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no usable image in split 'val'" in err and err.count("\n") == 1
    assert main(["evaluate", "--model", str(tmp_path / "nope"), "--data", str(demo_dir), "--out", str(tmp_path)]) == 2


def test_predict_any_size_and_mode_with_annotated_copies(run_dir, tmp_path, capsys):
    rng = np.random.default_rng(0)
    files = []
    big = tmp_path / "big.jpg"
    Image.fromarray(rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)).save(big)
    gray = tmp_path / "gray.png"
    Image.fromarray(rng.integers(0, 256, (7, 9), dtype=np.uint8)).save(gray)
    cmyk = tmp_path / "cmyk.jpg"
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).convert("CMYK").save(cmyk)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"nope")
    files = [big, gray, cmyk, broken]
    out = tmp_path / "out"
    assert main(["predict", *map(str, files), "--model", str(run_dir), "--out", str(out), "--top-k", "3"]) == 0
    printed = capsys.readouterr().out
    assert "error: " in printed and "broken.png: " in printed and "1 unreadable" in printed
    table = tables.read_table(out / "predictions.parquet")
    assert len(table) == 4 and table["error"].astype(bool).tolist() == [False, False, False, True]
    assert set(table["pred_label"][:3]) <= set(CLASSES) and all(len(t) == 3 for t in table["topk_labels"][:3])
    assert table["pred_label"][3] == "" and len(table["topk_labels"][3]) == 0 and np.isnan(table["pred_prob"][3])
    for f in files[:3]:  # named after the photo and its id
        (copy,) = (out / "annotated").glob(f"{f.stem}-*.png")
        img = Image.open(copy)
        assert img.mode == "RGB" and min(img.size) >= 160
    (big_copy,) = (out / "annotated").glob("big-*.png")
    assert Image.open(big_copy).size == (200, 300)  # original size kept
    assert not list((out / "annotated").glob("broken*"))
    again = predict_files(run_dir, files[:3], tmp_path / "again", annotate=False)
    np.testing.assert_allclose(again["pred_prob"], table["pred_prob"][:3])


def test_augment_preview_cli(demo_dir, tmp_path, capsys):
    assert main(["augment-preview", "--data", str(demo_dir), "--out", str(tmp_path), "--image-size", "24"]) == 0
    grid = np.asarray(Image.open(tmp_path / "augment_preview.png"))
    assert grid.shape == (4 * 26 + 2, 5 * 26 + 2, 3)  # 20 samples, 5 per row, 2-pixel padding
    assert "20 augmented samples" in capsys.readouterr().out


def test_evaluate_split_all_takes_every_image_of_a_folder_of_class_folders(run_dir, demo_dir, tmp_path, capsys):
    folder = tmp_path / "mine"  # class folders, no split folders, too few images for a test holdout
    for name in CLASSES[:2]:
        (folder / name).mkdir(parents=True)
        src = sorted((demo_dir / "Test" / name).glob("*.jpg"))[0]
        (folder / name / "a.jpg").write_bytes(src.read_bytes())
    assert main(["evaluate", "--model", str(run_dir), "--data", str(folder), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "seeded holdout" in err and "--split all" in err and err.count("\n") == 1
    assert main(["evaluate", "--model", str(run_dir), "--data", str(folder), "--out", str(tmp_path / "e"),
                 "--split", "all"]) == 0
    preds = tables.read_table(tmp_path / "e" / "predictions.parquet")
    assert sorted(preds["label"]) == sorted(CLASSES[:2])


def test_predictions_table_writes_absolute_paths_and_null_for_an_unknown_label(tmp_path):
    rows = pd.DataFrame({"image_id": ["a", "b"], "path": ["Test/x/a.jpg", "b.jpg"], "label": ["x", None],
                         "abs_path": [str(tmp_path / "Test" / "x" / "a.jpg"), str(tmp_path / "b.jpg")]})
    table = predictions_table(rows, np.array([[0.9, 0.1], [0.2, 0.8]], np.float32), ["x", "y"], k=1)
    assert table["path"].tolist() == [str(tmp_path / "Test" / "x" / "a.jpg"), str(tmp_path / "b.jpg")]
    assert table["label"][0] == "x" and table["label"].isna().tolist() == [False, True]
    assert table["correct"][0] is True and table["correct"].isna().tolist() == [False, True]
    tables.write_table(table, tmp_path / "predictions.parquet", "predictions")
    back = tables.read_table(tmp_path / "predictions.parquet")
    assert back["label"].isna().tolist() == [False, True] and back["correct"].isna().tolist() == [False, True]
