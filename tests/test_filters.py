"""Filter patterns: batched ascent equals the per-filter loop, seeded, in range, and it works."""

import keras
import numpy as np
import pytest

from fruitlens.explain.filters import filter_activation, filter_patterns


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    inner = keras.Sequential([keras.Input((18, 14, 3)), keras.layers.Conv2D(6, 3, activation="relu", name="c1"),
                              keras.layers.MaxPooling2D(), keras.layers.Conv2D(8, 3, activation="relu", name="c2")],
                             name="backbone")
    return keras.Sequential([keras.Input((18, 14, 3)), inner, keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(2, activation="softmax")])


def test_shape_range_and_seed(model):
    a = filter_patterns(model, "c2", [0, 3, 5], steps=10)
    assert a.shape == (3, 18, 14, 3) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    np.testing.assert_array_equal(a, filter_patterns(model, "backbone/c2", [0, 3, 5], steps=10))
    assert not np.array_equal(a, filter_patterns(model, "c2", [0, 3, 5], steps=10, seed=1))


def test_batch_equals_loop(model):
    filters = [1, 0, 4, 7]
    batch = filter_patterns(model, "c2", filters, steps=15)
    loop = np.concatenate([filter_patterns(model, "c2", [f], steps=15) for f in filters])
    np.testing.assert_allclose(batch, loop, atol=1e-4)


def test_patterns_excite_their_filters_more_than_gray(model):
    filters = np.arange(6)
    patterns = filter_patterns(model, "c1", filters, steps=30)
    gray = np.full_like(patterns, 0.5)
    start = filter_patterns(model, "c1", filters, steps=0)  # the gray noise it starts from
    got = filter_activation(model, "c1", patterns, filters)
    flat = filter_activation(model, "c1", gray, filters)
    assert (got > flat).all() and got.sum() > 2 * flat.sum()  # filters off on gray are switched on too
    assert (got > filter_activation(model, "c1", start, filters)).all()
    deep = filter_patterns(model, "c2", filters, steps=30)
    assert (filter_activation(model, "c2", deep, filters) > filter_activation(model, "c2", gray, filters)).all()


def test_bad_arguments_named(model):
    with pytest.raises(ValueError, match=r"filters 0..8: layer 'backbone/c2' has channels 0..7"):
        filter_patterns(model, "c2", [0, 8])
    free = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(2, 3)])
    with pytest.raises(ValueError, match="takes any input size"):
        filter_patterns(free, None, [0])
    assert filter_patterns(free, None, [0, 1], steps=2, size=(9, 7)).shape == (2, 9, 7, 3)
