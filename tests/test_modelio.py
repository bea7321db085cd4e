"""Loading any Keras classifier (fruitlens.modelio): files, SavedModels, imagenet:<app>, wrapping, bad files.

The keras.applications tests use the real architectures without ImageNet weights (no network here):
VGG16 and MobileNetV2 (alpha 0.35) with ``include_top=False`` at a small non-square input, then global average
pooling and a 3-way softmax, saved as .keras, .h5 and a SavedModel. VGG16's convolutions are 14.7M parameters
whatever the input size (a 59 MB file), so its cases are marked slow.
"""

from __future__ import annotations

import dataclasses
import json
import zipfile

import keras
import numpy as np
import pytest
from PIL import Image
from skimage.data import chelsea

from fruitlens import keras_cache, modelfiles, tables
from fruitlens.errors import ModelSourceError
from fruitlens.explain.gradcam import gradcam
from fruitlens.explain.keras_graph import find_layer
from fruitlens.explain.lime import explain_lime
from fruitlens.images import read_rgb
from fruitlens.inference import predict_files
from fruitlens.keras_apps import KERAS_APPS
from fruitlens.lime_options import LimeOptions
from fruitlens.modelfiles import read_classes
from fruitlens.modelio import (
    ModelSource,
    check_layer_access,
    fit_photo,
    load_model_source,
    write_source_card,
)
from fruitlens.runs import load_run, model_digest, predict_batches
from tests.helpers import tiny_run

SIZE = (48, 64)  # non-square model input
CLASSES = ("cat", "dog", "fox")
APPS = {  # name: (constructor kwargs, preprocessing, keras' own preprocess_input, last conv layer)
    "vgg16": (keras.applications.VGG16, {}, "caffe", keras.applications.vgg16.preprocess_input, "block5_conv3"),
    "mobilenet_v2": (keras.applications.MobileNetV2, {"alpha": 0.35}, "tf",
                     keras.applications.mobilenet_v2.preprocess_input, "Conv_1"),
}


def _app_model(name: str) -> keras.Model:
    build, kwargs, *_ = APPS[name]
    keras.utils.set_random_seed(0)
    backbone = build(include_top=False, weights=None, input_shape=(*SIZE, 3), **kwargs)
    x = keras.layers.GlobalAveragePooling2D()(backbone.output)
    out = keras.layers.Dense(len(CLASSES), activation="softmax")(x)
    return keras.Model(backbone.input, out, name=f"{name}_small")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """{(app, format): path}; each app built once and saved as .keras, .h5 and a SavedModel folder."""
    cache: dict = {}

    def get(app: str, fmt: str):
        if (app, fmt) not in cache:
            folder = tmp_path_factory.mktemp(f"{app}_{fmt}")
            model = _app_model(app)
            if fmt == "savedmodel":
                path = folder / "exported"
                model.export(path, verbose=False)
            else:
                path = folder / f"model.{fmt}"
                model.save(path)
            cache[(app, fmt)] = (path, model)
        return cache[(app, fmt)]

    return get


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return chelsea()  # (300, 451, 3) uint8: wider than the model input


FORMATS = ["keras", "h5", "savedmodel"]
CASES = [pytest.param(app, fmt, marks=[pytest.mark.slow] if app == "vgg16" else [], id=f"{app}-{fmt}")
         for app in APPS for fmt in FORMATS]


