"""What a convolutional filter responds to: input patterns found by gradient ascent.

Start from gray noise and climb the gradient of the filter's mean response (before the layer's own
activation, so a ReLU that starts switched off still has a gradient; its border trimmed, so
the pattern is not drawn into the edges), with the gradient normalised by its RMS so the step size is the
same whatever the scale of the activations (Chollet, *Deep Learning with Python*, 5.4; the keras-io
example uses l2 normalisation). All requested filters are optimised together as one batch: image ``f``
climbs its own filter only (the batch sum's gradient with respect to image ``f`` is that image's own
gradient), and the whole ascent runs as one compiled TensorFlow loop.

The image stays in the model's input domain, [0, 1] (projected ascent: clipped after every step), and is
returned as optimised; grids stretch each pattern's contrast only for display.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from fruitlens.explain.keras_graph import cached, find_layer, trace_model

NOISE_LEVELS = 10.0  # initial noise: gray 0.5 +- this many 8-bit levels


def _trimmed_mean(acts: tf.Tensor, filters: tf.Tensor, border: int) -> tf.Tensor:
    """Mean activation of filter ``filters[i]`` in image ``i``, ``border`` pixels trimmed: (F,)."""
    maps = tf.gather(tf.cast(acts, tf.float32), filters, axis=3, batch_dims=1)  # (F, h, w)
    h, w = maps.shape[1], maps.shape[2]
    if h is not None and w is not None and h > 2 * border and w > 2 * border and border > 0:
        maps = maps[:, border:h - border, border:w - border]
    return tf.reduce_mean(maps, axis=(1, 2))


def _compiled(model, layer):
    ref = find_layer(model, layer)
    return cached(model, ("filters", ref.path), lambda: _build(model, ref))


def _build(model, ref):
    """Pruned graphs (only what the layer needs) and the compiled ascent and score of one layer.

    The ascent climbs the filter's response before its activation (a ReLU that is off on the whole start image
    gives no gradient); the score is the output.
    """
    pre = trace_model(model, [ref], outputs=False, pre_activation=True)
    traced = trace_model(model, [ref], outputs=False)

    @tf.function(reduce_retracing=True)
    def ascend(images, filters, steps, step_size, border):
        def body(i, x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(_trimmed_mean(pre(x, training=False), filters, border))
            g = tape.gradient(loss, x)
            rms = tf.sqrt(tf.reduce_mean(tf.square(g), axis=(1, 2, 3), keepdims=True))
            return i + 1, tf.clip_by_value(x + step_size * g / (rms + 1e-8), 0.0, 1.0)

        return tf.while_loop(lambda i, x: i < steps, body, (tf.constant(0), images))[1]

    @tf.function(reduce_retracing=True)
    def score(images, filters, border):
        return _trimmed_mean(traced(images, training=False), filters, border)

    channels = int(traced.outputs[0].shape[-1])
    return ref, channels, ascend, score


def _input_size(model, size: tuple[int, int] | None) -> tuple[int, int]:
    shape = tuple(model.inputs[0].shape[1:3])
    if size is not None:
        return int(size[0]), int(size[1])
    if None in shape:
        raise ValueError(f"model {model.name!r} takes any input size {shape}; pass size=(height, width)")
    return int(shape[0]), int(shape[1])


def _check_filters(filters, channels: int, path: str) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(filters))
    if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"filters {filters!r}: expected a non-empty list of channel indices")
    if arr.min() < 0 or arr.max() >= channels:
        raise ValueError(f"filters {arr.min()}..{arr.max()}: layer {path!r} has channels 0..{channels - 1}")
    return arr.astype(np.int32)


def gray_noise(filters: Sequence[int], size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """(F, H, W, 3) starting images: gray with a little noise, seeded per filter id.

    Filter ``f`` starts from the same image whether it is optimised alone or with others.
    """
    out = np.empty((len(filters), *size, 3), np.float32)
    for i, f in enumerate(filters):  # F small images, not a hot path
        out[i] = 0.5 + np.random.default_rng([seed, int(f)]).uniform(-1, 1, (*size, 3)) * NOISE_LEVELS / 255.0
    return out


def filter_patterns(model, layer, filters, *, steps: int = 30, lr: float = 10.0, seed: int = 0,
                    size: tuple[int, int] | None = None, border: int = 2) -> np.ndarray:
    """Input patterns that maximise each filter's mean activation, all filters optimised as one batch.

    Args:
        model: Keras model taking (N, H, W, 3) float32 in [0, 1] (fixed input size, or pass ``size``).
        layer: conv layer name, path (``backbone/block5_conv3``) or layer.
        filters: channel indices of ``layer`` (F of them).
        steps: gradient ascent steps.
        lr: step size in 8-bit pixel levels (1/255) per step, on the RMS-normalised gradient.
        seed: seed of the starting gray noise (per filter id).
        size: (H, W) input size for models without a fixed one.
        border: pixels of the layer's output left out of the loss at each edge.

    Returns:
        (F, H, W, 3) float32 patterns in [0, 1].
    """
    if steps < 0 or lr <= 0:
        raise ValueError(f"steps {steps}, lr {lr}: expected steps >= 0 and lr > 0")
    ref, channels, ascend, _ = _compiled(model, layer)
    filters = _check_filters(filters, channels, ref.path)
    start = gray_noise(filters, _input_size(model, size), seed)
    out = ascend(tf.constant(start), tf.constant(filters), tf.constant(int(steps)),
                 tf.constant(lr / 255.0, tf.float32), int(border))
    return np.asarray(out, dtype=np.float32)


def filter_activation(model, layer, images, filters, *, border: int = 2) -> np.ndarray:
    """(F,) mean activation of filter ``filters[i]`` on ``images[i]`` (border trimmed), the ascent's objective."""
    ref, channels, _, score = _compiled(model, layer)
    filters = _check_filters(filters, channels, ref.path)
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or len(images) != len(filters):
        raise ValueError(f"images of shape {images.shape}: expected ({len(filters)}, H, W, 3), one per filter")
    return np.asarray(score(tf.constant(images), tf.constant(filters), int(border)))
