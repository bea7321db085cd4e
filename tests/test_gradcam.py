"""Grad-CAM, Grad-CAM++, CAM: known answers on tiny models, every model structure, no mutation, outputs."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from fruitlens import plots, tables
from fruitlens.batch import engine
from fruitlens.batch.methods import run_method
from fruitlens.batch.rows import rows_from_inputs
from fruitlens.config import CamOptions
from fruitlens.explain.base import find_layer, walk_layers
from fruitlens.explain.gradcam import CAM, GradCAM, GradCAMPlusPlus, cam, gradcam, gradcam_plus_plus
from fruitlens.layout import ExplainLayout
from fruitlens.runs import load_run
from tests.helpers import tiny_run


def colour_model(shape=(12, 10), softmax="dense"):
    """Class 0 = how red the image is, class 1 = how blue: conv(1x1) -> ReLU -> GAP -> Dense(5 * identity)."""
    inp = keras.Input((*shape, 3))
    conv = keras.layers.Conv2D(2, 1, use_bias=False, activation="relu", name="colour")
    x = conv(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(2, activation="softmax" if softmax == "dense" else None, name="head")
    x = dense(x)
    if softmax == "layer":
        x = keras.layers.Activation("softmax")(x)
    model = keras.Model(inp, x)
    conv.set_weights([np.array([[1.0, -0.5], [-0.5, -0.5], [-0.5, 1.0]], np.float32).reshape(1, 1, 3, 2)])
    dense.set_weights([np.eye(2, dtype=np.float32) * 5, np.zeros(2, np.float32)])
    return model


def blobs(n, shape=(12, 10)):
    """Image i: a red blob top-left and a blue blob bottom-right on gray; returns images and the blob boxes."""
    h, w = shape
    img = np.full((n, h, w, 3), 0.3, np.float32)
    img[:, 1:4, 1:4] = (0.9, 0.1, 0.1)
    img[:, h - 4:h - 1, w - 4:w - 1] = (0.1, 0.1, 0.9)
    return img


def reference(feature_fn, head_fn, images, targets):
    """Grad-CAM by hand, one image at a time: features A, logits = head(A), weights = mean gradient."""
    out = []
    for img, t in zip(images, targets, strict=True):
        with tf.GradientTape() as tape:
            acts = feature_fn(img[None])
            tape.watch(acts)
            score = head_fn(acts)[0, t]
        grads = tape.gradient(score, acts)
        heat = tf.nn.relu(tf.reduce_sum(acts * tf.reduce_mean(grads, axis=(1, 2), keepdims=True), -1))[0]
        m = float(tf.reduce_max(heat))
        out.append(np.asarray(heat) / m if m > 0 else np.zeros(heat.shape, np.float32))
    return np.stack(out)


@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize("shape", [(12, 10), (9, 14)])
def test_known_answer_each_image_its_own_target(n, shape):
    model = colour_model(shape)
    images = blobs(n, shape)
    targets = np.arange(n) % 2  # image 0 explains "red", image 1 "blue"
    heat = gradcam(model, images, targets)
    assert heat.shape == (n, *shape) and heat.dtype == np.float32
    assert np.isfinite(heat).all() and heat.min() >= 0 and heat.max() <= 1
    # by hand: class t's map is ReLU(channel t) / its max: red = relu(r - g/2 - b/2)
    acts = np.maximum(images @ np.array([[1.0, -0.5], [-0.5, -0.5], [-0.5, 1.0]], np.float32), 0)
    for i, t in enumerate(targets):
        expected = acts[i, ..., t] / acts[i, ..., t].max()
        np.testing.assert_allclose(heat[i], expected, atol=1e-5)
    assert tuple(np.unravel_index(heat[0].argmax(), shape)) in {(y, x) for y in range(1, 4) for x in range(1, 4)}


def test_default_target_is_predicted_class_and_scores_are_logits():
    model = colour_model()
    images = blobs(2)
    images[0, 1:4, 1:4] = (1.0, 0.0, 0.0)  # image 0: the red blob wins
    images[1, 1:4, 1:4] = 0.3  # image 1: only the blue blob -> predicted "blue"
    result = GradCAM(model).explain(images)
    assert list(result.targets) == [0, 1]
    logits = 5 * np.maximum(images @ np.array([[1.0, -0.5], [-0.5, -0.5], [-0.5, 1.0]], np.float32), 0).mean((1, 2))
    assert list(result.targets) == list(logits.argmax(1))
    np.testing.assert_allclose(result.scores, logits[np.arange(2), result.targets], rtol=1e-5)


@pytest.mark.parametrize("softmax", ["dense", "layer"])
def test_softmax_models_give_the_logit_heatmaps(softmax):
    images = np.random.default_rng(0).random((2, 12, 10, 3)).astype(np.float32)
    plain = colour_model(softmax="none")
    wrapped = colour_model(softmax=softmax)
    a = GradCAM(plain).explain(images, [0, 1])
    b = GradCAM(wrapped).explain(images, [0, 1])
    np.testing.assert_allclose(a.heatmaps, b.heatmaps, atol=1e-6)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)
    assert np.abs(np.asarray(wrapped(images)).sum(1) - 1).max() < 1e-5  # the model itself still ends in softmax


def vgg_like(shape=(16, 12), classes=3, seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((*shape, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="block1_conv1")(inp)
    x = keras.layers.MaxPooling2D(name="block1_pool")(x)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="block2_conv1")(x)
    backbone = keras.Model(inp, x, name="vgg_like")
    return backbone


def structures(shape=(16, 12)):
    """The same network three ways: Sequential, functional, and a functional backbone nested in a Sequential."""
    backbone = vgg_like(shape)
    head = [keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")]
    nested = keras.Sequential([keras.Input((*shape, 3)), backbone, *head])
    seq = keras.Sequential([keras.Input((*shape, 3)), *backbone.layers[1:], *head])
    inp = keras.Input((*shape, 3))
    x = inp
    for lay in seq.layers:
        x = lay(x)
    func = keras.Model(inp, x)
    return {"sequential": seq, "functional": func, "nested": nested}


def test_last_conv_found_in_every_structure_and_all_agree():
    models = structures()
    images = np.random.default_rng(1).random((2, 16, 12, 3)).astype(np.float32)
    paths = {k: find_layer(m).path for k, m in models.items()}
    assert paths == {"sequential": "block2_conv1", "functional": "block2_conv1", "nested": "vgg_like/block2_conv1"}
    maps = {k: gradcam(m, images, [0, 2], upsample=False) for k, m in models.items()}
    assert maps["nested"].shape == (2, 8, 6)
    backbone = models["nested"].layers[0]
    dense = models["nested"].layers[-1]
    ref = reference(backbone, lambda a: tf.reshape(a, (1, -1)) @ dense.kernel + dense.bias, images, [0, 2])
    for m in maps.values():
        np.testing.assert_allclose(m, ref, atol=1e-5)
    # an inner layer by path, and by bare name
    early = gradcam(models["nested"], images, layer="vgg_like/block1_conv1", upsample=False)
    assert early.shape == (2, 16, 12)
    np.testing.assert_array_equal(early, gradcam(models["nested"], images, layer="block1_conv1", upsample=False))


def test_no_mutation_of_model_or_images(tmp_path):
    model = structures()["nested"]
    images = np.random.default_rng(2).random((2, 16, 12, 3)).astype(np.float32)
    before_images = images.copy()
    weights = [w.copy() for w in model.get_weights()]
    config = json.dumps(model.get_config(), default=str)
    out = np.asarray(model(images))
    activation = model.layers[-1].activation
    gradcam(model, images)
    gradcam_plus_plus(model, images, [1, 1])
    np.testing.assert_array_equal(images, before_images)
    for a, b in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert json.dumps(model.get_config(), default=str) == config
    assert model.layers[-1].activation is activation
    np.testing.assert_array_equal(np.asarray(model(images)), out)
    model.save(tmp_path / "m.keras")  # still saves, and reloads as the same network
    again = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(np.asarray(again(images)), out, atol=1e-6)
    assert [lay.name for lay in again.layers] == [lay.name for lay in model.layers]


def test_batch_equals_one_by_one():
    model = structures()["sequential"]
    images = np.random.default_rng(3).random((5, 16, 12, 3)).astype(np.float32)
    targets = np.array([0, 1, 2, 1, 0])
    for fn in (gradcam, gradcam_plus_plus):
        batch = fn(model, images, targets)
        single = np.concatenate([fn(model, images[i:i + 1], targets[i:i + 1]) for i in range(5)])
        np.testing.assert_allclose(batch, single, atol=1e-5)
    small = GradCAM(model, batch_size=2).explain(images, targets).heatmaps
    np.testing.assert_allclose(small, gradcam(model, images, targets), atol=1e-5)


def test_all_zero_maps_are_zero_not_nan():
    model = colour_model()
    model.get_layer("head").set_weights([np.zeros((2, 2), np.float32), np.zeros(2, np.float32)])  # zero gradient
    images = blobs(2)
    for fn in (gradcam, gradcam_plus_plus, cam):
        heat = fn(model, images)
        assert not np.isnan(heat).any() and (heat == 0).all()
    dark = colour_model()
    heat = gradcam(dark, np.full((1, 12, 10, 3), 0.5, np.float32))  # gray: every activation is zero
    assert (heat == 0).all()


def test_cam_equals_gradcam_for_gap_dense_and_refuses_other_heads():
    run = structures()
    model = colour_model()
    images = np.random.default_rng(4).random((2, 12, 10, 3)).astype(np.float32)
    np.testing.assert_allclose(cam(model, images, [1, 0]), gradcam(model, images, [1, 0]), atol=1e-5)
    with pytest.raises(ValueError, match="CAM needs block2_conv1 -> GlobalAveragePooling2D -> Dense"):
        CAM(run["sequential"]).explain(np.zeros((1, 16, 12, 3), np.float32))


def test_gradcam_plus_plus_known_answer_and_range():
    model = colour_model()
    images = blobs(2)
    heat = GradCAMPlusPlus(model).explain(images, [0, 1]).heatmaps
    assert heat.shape == (2, 12, 10) and heat.min() >= 0 and heat.max() == pytest.approx(1.0)
    assert heat[0, 1:4, 1:4].min() > 0.9 and heat[0, 8:11, 6:9].max() == 0
    assert heat[1, 8:11, 6:9].min() > 0.9 and heat[1, 1:4, 1:4].max() == 0


def test_bad_input_is_named():
    model = colour_model()
    with pytest.raises(ValueError, match=r"images of shape \(12, 10, 3\): expected \(N, H, W, 3\)"):
        gradcam(model, blobs(1)[0])
    with pytest.raises(ValueError, match=r"targets 0..5: expected class ids in \[0, 2\)"):
        gradcam(model, blobs(2), [0, 5])
    with pytest.raises(ValueError, match="layer 'nope': expected a layer of model .*not found; conv layers: colour"):
        gradcam(model, blobs(1), layer="nope")
    with pytest.raises(ValueError, match="expected a 4-D"):
        gradcam(model, blobs(1), layer=model.layers[-2].name)


def test_walk_layers_lists_nested_paths():
    paths = [r.path for r in walk_layers(structures()["nested"])]
    assert paths[:4] == ["vgg_like", "vgg_like/block1_conv1", "vgg_like/block1_pool", "vgg_like/block2_conv1"]


# ------------------------------------------------------------------------------------ outputs


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("run"), classes=("a", "b", "c", "d", "e", "f"), image_size=(20, 20))


def test_batch_method_rows_and_captioned_pictures_on_the_photo(demo_dir, run_dir, tmp_path):
    model, card = load_run(run_dir)
    images, rows, _ = engine.read_chunk(rows_from_inputs([demo_dir], split="test", limit=3), card.image_size)
    out = ExplainLayout(tmp_path / "explain")
    options = CamOptions(palette="magma", alpha=0.5, faithfulness_steps=5)
    df, draw = run_method("gradcam", model, card, images, rows, options, out)
    assert not out.pictures_dir("gradcam").exists()  # the model's work is done; the pictures are drawn next
    draw()
    tables.write_table(df, tmp_path / "g.parquet", "gradcam")  # the schema accepts the rows
    assert len(df) == 3 and set(df["layer"]) == {find_layer(model).path} and list(df["path"]) == list(rows["path"])
    assert df["label"].isin(card.classes).all() and df["pointing_hit"].map(lambda v: isinstance(v, bool)).all()
    assert df["peak_y"].between(0, 19).all() and df["deletion_auc"].between(0, 1).all()
    for path in [*df["heatmap_path"], *df["overlay_path"]]:
        width, height = Image.open(out.root / path).size
        assert width == 300 and height > 300  # the 100 x 100 photo (enlarged x3, not the 20 x 20 input) + caption
        caption = plots.read_caption(out.root / path)
        assert "Grad-CAM" in caption and f"layer {find_layer(model).path}" in caption and "predicted" in caption


def test_options_are_checked_where_they_enter():
    with pytest.raises(ValueError, match="palette 'nope': expected a matplotlib colormap"):
        CamOptions(palette="nope")
    with pytest.raises(ValueError, match="variant 'x': expected one of gradcam, gradcam\\+\\+, cam"):
        CamOptions(variant="x")


def test_cli_explain_gradcam_resumes(demo_dir, run_dir, tmp_path, capsys):
    from fruitlens.cli import main

    out = tmp_path / "out"
    args = ["explain", "--model", str(run_dir), "--data", str(demo_dir), "--method", "gradcam", "--out", str(out),
            "--limit", "5", "--chunk-size", "2", "--gradcam-variant", "gradcam++", "--faithfulness-steps", "4"]
    assert main(args) == 0
    table = tables.read_table(out / "gradcam.parquet")
    assert len(table) == 5 and set(table["variant"]) == {"gradcam++"}
    assert len(list((out / "side_by_side").glob("*.png"))) == 5
    assert main(args) == 0
    assert "5 already done" in capsys.readouterr().out
    assert main([*args[:-4], "--opacity", "2"]) == 2
    assert "--opacity 2.0: expected an opacity in [0, 1]" in capsys.readouterr().err
    assert main([*args[:-4], "--layer", "nosuch"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--layer 'nosuch': expected a layer of model" in err and len(err.splitlines()) == 1


def test_softmax_inside_a_nested_classifier_is_left_out():
    inner = colour_model()  # functional, ends in Dense(softmax)
    outer = keras.Sequential([keras.Input((12, 10, 3)), inner])
    images = blobs(2)
    result = GradCAM(outer).explain(images, [0, 1])
    assert result.layer == f"{inner.name}/colour"
    np.testing.assert_allclose(result.scores, GradCAM(colour_model(softmax="none")).explain(images, [0, 1]).scores,
                               rtol=1e-6)


def test_cam_result_rows():
    model = colour_model()
    result = GradCAM(model).explain(blobs(2), [0, 1], upsample=False)
    rows = result.to_rows(["x", "y"], ["red", "blue"])
    assert list(rows["image_id"]) == ["x", "y"] and list(rows["label"]) == ["red", "blue"]
    assert (rows["layer"] == "colour").all() and rows["score"].dtype == np.float64