@pytest.mark.parametrize(("app", "fmt"), CASES)
def test_application_loads_predicts_and_explains(saved, photo, app, fmt):
    path, raw = saved(app, fmt)
    _, _, preprocessing, preprocess_input, last_conv = APPS[app]
    model, card = ModelSource(str(path), classes=CLASSES, preprocessing=preprocessing, fit="crop").load()
    assert card.image_size == SIZE and card.classes == CLASSES  # size read from the file (or the signature)
    assert (card.preprocessing, card.wrap_preprocessing, card.fit) == (preprocessing, True, "crop")

    image, box = fit_photo(photo, card.image_size, "crop")
    images = np.stack([image, image[:, ::-1]])
    probs = predict_batches(model, images)
    assert probs.shape == (2, 3) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # the wrapper takes [0, 1]; it must equal Keras' own preprocess_input on 0-255 fed to the raw model
    expected = np.asarray(raw.predict_on_batch(preprocess_input(images * 255.0)))
    np.testing.assert_allclose(probs, expected, rtol=1e-4, atol=1e-5)

    lime = explain_lime(model, image[None], LimeOptions.reference(num_samples=50), seed=0)[0]
    assert lime.segments.shape == SIZE and np.isfinite(lime.weights[lime.labels[0]]).all()
    if fmt == "savedmodel":
        with pytest.raises(ValueError, match="SavedModel whose layers cannot be seen"):
            check_layer_access(model, "gradcam")
        return
    check_layer_access(model, "gradcam")
    assert find_layer(model).path.endswith(f"/{last_conv}")  # inside the nested loaded model
    heat = gradcam(model, images)
    assert heat.shape == (2, *SIZE) and heat.dtype == np.float32
    assert np.isfinite(heat).all() and heat.min() >= 0.0 and heat.max() <= 1.0


@pytest.mark.parametrize(("preprocessing", "scale"), [("none", 255.0), ("tf", None), ("torch", None), ("rescale", 1.0)])
def test_wrap_feeds_the_range_the_raw_model_expects(tmp_path, preprocessing, scale):
    """An identity-like model (GAP of the input) shows exactly what the wrapper feeds it."""
    inp = keras.Input((4, 6, 3))
    out = keras.layers.GlobalAveragePooling2D()(inp)
    keras.Model(inp, out).save(tmp_path / "probe.keras")
    model, _ = load_model_source(tmp_path / "probe.keras", classes=("r", "g", "b"), preprocessing=preprocessing)
    x = np.full((1, 4, 6, 3), 0.5, np.float32)
    got = predict_batches(model, x)[0]
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    want = {"tf": np.zeros(3), "torch": (0.5 - mean) / std}.get(preprocessing, np.full(3, 0.5 * (scale or 1)))
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_a_leading_rescaling_1_255_means_the_model_takes_0_255(tmp_path):
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Rescaling(1 / 255)(inp)
    x = keras.layers.Conv2D(2, 3)(x)
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    keras.Model(inp, out).save(tmp_path / "m.keras")
    _, card = load_model_source(tmp_path / "m.keras", classes=("a", "b"))
    assert card.preprocessing == "none"


def test_run_folder_loads_as_before_and_digest_is_the_file_sha(tmp_path):
    run = tiny_run(tmp_path / "run", classes=("a", "b", "c"), image_size=(12, 10))
    model, card = ModelSource(str(run)).load()
    assert model.name == load_run(run)[0].name and card.arch == "tiny" and card.classes == ("a", "b", "c")
    assert not card.wrap_preprocessing and card.preprocessing == "rescale"
    assert ModelSource(str(run)).digest() == model_digest(run)
    assert ModelSource(str(run / "model.keras")).digest() == model_digest(run)
    assert ModelSource(str(run), fit="crop").digest() != model_digest(run)
    renamed, card2 = ModelSource(str(run), classes=("x", "y", "z")).load()
    assert card2.classes == ("x", "y", "z") and card2.arch == "tiny"


def test_a_models_home_loads_its_promoted_model(tmp_path):
    """`--model artifacts/models/demo` (the folder the nightly says it promoted to) loads its current model."""
    from fruitlens.promotion import promote_model

    run = tiny_run(tmp_path / "run", classes=("a", "b", "c"), image_size=(12, 10))
    home = tmp_path / "models" / "demo"
    promote_model(run, home, {"accuracy": 1.0})
    model, card = ModelSource(str(home)).load()
    assert card.classes == ("a", "b", "c") and ModelSource(str(home)).digest() == model_digest(run)
    with pytest.raises(ModelSourceError, match=r"no model.keras, saved_model.pb or model.json in this folder \(nor in "
                                               r"current/\)"):
        ModelSource(str(tmp_path / "models")).load()


