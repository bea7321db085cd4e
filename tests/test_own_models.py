"""A user's own model and photos through the commands: predict, explain, visualize on a non-square photo."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from PIL import Image
from skimage.data import chelsea

from fruitlens import plots, tables
from fruitlens.cli import main

SIZE = (48, 64)
CLASSES = ("cat", "dog", "fox")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A keras.applications MobileNetV2 (weights=None) with a 3-class head, as the user saved it (.h5)."""
    backbone = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(*SIZE, 3), alpha=0.35)
    x = keras.layers.GlobalAveragePooling2D()(backbone.output)
    model = keras.Model(backbone.input, keras.layers.Dense(len(CLASSES), activation="softmax")(x))
    path = tmp_path_factory.mktemp("model") / "pets.h5"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder of photos as they come: a 4:3 cat in a nested folder, a portrait copy, no labels."""
    root = tmp_path_factory.mktemp("photos")
    (root / "2024" / "june").mkdir(parents=True)
    Image.fromarray(chelsea()).save(root / "2024" / "june" / "cat.4002.jpg", quality=92)
    Image.fromarray(np.ascontiguousarray(chelsea().transpose(1, 0, 2))).save(root / "portrait.jpg", quality=92)
    return root


MODEL_FLAGS = ["--classes", ",".join(CLASSES), "--preprocessing", "tf"]


@pytest.mark.slow
def test_predict_explain_visualize_a_users_model_on_a_folder_of_photos(model_file, photos, tmp_path, capsys):
    out = tmp_path / "pred"
    assert main(["predict", str(photos), "--model", str(model_file), *MODEL_FLAGS, "--out", str(out)]) == 0
    table = tables.read_table(out / "predictions.parquet")
    assert len(table) == 2 and set(table["pred_label"]) <= set(CLASSES)

    ex = tmp_path / "explain"
    args = ["explain", "--model", str(model_file), *MODEL_FLAGS, "--data", str(photos), "--out", str(ex),
            "--num-samples", "30", "--faithfulness-steps", "2", "--chunk-size", "1"]
    assert main(args) == 0
    lime, cam = tables.read_table(ex / "lime.parquet"), tables.read_table(ex / "gradcam.parquet")
    assert set(lime["path"]) == set(cam["path"]) == {str(p) for p in photos.rglob("*.jpg")}
    assert lime["true_label"].isna().all() and cam["true_label"].isna().all()  # unlabelled photos
    for rel in cam["overlay_path"]:  # named after the photo, drawn at the photo's own aspect, captioned
        path = ex / rel
        width, height = Image.open(path).size
        source = Image.open(next(p for p in photos.rglob("*.jpg") if path.name.startswith(p.stem)))
        assert height > round(width * source.height / source.width)  # the photo's aspect + a caption band
        assert "layer" in plots.read_caption(path)
    assert any(n.startswith("cat.4002-") for n in (p.name for p in (ex / "lime").glob("*_outline.png")))
    assert tables.read_json(ex / "model.json")["classes"] == list(CLASSES)  # a rerun needs no flags
    capsys.readouterr()
    assert main(["explain", "--model", str(ex), "--data", str(photos), "--out", str(ex), "--num-samples", "30",
                 "--faithfulness-steps", "2", "--chunk-size", "1"]) == 0
    assert "2 already done" in capsys.readouterr().out

    vis = tmp_path / "vis"
    photo = next(photos.rglob("cat*.jpg"))
    assert main(["visualize", "--model", str(model_file), *MODEL_FLAGS, "--image", str(photo), "--out", str(vis),
                 "--channels", "4", "--filters", "2", "--steps", "2"]) == 0
    assert list((vis / "activations").glob("*.png")) and list((vis / "filters").glob("*.png"))


@pytest.mark.parametrize("make, reason", [
    (lambda p: p.write_bytes(b""), "empty file"),
    (lambda p: p.write_bytes(b"PK\x05\x06" + b"\0" * 18), "zip archive without config.json"),
    (lambda p: p.write_text("hello"), "not a .keras zip archive"),
])
def test_bad_model_files_are_one_line_and_exit_2(tmp_path, photos, capsys, make, reason):
    path = tmp_path / "model.keras"
    make(path)
    for command in (["predict", str(photos)], ["explain", "--data", str(photos)]):
        assert main([*command, "--model", str(path), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip()
        assert reason in err and len(err.splitlines()) == 1 and str(path) in err


def test_predict_of_nothing_readable_is_an_error(tmp_path, model_file, capsys):
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"not an image")
    assert main(["predict", str(bad), "--model", str(model_file), *MODEL_FLAGS, "--out", str(tmp_path / "o")]) == 2
    assert "none of the 1 files could be read" in capsys.readouterr().err
