"""Training: outputs, checkpoints, resume after a crash, early stopping, class weights, transfer learning."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

keras = pytest.importorskip("keras")

from fruitlens import tables  # noqa: E402
from fruitlens.card import read_card  # noqa: E402
from fruitlens.cli import main  # noqa: E402
from fruitlens.config import TrainConfig  # noqa: E402
from fruitlens.runs import load_run  # noqa: E402
from fruitlens.train_data import class_weights_for  # noqa: E402
from fruitlens.training import train_model  # noqa: E402

FAST = dict(arch="seed_cnn", image_size=16, batch_size=16, seed=3)


class Crash(Exception):
    pass


class CrashAfter(keras.callbacks.Callback):
    """Simulates a killed run: raises at the end of epoch ``k`` (after the checkpointer has run)."""

    def __init__(self, k):
        super().__init__()
        self.k = k

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.k:
            raise Crash(f"killed after epoch {self.k}")


@pytest.fixture(scope="module")
def uninterrupted(demo_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("full")
    return run, train_model(demo_dir, run, TrainConfig(epochs=3, **FAST))


def test_train_writes_the_run_folder(uninterrupted, demo_dir):
    run, result = uninterrupted
    for name in ("model.keras", "model.json", "history.parquet", "curves.png", "checkpoints/best.keras",
                 "checkpoints/last.keras", "checkpoints/state.json", "index/images.parquet"):
        assert (run / name).is_file(), name
    assert not list(run.rglob(".*.tmp*")), "temp files left behind"
    history = tables.read_table(run / "history.parquet")
    assert list(history.columns[:7]) == tables.HISTORY_SCHEMA.names
    assert history["epoch"].tolist() == [1, 2, 3]
    assert history[["loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds"]].notna().all().all()
    lr = history["learning_rate"].tolist()  # seed_cnn's default recipe: Adam 1e-3, warm-up then cosine
    assert 0 < lr[2] < lr[1] < lr[0] <= 1e-3, lr  # (the rate at the end of each epoch: warm-up is over by then)
    card = read_card(run)
    assert card.arch == "seed_cnn" and card.image_size == (16, 16) and len(card.classes) == 6
    assert card.seed == 3 and len(card.fingerprint) == 64 and card.versions["keras"]
    assert card.config["epochs"] == 3 and card.config["counts"]["val"] > 0  # val carved from Training
    assert 0.0 <= card.metrics["val_accuracy"] <= 1.0
    assert result.epochs == 3 and result.model_path.endswith("model.keras")
    model, _ = load_run(run)
    x = np.random.default_rng(0).uniform(0, 1, (2, 16, 16, 3)).astype(np.float32)
    assert np.asarray(model(x)).shape == (2, 6)
    best = int(json.loads((run / "checkpoints" / "state.json").read_text())["best_epoch"])
    assert result.best_epoch == best and history["val_accuracy"].max() == pytest.approx(
        history.loc[history["epoch"] == best, "val_accuracy"].iloc[0])


def test_killed_run_resumes_at_the_right_epoch(uninterrupted, demo_dir, tmp_path):
    full_run, full = uninterrupted
    config = TrainConfig(epochs=3, **FAST)
    with pytest.raises(Crash):
        train_model(demo_dir, tmp_path, config, callbacks=[CrashAfter(2)])
    state = json.loads((tmp_path / "checkpoints" / "state.json").read_text())
    assert state["epoch"] == 2 and not (tmp_path / "model.keras").exists()
    result = train_model(demo_dir, tmp_path, config, resume=True)
    assert result.resumed_from == 2 and result.epochs == 3
    history = tables.read_table(tmp_path / "history.parquet")
    ref = tables.read_table(full_run / "history.parquet")
    assert history["epoch"].tolist() == [1, 2, 3]  # every epoch once
    # same batches in the same order, optimizer state and dropout noise restored: the resumed run retraces
    # the uninterrupted one
    for column in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
        np.testing.assert_allclose(history[column], ref[column], rtol=1e-5, err_msg=column)
    assert result.metrics["val_accuracy"] == pytest.approx(full.metrics["val_accuracy"])


def test_resume_refuses_a_changed_config_and_allows_more_epochs(uninterrupted, demo_dir, tmp_path):
    run, _ = uninterrupted
    with pytest.raises(ValueError, match="configuration changed.*image_size"):
        train_model(demo_dir, run, TrainConfig(epochs=3, **{**FAST, "image_size": 12}), resume=True)
    result = train_model(demo_dir, run, TrainConfig(epochs=3, **FAST), resume=True)  # nothing left to do
    assert result.resumed_from == 3 and result.epochs == 3


def test_early_stopping_stops_and_stays_stopped(demo_dir, tmp_path):
    # lr 1e-12: the weights stay put, so val_accuracy cannot improve (val_loss still drifts with the
    # batch-norm statistics, so it is not the metric to starve)
    config = TrainConfig(epochs=6, early_stopping=1, learning_rate=1e-12, monitor="val_accuracy", **FAST)
    result = train_model(demo_dir, tmp_path, config)
    assert result.stopped_early and result.epochs < 6
    again = train_model(demo_dir, tmp_path, config, resume=True)
    assert again.epochs == result.epochs


def test_class_weights_balanced():
    w = class_weights_for(np.array([0, 0, 0, 1]), 3)
    assert w[0] == pytest.approx(4 / 6) and w[1] == pytest.approx(2.0) and w[2] == 1.0


def test_augment_class_weights_tensorboard_and_cli(demo_dir, tmp_path, capsys):
    rc = main(["train", "--data", str(demo_dir), "--out", str(tmp_path), "--arch", "small_convnet",
               "--image-size", "16x20", "--epochs", "1", "--augment", "--class-weights", "balanced",
               "--tensorboard", "--classes", "red_dot,blue_dot"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "trained small_convnet" in out and "2 classes" in out
    # not a terminal: one line per epoch, no progress bar redrawn with carriage returns
    assert "- val_accuracy: " in out and "\r" not in out
    card = read_card(tmp_path)
    assert card.image_size == (16, 20) and card.classes == ("blue_dot", "red_dot")
    assert card.config["augment"] and card.config["class_weights"] == "balanced"
    assert any((tmp_path / "logs").rglob("*tfevents*"))


def test_cli_bad_values_are_one_line(demo_dir, tmp_path, capsys, monkeypatch):
    from fruitlens import models

    assert main(["train", "--data", str(demo_dir), "--out", str(tmp_path), "--arch", "resnet"]) == 2
    assert "architecture 'resnet'" in capsys.readouterr().err
    assert main(["train", "--data", str(demo_dir), "--out", str(tmp_path), "--image-size", "0"]) == 2
    assert "--image-size 0" in capsys.readouterr().err
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(models, "network_available", lambda *a, **k: False)
    assert main(["train", "--data", str(demo_dir), "--out", str(tmp_path), "--arch", "transfer:vgg16",
                 "--image-size", "32", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "weights=imagenet" in err and "Traceback" not in err
    assert not (tmp_path / "index").exists()  # failed before reading any data


def test_config_round_trip_and_unknown_keys():
    config = TrainConfig(arch="fruit_net", image_size=(24, 32), classes=("a", "b"), augment=True,
                         augment_options={"rotation": 10.0, "flip": False})
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert hash(config) == hash(TrainConfig.from_dict(config.to_dict()))  # frozen and hashable
    with pytest.raises(ValueError, match="augment_options.*expected keys among rotation"):
        TrainConfig(augment_options={"spin": 1})
    with pytest.raises(ValueError, match="unknown training option.*colour.*valid: arch"):
        TrainConfig.from_dict({"arch": "seed_cnn", "colour": 1})
    with pytest.raises(ValueError, match="mode 'melt'"):
        TrainConfig(mode="melt")
    with pytest.raises(ValueError, match="epochs 0"):
        TrainConfig(epochs=0)


@pytest.mark.slow
def test_transfer_with_a_backbone_pretrained_by_the_test(demo_dir, tmp_path):
    """Pretrain a small MobileNetV2 on three classes, save its weights, reuse them on the other three."""
    from fruitlens.dataset import index_dataset
    from fruitlens.inputs import load_images, make_dataset
    from fruitlens.models import build_backbone, build_model, compile_model

    size = 32
    pre = index_dataset(demo_dir, classes=["red_dot", "blue_dot", "green_square"]).paths("train")
    data = load_images(pre, size)
    keras.utils.set_random_seed(0)
    pretrain = compile_model(build_model("transfer:mobilenet_v2", 3, size, weights="none", mode="finetune",
                                         alpha=0.35), "fruit_net")
    pretrain.get_layer("backbone_mobilenet_v2").trainable = True
    pretrain.fit(make_dataset(data, 16, shuffle=True, seed=0), epochs=1, verbose=0)
    weights = tmp_path / "mobilenet_pretrained.weights.h5"
    pretrain.get_layer("backbone_mobilenet_v2").save_weights(weights)

    other = ("purple_triangle", "black_cross", "cyan_ring")
    config = TrainConfig(arch="transfer:mobilenet_v2", alpha=0.35, image_size=size, epochs=2, batch_size=16,
                         weights=str(weights), mode="bottleneck", classes=other, seed=1)
    result = train_model(demo_dir, tmp_path / "run", config)
    model, card = load_run(tmp_path / "run")
    assert card.classes == tuple(sorted(other)) and card.arch == "transfer:mobilenet_v2"
    assert "mobilenet_v2:tf" in card.scaling and card.preprocessing == "rescale"  # one meaning per field
    saved = build_backbone("mobilenet_v2", (size, size), str(weights), alpha=0.35).get_weights()
    used = model.get_layer("backbone_mobilenet_v2").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(saved, used, strict=True))  # the pretrained file was used
    assert list((tmp_path / "run" / "cache").glob("features-*.npy"))
    x = load_images(index_dataset(demo_dir, classes=list(other)).paths("test"), size).floats()
    probs = np.asarray(model(x, training=False))
    assert probs.shape == (len(x), 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert result.epochs == 2 and pd.notna(result.metrics["val_accuracy"])


@pytest.mark.slow
def test_finetune_trains_only_the_last_block_and_the_head(demo_dir, tmp_path):
    config = TrainConfig(arch="transfer:mobilenet_v2", alpha=0.35, image_size=32, epochs=1, batch_size=16,
                         weights="none", mode="finetune", classes=("red_dot", "cyan_ring"), seed=2)
    from fruitlens.models import build_model

    before = build_model(config.arch, 2, 32, weights="none", mode="finetune", alpha=0.35, seed=2)
    train_model(demo_dir, tmp_path, config)
    model, card = load_run(tmp_path)
    assert card.classes == ("cyan_ring", "red_dot")
    old = before.get_layer("backbone_mobilenet_v2")
    new = model.get_layer("backbone_mobilenet_v2")
    changed = {layer.name for layer, ref in zip(new.layers, old.layers, strict=True)
               if layer.weights and not all(np.array_equal(a, b) for a, b in
                                            zip(layer.get_weights(), ref.get_weights(), strict=True))}
    assert changed and all(name.startswith(("block_16", "Conv_1")) for name in changed)
    state = json.loads((tmp_path / "checkpoints" / "state.json").read_text())
    assert state["history"][0]["learning_rate"] == pytest.approx(1e-4)  # SGD(1e-4, momentum 0.9)