def test_card_next_to_outputs_reloads_without_options(tmp_path, saved):
    path, _ = saved("mobilenet_v2", "h5")
    source = ModelSource(str(path), classes=CLASSES, preprocessing="tf", fit="crop")
    model, card = source.load()
    write_source_card(tmp_path / "out", card)
    again, card2 = ModelSource(str(tmp_path / "out")).load()
    assert (card2.classes, card2.image_size, card2.preprocessing, card2.fit) == (CLASSES, SIZE, "tf", "crop")
    x = np.random.default_rng(0).random((2, *SIZE, 3), dtype=np.float32)
    np.testing.assert_allclose(predict_batches(again, x), predict_batches(model, x), atol=1e-6)
    digest = ModelSource(str(tmp_path / "out")).digest()
    assert digest == ModelSource(str(tmp_path / "out")).digest() != ModelSource(str(path)).digest()
    assert ModelSource(str(tmp_path / "out"), fit="resize").digest() == digest  # resize = take the card's fit
    assert ModelSource(str(tmp_path / "out"), preprocessing="none").digest() != digest


def test_card_next_to_a_model_file_supplies_classes(tmp_path):
    run = tiny_run(tmp_path / "r", classes=("a", "b", "c"))
    model, card = ModelSource(str(run / "model.keras"), preprocessing="tf", classes=("p", "q", "r")).load()
    (tmp_path / "r" / "model.json").unlink()
    write_source_card(tmp_path / "r", card)  # the card now sits next to the file it names
    _, again = ModelSource(str(run / "model.keras")).load()
    assert again.classes == ("p", "q", "r") and again.preprocessing == "tf" and again.wrap_preprocessing


def test_default_class_names_and_one_line_errors(tmp_path, caplog):
    inp = keras.Input((None, None, 3))
    out = keras.layers.Dense(4, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inp))
    keras.Model(inp, out).save(tmp_path / "any_size.h5")
    with pytest.raises(ValueError, match=r"any_size\.h5: the model takes any input size; pass image_size"):
        ModelSource(str(tmp_path / "any_size.h5")).load()
    model, card = ModelSource(str(tmp_path / "any_size.h5"), image_size=(20, 30)).load()
    assert card.classes == ("class_0", "class_1", "class_2", "class_3") and "class_0..class_3" in caplog.text
    assert tuple(model.input_shape) == (None, 20, 30, 3)
    with pytest.raises(ValueError, match=r"any_size\.h5: 2 class names but the model outputs 4 scores"):
        ModelSource(str(tmp_path / "any_size.h5"), image_size=(20, 30), classes=("a", "b")).load()
    (tmp_path / "names.txt").write_text("w\nx\ny\nz\n")
    named = ModelSource(str(tmp_path / "any_size.h5"), image_size=(20, 30), classes_file=str(tmp_path / "names.txt"))
    assert named.load()[1].classes == ("w", "x", "y", "z")
    assert named.digest() != ModelSource(str(tmp_path / "any_size.h5"), image_size=(20, 30)).digest()


