"""The private Keras API fenced in fruitlens.explain.keras_graph: these fail when a Keras release changes it."""

import inspect

import keras
import numpy as np

from fruitlens.explain import keras_graph


def _functional():
    inp = keras.Input((6, 5, 3))
    conv = keras.layers.Conv2D(2, 3, padding="same", activation="relu", name="c")
    out = keras.layers.Dense(2, activation="softmax", name="d")(keras.layers.GlobalAveragePooling2D()(conv(inp)))
    return keras.Model(inp, out), conv


def test_functional_class_is_where_we_import_it_from():
    model, _ = _functional()
    assert isinstance(model, keras_graph.Functional)
    assert not isinstance(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]), keras_graph.Functional) or \
        issubclass(keras.Sequential, keras_graph.Functional)


def test_output_operation_names_the_last_layer():
    model, _ = _functional()
    assert keras_graph.output_operation(model.outputs[0]).name == "d"


def test_run_through_graph_calls_our_function_for_every_operation():
    model, _ = _functional()
    assert "operation_fn" in inspect.signature(keras_graph.Functional._run_through_graph).parameters
    seen = []

    def operation_fn(op):
        seen.append(op.name)
        return op

    x = np.random.default_rng(0).random((1, 6, 5, 3)).astype("float32")
    out = keras_graph.run_through_graph(model, x, operation_fn)
    np.testing.assert_allclose(np.asarray(out), np.asarray(model(x)), rtol=1e-6)
    assert seen[-1] == "d" and "c" in seen


def test_convolution_is_the_conv_without_bias_and_activation():
    model, conv = _functional()
    x = np.random.default_rng(1).random((1, 6, 5, 3)).astype("float32")
    pre = np.asarray(keras_graph.convolution(conv, x)) + np.asarray(conv.bias)
    np.testing.assert_allclose(np.maximum(pre, 0), np.asarray(conv(x)), rtol=1e-5, atol=1e-6)


def test_one_cache_per_model_released_with_it():
    import gc
    import weakref

    model, _ = _functional()
    calls = []
    assert keras_graph.cached(model, "k", lambda: calls.append(1) or 7) == 7
    assert keras_graph.cached(model, "k", lambda: calls.append(1) or 8) == 7 and calls == [1]
    assert model in keras_graph._CACHE
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None  # the cache does not keep the model alive
