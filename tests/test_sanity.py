"""The model parameter randomisation test (fruitlens.explain.sanity): Grad-CAM passes on a trained model, an
explainer that ignores the model fails, the user's model is never touched, the table and figure are written."""

from __future__ import annotations

import numpy as np
import pytest

from fruitlens import tables
from fruitlens.explain import sanity


def test_rank_correlation_and_top_k_known_answers():
    a = np.array([[1.0, 2, 3, 4], [1, 1, 1, 1], [1, 1, 1, 1]])
    b = np.array([[10.0, 20, 30, 40], [4, 3, 2, 1], [2, 2, 2, 2]])
    np.testing.assert_allclose(sanity.rank_correlation(a, b), [1.0, 0.0, 1.0])
    np.testing.assert_allclose(sanity.rank_correlation(a[:1], -b[:1]), [-1.0])
    assert sanity.top_k_overlap(np.arange(10.0), np.arange(10.0)) == 1.0
    assert sanity.top_k_overlap(np.arange(10.0), -np.arange(10.0)) == 0.0
    maps = np.random.default_rng(0).uniform(size=(2, 12, 9)).astype(np.float32)
    np.testing.assert_allclose(sanity.heatmap_ssim(maps, maps), [1.0, 1.0], atol=1e-6)


@pytest.fixture(scope="module")
def trained(demo_dir, tmp_path_factory):
    """A small convnet trained on the demo data (stickers decide the class), and a few test images."""
    import keras

    from fruitlens.batch.engine import read_chunk
    from fruitlens.batch.rows import rows_from_inputs

    train_rows = rows_from_inputs([demo_dir], split="train")
    x, rows, _ = read_chunk(train_rows, (24, 24))
    y = rows["label"].astype("category").cat.codes.to_numpy()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((24, 24, 3)),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(6, activation="softmax"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=8, batch_size=16, verbose=0)
    test, test_rows, _ = read_chunk(rows_from_inputs([demo_dir], split="test", limit=4), (24, 24))
    return model, test, test_rows


def test_gradcam_passes_and_an_edge_detector_fails(trained, tmp_path):
    model, images, rows = trained
    before = [w.copy() for w in model.get_weights()]
    result = sanity.run_sanity(model, images, methods=("gradcam", "gradcam++", "lime"),
                               extra={"edges": sanity.edge_detector}, seed=3)
    for old, new in zip(before, model.get_weights(), strict=True):  # the user's model is untouched
        np.testing.assert_array_equal(old, new)
    assert result.layers[0] == "" and result.kinds == ("none", "dense", "conv", "conv")
    for m in result.methods:
        assert result.rank[m].shape == (4, 4) and np.isfinite(result.rank[m]).all()
        np.testing.assert_allclose(result.rank[m][0], 1.0)  # step 0 is the original explanation
    np.testing.assert_allclose(result.rank["edges"], 1.0)  # ignores the model: never changes
    verdict = sanity.write_sanity(result, images, rows, tmp_path / "sanity", seed=3).set_index("method")
    assert bool(verdict.loc["gradcam", "passed"]), verdict.loc["gradcam", "reason"]
    assert not bool(verdict.loc["edges", "passed"])
    assert "rank correlation 1.00" in verdict.loc["edges", "reason"]
    table = tables.read_table(tmp_path / "sanity" / "sanity.parquet")
    assert list(table.columns[:len(tables.SANITY_SCHEMA)]) == tables.SANITY_SCHEMA.names
    assert len(table) == 4 * 4 * 4 and table.loc[table["method"] == "lime", "ssim"].isna().all()
    assert table.loc[table["method"] == "lime", "top_k_overlap"].between(0, 1).all()
    # LIME ran with a pipeline run's options (adaptive...), and the table and the verdicts say so
    ran = verdict.loc["lime", "options"]
    assert ran.startswith("adaptive, 256 to 300 samples") and "seed 3 by position" in ran
    assert set(table.loc[table["method"] == "lime", "options"]) == {ran}
    assert verdict.loc["edges", "options"] == "an extra explainer"
    assert (tmp_path / "sanity" / "sanity.png").stat().st_size > 10_000
    saved = tables.read_json(tmp_path / "sanity" / "verdicts.json")
    assert saved["thresholds"]["max_rank"] == sanity.THRESHOLDS.max_rank
    # the report of a run folder with a sanity/ folder says the verdicts
    from fruitlens.report import build_report
    from fruitlens.runs import ModelCard, write_card

    write_card(tmp_path, ModelCard(classes=tuple("abcdef"), image_size=(24, 24), arch="tiny"))
    page = build_report(tmp_path).read_text()
    part = page[page.index('<section id="sanity">'):]
    part = part[:part.index("</section>")]
    assert "Grad-CAM <b class=\"good\">passes</b>" in part and "edge detector <b class=\"bad\">fails</b>" in part
    assert "<img" in part


def test_any_registered_method_can_be_checked_with_the_runs_options(trained):
    from fruitlens.config import ExplainOptions, SmoothGradOptions

    model, images, _ = trained
    options = ExplainOptions(smoothgrad=SmoothGradOptions(samples=3, noise=0.3))
    result = sanity.run_sanity(model, images[:2], methods=("saliency", "smoothgrad"), options=options, seed=1)
    assert set(result.methods) == {"saliency", "smoothgrad"} and result.rank["saliency"].shape[1] == 2
    assert result.options == {"saliency": "default options", "smoothgrad": "samples 3, noise 0.3"}


def test_same_seed_same_cascade(trained):
    model, images, _ = trained
    a = sanity.run_sanity(model, images[:2], methods=("gradcam",), seed=1)
    b = sanity.run_sanity(model, images[:2], methods=("gradcam",), seed=1)
    np.testing.assert_array_equal(a.rank["gradcam"], b.rank["gradcam"])
    with pytest.raises(ValueError, match="sanity methods nope: expected any of lime, gradcam, .*, gradcam\\+\\+, cam"):
        sanity.run_sanity(model, images, methods=("nope",))


def test_cli_sanity_writes_the_table_and_says_the_verdict(demo_dir, tmp_path, capsys):
    import keras

    from fruitlens.cli import main
    from fruitlens.runs import ModelCard, write_card

    run = tmp_path / "run"
    run.mkdir()
    keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
                      keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.GlobalAveragePooling2D(),
                      keras.layers.Dense(6, activation="softmax")]).save(run / "model.keras")
    write_card(run, ModelCard(classes=tuple("abcdef"), image_size=(16, 16), arch="tiny"))
    out = tmp_path / "run" / "sanity"
    args = ["sanity", "--model", str(run), "--data", str(demo_dir), "--out", str(out), "--limit", "2",
            "--method", "gradcam,lime", "--num-samples", "32"]
    assert main(args) == 0
    said = capsys.readouterr().out
    assert "Grad-CAM: " in said and "LIME: " in said and "2 images, 3 layers re-initialised" in said
    assert set(tables.read_table(out / "sanity.parquet")["method"]) == {"gradcam", "lime"}
    assert main([*args[:-4], "--method", "nope"]) == 2
    assert "--method nope: expected any of lime, gradcam, layercam" in capsys.readouterr().err
