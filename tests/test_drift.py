"""Explanation drift between two models (fruitlens.explain.drift) on the demo data and its moved-sticker variant."""

from __future__ import annotations

import numpy as np
import pytest

from fruitlens import tables
from fruitlens.explain import drift
from fruitlens.synthetic import write_demo_dataset

MOVED = ("blue_dot", "red_dot")
EPOCHS = 12
N_TRAIN = 30


def _train(data_dir, seed: int = 0):
    import keras

    from fruitlens.batch.engine import read_chunk
    from fruitlens.batch.rows import rows_from_inputs
    from fruitlens.synthetic import CLASSES

    x, rows, _ = read_chunk(rows_from_inputs([data_dir], split="train"), (32, 32))
    y = np.array([CLASSES.index(c) for c in rows["label"]])
    from fruitlens.models import build_model, compile_model

    keras.utils.set_random_seed(seed)
    model = compile_model(build_model("fruit_net", len(CLASSES), 32, weights="none", seed=seed), "fruit_net")
    model.fit(x, y, epochs=EPOCHS, batch_size=16, verbose=0, shuffle=True)
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    standard = write_demo_dataset(tmp_path_factory.mktemp("std"), n_train=N_TRAIN, n_test=3)
    moved = write_demo_dataset(tmp_path_factory.mktemp("moved"), n_train=N_TRAIN, n_test=3, moved=MOVED)
    return standard, moved, _train(standard), _train(moved)


def _probe(data_dir):
    from fruitlens.batch.engine import read_chunk
    from fruitlens.batch.rows import evidence_masks, rows_from_inputs

    images, rows, _ = read_chunk(rows_from_inputs([data_dir], split="test"), (32, 32))
    return images, rows, evidence_masks(rows, (32, 32))


def test_moved_sticker_is_flagged_for_the_affected_classes(models, tmp_path):
    from fruitlens.synthetic import CLASSES

    _, moved_dir, old, new = models
    images, rows, masks = _probe(moved_dir)
    table, old_maps, new_maps = drift.explanation_drift(old, new, images, rows, CLASSES, masks=masks)
    summary = drift.drift_summary(table)
    affected = table["label"].isin(MOVED)
    assert table.loc[affected, "moved"].mean() > table.loc[~affected, "moved"].mean()
    assert table.loc[affected, "moved"].mean() >= 0.5 and set(MOVED) <= set(summary["classes"])
    assert table.loc[affected, "new_evidence_share"].mean() > table.loc[affected, "old_evidence_share"].mean()
    written = drift.write_drift(tmp_path, table, images, old_maps, new_maps, top=2)
    assert written["picture_path"].notna().sum() == 2
    back = tables.read_table(tmp_path / "drift.parquet")
    assert list(back.columns[:len(drift.DRIFT_SCHEMA)]) == drift.DRIFT_SCHEMA.names
    assert all((tmp_path / p).is_file() for p in written["picture_path"].dropna())


def test_same_model_shows_no_drift(models):
    from fruitlens.synthetic import CLASSES

    standard, _, old, _ = models
    images, rows, masks = _probe(standard)
    table, _, _ = drift.explanation_drift(old, old, images, rows, CLASSES, masks=masks)
    assert not table["moved"].any() and not table["prediction_changed"].any()
    np.testing.assert_allclose(table["heatmap_rank"], 1.0)
    assert drift.drift_summary(table)["moved_share"] == 0.0


def test_class_evidence_per_class_and_group(models, tmp_path):
    from fruitlens.batch.evidence import class_evidence
    from fruitlens.explain.evidence import EVIDENCE_SCHEMA, write_class_evidence
    from fruitlens.synthetic import CLASSES

    standard, _, old, _ = models
    from fruitlens.batch.rows import rows_from_inputs

    rows = rows_from_inputs([standard], split="test")
    table, means = class_evidence(old, rows, CLASSES, (32, 32), batch=7)  # batches that split classes
    assert table["images"].sum() == len(rows) and set(table["group"]) <= {"correct", "mistake"}
    assert (table["with_mask"] == table["images"]).all() and table["pointing_game"].between(0, 1).all()
    assert table["evidence_share"].between(0, 1).all()
    for heat in means.values():
        assert heat.shape == (32, 32) and 0 <= heat.min() and heat.max() <= 1
    path = write_class_evidence(tmp_path, table, means, CLASSES)
    back = tables.read_table(path)
    assert list(back.columns) == EVIDENCE_SCHEMA.names and (tmp_path / "class_evidence.png").is_file()


