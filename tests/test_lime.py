"""LIME for images: known answers, agreement with the `lime` package, determinism, batching, outputs, CLI."""

import dataclasses
import os

import numpy as np
import pandas as pd
import pytest

from fruitlens import tables
from fruitlens.cli import main
from fruitlens.explain import lime as fl
from fruitlens.explain.lime import explain_lime
from fruitlens.lime_options import LimeOptions
from tests.helpers import tiny_run


def grid_segments(h: int, w: int, rows: int = 2, cols: int = 3) -> np.ndarray:
    """(h, w) superpixels: a rows x cols grid, ids 0..rows*cols-1 row by row."""
    r = np.minimum(np.arange(h) * rows // h, rows - 1)
    c = np.minimum(np.arange(w) * cols // w, cols - 1)
    return (r[:, None] * cols + c[None, :]).astype(np.int32)


def region_model(region: np.ndarray):
    """A function model: P(class 1) = mean brightness over ``region`` (H, W) bool, P(class 0) = 1 - that."""
    def fn(x):
        p = x[:, region].mean(axis=(1, 2))
        return np.stack([1.0 - p, p], axis=1)
    return fn


def images_of(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.5, 1.0, (n, h, w, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def keras_model():
    import keras

    keras.utils.set_random_seed(1)
    return keras.Sequential([
        keras.Input((12, 17, 3)),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(4, activation="softmax"),
    ])


@pytest.mark.parametrize("n, h, w", [(1, 12, 18), (2, 12, 18), (2, 15, 9)])
def test_known_answer_region_gets_the_top_weight(n, h, w):
    seg = np.broadcast_to(grid_segments(h, w), (n, h, w))
    target = 4
    fn = region_model(seg[0] == target)
    res = explain_lime(fn, images_of(n, h, w), LimeOptions.reference(num_samples=300, hide_color=0.0),
                       segments=seg, labels=[1] * n)
    assert len(res) == n
    for i, r in enumerate(res):
        w1 = r.weights[1]
        assert r.segments.shape == (h, w) and r.segments.dtype == np.int32
        assert w1.shape == (6,) and w1.dtype == np.float64 and np.isfinite(w1).all()
        assert int(np.argmax(w1)) == target and r.features[1][0] == target
        brightness = images_of(n, h, w)[i][seg[0] == target].mean()
        assert w1[target] == pytest.approx(brightness, rel=0.05)  # hiding it (black) removes all of p
        assert np.abs(np.delete(w1, target)).max() < 0.02 * w1[target]
        assert r.score[1] > 0.95 and r.local_pred[1] == pytest.approx(r.label_prob[1], abs=0.05)
        assert r.labels == (1,) and r.num_samples == 300


def test_mean_colour_fill_and_other_fills():
    h, w = 10, 12
    seg = grid_segments(h, w)
    x = images_of(1, h, w)
    fill = fl._fills(x, seg[None], None)[0]
    for s in range(6):
        assert np.allclose(fill[seg == s], x[0][seg == s].mean(axis=0), atol=1e-6)
    assert np.all(fl._fills(x, seg[None], "white") == 1.0)
    assert np.all(fl._fills(x, seg[None], (0.1, 0.2, 0.3))[0, 3, 4] == np.float32([0.1, 0.2, 0.3]))
    # with the mean colour, a model of a region's mean brightness sees nothing change: all weights ~0
    res = explain_lime(region_model(seg == 2), x, LimeOptions.reference(num_samples=200),
                       segments=seg[None], labels=[1])[0]
    assert np.abs(res.weights[1]).max() < 1e-6


def test_top_labels_and_explicit_labels(keras_model):
    x = images_of(2, 12, 17)
    res = explain_lime(keras_model, x, LimeOptions.reference(top_labels=3, num_samples=60))
    probs = np.asarray(keras_model(x, training=False))
    for r, p in zip(res, probs, strict=True):
        assert list(r.labels) == list(np.argsort(p)[::-1][:3])
        assert r.label_prob[r.labels[0]] == pytest.approx(float(p.max()), abs=1e-6)
    two = explain_lime(keras_model, x, LimeOptions.reference(num_samples=60), labels=[[0, 3], [2, 1]])
    assert two[0].labels == (0, 3) and two[1].labels == (2, 1)
    one = explain_lime(keras_model, x, LimeOptions.reference(num_samples=60), labels=np.array([2, 0]))
    assert one[0].labels == (2,) and one[1].labels == (0,)


def test_same_seed_same_result_and_different_seed_differs(keras_model):
    x = images_of(2, 12, 17)
    a = explain_lime(keras_model, x, LimeOptions.reference(num_samples=80, top_labels=2), seed=5)
    b = explain_lime(keras_model, x, LimeOptions.reference(num_samples=80, top_labels=2), seed=5)
    c = explain_lime(keras_model, x, LimeOptions.reference(num_samples=80, top_labels=2), seed=6)
    for ra, rb, rc in zip(a, b, c, strict=True):
        assert np.array_equal(ra.segments, rb.segments)
        for label in ra.labels:
            assert np.array_equal(ra.weights[label], rb.weights[label])
            assert ra.intercept[label] == rb.intercept[label] and ra.score[label] == rb.score[label]
        assert not np.array_equal(ra.weights[ra.labels[0]], rc.weights[rc.labels[0]])


def test_batch_equals_one_by_one_and_batches_spanning_images(keras_model):
    x = images_of(3, 12, 17, seed=2)
    whole = explain_lime(keras_model, x, LimeOptions.reference(num_samples=50, top_labels=2), seed=9)
    # batch_size 7 does not divide 50: model batches hold samples of two images
    small = explain_lime(keras_model, x, LimeOptions.reference(num_samples=50, top_labels=2, batch_size=7), seed=9)
    per_image_seeds = explain_lime(keras_model, x, LimeOptions.reference(num_samples=50, top_labels=2),
                                   seed=[(9, 0), (9, 1), (9, 2)])
    for i in range(3):
        alone = explain_lime(keras_model, x[i:i + 1], LimeOptions.reference(num_samples=50, top_labels=2),
                             seed=[(9, i)])[0]
        for other in (small[i], per_image_seeds[i], alone):
            assert other.labels == whole[i].labels and np.array_equal(other.segments, whole[i].segments)
            for label in other.labels:
                np.testing.assert_allclose(other.weights[label], whole[i].weights[label], rtol=1e-5, atol=1e-7)


def test_inputs_not_mutated_and_results_read_only():
    h, w = 12, 18
    seg = np.stack([grid_segments(h, w), grid_segments(h, w, 3, 2) + 10])
    x = images_of(2, h, w)
    x0, seg0 = x.copy(), seg.copy()
    res = explain_lime(region_model(seg[0] == 1), x, LimeOptions.reference(num_samples=40, hide_color="white"),
                       segments=seg, labels=[1, 1])
    assert np.array_equal(x, x0) and np.array_equal(seg, seg0)
    assert res[1].segments.max() == 5  # given ids renumbered 0..S-1
    with pytest.raises(ValueError):
        res[0].weights[1][0] = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        res[0].num_samples = 3


@pytest.mark.parametrize("selection, k", [("highest_weights", 3), ("forward_selection", 2), ("auto", 2),
                                          ("auto", 8), ("none", 2)])
def test_feature_selection_limits_the_superpixels(selection, k):
    h, w = 12, 18
    seg = grid_segments(h, w, 3, 3)
    fn = region_model(np.isin(seg, [2, 6]))
    res = explain_lime(fn, images_of(1, h, w), LimeOptions.reference(num_samples=300, hide_color=0.0, num_features=k,
                                                                     feature_selection=selection),
                       segments=seg[None], labels=[1])[0]
    nonzero = np.flatnonzero(res.weights[1])
    expected = 9 if selection == "none" else min(k, 9)
    assert len(nonzero) == expected == len(res.features[1])
    assert set(res.features[1][:2]) == {2, 6}


def test_to_rows_matches_the_lime_schema(keras_model):
    x = images_of(1, 12, 17)
    r = explain_lime(keras_model, x, LimeOptions.reference(top_labels=2, num_samples=40))[0]
    df = r.to_rows("img1", ["a", "b", "c", "d"])
    s = r.num_superpixels
    assert len(df) == 2 * s and list(df.columns[:len(tables.LIME_SCHEMA)]) == tables.LIME_SCHEMA.names
    tables.to_arrow(df, tables.LIME_SCHEMA)  # types convert
    assert list(df["label"].unique()) == [["a", "b", "c", "d"][i] for i in r.labels]
    first = df[df["rank"] == 0]
    assert np.array_equal(first["weight"].to_numpy(), r.weights[r.labels[0]])
    assert first["pixels"].sum() == 12 * 17 and df["selected"].all()
    mask = r.mask(r.labels[0], num_features=3)
    assert mask.shape == (12, 17) and set(np.unique(mask)) <= {-1, 0, 1}
    assert len(np.unique(r.segments[mask != 0])) <= 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"top_labels": 9}, "top_labels 9: expected 1..4"),
        ({"labels": [7]}, "expected class indices in 0..3"),
        ({"labels": [[0], [1]]}, r"expected \(1,\) or \(1, k\)"),
        ({"segments": np.zeros((1, 5, 5), int)}, r"expected \(1, 12, 17\) integers"),
        ({"seed": [1, 2]}, "2 seeds for 1 images"),
    ],
)
def test_bad_arguments_are_named(keras_model, kwargs, message):
    options = LimeOptions.reference(num_samples=20, top_labels=kwargs.pop("top_labels", 1))
    with pytest.raises(ValueError, match=message):
        explain_lime(keras_model, images_of(1, 12, 17), options, **kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_samples": 1}, "num_samples 1: expected 2 to"),
        ({"feature_selection": "lasso"}, "feature_selection 'lasso': expected one of auto"),
        ({"hide_color": "pink"}, "hide_color 'pink': expected mean, white"),
        ({"segmenter": "slick"}, "unknown segmentation method 'slick'"),
    ],
)
def test_bad_options_are_named_where_they_are_made(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LimeOptions.reference(**kwargs)


def test_options_are_taken_whole(keras_model):
    """explain_lime takes a LimeOptions, nothing else; the reference procedure is an options value."""
    with pytest.raises(TypeError, match="expected LimeOptions"):
        explain_lime(keras_model, images_of(1, 12, 17), {"num_samples": 20})
    ref = LimeOptions.reference()
    assert (ref.adaptive, ref.design, ref.control_variate, ref.num_samples) == (False, "random", False, 1000)
    assert LimeOptions.reference(num_samples=60).describe() == \
        "60 samples, random design, plain Ridge, slic superpixels"


def test_bad_images_and_model_output():
    with pytest.raises(ValueError, match=r"expected \(N, H, W, 3\)"):
        explain_lime(lambda x: x, np.zeros((4, 4, 3), np.float32), LimeOptions.reference())
    with pytest.raises(ValueError, match="expected float RGB"):
        explain_lime(lambda x: x, np.zeros((1, 4, 4, 3), np.uint8), LimeOptions.reference())
    with pytest.raises(ValueError, match="model output of shape"):
        explain_lime(lambda x: x[:, 0, 0, 0], images_of(1, 8, 8), LimeOptions.reference(num_samples=10))


class _FixedDraws:
    """Stands in for the reference's RandomState: its binary samples are the ones fruitlens drew."""

    def __init__(self, z: np.ndarray):
        self.z = z

    def randint(self, low, high, size=None):
        assert (low, high) == (0, 2) and size == self.z.size
        return self.z.astype(np.int64).ravel()


@pytest.mark.parametrize("selection, k", [("none", None), ("highest_weights", 4), ("forward_selection", 3)])
def test_same_numbers_as_the_lime_package_given_the_same_samples(keras_model, selection, k):
    """With the same superpixels and the same binary samples, fruitlens and `lime` agree to rounding."""
    lime_image = pytest.importorskip("lime.lime_image")
    x = images_of(1, 12, 17, seed=4)
    seg = grid_segments(12, 17, 3, 3)
    ns = 120
    ours = explain_lime(keras_model, x, LimeOptions.reference(top_labels=2, num_samples=ns, num_features=k,
                                                              feature_selection=selection),
                        segments=seg[None], seed=[11])[0]
    z = np.random.default_rng(11).integers(0, 2, (ns, 9), dtype=np.int8)
    z[0] = 1
    explainer = lime_image.LimeImageExplainer(feature_selection=selection, random_state=0)
    explainer.random_state = _FixedDraws(z)
    ref = explainer.explain_instance(x[0], lambda b: np.asarray(keras_model(b, training=False)), top_labels=2,
                                     hide_color=None, num_samples=ns, num_features=k or 100000,
                                     segmentation_fn=lambda image: seg, random_seed=0)
    assert list(ours.labels) == [int(v) for v in ref.top_labels]
    for label in ours.labels:
        ref_w = np.zeros(9)
        for f, v in ref.local_exp[label]:
            ref_w[f] = v
        np.testing.assert_allclose(ours.weights[label], ref_w, rtol=1e-4, atol=1e-9)
        assert ours.intercept[label] == pytest.approx(float(ref.intercept[label]), rel=1e-5, abs=1e-9)
    # the reference keeps score and local_pred of the last label it fits: it fits in increasing probability
    last = ours.labels[0]
    assert ours.score[last] == pytest.approx(float(ref.score), rel=1e-5, abs=1e-9)
    assert ours.local_pred[last] == pytest.approx(float(np.ravel(ref.local_pred)[0]), rel=1e-5, abs=1e-9)


def test_image_seed_depends_on_id_only():
    from fruitlens.batch.methods import image_seed

    assert image_seed(0, "abc") == image_seed(0, "abc") != image_seed(1, "abc")
    assert image_seed(0, "abc") != image_seed(0, "abd")


def test_explain_command_lime(demo_dir, tmp_path, capsys):
    run = tiny_run(tmp_path / "run", classes=("a", "b", "c", "d", "e", "f"), image_size=(20, 16))
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    out = tmp_path / "out"
    args = ["explain", "--model", str(run), "--data", str(demo_dir), "--method", "lime", "--out", str(out),
            "--num-samples", "40", "--limit", "5", "--chunk-size", "2", "--top-labels", "2",
            "--n-superpixels", "12", "--hide-color", "white", "--plots", "all"]
    assert main(args) == 0
    assert "explained 5 images" in capsys.readouterr().out
    table = tables.read_table(out / "lime.parquet")
    names = tables.LIME_SCHEMA.names
    assert table["image_id"].nunique() == 5 and list(table.columns[:len(names)]) == names
    assert set(table["label"]) <= {"a", "b", "c", "d", "e", "f"} and (table["num_samples"] == 40).all()
    assert table.groupby("image_id")["label"].nunique().eq(2).all()
    assert table["evidence"].between(0, 1).all() and table["true_label"].ne("").all()
    assert table["segmenter"].str.startswith("slic(").all()
    # faithfulness of the top label's weights, comparable with Grad-CAM's; NaN on the second label
    top = table[table["rank"] == table.groupby(["image_id", "label"])["rank"].transform("min")]
    first = table.groupby("image_id")["label_index"].transform("first") == table["label_index"]
    assert table.loc[first, ["deletion_auc", "insertion_auc"]].apply(lambda c: c.between(0, 1)).all().all()
    assert table.loc[~first, "deletion_auc"].isna().all() and len(top)
    for _, rows in table.groupby("image_id"):
        seg = np.load(out / rows["segments_path"].iloc[0])
        assert seg.shape == (20, 16) and seg.max() + 1 == rows["superpixel"].nunique()
        outline = out / rows["picture_path"].iloc[0]
        assert outline.name.startswith(os.path.splitext(os.path.basename(rows["path"].iloc[0]))[0])
        for kind in ("boundaries", "outline", "density"):
            assert outline.with_name(outline.name.replace("_outline", f"_{kind}")).is_file()
    assert main(args) == 0 and "0 images" in capsys.readouterr().out  # the same call again: nothing to do
    pd.testing.assert_frame_equal(tables.read_table(out / "lime.parquet"), table)
    # another call into the same folder (image files, one broken): the table holds exactly its images
    files = sorted(str(p) for p in (demo_dir / "Test" / "red_dot").glob("*.jpg"))[:1] + [str(bad)]
    assert main(["explain", "--model", str(run), "--data", *files, "--method", "lime", "--out", str(out),
                 "--num-samples", "40", "--plots", "none"]) == 0
    assert "1 unreadable" in capsys.readouterr().out
    assert len(tables.read_table(out / "failed.parquet")) == 1
    again = tables.read_table(out / "lime.parquet")
    assert again["image_id"].nunique() == 1 and again["true_label"].isna().all()  # loose files: no label


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--num-samples", "1"], "--num-samples 1: expected 2 to 100000"),
        (["--segmenter", "quickshift", "--n-superpixels", "9"], "unknown quickshift parameter(s) n_superpixels"),
        (["--segmenter", "slick"], "unknown segmentation method 'slick'"),
        (["--hide-color", "pink"], "--hide-color 'pink': expected mean, white"),
        (["--feature-selection", "lasso"], "--feature-selection 'lasso': expected one of auto"),
        (["--plots", "some"], "--plots 'some': expected one of all, explanation, none"),
        (["--chunk-size", "0"], "--chunk-size 0: expected at least 1"),
        (["--chunk-size", "-1"], "--chunk-size -1: expected at least 1"),
        (["--segmenter-param", "ratio"], "--segmenter-param ratio: expected NAME=VALUE"),
    ],
)
def test_explain_command_bad_lime_flags(demo_dir, tmp_path, capsys, flags, message):
    args = ["explain", "--model", str(tmp_path), "--data", str(demo_dir), "--method", "lime", "--out", str(tmp_path)]
    assert main(args + flags) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_plot_kinds():
    from fruitlens.lime_options import LimeOptions

    assert LimeOptions().plot_kinds == {"outline", "boundaries"}
    assert LimeOptions(plots="all").plot_kinds == {"outline", "boundaries", "density"}
    assert LimeOptions(plots="density").plot_kinds == {"density"} and not LimeOptions(plots="none").plot_kinds
    with pytest.raises(ValueError, match="plots 'outline,block'"):
        LimeOptions(plots="outline,block")