@pytest.mark.parametrize(("fmt", "content", "message"), [
    ("keras", "truncated", "not a .keras zip archive"),
    ("h5", "truncated", "truncated file"),
    ("keras", "empty_zip", "zip archive without config.json"),
    ("keras", "zero", "empty file"),
    ("h5", "text", "not an HDF5 file"),
    ("keras", "text", "not a .keras zip archive"),
    ("h5", "weights_only", "holds weights only"),
    ("keras", "lambda", "Lambda layer whose Python code would run on loading; pass unsafe=True"),
    ("h5", "lambda", "Lambda layer whose Python code would run on loading; pass unsafe=True"),
    ("txt", "text", "unknown model file type"),
])
def test_bad_model_files_are_one_line_errors(tmp_path, fmt, content, message):
    path = tmp_path / f"bad.{fmt}"
    good = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3), keras.layers.Flatten(),
                             keras.layers.Dense(2, activation="softmax")])
    if content == "truncated":
        good.save(tmp_path / f"good.{fmt}")
        data = (tmp_path / f"good.{fmt}").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif content == "empty_zip":
        zipfile.ZipFile(path, "w").close()
    elif content == "zero":
        path.write_bytes(b"")
    elif content == "text":
        path.write_text("not a model")
    elif content == "weights_only":
        good.save_weights(tmp_path / "w.weights.h5")
        path.write_bytes((tmp_path / "w.weights.h5").read_bytes())
    else:
        lam = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Lambda(lambda x: x * 2.0),
                                keras.layers.Flatten(), keras.layers.Dense(2, activation="softmax")])
        lam.save(path)
    with pytest.raises(ValueError) as info:
        ModelSource(str(path), classes=("a", "b")).load()
    text = str(info.value)
    assert message in text and str(path) in text and "\n" not in text
    if content == "lambda":  # the caller's explicit choice lets the code run
        model, _ = ModelSource(str(path), classes=("a", "b"), unsafe=True).load()
        assert model.output_shape == (None, 2)


def test_bad_specs_and_options_are_named(tmp_path):
    for spec, match in [(str(tmp_path / "missing.keras"), "no such file or folder"),
                        (str(tmp_path), "no model.keras, saved_model.pb or model.json"),
                        ("imagenet:alexnet", "unknown application; expected imagenet:<vgg16|")]:
        with pytest.raises(ValueError, match=match):
            ModelSource(spec).load()
    with pytest.raises(ValueError, match="preprocessing 'scale': expected one of rescale, none, tf, caffe, torch"):
        ModelSource("m.keras", preprocessing="scale")
    with pytest.raises(ValueError, match="fit 'pad': expected one of resize, crop"):
        ModelSource("m.keras", fit="pad")
    with pytest.raises(ValueError, match="classes and classes_file both given"):
        ModelSource("m.keras", classes=("a",), classes_file="c.txt")


def test_read_classes_formats(tmp_path):
    (tmp_path / "c.txt").write_text("cat\n\ndog\n fox \n")
    assert read_classes(tmp_path / "c.txt") == ("cat", "dog", "fox")
    for name, obj in [("list.json", ["cat", "dog"]), ("index.json", {"1": "dog", "0": "cat"}),
                      ("keras.json", {"dog": 1, "cat": 0}),
                      ("imagenet.json", {"0": ["n01", "cat"], "1": ["n02", "dog"]})]:
        (tmp_path / name).write_text(json.dumps(obj))
        assert read_classes(tmp_path / name) == ("cat", "dog"), name
    (tmp_path / "dup.json").write_text(json.dumps({"0": ["n1", "crane"], "1": ["n2", "crane"]}))
    assert read_classes(tmp_path / "dup.json") == ("crane (n1)", "crane (n2)")
    for name, obj, match in [("gap.json", {"0": "a", "2": "b"}, "not 0..1"), ("dupl.json", ["a", "a"], "repeated: a"),
                             ("num.json", 3, "expected a list of names")]:
        (tmp_path / name).write_text(json.dumps(obj))
        with pytest.raises(ValueError, match=match):
            read_classes(tmp_path / name)


