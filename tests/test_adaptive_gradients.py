"""Adaptive Integrated Gradients and SmoothGrad on tiny models with known answers: the tolerance is reached, the
gap and standard error recorded are what they say, converged images spend fewer passes, seeded and batch-free."""

import keras
import numpy as np
import pytest

from fruitlens.explain.gradients import IntegratedGradients, SmoothGrad, path_rule
from fruitlens.method_options import IntegratedGradientsOptions, SmoothGradOptions
from fruitlens.registry import METHODS
from tests.test_methods import linear_model

SHAPE = (6, 5)
SHARPNESS = 6.0


def tanh_model(shape=SHAPE, sharpness=SHARPNESS, seed=0):
    """logit_t = sum_i W[i, t] tanh(s x_i) + b_t: separable, so Integrated Gradients from black is exactly
    W[i, t] tanh(s x_i) per value, and the path integrand is smooth but not a polynomial."""
    inp = keras.Input((*shape, 3))
    x = keras.layers.Activation("tanh")(keras.layers.Rescaling(sharpness)(inp))
    dense = keras.layers.Dense(2, name="head")
    model = keras.Model(inp, dense(keras.layers.Flatten()(x)))
    w = np.abs(np.random.default_rng(seed).normal(size=(int(np.prod(shape)) * 3, 2))).astype(np.float32)
    dense.set_weights([w, np.zeros(2, np.float32)])
    return model, w