def test_explanation_pictures():
    from fruitlens import lime_pictures, plots

    h, w = 12, 18
    seg = grid_segments(h, w)
    image = np.full((h, w, 3), 0.7, np.float32)
    weights = np.array([0.5, -0.4, 0.01, 0.0, 0.2, -0.001])
    signs = plots.lime_superpixel_signs(weights, threshold=0.05)
    assert signs.tolist() == [1, -1, 0, 0, 1, 0]
    assert plots.lime_superpixel_signs(weights, threshold=0.05, num_features=2).tolist() == [1, -1, 0, 0, 0, 0]
    assert plots.lime_superpixel_signs(weights, show_negative=False).tolist() == [1, 0, 1, 0, 1, 0]
    block = lime_pictures.lime_explanation(image, seg, weights, threshold=0.05, display="block", hide_rest=True)
    assert block.shape == (h, w, 3) and block.dtype == np.float32
    green, red, rest = block[seg == 0], block[seg == 1], block[seg == 2]
    assert (green[:, 1] > green[:, 0]).all() and (red[:, 0] > red[:, 1]).all() and np.allclose(rest, 0.5)
    outline = lime_pictures.lime_explanation(image, seg, weights, threshold=0.05)
    edge = outline[seg == 0]
    assert np.allclose(edge[(edge != 0.7).any(axis=1)], plots.SUPPORT_RGB)  # drawn pixels are green
    assert np.allclose(outline[seg == 2], 0.7)  # below the threshold: untouched
    assert np.array_equal(image, np.full((h, w, 3), 0.7, np.float32))
    with pytest.raises(ValueError, match="unknown display 'blocks'; expected outline or block"):
        lime_pictures.lime_explanation(image, seg, weights, display="blocks")
    bounds = plots.lime_boundaries(image, seg)
    assert bounds.shape == (h, w, 3) and (bounds != 0.7).any()
    fig = lime_pictures.lime_weight_density({"a": weights, "b": np.zeros(6)}, threshold=0.05, title="t")
    assert len(fig.axes[0].lines) >= 3  # a density, its rug, the threshold lines
    plots.plt.close(fig)
    assert plots.upscale_nearest(seg, 3).shape == (36, 54)


def test_one_verb_explainer_and_batch_rows(keras_model):
    from fruitlens.explain.lime import LimeExplainer

    x = np.random.default_rng(3).random((2, 12, 17, 3)).astype(np.float32)
    segments = np.stack([grid_segments(12, 17)] * 2)
    result = LimeExplainer(keras_model, LimeOptions.reference(num_samples=40, seed=5)).explain(
        x, [1, 2], segments=segments)
    direct = explain_lime(keras_model, x, LimeOptions.reference(num_samples=40),
                          segments=segments, labels=[1, 2], seed=5)
    assert len(result) == 2 and [r.labels for r in result] == [(1,), (2,)]
    for ours, ref in zip(result, direct, strict=True):
        np.testing.assert_array_equal(ours.weights[ours.labels[0]], ref.weights[ref.labels[0]])
    rows = result.to_rows(["a", "b"])
    assert list(rows["image_id"].unique()) == ["a", "b"] and len(rows) == 2 * 6
