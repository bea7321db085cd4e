"""The contract of every registered method and variant (LIME and the Grad-CAM variants included, each built
by its own ``from_options``): N in {1, 2}, non-square inputs, range, no NaN, no mutation, same seed same
output, batch = one by one. Then known answers of Layer-CAM, Score-CAM, gradients, SmoothGrad, Integrated
Gradients, occlusion and RISE on tiny models."""

from dataclasses import replace

import keras
import numpy as np
import pytest
import tensorflow as tf

from fruitlens.explain.explainer import Explainer
from fruitlens.explain.gradcam import LayerCAM, ScoreCAM
from fruitlens.explain.gradients import IntegratedGradients, Saliency, SmoothGrad
from fruitlens.explain.perturbation import RISE, Occlusion
from fruitlens.registry import METHODS, method_names, resolve
from tests.test_gradcam import blobs, colour_model

SHAPE = (12, 10)


def linear_model(shape=SHAPE, softmax=True, seed=0):
    """logits = W . flatten(x) + b: every gradient is W, Integrated Gradients is exactly (x - x') * W."""
    inp = keras.Input((*shape, 3))
    dense = keras.layers.Dense(3, activation="softmax" if softmax else None, name="head")
    model = keras.Model(inp, dense(keras.layers.Flatten()(inp)))
    rng = np.random.default_rng(seed)
    dense.set_weights([rng.normal(size=(shape[0] * shape[1] * 3, 3)).astype(np.float32) * 0.1,
                       np.array([0.1, -0.2, 0.3], np.float32)])
    return model


