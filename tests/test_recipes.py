"""The photo recipe: photo_resnet, warm-up + cosine, AdamW, label smoothing, photo augmentation, mixup/cutmix,
test-time augmentation; each option works, is validated in one line, and is deterministic with the same seed."""

from __future__ import annotations

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from fruitlens import recipes  # noqa: E402
from fruitlens.card import read_card  # noqa: E402
from fruitlens.cli import main  # noqa: E402
from fruitlens.config import TrainConfig  # noqa: E402
from fruitlens.models import build_model, unseeded_parts  # noqa: E402
from fruitlens.tables import read_table  # noqa: E402
from fruitlens.training import train_model  # noqa: E402

PHOTO = dict(arch="photo_resnet", image_size=16, batch_size=16, seed=7, augment=True, mixup=0.4, cutmix=1.0,
             warmup_epochs=0.5)


def test_photo_resnet_is_a_seeded_residual_network():
    model = build_model("photo_resnet", 3, 16, seed=1)
    assert model.output_shape == (None, 3) and not unseeded_parts(model)
    assert any(isinstance(layer, keras.layers.Add) for layer in model.layers)
    assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    same = build_model("photo_resnet", 3, 16, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), same.get_weights(), strict=True))
    big = build_model("photo_resnet", 2, 64, seed=1)  # stride-2 stem and a max-pool from 64 px
    assert big.get_layer("stem_pool").output.shape[1] == 16


def test_warmup_cosine_rises_then_decays_and_is_saved_with_the_optimizer(tmp_path):
    s = recipes.warmup_cosine(1e-2, total_steps=100, warmup_steps=10, alpha=0.01)
    lrs = [float(s(i)) for i in (0, 4, 9, 10, 55, 100, 150)]
    assert lrs[0] == pytest.approx(1e-3) and lrs[1] == pytest.approx(5e-3) and lrs[2] == pytest.approx(1e-2)
    assert lrs[3] == pytest.approx(1e-2) and lrs[4] == pytest.approx(1e-2 * (0.01 + 0.99 * 0.5), rel=1e-4)
    assert lrs[5] == pytest.approx(1e-4) and lrs[6] == pytest.approx(1e-4)
    model = build_model("photo_resnet", 2, 12, seed=0)
    recipe = recipes.resolved(TrainConfig(arch="photo_resnet", image_size=12, epochs=3))
    assert (recipe.optimizer, recipe.schedule, recipe.label_smoothing, recipe.augment_policy) == (
        "adamw", "warmup_cosine", 0.1, "photo")
    recipes.compile_with(model, TrainConfig(arch="photo_resnet", image_size=12, epochs=3), recipe, 5)
    model.fit(np.random.default_rng(0).random((4, 12, 12, 3), np.float32), np.eye(2)[[0, 1, 0, 1]], verbose=0)
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(again.optimizer, keras.optimizers.AdamW)
    assert float(again.optimizer.learning_rate) == pytest.approx(float(model.optimizer.learning_rate))


def test_the_tutorial_models_keep_their_tutorial_recipe_but_seed_cnn_trains_with_adam_and_cosine():
    for arch in ("small_convnet", "lenet"):
        r = recipes.resolved(TrainConfig(arch=arch))
        assert r.is_tutorial and r.label_smoothing == 0 and r.augment_policy == "classic"
    r = recipes.resolved(TrainConfig(arch="seed_cnn"))  # measured better than its tutorial's RMSprop on Fruits-360
    assert (r.optimizer, r.schedule, r.learning_rate, r.label_smoothing) == ("adam", "warmup_cosine", 1e-3, 0)
    both = {"optimizer": "tutorial", "schedule": "tutorial"}
    for asked in ({"optimizer": "tutorial"}, {"schedule": "tutorial"}, both):
        assert recipes.resolved(TrainConfig(arch="seed_cnn", **asked)).is_tutorial, asked
    r = recipes.resolved(TrainConfig(arch="seed_cnn", schedule="cosine"))
    assert (r.optimizer, r.schedule, r.learning_rate) == ("adam", "cosine", 1e-3)