def test_lime_stability_under_two_seeds(models):
    from fruitlens.batch.stability import STABILITY_SCHEMA, lime_stability, stability_line
    from fruitlens.card import ModelCard
    from fruitlens.lime_options import LimeOptions
    from fruitlens.synthetic import CLASSES

    standard, _, old, _ = models
    images, rows, _ = _probe(standard)
    images, rows = images[:3], rows.head(3)
    fixed = LimeOptions(num_samples=40, adaptive=False)
    card = ModelCard(classes=tuple(CLASSES), image_size=(32, 32), arch="test")
    few = lime_stability(old, images, rows, card, fixed, (0, 1))
    same = lime_stability(old, images, rows, card, fixed, (0, 0))
    assert list(few.columns) == STABILITY_SCHEMA.names and len(few) == 3
    np.testing.assert_allclose(same["top_k_overlap"], 1.0)  # the same seed twice: the same explanation
    np.testing.assert_allclose(same["rank_correlation"], 1.0)
    assert few["top_k_overlap"].between(0, 1).all() and (few["rank_correlation"] < 1).any()
    assert (few["samples_a"] == 40).all() and "(40 samples, balanced design" in stability_line(few)
    assert "the same 3 images under two seeds" in stability_line(few)


def test_lime_stability_measures_the_runs_own_adaptive_lime(models, tmp_path):
    """The first seed's explanation is the one the batch run writes (same image seeds, same superpixels, same
    options: adaptive stops below the budget), and the sentence names those options."""
    from fruitlens.batch.methods import run_method
    from fruitlens.batch.stability import lime_stability, stability_line
    from fruitlens.card import ModelCard
    from fruitlens.layout import ExplainLayout
    from fruitlens.lime_options import LimeOptions
    from fruitlens.synthetic import CLASSES

    standard, _, old, _ = models
    images, rows, _ = _probe(standard)
    images, rows = images[:3], rows.head(3)
    options = LimeOptions(num_samples=600, round_size=64, min_samples=128, seed=4)  # adaptive by default
    card = ModelCard(classes=tuple(CLASSES), image_size=(32, 32), arch="test")
    table = lime_stability(old, images, rows, card, options)
    frame, _ = run_method("lime", old, card, images, rows, options, ExplainLayout(tmp_path))  # lime.parquet's rows
    written = frame.groupby("image_id", sort=False)["num_samples"].first()
    assert list(table["samples_a"]) == [written[str(i)] for i in rows["image_id"]]
    assert (table["samples_a"] < 600).all() and (table["samples_b"] < 600).all()  # adaptive: stopped early
    assert list(table["seed_a"]) == [4] * 3 and list(table["seed_b"]) == [5] * 3
    line = stability_line(table)
    assert "LIME with the run's options (adaptive, 128 to 600 samples at tolerance 0.05" in line
    assert "control variate" in line


def test_shortcut_alert_on_a_model_that_reads_a_sticker_in_the_corner(models):
    """The moved-sticker model decides blue_dot and red_dot by a sticker in the top-left corner, off the fruit:
    their Grad-CAM heat sits more on the border than the other classes' (whose sticker is on the fruit)."""
    from fruitlens.batch.evidence import class_evidence
    from fruitlens.batch.rows import rows_from_inputs
    from fruitlens.explain.shortcut import shortcut_table
    from fruitlens.synthetic import CLASSES

    standard, moved, old, new = models
    found = {}
    for data, model, name in ((standard, old, "standard"), (moved, new, "moved")):
        table, _ = class_evidence(model, rows_from_inputs([data], split="test"), CLASSES, (32, 32))
        found[name] = shortcut_table(table).set_index("label")
    border = found["moved"]["border_share"]
    others = [c for c in CLASSES if c not in MOVED]
    assert border[list(MOVED)].min() > border[others].max()  # the corner sticker's classes look at the border most
    assert (border[list(MOVED)] > found["standard"]["border_share"][list(MOVED)]).all()
    # measured: about a third of their heat on the border (the band is 34% of the area at 32 px), not "mostly":
    # a corner sticker that reaches into the fruit is not flagged, and nothing is on the standard data
    assert not found["standard"]["flagged"].any()
