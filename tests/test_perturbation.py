"""RISE against the paper's definition (Petsiuk et al. 2018) on known-answer models, adaptive RISE (rounds,
stopping at a tolerance) and coarse-to-fine occlusion against the full grid (issue 29)."""

import numpy as np
import pytest

from fruitlens.explain.perturbation import RISE, Occlusion
from fruitlens.method_options import OcclusionOptions, RiseOptions
from tests.test_methods import images, patch_model

SHAPE = (16, 14)
BOX = (4, 9, 5, 10)  # rows 4:9, cols 5:10: the only pixels the model reads


@pytest.fixture(scope="module")
def model():
    return patch_model(SHAPE, BOX)


def red_patch(n, seed=1, colour=(0.9, 0.1, 0.1)):
    x = images(n, SHAPE, seed)
    x[:, BOX[0]:BOX[1], BOX[2]:BOX[3]] = colour  # class 0 (redness); strongly by default
    return x


def inside():
    box = np.zeros(SHAPE, bool)
    box[BOX[0]:BOX[1], BOX[2]:BOX[3]] = True
    return box


def probs_under(model, x, masks, target):
    """The paper's f(I . M_i): the target's probability of the image times each mask (black fill), by hand."""
    return model.predict_on_batch(x[None] * masks[..., None])[:, target]


def test_rise_is_the_papers_formula_with_a_control_variate(model):
    """Fixed masks: our raw map is exactly (1 / (N p)) sum_i (f_i - mean f) M_i, i.e. the paper's
    (1 / (N p)) sum_i f_i M_i minus mean(f) sum_i M_i / (N p), computed here directly from the model."""
    x = red_patch(1)
    rise = RISE(model, masks=300, cells=4, keep=0.4, fill="black", round_size=120, seed=3)
    masks = rise.masks(SHAPE)
    f = probs_under(model, x[0], masks, 0).astype(np.float64)
    n, p = len(masks), 0.4
    paper = np.einsum("m,mhw->hw", f, masks) / (n * p)
    expected = paper - f.mean() * masks.sum(axis=0) / (n * p)
    out = rise.attribute(x, np.array([0], np.int32))
    np.testing.assert_allclose(out.raw[0], expected, rtol=1e-4, atol=1e-6)
    assert out.passes.tolist() == [300]
    # E[M] = p at every pixel (bilinear upsampling of Bernoulli cells, random shift): the shift is a constant
    assert abs(masks.mean() - p) < 0.02 and np.abs(masks.mean(axis=0) - p).max() < 0.1


def test_rise_known_answer_mass_on_the_patch_and_same_as_the_paper(model):
    """The model reads one patch: the map puts its mass there, as the paper's map (min-max) does."""
    x = red_patch(1)
    rise = RISE(model, masks=2000, cells=4, keep=0.5, fill="black", round_size=500, seed=0)
    heat = rise.explain(x, [0]).heatmaps[0]
    box = inside()
    assert heat[box].mean() > heat[~box].mean() + 0.4
    ys, xs = np.unravel_index(heat.argmax(), SHAPE)
    assert BOX[0] - 1 <= ys <= BOX[1] and BOX[2] - 1 <= xs <= BOX[3]
    masks = rise.masks(SHAPE)
    paper = np.einsum("m,mhw->hw", probs_under(model, x[0], masks, 0), masks)
    paper = (paper - paper.min()) / (paper.max() - paper.min())
    # the paper's estimator carries the noise of how often each pixel happened to be kept (what the control
    # variate removes), so the two agree up to that noise, not exactly
    assert np.corrcoef(paper.ravel(), heat.ravel())[0, 1] > 0.8
    assert paper[box].mean() > paper[~box].mean() + 0.3
    # the other class reads the same patch with the opposite sign: its map is low exactly where class 0's is high
    other = rise.explain(x, [1]).heatmaps[0]
    assert np.corrcoef(other.ravel(), heat.ravel())[0, 1] < -0.9


def test_rise_stratified_rounds_keep_each_cell_in_round_size_times_keep_masks(model):
    rise = RISE(model, masks=200, cells=1, keep=0.3, round_size=100, seed=4)
    m = rise.masks((4, 4))  # one cell: each mask is all kept or all removed
    assert m.shape == (200, 4, 4)
    assert m[:100, 0, 0].sum() == 30 and m[100:, 0, 0].sum() == 30