def test_fit_photo_crop_box_and_resize_matches_read_rgb(tmp_path, photo):
    image, box = fit_photo(photo, (48, 64), "crop")
    y0, x0, y1, x1 = box
    assert image.shape == (48, 64, 3) and image.dtype == np.float32
    assert (y0, y1) == (0, 300) and abs((x1 - x0) / 300 - 64 / 48) < 0.01 and x0 == (451 - (x1 - x0)) // 2
    _, box = fit_photo(photo.transpose(1, 0, 2), (48, 64), "crop")  # a tall photo: top and bottom cut
    assert box == (113, 0, 338, 300)  # 225 = 300 * 48 / 64 rows, centred in 451
    Image.fromarray(photo).save(tmp_path / "cat.png")
    resized, box = fit_photo(read_rgb(tmp_path / "cat.png"), (48, 64), "resize")
    assert box == (0, 0, 300, 451)
    np.testing.assert_array_equal(resized, read_rgb(tmp_path / "cat.png", (48, 64)))
    np.testing.assert_array_equal(fit_photo(photo, (48, 64))[0], resized)  # uint8 and [0, 1] agree
    with pytest.raises(ValueError, match=r"photo of shape \(300, 451\)"):
        fit_photo(photo[..., 0], (48, 64))


def test_predict_files_takes_a_source_and_refuses_all_unreadable(tmp_path, saved, photo):
    path, _ = saved("mobilenet_v2", "keras")
    Image.fromarray(photo).save(tmp_path / "cat.png")
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    source = ModelSource(str(path), classes=CLASSES, preprocessing="tf", fit="crop")
    table = predict_files(source, [tmp_path / "cat.png", tmp_path / "bad.jpg"], tmp_path / "out", annotate=False)
    assert list(table["pred_label"].isin(CLASSES)) == [True, False] and table["error"][1]
    assert len(tables.read_table(tmp_path / "out" / "predictions.parquet")) == 2
    with pytest.raises(ValueError, match="none of the 2 files could be read"):
        predict_files(str(path), [tmp_path / "bad.jpg", tmp_path / "nothing.png"], tmp_path / "out2")


# ------------------------------------------------------------------------------------ imagenet:<app>


@pytest.fixture()
def keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setattr(keras_cache, "network_available", lambda *a, **k: False)
    (tmp_path / "keras_home" / "models").mkdir(parents=True)
    return tmp_path / "keras_home" / "models"


def test_imagenet_without_files_names_the_file_to_fetch(keras_home):
    with pytest.raises(ValueError) as info:
        ModelSource("imagenet:mobilenet_v2").load()
    text = str(info.value)
    name = KERAS_APPS["mobilenet_v2"].weights_file
    assert f"{keras_home / name} not found and no network" in text
    assert f"fetch {KERAS_APPS['mobilenet_v2'].weights_origin} and put it at {keras_home / name}" in text
    keras.Sequential([keras.Input((1,))]).save(keras_home / name)  # weights present, class index not
    with pytest.raises(ValueError, match=r"ImageNet class names: .*imagenet_class_index\.json not found"):
        ModelSource("imagenet:mobilenet_v2").load()


@pytest.mark.slow
def test_imagenet_app_with_test_made_weights(keras_home, photo):
    keras.utils.set_random_seed(1)
    reference = keras.applications.MobileNetV2(weights=None, include_top=True)  # what Keras' file holds
    reference.save(keras_home / KERAS_APPS["mobilenet_v2"].weights_file)  # legacy .h5, as Keras' files are
    index = {str(i): [f"n{i:08d}", f"thing{i}"] for i in range(1000)}
    (keras_home / "imagenet_class_index.json").write_text(json.dumps(index))
    model, card = ModelSource("imagenet:mobilenet_v2", fit="crop").load()
    assert card.classes[:2] == ("thing0", "thing1") and len(card.classes) == 1000
    assert (card.image_size, card.preprocessing, card.arch) == ((224, 224), "tf", "imagenet:mobilenet_v2")
    image, _ = fit_photo(photo, card.image_size, card.fit)
    probs = predict_batches(model, image[None])
    expected = reference.predict_on_batch(keras.applications.mobilenet_v2.preprocess_input(image[None] * 255.0))
    np.testing.assert_allclose(probs, expected, rtol=1e-4, atol=1e-6)
    assert gradcam(model, image[None]).shape == (1, 224, 224)
    assert len(ModelSource("imagenet:mobilenet_v2").digest()) == 64