def patch_model(shape=SHAPE, box=(2, 5, 3, 6)):
    """Looks only at rows box[0]:box[1], cols box[2]:box[3]: class 0 = their redness, class 1 = its negative."""
    h, w = shape
    y0, y1, x0, x1 = box
    inp = keras.Input((h, w, 3))
    x = keras.layers.Cropping2D(((y0, h - y1), (x0, w - x1)))(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(2, activation="softmax", name="head")
    model = keras.Model(inp, dense(x))
    dense.set_weights([np.array([[8.0, -8.0], [-4.0, 4.0], [-4.0, 4.0]], np.float32), np.zeros(2, np.float32)])
    return model


def images(n, shape=SHAPE, seed=1):
    return np.random.default_rng(seed).random((n, *shape, 3)).astype(np.float32)


# Options that keep the contract test fast on tiny models (every other field: the method's defaults)
FAST = {"smoothgrad": {"samples": 6, "noise": 0.2, "seed": 3}, "integrated_gradients": {"steps": 7},
        "occlusion": {"window": 4, "stride": 3}, "rise": {"masks": 40, "cells": 3, "seed": 5},
        "lime": {"num_samples": 200, "round_size": 64, "min_samples": 64, "seed": 2},
        "amortised": {"grid": 3, "epochs": 2, "masks": 4, "width": 4, "seed": 4}}
EXTRA_CASES = {"scorecam@1": ("scorecam", {"channels": 1})}  # Faster Score-CAM
CASES = (*method_names(), *EXTRA_CASES)  # every method and variant of the registry, and these


def case(name: str, **changes):
    """(spec, options) of a contract case, with the fast options and ``changes``."""
    base, extra = EXTRA_CASES.get(name, (name, {}))
    spec, options = resolve(base)
    return spec, replace(options, **{**FAST.get(spec.name, {}), **extra, **changes})


def build(name: str, model, **changes):
    spec, options = case(name, **changes)
    return spec.build(model, options)


def explain_one(explainer, x, i, target):
    """Image i alone, for its target: LIME seeds an image by position unless told, so it gets image i's seed."""
    if explainer.method == "lime":
        return explainer.explain(x[i:i + 1], [target], seeds=[(explainer.options.seed, i)])
    return explainer.explain(x[i:i + 1], [target])


@pytest.fixture(scope="module")
def cmodel():
    return colour_model(SHAPE)


def test_the_contract_covers_every_registered_method_and_variant():
    assert {resolve(EXTRA_CASES.get(c, (c,))[0])[0].name for c in CASES} == set(METHODS)
    assert {"gradcam++", "cam", "lime"} <= set(CASES)


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("n", [1, 2])
def test_contract(cmodel, name, n):
    """Shape, dtype, range, no NaN, no mutation, default target, same seed same output, batch = one by one,
    on non-square images (12 x 10), every method built by its own from_options."""
    x = blobs(n, SHAPE) * 0.9 + 0.05 * images(n)
    before, weights = x.copy(), [w.copy() for w in cmodel.get_weights()]
    explainer = build(name, cmodel)
    assert isinstance(explainer, Explainer)
    res = explainer.explain(x)
    assert res.heatmaps.shape == (n, *SHAPE) and res.heatmaps.dtype == np.float32
    assert np.isfinite(res.heatmaps).all() and res.heatmaps.min() >= 0 and res.heatmaps.max() <= 1
    assert np.array_equal(x, before)  # inputs untouched
    assert all(np.array_equal(a, b) for a, b in zip(weights, cmodel.get_weights(), strict=True))
    probs = cmodel.predict_on_batch(x)
    assert np.array_equal(res.targets, probs.argmax(axis=1))  # default: the predicted class
    again = build(name, cmodel).explain(x)
    np.testing.assert_array_equal(res.heatmaps, again.heatmaps)  # same seed, same output
    if n == 2:  # batch = one by one, and a tiny batch size changes nothing
        one = np.concatenate([explain_one(explainer, x, i, t).heatmaps for i, t in enumerate(res.targets)])
        np.testing.assert_allclose(res.heatmaps, one, atol=1e-5)
        small = build(name, cmodel, batch_size=3).explain(x, res.targets)
        np.testing.assert_allclose(res.heatmaps, small.heatmaps, atol=1e-5)


def test_lime_from_options_is_the_batch_estimator(cmodel):
    """LIME built from its options samples as the options say: adaptive stops below the budget, fixed uses it."""
    x = blobs(2, SHAPE)
    adaptive = build("lime", cmodel, num_samples=2000).explain(x)
    fixed = build("lime", cmodel, num_samples=150, adaptive=False).explain(x)
    assert all(e.num_samples < 2000 for e in adaptive) and all(e.num_samples == 150 for e in fixed)


EXPLAINERS = {  # the known-answer tests below, by their short names
    "layercam": lambda m, **k: LayerCAM(m, **k),
    "scorecam": lambda m, **k: ScoreCAM(m, **k),
    "saliency": lambda m, **k: Saliency(m, **k),
    "ig": lambda m, **k: IntegratedGradients(m, steps=7, **k),
    "occlusion": lambda m, **k: Occlusion(m, window=4, stride=3, **k),
}


@pytest.mark.parametrize("name", ["layercam", "scorecam", "saliency", "ig", "occlusion"])
def test_colour_blobs_point_at_their_class(cmodel, name):
    """Red blob top-left explains class 0, blue blob bottom-right class 1."""
    res = EXPLAINERS[name](cmodel).explain(blobs(2, SHAPE), [0, 1])
    (y0, x0), (y1, x1) = res.peaks
    assert y0 <= 4 and x0 <= 4 and y1 >= SHAPE[0] - 5 and x1 >= SHAPE[1] - 5


def test_layercam_by_hand(cmodel):
    x = blobs(2, SHAPE)
    conv = cmodel.get_layer("colour")
    feats = keras.Model(cmodel.inputs, conv.output)
    dense = cmodel.get_layer("head")
    out = []
    for img, t in zip(x, [0, 1], strict=True):
        with tf.GradientTape() as tape:
            acts = feats(img[None])
            tape.watch(acts)
            score = (tf.reduce_mean(acts, axis=(1, 2)) @ dense.kernel + dense.bias)[0, t]
        heat = tf.nn.relu(tf.reduce_sum(tf.nn.relu(tape.gradient(score, acts)) * acts, -1))[0].numpy()
        out.append(heat / heat.max())
    np.testing.assert_allclose(LayerCAM(cmodel).explain(x, [0, 1], upsample=False).heatmaps, np.stack(out),
                               atol=1e-5)


def test_scorecam_by_hand(cmodel):
    """weight_k = softmax(model(x * minmax(A_k)))[t]; map = ReLU(sum_k weight_k A_k) / max."""
    x = blobs(2, SHAPE)
    feats = keras.Model(cmodel.inputs, cmodel.get_layer("colour").output)
    out = []
    for img, t in zip(x, [0, 1], strict=True):
        acts = feats(img[None]).numpy()[0]
        weights = []
        for k in range(acts.shape[-1]):
            a = acts[..., k]
            m = (a - a.min()) / (a.max() - a.min()) if a.max() > a.min() else np.zeros_like(a)
            weights.append(cmodel.predict_on_batch((img * m[..., None])[None])[0, t])  # softmax head
        heat = np.maximum((acts * np.array(weights)).sum(-1), 0)
        out.append(heat / heat.max())
    got = ScoreCAM(cmodel).explain(x, [0, 1], upsample=False).heatmaps
    np.testing.assert_allclose(got, np.stack(out), atol=1e-5)


def test_faster_scorecam_keeps_highest_variance_channels(cmodel):
    x = blobs(1, SHAPE)
    feats = keras.Model(cmodel.inputs, cmodel.get_layer("colour").output)(x).numpy()
    top = int(feats.var(axis=(1, 2))[0].argmax())
    heat = ScoreCAM(cmodel, channels=1).explain(x, [0], upsample=False).heatmaps[0]
    expected = np.maximum(feats[0, ..., top], 0)
    np.testing.assert_allclose(heat, expected / expected.max(), atol=1e-5)
    with pytest.raises(ValueError, match="channels 0"):
        ScoreCAM(cmodel, channels=0)


@pytest.mark.parametrize("softmax", [True, False])
def test_gradients_of_a_linear_model(softmax):
    """Gradients on pre-softmax scores: d logit_t / dx = W_t whether or not the model ends in a softmax."""
    model = linear_model(softmax=softmax)
    x = images(2)
    w = model.get_layer("head").kernel.numpy().reshape(*SHAPE, 3, 3)
    expected = np.stack([np.abs(w[..., t]).max(-1) for t in (0, 2)])
    expected /= expected.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(Saliency(model).explain(x, [0, 2]).heatmaps, expected, atol=1e-5)
    # the gradient is the same everywhere: SmoothGrad equals it for any noise
    np.testing.assert_allclose(SmoothGrad(model, samples=4, noise=0.5).explain(x, [0, 2]).heatmaps, expected,
                               atol=1e-5)


@pytest.mark.parametrize("targets", [None, [1, 0, 1]])
def test_saliency_in_one_pass_equals_the_shared_path(cmodel, targets):
    """Saliency's one-pass step gives what the base explainer's forward pass + gradient sum give."""
    from fruitlens.explain.base import BaseAttribution

    x = images(3, shape=cmodel.input_shape[1:3])
    fast = Saliency(cmodel, batch_size=2).explain(x, targets)
    shared = BaseAttribution.explain(Saliency(cmodel, batch_size=2), x, targets)
    np.testing.assert_allclose(fast.heatmaps, shared.heatmaps, atol=1e-6)
    np.testing.assert_array_equal(fast.targets, shared.targets)
    np.testing.assert_allclose(fast.scores, shared.scores, rtol=1e-5)


@pytest.mark.parametrize("reference", ["black", "gray", "mean"])
def test_integrated_gradients_closed_form(reference):
    """Linear logits: IG = (x - x') * W_t exactly, and its sum is f_t(x) - f_t(x') (completeness)."""
    model = linear_model()
    x = images(2)
    ig = IntegratedGradients(model, steps=5, reference=reference)
    attr = ig.attributions(x, np.array([1, 0]))
    w = model.get_layer("head").kernel.numpy().reshape(*SHAPE, 3, 3)
    base = {"black": np.zeros_like(x), "gray": np.full_like(x, 0.5),
            "mean": np.broadcast_to(x.mean(axis=(1, 2), keepdims=True), x.shape)}[reference]
    np.testing.assert_allclose(attr, (x - base) * np.stack([w[..., 1], w[..., 0]]), atol=1e-5)
    kernel = model.get_layer("head").kernel.numpy()
    gap = (x.reshape(2, -1) @ kernel - base.reshape(2, -1) @ kernel)[[0, 1], [1, 0]]
    np.testing.assert_allclose(attr.sum(axis=(1, 2, 3)), gap, rtol=1e-4)
    heat = ig.explain(x, [1, 0]).heatmaps
    raw = np.maximum(attr.sum(-1), 0)
    np.testing.assert_allclose(heat, raw / raw.max(axis=(1, 2), keepdims=True), atol=1e-5)
    with pytest.raises(ValueError, match="steps 1"):
        IntegratedGradients(model, steps=1)
    with pytest.raises(ValueError, match="reference 'pink'"):
        IntegratedGradients(model, reference="pink")


def test_occlusion_sees_only_the_patch():
    """A model that looks at one patch: windows that miss it change nothing, so their pixels score 0."""
    box = (2, 5, 3, 6)
    model = patch_model(box=box)
    x = images(2)
    x[:, box[0]:box[1], box[2]:box[3]] = (0.9, 0.1, 0.1)  # a red patch: class 0
    occ = Occlusion(model, window=3, stride=1)
    heat = occ.explain(x, [0, 0]).heatmaps
    windows = occ.windows(SHAPE)
    touches = windows[:, box[0]:box[1], box[2]:box[3]].any(axis=(1, 2))
    reach = windows[touches].any(axis=0)  # pixels of some window that covers part of the patch
    assert np.all(heat[:, ~reach] < 1e-4)
    assert np.all(heat[:, box[0]:box[1], box[2]:box[3]] > 0)
    ys, xs = np.unravel_index(heat.reshape(2, -1).argmax(1), SHAPE)
    assert np.all((ys >= box[0]) & (ys < box[1]) & (xs >= box[2]) & (xs < box[3]))
    assert windows.shape[1:] == SHAPE and windows.sum(axis=0).min() >= 1  # every pixel covered
    with pytest.raises(ValueError, match="fill 'pink'"):
        Occlusion(model, fill="pink")


def test_rise_finds_the_patch():
    box = (2, 5, 3, 6)
    model = patch_model(box=box)
    x = images(1)
    x[:, box[0]:box[1], box[2]:box[3]] = (0.9, 0.1, 0.1)
    rise = RISE(model, masks=400, cells=4, seed=0)
    heat = rise.explain(x, [0]).heatmaps[0]
    inside = heat[box[0]:box[1], box[2]:box[3]].mean()
    outside = np.delete(heat.ravel(), np.ravel_multi_index(np.mgrid[box[0]:box[1], box[2]:box[3]].reshape(2, -1),
                                                           SHAPE)).mean()
    assert inside > outside + 0.2
    masks = rise.masks(SHAPE)
    assert masks.shape == (400, *SHAPE) and masks.min() >= 0 and masks.max() <= 1
    np.testing.assert_array_equal(masks, RISE(model, masks=400, cells=4, seed=0).masks(SHAPE))
    assert not np.array_equal(masks, RISE(model, masks=400, cells=4, seed=1).masks(SHAPE))


def test_smoothgrad_seed_matters(cmodel):
    x = blobs(1, SHAPE)
    a = SmoothGrad(cmodel, samples=4, noise=0.5, seed=0).explain(x).heatmaps
    b = SmoothGrad(cmodel, samples=4, noise=0.5, seed=1).explain(x).heatmaps
    assert not np.allclose(a, b)
    with pytest.raises(ValueError, match="samples 0"):
        SmoothGrad(cmodel, samples=0)


def test_bad_inputs(cmodel):
    with pytest.raises(ValueError, match="expected \\(N, H, W, 3\\)"):
        Saliency(cmodel).explain(np.zeros((2, 12, 10), np.float32))
    with pytest.raises(ValueError, match="class ids in"):
        RISE(cmodel, masks=4).explain(blobs(1, SHAPE), [7])