def test_adaptive_rise_stops_early_on_an_easy_model_and_matches_the_fixed_map(model):
    x = red_patch(2)
    fixed = RISE(model, masks=3000, cells=4, fill="black", round_size=250).explain(x, [0, 0])
    adaptive = RISE(model, masks=3000, cells=4, fill="black", round_size=250, tolerance=0.05).explain(x, [0, 0])
    assert fixed.passes.tolist() == [3000, 3000]
    assert np.all(adaptive.passes < 3000) and np.all(adaptive.passes % 250 == 0)
    assert np.all(adaptive.convergence <= 0.05) and np.all(fixed.convergence < adaptive.convergence)
    assert np.abs(adaptive.heatmaps - fixed.heatmaps).mean() < 0.05
    ys, xs = np.unravel_index(adaptive.heatmaps.reshape(2, -1).argmax(1), SHAPE)
    assert np.all((ys >= BOX[0] - 1) & (ys <= BOX[1]) & (xs >= BOX[2] - 1) & (xs <= BOX[3]))


def test_adaptive_rise_batch_equals_one_by_one_and_is_deterministic(model):
    """Images stop at different rounds; each one's map depends on itself only; same seed, same output."""
    x = red_patch(3)
    x[1] = images(1, SHAPE, 9)[0]  # no red patch: a flat, noisy map that needs more masks
    rise = RISE(model, masks=1500, cells=4, round_size=100, tolerance=0.04, seed=2)
    both = rise.explain(x, [0, 0, 1])
    one = [RISE(model, masks=1500, cells=4, round_size=100, tolerance=0.04, seed=2, batch_size=7)
           .explain(x[i:i + 1], [t]) for i, t in enumerate([0, 0, 1])]
    np.testing.assert_allclose(both.heatmaps, np.concatenate([o.heatmaps for o in one]), atol=1e-5)
    assert both.passes.tolist() == [int(o.passes[0]) for o in one]
    np.testing.assert_array_equal(both.heatmaps, rise.explain(x, [0, 0, 1]).heatmaps)
    other = RISE(model, masks=1500, cells=4, round_size=100, tolerance=0.04, seed=3).explain(x, [0, 0, 1])
    assert not np.array_equal(both.heatmaps, other.heatmaps)


def test_occlusion_coarse_to_fine_equals_the_full_grid_where_the_model_is_flat_or_peaked(model):
    """The model reads one patch: the coarse pass finds it, the fine windows near it are measured, those far
    from it are 0 in both; the map equals the full fine grid's with fewer passes. (A faint patch, p_0 about 0.8:
    a saturated softmax would make every drop tiny and the scaled maps a comparison of round-off.)"""
    x = red_patch(2, colour=(0.55, 0.4, 0.4))
    full = Occlusion(model, window=2, stride=1, fill="black").explain(x, [0, 1])
    c2f = Occlusion(model, window=2, stride=1, fill="black", coarse=3, threshold=0.05).explain(x, [0, 1])
    np.testing.assert_allclose(c2f.heatmaps, full.heatmaps, atol=1e-5)
    assert np.all(c2f.passes < full.passes) and full.passes.tolist() == [15 * 13 + 1] * 2
    assert np.all(c2f.convergence < 1e-6)  # nothing was guessed that was not zero
    every = Occlusion(model, window=2, stride=1, fill="black", coarse=3, threshold=0.0).explain(x, [0, 1])
    np.testing.assert_allclose(every.heatmaps, full.heatmaps, atol=1e-6)  # threshold 0: every fine window
    one = [Occlusion(model, window=2, stride=1, fill="black", coarse=3, threshold=0.05, batch_size=5)
           .explain(x[i:i + 1], [t]) for i, t in enumerate([0, 1])]
    np.testing.assert_allclose(c2f.heatmaps, np.concatenate([o.heatmaps for o in one]), atol=1e-6)


def test_options_are_checked_where_they_enter(model):
    with pytest.raises(ValueError, match="coarse 0"):
        Occlusion(model, coarse=0)
    with pytest.raises(ValueError, match="tolerance -1"):
        RISE(model, tolerance=-1)
    with pytest.raises(ValueError, match="threshold"):
        OcclusionOptions(threshold=2.0)
    with pytest.raises(ValueError, match="round_size"):
        RiseOptions(round_size=0)