def test_imagenet_table_matches_keras_applications():
    """Fence: the file names and URLs copied from keras.applications (private modules) are still theirs."""
    from keras.src.applications import (
        efficientnet,
        imagenet_utils,
        inception_v3,
        mobilenet_v2,
        resnet,
        vgg16,
        vgg19,
        xception,
    )

    assert KERAS_APPS["vgg16"].weights_origin == vgg16.WEIGHTS_PATH
    assert KERAS_APPS["vgg19"].weights_origin == vgg19.WEIGHTS_PATH
    assert KERAS_APPS["inception_v3"].weights_origin == inception_v3.WEIGHTS_PATH
    assert KERAS_APPS["xception"].weights_origin == xception.WEIGHTS_PATH
    app = KERAS_APPS["resnet50"]
    assert (app.weights_origin, app.weights_hash) == (resnet.BASE_WEIGHTS_PATH + app.weights_file,
                                                     resnet.WEIGHTS_HASHES["resnet50"][0])
    assert KERAS_APPS["mobilenet_v2"].weights_origin == mobilenet_v2.BASE_WEIGHT_PATH + \
        KERAS_APPS["mobilenet_v2"].weights_file
    app = KERAS_APPS["efficientnet_b0"]
    assert (app.weights_origin, app.weights_hash) == (efficientnet.BASE_WEIGHTS_PATH + "efficientnetb0.h5",
                                                     efficientnet.WEIGHTS_HASHES["b0"][0])
    assert modelfiles.CLASS_INDEX_ORIGIN == imagenet_utils.CLASS_INDEX_PATH
    for app in KERAS_APPS.values():
        assert app.weights_origin.endswith("/" + app.weights_file)
        assert callable(getattr(keras.applications, app.constructor))
    assert KERAS_APPS["vgg16"].notop_file == vgg16.WEIGHTS_PATH_NO_TOP.rsplit("/", 1)[1]
    assert KERAS_APPS["vgg19"].notop_file == vgg19.WEIGHTS_PATH_NO_TOP.rsplit("/", 1)[1]
    assert KERAS_APPS["xception"].notop_file == xception.WEIGHTS_PATH_NO_TOP.rsplit("/", 1)[1]
    assert KERAS_APPS["inception_v3"].notop_file == inception_v3.WEIGHTS_PATH_NO_TOP.rsplit("/", 1)[1]


def test_source_cards_never_replace_a_run_card_nor_chain(tmp_path):
    run = tiny_run(tmp_path / "run")
    other = tiny_run(tmp_path / "other")
    _, card = ModelSource(str(other)).load()
    with pytest.raises(ValueError, match=r"run: holds model.keras of another model"):
        write_source_card(run, card)
    write_source_card(tmp_path / "out", card)
    write_source_card(tmp_path / "out2", dataclasses.replace(card, source=str(tmp_path / "out")))
    with pytest.raises(ValueError, match=r"out2/model.json: source .*out is another card folder"):
        ModelSource(str(tmp_path / "out2")).load()
    (tmp_path / "out2" / "model.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"out2/model.json: unreadable model card"):
        ModelSource(str(tmp_path / "out2")).load()


def test_model_card_fields_mean_one_thing_each():
    """preprocessing is what the model file expects (a keyword); scaling is the trained model's own, in words."""
    from fruitlens.card import ModelCard

    old = ModelCard.from_json({"classes": ["a", "b"], "image_size": [20, 20], "arch": "seed_cnn",
                               "preprocessing": "none ([0, 1] input)"})  # a card written before scaling existed
    assert (old.preprocessing, old.scaling) == ("rescale", "none ([0, 1] input)")
    with pytest.raises(ValueError, match="preprocessing 'bogus': expected one of rescale, none"):
        ModelCard(classes=("a", "b"), image_size=(2, 2), arch="x", preprocessing="bogus")
