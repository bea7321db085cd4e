"""One rule for what a folder is (a dataset or photos), the same in predict, explain and sanity."""

from __future__ import annotations

import keras
import pytest
from PIL import Image

from fruitlens import tables
from fruitlens.batch import rows as batch_rows
from fruitlens.cli import main
from fruitlens.errors import DatasetError


def _images(root, rels):
    for i, rel in enumerate(rels):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (30 + i, 20), (40 * i % 255, 90, 160)).save(root / rel)
    return root


@pytest.mark.parametrize("rels, kind", [
    (["p.jpg", "2024/q.jpg"], "photos"),                        # images at the top
    (["2023/june/a.jpg", "2024/b.jpg", "2024/c.jpg"], "photos"),  # one folder with images directly in it
    (["2023/june/a.jpg", "2024/july/b.jpg"], "photos"),          # images only deeper down
    (["apple/a.jpg", "pear/b.jpg"], "dataset"),                  # class folders
    (["Training/apple/a.jpg", "Test/apple/b.jpg"], "dataset"),   # split folders
    (["test/x/a.jpg"], "dataset"),
])
def test_the_rule(tmp_path, rels, kind):
    reading = batch_rows.read_folder_as(_images(tmp_path, rels))
    assert reading.kind == kind and reading.why
    other = "photos" if kind == "dataset" else "dataset"
    assert batch_rows.read_folder_as(tmp_path, other).kind == other  # the flag overrides either way
    with pytest.raises(DatasetError, match="--read-as sideways: expected one of auto, dataset, photos"):
        batch_rows.read_folder_as(tmp_path, "sideways")


def test_nested_photos_are_the_same_images_for_every_command(tmp_path):
    photos = _images(tmp_path / "photos", ["2023/june/a.jpg", "2024/b.jpg", "2024/c.jpg", "d.png"])
    rows = batch_rows.rows_from_inputs([photos])
    files, labels = batch_rows.files_and_labels([photos])
    assert sorted(rows["path"]) == sorted(str(f.resolve()) for f in files) and len(files) == 4
    assert rows["label"].isna().all() and labels == [None] * 4


def test_a_dataset_without_the_split_says_the_rule_and_the_flag(tmp_path):
    data = _images(tmp_path / "trip", ["beach/a.jpg", "beach/b.jpg", "hills/c.jpg"])
    with pytest.raises(DatasetError) as err:
        batch_rows.rows_from_inputs([data], split="test")
    text = str(err.value)
    assert "read as a dataset (it has 2 class folders with images (beach, hills))" in text
    assert "splits present: train" in text and "--read-as photos" in text and batch_rows.FOLDER_RULE in text
    assert len(batch_rows.rows_from_inputs([data], read_as="photos")) == 3
    files, labels = batch_rows.files_and_labels([data])  # predict: every split, labelled by class folder
    assert sorted(labels) == ["beach", "beach", "hills"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, activation="softmax")])
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model.save(path)
    return path


FLAGS = ["--classes", "a,b"]


def test_predict_explain_and_sanity_agree_on_nested_photos(tmp_path, tiny_model, capsys):
    photos = _images(tmp_path / "photos", ["2023/june/a.jpg", "2024/b.jpg", "2024/c.jpg"])
    model = ["--model", str(tiny_model), *FLAGS]
    assert main(["predict", str(photos), *model, "--out", str(tmp_path / "p")]) == 0
    assert "annotated: 3/3 images (100%)" in capsys.readouterr().err  # progress lines in a log, not a bar
    predicted = tables.read_table(tmp_path / "p" / "predictions.parquet")
    assert predicted["label"].isna().all() and predicted["correct"].isna().all()  # null, as in explain's tables
    assert main(["explain", "--data", str(photos), *model, "--method", "gradcam", "--faithfulness-steps", "2",
                 "--out", str(tmp_path / "e")]) == 0
    explained = tables.read_table(tmp_path / "e" / "gradcam.parquet")
    assert set(explained["path"]) == set(predicted["path"]) and len(predicted) == 3
    assert "explained: 3/3 images (100%)" in capsys.readouterr().err
    assert main(["sanity", "--data", str(photos), *model, "--methods", "gradcam", "--limit", "5",
                 "--out", str(tmp_path / "s")]) == 0
    captured = capsys.readouterr()
    assert "3 images" in captured.out and "sanity: 3/3 steps" in captured.err  # step 0 and 2 layers


def test_explain_and_sanity_on_a_tiny_labelled_folder_fail_alike_with_the_rule(tmp_path, tiny_model, capsys):
    data = _images(tmp_path / "trip", ["beach/a.jpg", "hills/c.jpg"])
    model = ["--model", str(tiny_model), *FLAGS]
    for command in (["explain", "--method", "gradcam"], ["sanity", "--methods", "gradcam"]):
        assert main([*command, "--data", str(data), *model, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "read as a dataset" in err and "--read-as photos" in err
    assert main(["sanity", "--methods", "gradcam", "--data", str(data), "--read-as", "photos", *model,
                 "--out", str(tmp_path / "s")]) == 0
    assert main(["predict", str(data), *model, "--out", str(tmp_path / "p")]) == 0
    table = tables.read_table(tmp_path / "p" / "predictions.parquet")
    assert sorted(table["label"]) == ["beach", "hills"] and table["correct"].notna().all()


def test_evaluate_a_model_file_with_classes_and_refuse_unknown_labels(tmp_path, tiny_model, capsys):
    data = _images(tmp_path / "d", ["Training/a/1.jpg", "Training/b/2.jpg", "Test/a/3.jpg", "Test/b/4.jpg"])
    assert main(["evaluate", "--model", str(tiny_model), *FLAGS, "--data", str(data),
                 "--out", str(tmp_path / "e")]) == 0
    metrics = tables.read_json(tmp_path / "e" / "metrics.json")
    assert metrics["num_images"] == 2 and metrics["unknown_label"] == 0
    capsys.readouterr()
    assert main(["evaluate", "--model", str(tiny_model), "--classes", "cat,dog", "--data", str(data),
                 "--out", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "none of the 2 images of split 'test' has a label the model knows" in err and "--classes" in err
    assert not (tmp_path / "f" / "predictions.parquet").exists()


def test_explain_without_faithfulness_ranks_nothing_and_does_not_fail(tmp_path, tiny_model):
    photos = _images(tmp_path / "photos", ["a.jpg", "b.jpg"])
    assert main(["explain", "--data", str(photos), "--model", str(tiny_model), *FLAGS, "--method", "gradcam",
                 "--faithfulness-steps", "0", "--out", str(tmp_path / "e")]) == 0
    assert tables.read_table(tmp_path / "e" / "faithfulness.parquet").empty
    assert len(tables.read_table(tmp_path / "e" / "gradcam.parquet")) == 2
