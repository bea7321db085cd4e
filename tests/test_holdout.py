"""What is held out for validation: --val-split 0 trains on every image and keeps the last epoch; an empty or
tiny validation split is said in one line, in the card and in the report."""

from __future__ import annotations

import logging

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from fruitlens.card import read_card  # noqa: E402
from fruitlens.cli import main  # noqa: E402
from fruitlens.config import TrainConfig  # noqa: E402
from fruitlens.training import train_model  # noqa: E402

FAST = dict(arch="seed_cnn", image_size=12, batch_size=16, seed=3)


def _same_weights(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights(), strict=True))


def test_val_split_zero_trains_on_every_image_and_keeps_the_last_epoch(demo_dir, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="fruitlens.training"):
        result = train_model(demo_dir, tmp_path, TrainConfig(epochs=3, val_fraction=0.0, **FAST))
    assert result.counts == {"train": 72, "val": 0}  # 6 classes x 12, none held out
    assert not [r for r in caplog.records if "validation" in r.getMessage()]  # asked for: no warning
    card = read_card(tmp_path)
    v = card.config["validation"]
    assert v["held_out"] == 0 and v["trained_on"] == 72 and v["keep"] == "last" and v["kept_epoch"] == 3
    assert "val_fraction 0" in v["source"] and not v["warning"]
    assert card.metrics["best_epoch"] == 3 and "val_accuracy" not in card.metrics
    saved = keras.models.load_model(tmp_path / "model.keras", compile=False)
    last = keras.models.load_model(tmp_path / "checkpoints" / "last.keras", compile=False)
    assert _same_weights(saved, last)


def test_keep_last_with_a_validation_split(demo_dir, tmp_path):
    # lr 1e-12: val_accuracy stays put, so the best epoch is the first; keep=last still keeps the third
    config = TrainConfig(epochs=3, keep="last", learning_rate=1e-12, **FAST)
    result = train_model(demo_dir, tmp_path, config)
    v = result.validation
    assert v["held_out"] == result.counts["val"] > 0 and v["keep"] == "last" and v["kept_epoch"] == 3
    assert result.best_epoch == 3 and "val_accuracy" in result.metrics
    saved = keras.models.load_model(tmp_path / "model.keras", compile=False)
    last = keras.models.load_model(tmp_path / "checkpoints" / "last.keras", compile=False)
    assert _same_weights(saved, last)


def _nine_images(root):
    from fruitlens.synthetic import write_demo_dataset

    data = write_demo_dataset(root, n_train=3, n_test=1)
    keep = sorted(p.name for p in (data / "Training").iterdir())[:3]
    for p in (data / "Training").iterdir():
        if p.name not in keep:
            for f in p.iterdir():
                f.unlink()
            p.rmdir()
    return data


def test_nine_images_warn_in_one_line_instead_of_a_silent_nan(tmp_path, capsys):
    data = _nine_images(tmp_path / "data")
    rc = main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--arch", "seed_cnn", "--image-size", "12",
               "--epochs", "2", "--batch-size", "4"])
    assert rc == 0
    captured = capsys.readouterr()
    assert "nan" not in captured.out
    assert captured.err.count("validation split is empty") == 1
    assert "trained seed_cnn on 9 images (6 classes), 0 held out for validation" in captured.out
    assert "kept the last epoch (2)" in captured.out
    card = read_card(tmp_path / "run")
    warning = card.config["validation"]["warning"]
    assert "validation split is empty" in warning and "\n" not in warning
    from fruitlens.report.record import holdout_paragraph

    html = holdout_paragraph(card.to_json())
    assert "Warning: the validation split is empty" in html and "nothing held out (none: val_fraction 0.15" in html


def test_a_tiny_validation_split_is_warned_about(demo_dir, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="fruitlens.training"):
        result = train_model(demo_dir, tmp_path, TrainConfig(epochs=1, val_fraction=0.1, **FAST))
    assert result.counts["val"] == 6  # round(12 * 0.1) = 1 per class
    lines = [r.getMessage() for r in caplog.records if "validation split" in r.getMessage()]
    assert len(lines) == 1 and "only 6 image(s) for 6 classes" in lines[0]
    from fruitlens.report.record import holdout_paragraph

    html = holdout_paragraph(read_card(tmp_path).to_json())
    assert "6 images held out" in html and "picks the best epoch by val_accuracy" in html
    assert "Warning: the validation split has only 6" in html


def test_old_cards_still_say_what_they_can():
    from fruitlens.report.record import holdout_paragraph

    assert "12 images held out" in holdout_paragraph({"config": {"counts": {"train": 60, "val": 12}}})
    assert holdout_paragraph({"config": {}}) == ""


def test_a_refit_says_what_the_saved_model_was_trained_on():
    from fruitlens.report.record import holdout_paragraph

    validation = {"held_out": 12, "trained_on": 48, "source": "val_fraction 0.2", "why": "picks the epoch"}
    what = "refit: a fresh model trained on the 60 training and validation images together for 3 epoch(s)"
    html = holdout_paragraph({"config": {"validation": validation, "trained": {"refit": True, "what": what}}})
    assert "12 images held out" in html and f"The saved model: {what}." in html
    plain = holdout_paragraph({"config": {"validation": validation, "trained": {"refit": False, "what": "epoch 3"}}})
    assert "The saved model" not in plain


@pytest.mark.parametrize("flag, value, words", [
    ("--val-split", "1", "--val-split 1.0: expected a fraction in [0, 1)"),
    ("--val-split", "-0.1", "--val-split -0.1: expected a fraction in [0, 1)"),
    ("--keep", "worst", "--keep 'worst': expected one of best, last"),
])
def test_bad_values_are_one_line_naming_the_flag(demo_dir, tmp_path, capsys, flag, value, words):
    assert main(["train", "--data", str(demo_dir), "--out", str(tmp_path), flag, value]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1
    with pytest.raises(ValueError, match="val_fraction 1.0"):
        TrainConfig(val_fraction=1.0)
