"""--refit: after the run with its validation holdout picks the epoch, a fresh model is trained on the training
and validation images together for that many epochs and saved; the card says exactly what was trained."""

from __future__ import annotations

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from fruitlens.cli import main  # noqa: E402
from fruitlens.runs import read_card  # noqa: E402
from fruitlens.training import REFIT_DIR, TrainConfig, train_model  # noqa: E402

FAST = dict(arch="seed_cnn", image_size=12, batch_size=16, seed=3)


def _weights(path):
    return keras.models.load_model(path, compile=False).get_weights()


def _same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_refit_trains_on_train_and_val_for_the_kept_epoch_and_the_card_says_so(demo_dir, tmp_path):
    result = train_model(demo_dir, tmp_path, TrainConfig(epochs=2, refit=True, **FAST))
    n_train, n_val = result.counts["train"], result.counts["val"]
    assert n_val > 0 and n_train + n_val == 72  # 6 classes x 12 training images
    kept = result.validation["kept_epoch"]
    assert result.trained["refit"] is True
    assert result.trained["images"] == 72 and result.trained["epochs"] == kept
    card = read_card(tmp_path)
    trained = card.config["trained"]
    assert trained["refit"] is True and trained["images"] == 72 and trained["epochs"] == kept
    assert "72 training and validation images" in trained["what"] and f"{kept} epoch(s)" in trained["what"]
    assert card.config["validation"]["held_out"] == n_val  # what picked the epoch stays on record
    # the refit's own run: every image, no validation, exactly `kept` epochs
    state = json.loads((tmp_path / REFIT_DIR / "checkpoints" / "state.json").read_text())
    assert [row["epoch"] for row in state["history"]] == list(range(1, kept + 1))
    assert all(row["val_accuracy"] is None or np.isnan(row["val_accuracy"]) for row in state["history"])
    # the saved model is the refit, not the holdout run's epoch
    saved = _weights(tmp_path / "model.keras")
    assert _same(saved, _weights(tmp_path / REFIT_DIR / "checkpoints" / "last.keras"))
    assert not _same(saved, _weights(tmp_path / "checkpoints" / "best.keras"))
    # the history table is still the holdout run's (the one that picked the epoch)
    import pandas as pd

    assert len(pd.read_parquet(tmp_path / "history.parquet")) == 2


def test_refit_is_deterministic_and_can_be_asked_for_when_resuming_a_finished_run(demo_dir, tmp_path):
    a = train_model(demo_dir, tmp_path / "a", TrainConfig(epochs=1, refit=True, **FAST))
    plain = train_model(demo_dir, tmp_path / "b", TrainConfig(epochs=1, **FAST))
    assert a.trained["refit"] and not plain.trained["refit"]
    b = train_model(demo_dir, tmp_path / "b", TrainConfig(epochs=1, refit=True, **FAST), resume=True)
    assert b.resumed_from == 1 and b.trained["refit"] and b.trained["images"] == 72
    assert _same(_weights(tmp_path / "a" / "model.keras"), _weights(tmp_path / "b" / "model.keras"))


def test_without_refit_the_card_says_the_holdout_was_never_trained_on(demo_dir, tmp_path):
    result = train_model(demo_dir, tmp_path, TrainConfig(epochs=1, **FAST))
    t = read_card(tmp_path).config["trained"]
    assert t["refit"] is False and t["images"] == result.counts["train"] < 72 and t["epochs"] == 1
    assert f"{result.counts['val']} validation images never trained on" in t["what"]
    assert not (tmp_path / REFIT_DIR).exists()


def test_refit_with_nothing_held_out_does_nothing_and_says_so(demo_dir, tmp_path, capsys):
    rc = main(["train", "--data", str(demo_dir), "--out", str(tmp_path / "run"), "--image-size", "12",
               "--epochs", "1", "--batch-size", "16", "--val-split", "0", "--refit"])
    assert rc == 0
    assert "refit: nothing to do" in capsys.readouterr().out
    t = read_card(tmp_path / "run").config["trained"]
    assert t == {**t, "refit": False, "images": 72, "epochs": 1}


def test_cli_refit_says_what_it_saved(demo_dir, tmp_path, capsys):
    rc = main(["train", "--data", str(demo_dir), "--out", str(tmp_path / "run"), "--image-size", "12",
               "--epochs", "1", "--batch-size", "16", "--refit"])
    assert rc == 0
    assert "refit on all 72 images (train + validation) for 1 epochs" in capsys.readouterr().out
    assert read_card(tmp_path / "run").config["refit"] is True
