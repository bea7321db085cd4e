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


def test_predict_same_names_in_two_folders_gives_two_copies_and_unknown_correctness(tmp_path, model_file):
    for folder in ("d1", "d2"):
        (tmp_path / folder).mkdir()
        Image.fromarray(chelsea()).save(tmp_path / folder / "a.jpg")
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "d1"), str(tmp_path / "d2"), "--model", str(model_file), *MODEL_FLAGS,
                 "--out", str(out)]) == 0
    table = tables.read_table(out / "predictions.parquet")
    assert len(table) == 2 and table["correct"].isna().all()
    assert len(list((out / "annotated").glob("a-*.png"))) == 2


def test_exif_rotated_photos_give_the_same_predictions_and_explanations(demo_dir, tmp_path, capsys):
    """Demo test images stored sideways with EXIF orientation 6 or 8 read, predict and explain as the originals."""
    from fruitlens import images
    from tests.helpers import tiny_run
    from tests.test_images import _rotated_copy

    run = tiny_run(tmp_path / "run", classes=("a", "b", "c", "d", "e", "f"), image_size=(20, 20))
    upright, turned = tmp_path / "upright", tmp_path / "turned"
    upright.mkdir(), turned.mkdir()
    for i, src in enumerate(sorted((demo_dir / "Test").glob("*/0000.jpg"))[:4]):
        name = f"{src.parent.name}.jpg"
        Image.open(src).save(upright / name, quality=100, subsampling=0)
        _rotated_copy(upright / name, turned / name, (6, 8)[i % 2])
        assert Image.open(turned / name).size[::-1] == Image.open(upright / name).size  # stored sideways
        assert images.orientation(Image.open(turned / name)) in (6, 8)
    for folder in (upright, turned):
        assert main(["predict", str(folder), "--model", str(run), "--out", str(tmp_path / f"p-{folder.name}")]) == 0
        assert main(["explain", "--model", str(run), "--data", str(folder), "--out", str(tmp_path / f"e-{folder.name}"),
                     "--method", "gradcam", "--faithfulness-steps", "2"]) == 0
    a, b = (tables.read_table(tmp_path / f"p-{f}" / "predictions.parquet") for f in ("upright", "turned"))
    assert list(a["pred_label"]) == list(b["pred_label"])
    np.testing.assert_allclose(a["pred_prob"], b["pred_prob"], atol=0.02)
    ga, gb = (tables.read_table(tmp_path / f"e-{f}" / "gradcam.parquet") for f in ("upright", "turned"))
    assert list(ga["label"]) == list(gb["label"])
    assert (abs(ga["peak_y"] - gb["peak_y"]) + abs(ga["peak_x"] - gb["peak_x"]) <= 2).all()  # the same place
    for rel in gb["overlay_path"]:  # drawn upright: the photo's upright aspect
        width, height = Image.open(tmp_path / "e-turned" / rel).size
        assert width == 300 and height > 300