def test_photo_augmentation_is_stateless_in_seed_and_step():
    x = tf.constant(np.random.default_rng(0).random((4, 16, 16, 3), np.float32))
    a = recipes.photo_augment(x, 3, 5).numpy()
    assert a.shape == x.shape and 0 <= a.min() and a.max() <= 1
    np.testing.assert_array_equal(a, recipes.photo_augment(x, 3, 5).numpy())
    assert not np.allclose(a, recipes.photo_augment(x, 3, 6).numpy())
    assert not np.allclose(a, recipes.photo_augment(x, 4, 5).numpy())
    # crops and flips move pixels only: a flat image stays itself; the jitter is global: it stays flat
    flat = tf.constant(np.broadcast_to(np.array([0.2, 0.5, 0.7], np.float32), (4, 16, 16, 3)).copy())
    np.testing.assert_allclose(recipes.photo_augment(flat, 3, 5, jitter=0.0).numpy(), flat.numpy(), atol=1e-5)
    jittered = recipes.photo_augment(flat, 3, 5, jitter=0.3).numpy()
    assert np.ptp(jittered, axis=(1, 2)).max() < 1e-5 and not np.allclose(jittered, flat.numpy(), atol=1e-3)
    # a left-right ramp keeps its direction or is mirrored, whatever the crop
    ramp = tf.constant(np.broadcast_to(np.linspace(0, 1, 16, dtype=np.float32)[None, :, None], (16, 16, 3))[None]
                       .repeat(8, axis=0).copy())
    out = recipes.photo_augment(ramp, 1, 0, jitter=0.0).numpy()[:, 8, :, 0]
    slopes = np.sign(np.diff(out, axis=1)).sum(axis=1)
    assert set(np.sign(slopes)) == {-1.0, 1.0}  # both orders among 8 images: flips happen, not always


def test_mixup_and_cutmix_mix_labels_in_the_share_they_mix_pixels():
    rng = np.random.default_rng(1)
    x = tf.constant(rng.random((6, 12, 12, 3), np.float32))
    y = tf.one_hot([0, 1, 2, 0, 1, 2], 3)
    xm, ym = recipes.mix(x, y, 1, 2, mixup=0.4)
    np.testing.assert_allclose(ym.numpy().sum(axis=1), 1.0, rtol=1e-6)
    lam = float(ym[0, 0])  # image 0 (class 0) mixed with image 5 (class 2)
    np.testing.assert_allclose(xm[0], lam * x[0] + (1 - lam) * x[5], atol=1e-5)
    xc, yc = recipes.mix(x, y, 1, 2, cutmix=1.0)
    from_partner = float(np.mean(np.all(np.isclose(xc[0], x[5]), axis=-1) & ~np.all(np.isclose(x[0], x[5]), -1)))
    assert float(yc[0, 2]) == pytest.approx(from_partner, abs=1e-6)
    np.testing.assert_array_equal(xc.numpy(), recipes.mix(x, y, 1, 2, cutmix=1.0)[0].numpy())
    same = recipes.mix(x, y, 1, 2)  # both off: unchanged
    assert same[0] is x and same[1] is y


class _Crash(Exception):
    pass


