"""Architectures: names, shapes, the tutorial model, preprocessing inside, transfer weights and modes."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from fruitlens import models  # noqa: E402
from fruitlens.errors import ModelError  # noqa: E402
from fruitlens.models import BackbonePreprocess, build_model, parse_arch  # noqa: E402


@pytest.mark.parametrize("arch", ["seed_cnn", "fruit_net", "small_convnet", "lenet"])
@pytest.mark.parametrize("n_classes,size", [(2, (20, 20)), (5, (24, 16))])
def test_plain_archs_output_probabilities(arch, n_classes, size):
    model = build_model(arch, n_classes, size, seed=0)
    x = np.random.default_rng(0).uniform(0, 1, (3, *size, 3)).astype(np.float32)
    before = x.copy()
    p = np.asarray(model(x, training=False))
    assert p.shape == (3, n_classes) and np.all(np.isfinite(p))
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(x, before)


def test_seed_cnn_is_the_tutorial_model():
    model = build_model("seed_cnn", 33, 20)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Conv2D", "LeakyReLU", "BatchNormalization", "MaxPooling2D",
                     "Conv2D", "LeakyReLU", "BatchNormalization", "MaxPooling2D", "Dropout",
                     "Flatten", "Dense", "LeakyReLU", "Dropout", "Dense"]
    leaky = [layer for layer in model.layers if isinstance(layer, keras.layers.LeakyReLU)]
    assert all(abs(float(layer.negative_slope) - 0.5) < 1e-9 for layer in leaky)
    drops = [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert drops == [0.25, 0.5]
    assert model.layers[10].units == 100 and model.layers[-1].units == 33
    opt = models.default_optimizer("seed_cnn")
    assert isinstance(opt, keras.optimizers.RMSprop)
    schedule = opt.learning_rate if not hasattr(opt, "_learning_rate") else opt._learning_rate
    # old Keras decay=1e-6: lr / (1 + 1e-6 * step)
    assert float(schedule(0)) == pytest.approx(1e-4)
    assert float(schedule(1_000_000)) == pytest.approx(1e-4 / 2)


def test_same_seed_same_weights():
    a = build_model("fruit_net", 3, 16, seed=5).get_weights()
    b = build_model("fruit_net", 3, 16, seed=5).get_weights()
    c = build_model("fruit_net", 3, 16, seed=6).get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_bad_names_are_one_line_errors():
    with pytest.raises(ModelError, match="architecture 'vgg': expected one of seed_cnn"):
        parse_arch("vgg")
    with pytest.raises(ModelError, match="backbone vgg11"):
        parse_arch("transfer:vgg16,vgg11")
    assert parse_arch("transfer:vgg16,resnet50") == ("transfer", ("vgg16", "resnet50"))
    with pytest.raises(ModelError, match="at least 2"):
        build_model("seed_cnn", 1, 20)
    with pytest.raises(ModelError, match="mode 'thaw'"):
        build_model("transfer:mobilenet_v2", 2, 32, weights="none", mode="thaw")


def test_imagenet_without_cache_or_network_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(models, "network_available", lambda *a, **k: False)
    with pytest.raises(ModelError) as info:
        build_model("transfer:vgg16", 2, 32, weights="imagenet")
    msg = str(info.value)
    assert "\n" not in msg and "weights=imagenet for vgg16" in msg and "--weights" in msg


def test_missing_or_wrong_weights_file(tmp_path):
    with pytest.raises(ModelError, match="no such file"):
        build_model("transfer:mobilenet_v2", 2, 32, weights=str(tmp_path / "nope.weights.h5"), alpha=0.35)
    other = models.build_backbone("mobilenet_v2", (32, 32), "none", alpha=0.5)
    path = tmp_path / "other.weights.h5"
    other.save_weights(path)
    with pytest.raises(ModelError, match="does not fit mobilenet_v2"):
        build_model("transfer:mobilenet_v2", 2, 32, weights=str(path), alpha=0.35)


@pytest.mark.parametrize("mode", ["caffe", "tf", "raw255"])
def test_backbone_preprocess_matches_keras(mode):
    x = np.random.default_rng(0).uniform(0, 1, (2, 4, 5, 3)).astype(np.float32)
    got = np.asarray(BackbonePreprocess(mode)(x))
    ref = {"caffe": keras.applications.vgg16.preprocess_input(x * 255.0),
           "tf": keras.applications.mobilenet_v2.preprocess_input(x * 255.0),
           "raw255": x * 255.0}[mode]
    np.testing.assert_allclose(got, np.asarray(ref), rtol=1e-5, atol=1e-3)


def test_transfer_modes_freeze_what_they_should():
    frozen = build_model("transfer:mobilenet_v2", 3, 32, weights="none", mode="frozen", alpha=0.35, seed=0)
    bb = frozen.get_layer("backbone_mobilenet_v2")
    assert not bb.trainable
    n_head = len(frozen.get_layer("head").trainable_weights)
    assert len(frozen.trainable_weights) == n_head
    tuned = build_model("transfer:mobilenet_v2", 3, 32, weights="none", mode="finetune", alpha=0.35, seed=0)
    bb = tuned.get_layer("backbone_mobilenet_v2")
    trainable = [layer.name for layer in bb.layers if layer.trainable and layer.weights]
    assert trainable and all(n.startswith(("block_16", "Conv_1")) for n in trainable)
    assert isinstance(models.default_optimizer("transfer:vgg16", "finetune"), keras.optimizers.SGD)


def test_concatenated_backbones_and_saved_model_round_trip(tmp_path):
    model = build_model("transfer:mobilenet_v2,efficientnet_b0", 2, 32, weights="none", seed=0, alpha=1.0)
    feats = models.features_model(model)
    assert feats.output_shape[-1] == 1280 + 1280
    x = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
    p = np.asarray(model(x, training=False))
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras", compile=False)
    np.testing.assert_allclose(np.asarray(again(x, training=False)), p, atol=1e-5)


def test_architecture_names_checked_without_keras_match_the_builders():
    from fruitlens import archs, models

    assert archs.ARCH_NAMES == tuple(models.ARCHS)
    with pytest.raises(models.ModelError, match="architecture 'resnet'"):
        models.parse_arch("resnet")
