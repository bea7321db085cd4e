"""KernelSHAP on the patch grid, the audit's exact method: an additive value function recovered exactly with
efficiency, the patch a classifier reads, seeded determinism, bad budgets."""

from math import comb

import keras
import numpy as np
import pytest

from fruitlens.explain.kernel_shap import coalitions, grid_kernel_shap, kernel_shap_fit
from tests.test_amortised import GRID, PATCH_ID, SIZE, data, one_patch_model


def test_an_additive_value_function_is_recovered_exactly_with_efficiency():
    rng = np.random.default_rng(3)
    d, n = 16, 5
    a = rng.normal(size=(n, d))  # each image's patch values
    base = rng.random(n)
    subsets, weights = coalitions(d, 64, seed=1)
    assert subsets.shape[1] == d and weights.sum() == 64 and len(subsets) <= 64
    values = base[:, None] + a @ subsets.T  # (n, m): v(S) = base + sum of the values of S's patches
    phi = kernel_shap_fit(subsets, weights, values, base, base + a.sum(axis=1))
    np.testing.assert_allclose(phi, a, atol=1e-4)
    np.testing.assert_allclose(phi.sum(axis=1), a.sum(axis=1), atol=1e-4)  # efficiency


def test_an_interaction_is_split_evenly_and_efficiency_holds():
    """v(S) = 1 when players 0 and 1 are both in S: Shapley gives each 1/2, the others 0; with every
    coalition and the Shapley kernel's weights the constrained least squares is exactly the Shapley value."""
    d = 4
    subsets = np.array([[int(b) for b in np.binary_repr(i, d)] for i in range(1, 2 ** d - 1)], np.float32)
    k = subsets.sum(axis=1)
    weights = np.array([(d - 1) / (comb(d, int(s)) * s * (d - s)) for s in k])  # the Shapley kernel
    values = (subsets[:, 0] * subsets[:, 1])[None].astype(np.float64)
    phi = kernel_shap_fit(subsets, weights, values, np.zeros(1), np.ones(1))
    np.testing.assert_allclose(phi[0], [0.5, 0.5, 0.0, 0.0], atol=1e-6)  # every coalition: the exact Shapley values


def test_the_patch_the_classifier_reads_gets_the_whole_gap():
    model = one_patch_model()
    x = data(6)
    t = np.ones(6, int)
    phi = grid_kernel_shap(model, x, t, GRID, "black", budget=32, seed=0, batch_size=20)
    p_all = model.predict_on_batch(x)[:, 1]
    p_empty = model.predict_on_batch(np.zeros_like(x))[:, 1]
    np.testing.assert_allclose(phi.sum(axis=1), p_all - p_empty, atol=1e-5)
    np.testing.assert_allclose(phi[:, PATCH_ID], p_all - p_empty, atol=1e-4)  # v depends on one player only
    assert np.abs(np.delete(phi, PATCH_ID, axis=1)).max() < 1e-4


def test_kernel_shap_is_seeded():
    inp = keras.Input((SIZE, SIZE, 3))
    h = keras.layers.Conv2D(4, 3, activation="relu", kernel_initializer=keras.initializers.GlorotUniform(1))(inp)
    h = keras.layers.GlobalMaxPooling2D()(h)
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax",
                                                kernel_initializer=keras.initializers.GlorotUniform(2))(h))
    x = data(3)
    t = np.array([0, 1, 2])
    one = grid_kernel_shap(model, x, t, GRID, "mean", budget=40, seed=5, batch_size=16)
    np.testing.assert_array_equal(one, grid_kernel_shap(model, x, t, GRID, "mean", budget=40, seed=5))
    assert not np.allclose(one, grid_kernel_shap(model, x, t, GRID, "mean", budget=40, seed=6))
    np.testing.assert_allclose(one[1:], grid_kernel_shap(model, x[1:], t[1:], GRID, "mean", budget=40, seed=5),
                               atol=1e-6)  # an image's values do not depend on the others of the call


@pytest.mark.parametrize("budget", [0, 3, -2])
def test_a_bad_budget_is_named(budget):
    with pytest.raises(ValueError, match=f"budget {budget}: expected an even"):
        coalitions(16, budget, 0)
