"""LIME segments the photo at its working size and maps the superpixels to the model's input;
`fruitlens superpixels` previews exactly those."""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata
from skimage import filters, segmentation

from fruitlens import tables
from fruitlens.cli import main
from fruitlens.explain.segmentation import WORKING_SIDE, make_segmenter, photo_segments, working_photo
from fruitlens.overlays import resize_ids


@pytest.mark.parametrize("fit", ["resize", "crop"])
def test_photo_segments_share_ids_between_the_input_and_the_photo(fit):
    photo = skdata.chelsea()  # 300 x 451
    segs = photo_segments(photo, (24, 24), make_segmenter("slic"), fit=fit)
    work = working_photo(photo)
    assert max(work.shape[:2]) == WORKING_SIDE and work.shape[:2] == (170, 256)
    assert segs.coarse.shape == (24, 24) and segs.coarse.dtype == np.int32
    s = segs.coarse.max() + 1
    assert set(np.unique(segs.coarse)) == set(range(s)) == set(np.unique(segs.fine))
    if fit == "resize":
        assert segs.fine.shape == (170, 256)
    else:
        assert segs.fine.shape == (170, 170)  # the centred square the model sees


def test_superpixels_follow_the_photo_edges_better_than_input_size_ones():
    photo = skdata.chelsea()
    work = working_photo(photo)
    edges = filters.sobel(work.mean(axis=-1))
    segmenter = make_segmenter("slic")
    fine = photo_segments(photo, (32, 32), segmenter).fine
    small = segmenter.segment(np.asarray(Image.fromarray(photo).resize((32, 32), Image.Resampling.BILINEAR),
                                         np.float32) / 255.0)
    blocky = resize_ids(small, work.shape[:2])  # what LIME drew before: input-size superpixels enlarged

    def on_boundaries(ids):
        return float(edges[segmentation.find_boundaries(ids, mode="inner")].mean())

    assert on_boundaries(fine) > 1.2 * on_boundaries(blocky)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("lime_photo")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((20, 20, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, activation="softmax")])
    model.save(root / "m.keras")
    Image.fromarray(skdata.coffee()).save(root / "coffee.jpg")
    return root


def test_superpixels_previews_what_lime_uses(tiny, capsys):
    out = tiny / "ex"
    assert main(["explain", "--data", str(tiny / "coffee.jpg"), "--model", str(tiny / "m.keras"), "--classes",
                 "a,b", "--method", "lime", "--num-samples", "64", "--faithfulness-steps", "2", "--out", str(out)]) == 0
    lime = tables.read_table(out / "lime.parquet")
    used = lime["superpixel"].nunique()
    assert lime["segmenter"].iloc[0].endswith("@256x171")  # segmented at the working size, not at 20x20
    capsys.readouterr()
    assert main(["superpixels", str(tiny / "coffee.jpg"), "--size", "20x20", "--out", str(tiny / "sp")]) == 0
    printed = capsys.readouterr().out
    assert int(re.search(r"(\d+) superpixels at 256x171", printed).group(1)) == used
    assert (tiny / "sp" / "coffee_superpixels.png").is_file()


def test_stability_seed_a_is_the_lime_of_lime_parquet_on_a_photo(tiny, tmp_path):
    """LIME stability segments as the batch run does (the photo at its working size, not the 20x20 input), so its
    first seed's explanation is lime.parquet's: the same weights and the same samples."""
    from fruitlens.batch.engine import read_chunk
    from fruitlens.batch.methods import run_method
    from fruitlens.batch.rows import rows_from_inputs
    from fruitlens.batch.stability import explain_twice, lime_stability
    from fruitlens.layout import ExplainLayout
    from fruitlens.lime_options import LimeOptions
    from fruitlens.modelio import ModelSource
    from fruitlens.registry import METHODS

    model, card = ModelSource(str(tiny / "m.keras"), classes=("a", "b")).load()
    images, rows, _ = read_chunk(rows_from_inputs([tiny / "coffee.jpg"]), card.image_size, card.fit)
    options = LimeOptions(num_samples=96, round_size=32, min_samples=32, faithfulness_steps=2)
    frame, _ = run_method("lime", model, card, images, rows, options, ExplainLayout(tmp_path))  # lime.parquet's rows
    table = lime_stability(model, images, rows, card, options)
    a, _ = explain_twice(model, images, rows, card, options, (options.seed, options.seed + 1))
    top = frame[frame["label"] == table["label"].iloc[0]].sort_values("superpixel")
    np.testing.assert_allclose(top["weight"].to_numpy(), a[0].weights[a[0].labels[0]])
    assert table["samples_a"].iloc[0] == top["num_samples"].iloc[0]
    at_input = METHODS["lime"].build(model, options).segment(images)[0]  # what stability segmented before
    assert not np.array_equal(a[0].segments, at_input)


def test_sanity_segments_lime_as_the_runs_explain_does(tiny):
    """The sanity check of LIME uses the run's superpixels (the photo at its working size, mapped to the 20x20
    input), and says so in its options column; without the run's superpixels it says where it segmented."""
    from dataclasses import replace

    from fruitlens.batch.engine import read_chunk
    from fruitlens.batch.rows import rows_from_inputs
    from fruitlens.batch.sanity import sanity_segments
    from fruitlens.config import ExplainOptions
    from fruitlens.explain import sanity
    from fruitlens.lime_options import LimeOptions
    from fruitlens.modelio import ModelSource
    from fruitlens.registry import METHODS

    model, card = ModelSource(str(tiny / "m.keras"), classes=("a", "b")).load()
    images, rows, _ = read_chunk(rows_from_inputs([tiny / "coffee.jpg"]), card.image_size, card.fit)
    lime = LimeOptions(num_samples=64, round_size=32, min_samples=32, faithfulness_steps=2)
    run_segments = sanity_segments(images, rows, card, lime)
    from fruitlens.batch.methods import lime_segments
    from fruitlens.explain.segmentation import make_segmenter

    explain_made = lime_segments(images, rows, card, make_segmenter(lime.segmenter), lime.seed)[0].coarse
    np.testing.assert_array_equal(run_segments[0], explain_made)  # what lime.parquet's explanation used
    at_input = METHODS["lime"].build(model, lime).segment(images)
    assert not np.array_equal(run_segments, at_input)

    options = ExplainOptions(lime=lime)
    ran = sanity.run_sanity(model, images, methods=("lime",), options=options, seed=1, lime_segments=run_segments)
    step0 = METHODS["lime"].build(model, replace(lime, seed=1)).explain(images, ran.targets, segments=run_segments)
    np.testing.assert_allclose(ran.heatmaps["lime"][0], step0.heatmaps, atol=1e-6)
    assert "the run's superpixels (each photo segmented at" in ran.options["lime"]
    alone = sanity.run_sanity(model, images, methods=("lime",), options=options, seed=1)
    assert "segmented at the model's input size, not on the photo" in alone.options["lime"]
    with pytest.raises(ValueError, match=r"lime_segments of shape \(1, 5, 5\)"):
        sanity.run_sanity(model, images, methods=("lime",), options=options, lime_segments=np.zeros((1, 5, 5), int))
