"""Deletion/insertion curves, superpixel saliency and the pointing game on hand-computable cases."""

import numpy as np
import pytest

from fruitlens.explain.faithfulness import deletion_insertion, pixel_ranks, pointing_game, saliency_from_superpixels

REGION = np.zeros((4, 4), bool)
REGION[:2, :2] = True  # 4 of 16 pixels decide class 0


def region_model(x):
    """Class 0 probability = mean brightness of the 2 x 2 top-left region; class 1 the rest."""
    p = x[:, :2, :2, :].mean(axis=(1, 2, 3))
    return np.stack([p, 1 - p], axis=1)


def test_hand_computed_curves_and_areas():
    images = np.ones((2, 4, 4, 3), np.float32)
    good = REGION.astype(np.float32)  # the region first
    bad = 1.0 - good  # the region last
    res = deletion_insertion(region_model, images, np.stack([good, bad]), np.array([0, 0]), steps=4, baseline=0.0)
    np.testing.assert_allclose(res.fractions, [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(res.deletion, [[1, 0, 0, 0, 0], [1, 1, 1, 1, 0]], atol=1e-6)
    np.testing.assert_allclose(res.insertion, [[0, 1, 1, 1, 1], [0, 0, 0, 0, 1]], atol=1e-6)
    np.testing.assert_allclose(res.deletion_auc, [0.125, 0.875], atol=1e-6)
    np.testing.assert_allclose(res.insertion_auc, [0.875, 0.125], atol=1e-6)
    row = res.to_rows(["x", "y"]).iloc[0]
    assert row["image_id"] == "x" and (row["deletion_auc"], row["insertion_auc"]) == pytest.approx((0.125, 0.875))


def test_batch_size_and_saliency_resolution_do_not_change_results():
    rng = np.random.default_rng(0)
    images = rng.random((3, 8, 6, 3)).astype(np.float32)
    coarse = rng.random((3, 4, 3)).astype(np.float32)  # a conv-resolution map: nearest-upsampled
    a = deletion_insertion(region_model, images, coarse, np.array([0, 1, 0]), steps=6, batch_size=2, baseline="blur")
    b = deletion_insertion(region_model, images, coarse.repeat(2, 1).repeat(2, 2), np.array([0, 1, 0]), steps=6,
                           batch_size=500, baseline="blur")
    np.testing.assert_allclose(a.deletion, b.deletion, atol=1e-6)
    np.testing.assert_allclose(a.insertion_auc, b.insertion_auc, atol=1e-6)


def test_keras_model_and_mean_baseline():
    import keras

    model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(2, activation="softmax")])
    images = np.random.default_rng(1).random((2, 4, 4, 3)).astype(np.float32)
    before = images.copy()
    res = deletion_insertion(model, images, np.random.default_rng(2).random((2, 4, 4)), np.array([1, 0]), steps=3)
    np.testing.assert_allclose(res.deletion[:, 0], np.asarray(model(images))[[0, 1], [1, 0]], rtol=1e-5)
    np.testing.assert_allclose(res.deletion[:, -1], res.insertion[:, 0], rtol=1e-5)  # all removed = baseline
    np.testing.assert_array_equal(images, before)


def test_ties_are_broken_by_the_seed():
    flat = np.zeros((1, 3, 3))
    assert (pixel_ranks(flat, 0) == pixel_ranks(flat, 0)).all()
    assert not (pixel_ranks(flat, 0) == pixel_ranks(flat, 1)).all()
    assert sorted(pixel_ranks(flat, 0).ravel()) == list(range(9))


def test_superpixel_saliency():
    seg = np.array([[0, 0, 1], [2, 2, 1]])
    out = saliency_from_superpixels(seg, np.array([0.5, -1.0, 2.0]))
    np.testing.assert_array_equal(out, [[[0.5, 0.5, -1.0], [2.0, 2.0, -1.0]]])
    two = saliency_from_superpixels(np.stack([seg, np.zeros_like(seg)]), [np.array([1.0, 2, 3]), np.array([7.0])])
    np.testing.assert_array_equal(two[1], np.full((2, 3), 7.0))
    with pytest.raises(ValueError, match=r"segment ids 0..2: expected ids in \[0, 2\)"):
        saliency_from_superpixels(seg, np.array([1.0, 2.0]))


def test_pointing_game():
    heat = np.zeros((3, 4, 4), np.float32)
    heat[0, 0, 1] = 1  # inside the region
    heat[1, 3, 3] = 1  # outside
    masks = np.stack([REGION] * 3)
    np.testing.assert_array_equal(pointing_game(heat, masks), [True, False, False])  # all-zero map: a miss
    heat[1, 3, 3], heat[1, 2, 2] = 0, 1  # one pixel off the corner of the region
    assert pointing_game(heat, masks, tolerance=1)[1] and not pointing_game(heat, masks)[1]
    big = REGION.repeat(2, 0).repeat(2, 1)[None].repeat(3, 0)  # masks at another resolution are resized
    np.testing.assert_array_equal(pointing_game(heat, big), pointing_game(heat, masks))


def test_bad_input_is_named():
    images = np.ones((2, 4, 4, 3), np.float32)
    with pytest.raises(ValueError, match=r"saliency of shape \(4, 4\): expected \(2, H, W\)"):
        deletion_insertion(region_model, images, np.ones((4, 4)), np.array([0, 0]))
    with pytest.raises(ValueError, match="baseline 'gray': expected a gray level in"):
        deletion_insertion(region_model, images, np.ones((2, 4, 4)), np.array([0, 0]), baseline="gray")