def dark_and_bright(shape=SHAPE, seed=1):
    """Image 0 dark (values up to 0.05: tanh is nearly linear on its path), image 1 bright (0.5 to 1)."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(0, 0.05, (*shape, 3)), rng.uniform(0.5, 1.0, (*shape, 3))]).astype(np.float32)


def exact_ig(w, x, t):
    return w[:, t].reshape(*x.shape[1:]) * np.tanh(SHARPNESS * x)


@pytest.mark.parametrize("nodes", ["gauss-legendre", "riemann"])
def test_adaptive_ig_reaches_the_tolerance_and_the_exact_answer(nodes):
    model, w = tanh_model()
    x = dark_and_bright()
    ig = IntegratedGradients(model, steps=129, tolerance=0.002, nodes=nodes)
    attr, passes, gap = ig.integrate(x, np.array([0, 0]))
    assert np.all(gap <= 0.002)
    exact = exact_ig(w, x, 0)
    for i in range(2):  # every value within 1 % of the largest
        assert np.abs(attr[i] - exact[i]).max() <= 0.01 * np.abs(exact[i]).max()
    # the gap recorded is the gap of the attributions returned, against f(x) - f(black) computed here
    logits = model.predict_on_batch(np.concatenate([x, np.zeros_like(x)]))[:, 0]
    delta = logits[:2] - logits[2:]
    np.testing.assert_allclose(gap, np.abs(attr.sum(axis=(1, 2, 3)) - delta) / np.abs(delta), rtol=1e-3, atol=1e-6)
    # the dark image's path is nearly straight: it converges in the first round, the bright one needs more
    first = 4 if nodes == "gauss-legendre" else 5
    assert passes[0] == 1 + first and passes[1] > passes[0]


def test_adaptive_ig_passes_are_the_rounds_it_ran():
    model, _ = tanh_model()
    x = dark_and_bright()[1:]
    rounds = lambda **k: IntegratedGradients(model, nodes="gauss-legendre", **k).rounds()  # noqa: E731
    assert rounds(steps=64, tolerance=0.1) == [4, 8, 16, 32, 64]
    assert rounds(steps=50, tolerance=0.1) == [4, 8, 16, 32, 50]
    assert rounds(steps=50, tolerance=0) == [50]
    gl = IntegratedGradients(model, steps=8, tolerance=1e-9, nodes="gauss-legendre")  # does not converge: all rounds
    _, passes, gap = gl.integrate(x, np.array([0]))
    assert passes.tolist() == [1 + 4 + 8] and gap[0] > 1e-9
    tr = IntegratedGradients(model, steps=33, tolerance=1e-9, nodes="riemann")
    assert tr.rounds() == [5, 9, 17, 33]
    nested, passes, gap = tr.integrate(x, np.array([0]))
    assert passes.tolist() == [1 + 33]  # each round reuses the last one's points
    fresh, fresh_passes, fresh_gap = IntegratedGradients(model, steps=33, nodes="riemann", tolerance=0).integrate(
        x, np.array([0]))
    np.testing.assert_allclose(nested, fresh, rtol=1e-4, atol=1e-6)  # the nested sum is the 33-point rule
    np.testing.assert_allclose(gap, fresh_gap, atol=1e-6)  # both at float32 rounding (3e-6 here)
    assert fresh_passes.tolist() == [34]


def test_riemann_without_tolerance_is_the_trapezoid_rule():
    """nodes riemann, tolerance 0: one round of ``steps`` trapezoid points, what fruitlens did before."""
    model, w = tanh_model()
    x = dark_and_bright()
    alphas, weights = path_rule("riemann", 7)
    np.testing.assert_allclose(alphas, np.linspace(0, 1, 7), atol=1e-7)
    np.testing.assert_allclose(weights, [1 / 12, 1 / 6, 1 / 6, 1 / 6, 1 / 6, 1 / 6, 1 / 12], atol=1e-7)
    by_hand = sum(wk * SHARPNESS * (1 - np.tanh(SHARPNESS * a * x) ** 2) for a, wk in zip(alphas, weights, strict=True))
    expected = x * by_hand * w[:, 1].reshape(*SHAPE, 3)
    np.testing.assert_allclose(IntegratedGradients(model, steps=7, nodes="riemann", tolerance=0).attributions(
        x, np.array([1, 1])),
                               expected, rtol=1e-4, atol=1e-6)
    a, wts = path_rule("gauss-legendre", 3)  # Captum's mapping of numpy's nodes to [0, 1]
    np.testing.assert_allclose(a, [0.5 - np.sqrt(0.15), 0.5, 0.5 + np.sqrt(0.15)], atol=1e-6)
    np.testing.assert_allclose(wts, [5 / 18, 8 / 18, 5 / 18], atol=1e-6)


def test_explain_reports_passes_and_convergence():
    model, _ = tanh_model()
    x = dark_and_bright()
    for name in ("integrated_gradients", "smoothgrad"):
        res = METHODS[name].build(model).explain(x, [0, 0])
        assert res.passes.shape == (2,) and res.convergence.shape == (2,)
        assert res.passes.dtype.kind == "i" and np.all(res.passes >= 1) and np.isfinite(res.convergence).all()


def test_smoothgrad_se_shrinks_and_the_map_converges():
    model, _ = tanh_model()
    x = dark_and_bright()[1:]
    t = np.array([0])
    ses = [SmoothGrad(model, samples=k, noise=0.3, sampling="iid", round_size=8, tolerance=0).estimate(x, t)[2][0]
           for k in (8, 32, 128)]
    assert ses[0] > ses[1] > ses[2]
    assert 1.4 < ses[0] / ses[1] < 2.8 and 1.4 < ses[1] / ses[2] < 2.8  # about 1 / sqrt(samples)
    ref = SmoothGrad(model, samples=2048, noise=0.1, sampling="iid", round_size=512, seed=9,
                     tolerance=0).estimate(x, t)[0]
    mean, used, se = SmoothGrad(model, samples=512, noise=0.1, tolerance=0.03, round_size=16).estimate(x, t)
    assert se[0] <= 0.03 and 16 < used[0] < 512
    # the SE it reports is the size of its error against a far larger independent estimate (within 2 SEs)
    assert np.linalg.norm(mean - ref) / np.linalg.norm(ref) < 2 * 0.03


def test_smoothgrad_stops_early_where_the_gradient_is_flat():
    """A linear model has the same gradient under any noise: SE 0 after the first round; the tanh model's
    bright image keeps going until the budget with a tiny tolerance."""
    lin = linear_model(SHAPE)
    x = dark_and_bright()
    res = SmoothGrad(lin, samples=64, noise=0.5, tolerance=0.05, round_size=8, sampling="antithetic").explain(
        x, [0, 1])
    assert res.passes.tolist() == [8, 8] and np.all(res.convergence < 1e-3)  # 0 up to float32 rounding
    res = SmoothGrad(lin, samples=64, noise=0.5, tolerance=0.05, round_size=8).explain(x, [0, 1])
    assert res.passes.tolist() == [16, 16] and np.all(res.convergence < 1e-3)  # latin: an SE needs two rounds
    model, _ = tanh_model()
    res = SmoothGrad(model, samples=32, noise=0.5, tolerance=1e-6, round_size=8).explain(x[1:], [0])
    assert res.passes.tolist() == [32] and res.convergence[0] > 1e-6


@pytest.mark.parametrize("sampling", ["latin", "antithetic", "sobol", "iid"])
def test_adaptive_smoothgrad_is_seeded_and_batch_free(sampling):
    model, _ = tanh_model()
    x = np.concatenate([dark_and_bright(), dark_and_bright(seed=2)])
    targets = np.array([0, 1, 1, 0])
    make = lambda **k: SmoothGrad(model, samples=48, noise=0.3, tolerance=0.08, round_size=8,  # noqa: E731
                                  sampling=sampling, **k)
    res = make().explain(x, targets)
    again = make(batch_size=5).explain(x, targets)
    np.testing.assert_allclose(res.heatmaps, again.heatmaps, atol=1e-5)
    np.testing.assert_array_equal(res.passes, again.passes)
    one = [make().explain(x[i:i + 1], targets[i:i + 1]) for i in range(4)]
    np.testing.assert_allclose(res.heatmaps, np.concatenate([r.heatmaps for r in one]), atol=1e-5)
    assert res.passes.tolist() == [int(r.passes[0]) for r in one]
    assert not np.allclose(res.heatmaps, make(seed=1).explain(x, targets).heatmaps)


def test_latin_rounds_stratify_every_value_and_report_an_se_over_rounds():
    """A round of k Latin-hypercube copies puts each pixel value's k draws one in each of k equal-probability
    strata of the normal; the SE is over round means, so it is unknown (inf) after one round and finite after two."""
    from scipy.special import ndtr

    model, _ = tanh_model()
    sg = SmoothGrad(model, samples=16, noise=0.3, round_size=8, sampling="latin", tolerance=0)
    noise = sg.draws((6, 5, 3))(0, 8)
    strata = np.floor(ndtr(noise.astype(np.float64)) * 8).reshape(8, -1)
    assert np.array_equal(np.sort(strata, axis=0), np.broadcast_to(np.arange(8)[:, None], strata.shape))
    assert not np.array_equal(noise, sg.draws((6, 5, 3))(1, 8))  # each round its own hypercube
    x, t = dark_and_bright()[1:], np.array([0])
    assert sg.rounds() == [8, 8]
    assert np.isinf(SmoothGrad(model, samples=8, noise=0.3, round_size=8, sampling="latin",
                               tolerance=0).estimate(x, t)[2][0])
    mean, used, se = sg.estimate(x, t)
    assert used[0] == 16 and 0 < se[0] < np.inf
    assert SmoothGrad(model, samples=20, round_size=8, sampling="latin").rounds() == [8, 8]  # whole rounds only


def test_antithetic_pairs_cancel_odd_terms():
    """x + e and x - e: a gradient linear in the noise (a quadratic model) averages to the exact gradient at x
    with one pair, where iid draws do not."""
    inp = keras.Input((*SHAPE, 3))
    sq = keras.layers.Multiply()([inp, inp])
    dense = keras.layers.Dense(2, name="head")
    model = keras.Model(inp, dense(keras.layers.Flatten()(sq)))
    w = np.random.default_rng(0).normal(size=(int(np.prod(SHAPE)) * 3, 2)).astype(np.float32)
    dense.set_weights([w, np.zeros(2, np.float32)])
    x = dark_and_bright()
    exact = 2 * x * w[:, 0].reshape(*SHAPE, 3)
    pair = lambda sampling: SmoothGrad(model, samples=2, noise=0.5, round_size=2, sampling=sampling,  # noqa: E731
                                       tolerance=0).estimate(x, np.array([0, 0]))[0]
    np.testing.assert_allclose(pair("antithetic"), exact, atol=1e-5)
    iid = pair("iid")
    assert np.abs(iid - exact).max() > 0.01


def test_bad_options_name_the_value():
    with pytest.raises(ValueError, match="nodes 'simpson'"):
        IntegratedGradientsOptions(nodes="simpson")
    with pytest.raises(ValueError, match="tolerance 1"):
        IntegratedGradientsOptions(tolerance=1)
    with pytest.raises(ValueError, match="round_size 3"):
        SmoothGradOptions(round_size=3)
    with pytest.raises(ValueError, match="sampling 'halton'"):
        SmoothGradOptions(sampling="halton")
    model, _ = tanh_model()
    with pytest.raises(ValueError, match="samples 1: expected at least 2 with antithetic"):
        SmoothGrad(model, samples=1, sampling="antithetic")
    with pytest.raises(ValueError, match="sampling 'sobol' at 100x90 pixels"):
        SmoothGrad(model, sampling="sobol").draws((100, 90, 3))


def relu_unit_model(w, c):
    """logit 0 = relu(w . x - c) (logit 1 = 0): along the path from black its gradient is 0, then w, jumping once
    at a* = c / (w . x), so Integrated Gradients is exactly x w (1 - a*)."""
    inp = keras.Input((*SHAPE, 3))
    dense = keras.layers.Dense(2, activation="relu", name="head")
    model = keras.Model(inp, dense(keras.layers.Flatten()(inp)))
    dense.set_weights([np.stack([w, np.zeros_like(w)], axis=1), np.array([-c, 0.0], np.float32)])
    return model


def test_completeness_rule_is_exact_where_the_gradient_jumps_once_per_interval():
    rng = np.random.default_rng(3)
    w = rng.uniform(0.5, 1.5, int(np.prod(SHAPE)) * 3).astype(np.float32)
    x = rng.uniform(0.2, 1.0, (1, *SHAPE, 3)).astype(np.float32)
    total = float(w @ x.ravel())
    c = 0.37 * total  # the unit switches on at a* = 0.37: inside the first of 2 points' interval, the second of 3
    model = relu_unit_model(w, c)
    exact = x[0] * w.reshape(*SHAPE, 3) * (1 - 0.37)
    t = np.array([0])
    for steps in (2, 3, 6):
        attr, passes, gap = IntegratedGradients(model, steps=steps).integrate(x, t)
        np.testing.assert_allclose(attr[0], exact, rtol=1e-4, atol=1e-6)
        assert passes.tolist() == [1 + steps] and gap[0] < 1e-5  # completeness holds by construction
        trapezoid = IntegratedGradients(model, steps=steps, nodes="riemann", tolerance=0).integrate(x, t)[0]
        assert np.abs(trapezoid[0] - exact).max() > 0.01 * np.abs(exact).max()  # the plain rule is not exact
    # more points than a call holds: two passes over them, the same answer
    attr, passes, _ = IntegratedGradients(model, steps=6, batch_size=4).integrate(x, t)
    np.testing.assert_allclose(attr[0], exact, rtol=1e-4, atol=1e-6)
    assert passes.tolist() == [1 + 2 * 6]


def test_completeness_rule_weights_are_clipped_and_sum_to_the_widths():
    from fruitlens.explain.gradients import completeness_weights

    alphas = np.linspace(0, 1, 5)
    slopes = np.array([[1.0, 1.0, 0.0, 2.0, 2.0]])
    scores = np.array([[0.0, 0.25, 0.9, 1.0, 1.5]])
    wts = completeness_weights(alphas, slopes, scores)
    assert wts.shape == (1, 5) and np.isclose(wts.sum(), 1.0)  # the weights of each interval sum to its width
    # interval 0: equal slopes, the trapezoid's 1/2 each; interval 1: its mean slope 0.65 / 0.25 = 2.6 is above
    # both ends' (1, 0): lambda 2.6 clipped to 1, all on its left end; interval 2: slope 0.4 between 0 and 2,
    # lambda (0.4 - 2) / (0 - 2) = 0.8 on its left end (0.2 of its width 0.25), 0.2 on its right
    np.testing.assert_allclose(wts[0, :4], [0.125, 0.125 + 0.25, 0.0 + 0.25 * 0.8, 0.25 * 0.2 + 0.125],
                               atol=1e-12)
    with pytest.raises(ValueError, match="tolerance 0.05: expected 0 with nodes completeness"):
        IntegratedGradientsOptions(tolerance=0.05)
    with pytest.raises(ValueError, match="nodes 'completeness' with tolerance 0.1"):
        IntegratedGradients(tanh_model()[0], tolerance=0.1)
