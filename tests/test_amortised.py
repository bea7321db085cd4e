"""The amortised explainer (FastSHAP): the patch it must find, the Shapley kernel, efficiency, seeded
determinism, resume after an interrupted epoch, the cached explainer, bad options and mismatched explainers."""

import json
from dataclasses import replace

import keras
import numpy as np
import pytest

from fruitlens.errors import OptionError
from fruitlens.explain.amortised import AmortisedExplainer
from fruitlens.explain.amortised_training import (
    CARD,
    CHECKPOINT,
    STATE,
    load_explainer,
    train_explainer,
)
from fruitlens.explain.patches import patch_index, shapley_subsets
from fruitlens.method_options import AmortisedOptions
from fruitlens.registry import resolve

SIZE = 16
GRID = 4
PATCH = (1, 2)  # (row, column) of the patch the classifier reads
PATCH_ID = PATCH[0] * GRID + PATCH[1]


def one_patch_model():
    """Class 1 when patch (1, 2) of a 4x4 grid (rows 4:8, columns 8:12) is bright, class 0 when it is dark."""
    y0, x0 = PATCH[0] * 4, PATCH[1] * 4
    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Cropping2D(((y0, SIZE - y0 - 4), (x0, SIZE - x0 - 4)))(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(2, activation="softmax")
    model = keras.Model(inp, dense(x))
    dense.set_weights([np.array([[-4.0, 4.0]] * 3, np.float32), np.array([6.0, -6.0], np.float32)])
    return model


def data(n=48, seed=0):
    """Dim noise with the patch bright in every other image."""
    rng = np.random.default_rng(seed)
    x = (rng.random((n, SIZE, SIZE, 3)) * 0.4).astype(np.float32)
    y0, x0 = PATCH[0] * 4, PATCH[1] * 4
    x[::2, y0:y0 + 4, x0:x0 + 4] = 0.95
    return x


OPTIONS = AmortisedOptions(grid=GRID, epochs=3, masks=8, width=8, images_per_step=16, fill="black",
                           learning_rate=3e-3, seed=0)


@pytest.fixture(scope="module")
def model():
    return one_patch_model()


def test_the_explainer_finds_the_patch_the_classifier_reads(model):
    x = data()
    opts = replace(OPTIONS, epochs=25, patience=0)  # all 25 epochs (4 held-out images stop it early, underfitted)
    trained = train_explainer(model, x, opts, None)
    explainer = AmortisedExplainer(model, opts, trained)
    bright = data(8, seed=1)[::2]
    phi, _, gap = explainer.attributions(bright)
    np.testing.assert_allclose(phi.sum(axis=1), gap, atol=1e-5)  # efficiency, exactly
    target = phi[:, :, 1]  # the classifier's only evidence is the patch: its Shapley value is the whole gap
    assert np.all(target.argmax(axis=1) == PATCH_ID)
    others = np.delete(target, PATCH_ID, axis=1)
    assert np.all(target[:, PATCH_ID] > 0.7 * gap[:, 1])
    assert np.all(np.abs(others).max(axis=1) < 0.1 * gap[:, 1])
    res = explainer.explain(bright)
    assert np.all(res.targets == 1) and np.all(res.passes == 3)
    ys, xs = res.peaks.T
    assert np.all(ys // 4 == PATCH[0]) and np.all(xs // 4 == PATCH[1])
    assert trained.card.history[-1] < trained.card.history[0]


def test_shapley_kernel_subsets_are_paired_and_follow_the_kernel():
    rng = np.random.default_rng(0)
    s = shapley_subsets(rng, 200, 50, 10)
    assert s.shape == (200, 50, 10) and set(np.unique(s)) == {0.0, 1.0}
    np.testing.assert_array_equal(s[:, 1::2], 1 - s[:, 0::2])  # each draw, then its complement
    sizes = s[:, 0::2].sum(-1).ravel()
    assert sizes.min() >= 1 and sizes.max() <= 9  # never empty, never full
    k = np.arange(1, 10)
    p = 9 / (k * (10 - k))
    freq = np.bincount(sizes.astype(int), minlength=10)[1:] / len(sizes)
    np.testing.assert_allclose(freq, p / p.sum(), atol=0.02)
    ids = patch_index((12, 10), 3)
    assert ids.shape == (12, 10) and ids.min() == 0 and ids.max() == 8 and ids[0, 0] == 0 and ids[-1, -1] == 8


def test_same_seed_same_explainer_other_seed_another(model):
    x = data(16)
    opts = replace(OPTIONS, epochs=2)
    a = train_explainer(model, x, opts, None).network.get_weights()
    b = train_explainer(model, x, opts, None).network.get_weights()
    c = train_explainer(model, x, replace(opts, seed=1), None).network.get_weights()
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    assert not all(np.array_equal(u, v) for u, v in zip(a, c, strict=True))


def test_resume_after_an_interrupted_epoch_ends_equal(model, tmp_path):
    x = data(16)
    opts = replace(OPTIONS, epochs=3)
    whole = train_explainer(model, x, opts, tmp_path / "whole")

    class Stop(Exception):
        pass

    def stop_after_one(epoch, loss):
        if epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        train_explainer(model, x, opts, tmp_path / "cut", on_epoch=stop_after_one)
    assert json.loads((tmp_path / "cut" / CHECKPOINT / STATE).read_text())["epoch"] == 1
    assert not (tmp_path / "cut" / CARD).exists()
    seen = []
    resumed = train_explainer(model, x, opts, tmp_path / "cut", on_epoch=lambda e, _: seen.append(e))
    assert seen == [2, 3]  # epoch 1 was not trained again
    assert all(np.array_equal(u, v) for u, v in zip(whole.network.get_weights(), resumed.network.get_weights(),
                                                    strict=True))
    assert resumed.card.history == whole.card.history and resumed.card.epochs == 3
    # finished: a rerun loads it, trains nothing
    again = train_explainer(model, x, opts, tmp_path / "cut", on_epoch=lambda e, _: seen.append(e))
    assert seen == [2, 3] and again.card == resumed.card
    # other data: a checkpoint of other data is not resumed, trained afresh
    fresh = []
    train_explainer(model, data(16, seed=5), replace(opts, epochs=1), tmp_path / "cut",
                    on_epoch=lambda e, _: fresh.append(e))
    assert fresh == [1]


def test_early_stopping_on_the_held_out_loss(model):
    """patience 1: training stops at the first epoch whose held-out loss is not below the best so far; patience 0
    trains every epoch and holds nothing out."""
    x = data(40)
    stopped = train_explainer(model, x, replace(OPTIONS, epochs=80, patience=1, learning_rate=1e-2), None).card
    held = stopped.holdout_history
    assert len(stopped.history) == len(held) < 80 and stopped.epochs == 80 and stopped.patience == 1
    assert all(b < a for a, b in zip(held[:-1], held[1:-1], strict=False))  # improving until the last epoch
    assert held[-1] >= min(held[:-1])
    full = train_explainer(model, x, replace(OPTIONS, epochs=3, patience=0), None).card
    assert len(full.history) == 3 and full.holdout_history == ()


def test_the_classifiers_frozen_features_as_input(tmp_path):
    """features: the explainer reads a layer's output (computed once per image), stays efficient, is saved and
    loaded with its input shape, and a missing layer is named."""
    inp = keras.Input((SIZE, SIZE, 3))
    h = keras.layers.Conv2D(6, 3, strides=2, padding="same", activation="relu", name="feat",
                            kernel_initializer=keras.initializers.GlorotUniform(0))(inp)
    h = keras.layers.GlobalAveragePooling2D()(h)
    conv = keras.Model(inp, keras.layers.Dense(3, activation="softmax",
                                               kernel_initializer=keras.initializers.GlorotUniform(1))(h))
    opts = replace(OPTIONS, epochs=2, features="feat")
    trained = train_explainer(conv, data(16), opts, tmp_path / "ex")
    assert trained.card.features == "feat" and trained.card.input_shape == (8, 8, 6)
    loaded = load_explainer(tmp_path / "ex")
    assert loaded.card == trained.card
    phi, _, gap = AmortisedExplainer(conv, opts, loaded).attributions(data(3, seed=2))
    np.testing.assert_allclose(phi.sum(axis=1), gap, atol=1e-5)
    same, _, _ = AmortisedExplainer(conv, opts, trained).attributions(data(3, seed=2))
    np.testing.assert_allclose(phi, same, atol=1e-6)
    with pytest.raises(ValueError, match="amortised features 'nope': expected a layer of the classifier"):
        train_explainer(conv, data(16), replace(opts, features="nope"), None)


def test_from_options_loads_the_folder_and_checks_it_fits(model, tmp_path):
    x = data(16)
    opts = replace(OPTIONS, epochs=1)
    train_explainer(model, x, opts, tmp_path / "ex")
    card = json.loads((tmp_path / "ex" / CARD).read_text())
    assert card["grid"] == GRID and card["images"] == 16 and card["epochs"] == 1 and card["seconds"] > 0
    assert len(card["classifier_digest"]) == 64 and len(card["data_fingerprint"]) == 64
    spec, _ = resolve("amortised")
    explainer = spec.build(model, replace(opts, explainer=str(tmp_path / "ex")))
    direct = AmortisedExplainer(model, opts, load_explainer(tmp_path / "ex"))
    np.testing.assert_array_equal(explainer.explain(x[:3]).heatmaps, direct.explain(x[:3]).heatmaps)
    three = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Flatten(), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="explainer for 2 classes at 16x16: expected one for this classifier's 3"):
        spec.build(three, replace(opts, explainer=str(tmp_path / "ex")))
    with pytest.raises(FileNotFoundError, match="expected a folder with explainer.npz"):
        spec.build(model, replace(opts, explainer=str(tmp_path / "nothing")))
    with pytest.raises(ValueError, match="images of 12x12 pixels: expected 16x16"):
        explainer.explain(np.zeros((1, 12, 12, 3), np.float32))


@pytest.mark.parametrize(("change", "message"), [
    ({"masks": 7}, "masks 7"), ({"grid": 0}, "grid 0"), ({"epochs": 10**6}, "epochs 1000000"),
    ({"learning_rate": 0.0}, "learning_rate 0.0"), ({"fill": "blur"}, "fill 'blur'"), ({"explainer": ""}, "explainer"),
    ({"patience": -1}, "patience -1"),
])
def test_bad_options_name_the_value(change, message):
    with pytest.raises(OptionError, match=message):
        AmortisedOptions(**change)


def test_fruitlens_explain_trains_then_reuses_the_explainer(demo_dir, tmp_path, capsys):
    """Without --explainer the command trains one on the images (a line per epoch) and writes heatmap rows
    with passes 3; with --explainer PATH it uses that one and trains nothing; a bad PATH is one line."""
    from fruitlens import tables
    from fruitlens.cli import main
    from tests.helpers import tiny_run

    run = tiny_run(tmp_path / "run")
    common = ["explain", "--data", str(demo_dir), "--model", str(run), "--method", "amortised", "--limit", "5",
              "--set", "amortised.epochs=2", "--set", "amortised.grid=4", "--set", "amortised.width=4"]
    assert main([*common, "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "training the amortised explainer on 5 images" in err
    assert "epoch 1/2" in err and "epoch 2/2" in err
    rows = tables.read_table(tmp_path / "a" / "amortised.parquet")
    assert len(rows) == 5 and set(rows["passes"]) == {3}
    (folder,) = (tmp_path / "a" / "amortised-explainer").iterdir()
    assert main([*common, "--out", str(tmp_path / "b"), "--explainer", str(folder)]) == 0
    assert "epoch 1/2" not in capsys.readouterr().err
    again = tables.read_table(tmp_path / "b" / "amortised.parquet")
    np.testing.assert_allclose(again["target_prob"], rows["target_prob"])
    assert main([*common, "--out", str(tmp_path / "c"), "--explainer", str(tmp_path / "none")]) == 2
    assert "--explainer" in capsys.readouterr().err


def test_grid_occlusion_and_the_agreement_measures(model):
    from fruitlens.batch.amortised_audit import grid_occlusion, rank_correlation, top_k_overlap

    x = data(4)
    occ = grid_occlusion(model, x, np.ones(4, int), GRID, "black", batch_size=20)
    probs = model.predict_on_batch(x)[:, 1]
    np.testing.assert_allclose(occ[:, PATCH_ID], probs - model.predict_on_batch(
        np.where(patch_index((SIZE, SIZE), GRID)[None, ..., None] == PATCH_ID, 0.0, x))[:, 1], atol=1e-6)
    assert np.abs(np.delete(occ, PATCH_ID, axis=1)).max() < 1e-6  # the other patches change nothing
    a = np.array([[1.0, 2, 3, 4], [4, 3, 2, 1], [1, 1, 1, 1]])
    b = np.array([[10.0, 20, 30, 40], [1, 2, 3, 4], [1, 2, 3, 4]])
    np.testing.assert_allclose(rank_correlation(a, b), [1.0, -1.0, np.nan])
    np.testing.assert_allclose(top_k_overlap(a[:2], b[:2], 2), [1.0, 0.0])


@pytest.fixture(scope="module")
def indexed(demo_dir, tmp_path_factory):
    from fruitlens.cli import main
    from fruitlens.config import model_source_fields
    from fruitlens.modelio import as_model_source
    from tests.helpers import tiny_run

    root = tmp_path_factory.mktemp("audit")
    assert main(["index", str(demo_dir), "--out", str(root / "index")]) == 0
    run = tiny_run(root / "run")
    return root, as_model_source(model_source_fields(str(run)))


@pytest.mark.parametrize(("agreement", "seed_to_seed", "share", "expected"), [
    (0.40, 0.40, 1.0, True), (0.39, 0.40, 1.0, False), (0.31, 0.40, 0.75, True), (-0.5, 0.40, 0.0, True),
    (0.50, None, 1.0, False), (None, 0.40, 1.0, None)])
def test_a_class_is_trusted_when_it_agrees_with_the_exact_method_as_well_as_that_agrees_with_itself(
        agreement, seed_to_seed, share, expected):
    from fruitlens.batch.amortised_audit import trusted

    assert trusted(agreement, seed_to_seed, share) is expected


@pytest.mark.parametrize(("agreement", "fell"), [(0.0, False), (2.0, True)])
def test_the_audit_explains_the_split_and_falls_back_below_the_agreement(indexed, agreement, fell, tmp_path):
    """Every test image gets a map; each class with audited images has its agreement; a class below the
    agreement is explained by KernelSHAP on the grid instead and the table says so."""
    from fruitlens import tables
    from fruitlens.batch.amortised_audit import audit_run, train_run_explainer
    from fruitlens.batch.engine import read_chunk
    from fruitlens.batch.rows import rows_from_index
    from fruitlens.explain.kernel_shap import DEFAULT_BUDGET, grid_kernel_shap

    root, source = indexed
    opts = AmortisedOptions(grid=3, epochs=1, masks=4, width=4, seed=0, faithfulness_steps=5)
    folder = train_run_explainer(source, root / "index", opts, root / "explainer")
    assert load_explainer(folder).card.images == 72  # the demo's training split
    res = audit_run(source, root / "index", "test", replace(opts, explainer=folder), 12, agreement, 3,
                    tmp_path / "explain")
    table = tables.read_table(res.table)
    assert res.images == 24 and table["images"].sum() == 24 and table["audited"].sum() == 12
    audited = table[table["audited"] > 0]
    assert audited["rank_correlation"].between(-1, 1).all() and audited["top_k_overlap"].between(0, 1).all()
    for column in ("deletion_auc_amortised", "deletion_auc_exact", "insertion_auc_amortised", "insertion_auc_exact"):
        assert audited[column].between(0, 1).all(), column  # probabilities' areas over fractions 0..1
    # 512 coalitions on 9 patches: KernelSHAP all but agrees with itself, so twice that is out of reach
    assert audited["exact_seed_to_seed"].between(0.9, 1).all()
    assert set(audited["trusted"]) == {not fell}
    assert set(audited["explained_by"]) == {"kernelshap" if fell else "amortised"}
    assert (res.fallback_images > 0) == fell
    saved = np.load(res.maps)
    assert saved["maps"].shape == (24, 9) and (saved["method"] == "kernelshap").sum() == res.fallback_images
    if fell:  # the fallen-back maps, audited (reused) or not (explained after the audit), are the exact method's
        model, card = source.load()
        rows = rows_from_index(root / "index", "test")
        assert list(rows["image_id"].astype(str)) == list(saved["image_id"])
        images, _, _ = read_chunk(rows, card.image_size, card.fit)
        np.testing.assert_allclose(saved["maps"], grid_kernel_shap(model, images, saved["target"], 3, "mean",
                                                                   DEFAULT_BUDGET, opts.seed), atol=1e-5)


def test_the_audit_line_names_the_bar_and_the_classes_that_fell_back():
    import pandas as pd

    from fruitlens.batch.amortised_audit import audit_line

    table = pd.DataFrame({"class": ["apple", "pear", "plum"], "images": [10, 5, 3], "audited": [4, 2, 0],
                          "rank_correlation": [0.5, 0.1, None], "exact_seed_to_seed": [0.4, 0.3, None],
                          "top_k_overlap": [0.6, 0.2, None], "deletion_auc_amortised": [0.2, 0.3, None],
                          "deletion_auc_exact": [0.2, 0.25, None], "insertion_auc_amortised": [0.7, 0.5, None],
                          "insertion_auc_exact": [0.8, 0.6, None], "trusted": [True, False, None],
                          "explained_by": ["amortised", "kernelshap", "amortised"]})
    line = audit_line(table)
    assert "all 18 images" in line and "on 6 audited images of 2 classes" in line
    assert "rank correlation 0.30 (kernelshap with itself, another seed: 0.35)" in line
    assert "deletion AUC 0.250 (exact 0.225; lower is better), insertion AUC 0.600 (exact 0.700" in line
    assert line.endswith("explained by kernelshap instead: pear.")
    older = audit_line(table.drop(columns=["insertion_auc_amortised", "insertion_auc_exact"]))  # an older run's
    assert "(exact 0.225; lower is better). Not trusted" in older and "insertion" not in older
    assert audit_line(None) == "" and audit_line(table.iloc[:0]) == ""