def test_the_photo_recipe_trains_deterministically_and_resumes_the_same(demo_dir, tmp_path):
    config = TrainConfig(epochs=2, **PHOTO)
    first = train_model(demo_dir, tmp_path / "a", config)
    card = read_card(tmp_path / "a")
    assert card.config["recipe"] == {"optimizer": "adamw", "schedule": "warmup_cosine", "learning_rate": 2e-3,
                                     "warmup_epochs": 0.5, "weight_decay": 0.004, "label_smoothing": 0.1,
                                     "augment_policy": "photo", "mixup": 0.4, "cutmix": 1.0}
    assert np.isfinite(first.metrics["train_loss"])

    class CrashAfterFirst(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise _Crash

    with pytest.raises(_Crash):
        train_model(demo_dir, tmp_path / "b", config, callbacks=[CrashAfterFirst()])
    resumed = train_model(demo_dir, tmp_path / "b", config, resume=True)
    assert resumed.resumed_from == 1
    a, b = (read_table(tmp_path / r / "history.parquet") for r in ("a", "b"))
    cols = ["loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"]
    np.testing.assert_array_equal(a[cols].to_numpy(), b[cols].to_numpy())
    lr = a["learning_rate"].to_numpy()
    assert lr[1] < lr[0]  # past the warm-up, decaying
    # the saved model is the best epoch's (early stopping's "restore best weights")
    best = keras.models.load_model(tmp_path / "a" / "checkpoints" / "best.keras", compile=False)
    saved = keras.models.load_model(tmp_path / "a" / "model.keras", compile=False)
    assert all(np.array_equal(u, v) for u, v in zip(best.get_weights(), saved.get_weights(), strict=True))


def test_flip_tta_in_evaluate(demo_dir, tmp_path):
    run = tmp_path / "run"
    train_model(demo_dir, run, TrainConfig(arch="seed_cnn", image_size=12, epochs=1, batch_size=16, seed=2))
    assert main(["evaluate", "--model", str(run), "--data", str(demo_dir), "--out", str(tmp_path / "e0")]) == 0
    assert main(["evaluate", "--model", str(run), "--data", str(demo_dir), "--out", str(tmp_path / "e1"),
                 "--tta", "flip"]) == 0
    m0, m1 = (json.loads((tmp_path / e / "metrics.json").read_text()) for e in ("e0", "e1"))
    assert m0["tta"] == "none" and m1["tta"] == "flip"
    p0, p1 = (read_table(tmp_path / e / "predictions.parquet") for e in ("e0", "e1"))
    assert not np.allclose(p0["pred_prob"], p1["pred_prob"])

    def predict(x):
        return np.stack([x.mean(axis=(1, 2, 3)), x[:, :, :4].mean(axis=(1, 2, 3))], axis=1)

    x = np.random.default_rng(0).random((3, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(recipes.tta_probs(predict, x, "flip"),
                               (predict(x) + predict(x[:, :, ::-1])) / 2)


@pytest.mark.parametrize("flag, value, words", [
    ("--optimizer", "adamx", "--optimizer 'adamx': expected one of default, tutorial, adam, adamw, rmsprop, sgd"),
    ("--schedule", "step", "--schedule 'step': expected one of default, tutorial, constant, cosine, warmup_cosine"),
    ("--warmup-epochs", "-1", "--warmup-epochs -1.0: expected >= 0"),
    ("--weight-decay", "1", "--weight-decay 1.0: expected in [0, 1)"),
    ("--label-smoothing", "1", "--label-smoothing 1.0: expected in [0, 1)"),
    ("--augment-policy", "heavy", "--augment-policy 'heavy': expected one of classic, photo"),
    ("--augment-policy", "photo", "--augment-policy 'photo': expected null unless augment is on (--augment)"),
    ("--crop-scale", "0", "--crop-scale 0.0: expected a share of the image area in (0, 1]"),
    ("--jitter", "1", "--jitter 1.0: expected in [0, 1)"),
    ("--mixup", "-0.2", "--mixup -0.2: expected a Beta parameter >= 0"),
    ("--cutmix", "-1", "--cutmix -1.0: expected a Beta parameter >= 0"),
])
def test_bad_recipe_values_are_one_line_naming_the_option(demo_dir, tmp_path, capsys, flag, value, words):
    assert main(["train", "--data", str(demo_dir), "--out", str(tmp_path), flag, value]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1
    assert not (tmp_path / "index").exists()


def test_bad_tta_is_one_line(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    assert main(["evaluate", "--model", str(tmp_path), "--data", str(tmp_path / "data"), "--out", str(tmp_path / "e"),
                 "--tta", "rotate"]) == 2
    err = capsys.readouterr().err
    assert "--tta 'rotate': expected none or flip" in err and err.count("\n") == 1
    with pytest.raises(ValueError, match="tta 'rotate'"):
        recipes.tta_probs(lambda x: x, np.zeros((1, 2, 2, 3)), "rotate")
