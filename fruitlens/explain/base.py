"""Shared machinery of the heatmap explainers: targets, batching, the gradient step, scaling, upsampling.

Models are walked and re-traced by ``fruitlens.explain.keras_graph`` (re-exported here: ``walk_layers``,
``find_layer``, ``trace_model``, ...). Each CAM method subclasses :class:`BaseCAM` and overrides only
:meth:`BaseCAM.cam_weights` (or :meth:`BaseCAM.cam_map` when its weights vary over space or need more model
calls). Methods that explain the input pixels (gradients, perturbations) subclass :class:`BaseAttribution` and
override only :meth:`BaseAttribution.attribute`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from fruitlens.explain.explainer import Explainer
from fruitlens.explain.keras_graph import (  # noqa: F401 - re-exported for the explainers
    CONV_TYPES,
    LayerRef,
    cached,
    conv_layers,
    find_head,
    find_layer,
    head_kind,
    trace_model,
    walk_layers,
)
from fruitlens.explain.results import HeatmapResult

log = logging.getLogger(__name__)

EPS = 1e-7


# ------------------------------------------------------------------------------------ inputs and targets


def check_images(images) -> np.ndarray:
    """(N, H, W, 3) float in [0, 1] -> float32 array (a copy only when the dtype differs)."""
    arr = np.asarray(images)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] == 0:
        raise ValueError(f"images of shape {arr.shape}: expected (N, H, W, 3) with N >= 1")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"images of dtype {arr.dtype}: expected float in [0, 1]")
    return arr.astype(np.float32, copy=False)


def check_targets(targets, n: int, num_classes: int) -> np.ndarray:
    """None -> (N,) of -1 (meaning: the predicted class); an int or (N,) ints -> checked int32 array."""
    if targets is None:
        return np.full(n, -1, np.int32)
    arr = np.asarray(targets)
    if arr.ndim == 0:
        arr = np.full(n, int(arr))
    if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"targets of shape {arr.shape} and dtype {arr.dtype}: expected ({n},) integer class ids")
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise ValueError(f"targets {arr.min()}..{arr.max()}: expected class ids in [0, {num_classes})")
    return arr.astype(np.int32)


def scale_maps(cams: tf.Tensor) -> tf.Tensor:
    """ReLU, then divide each (h, w) map by its own maximum; an all-zero map stays zero (no NaN)."""
    cams = tf.nn.relu(cams)
    return tf.math.divide_no_nan(cams, tf.reduce_max(cams, axis=(1, 2), keepdims=True))


def upsample_maps(maps, size: tuple[int, int]) -> np.ndarray:
    """(N, h, w) -> (N, H, W) bilinear, clipped to [0, 1]."""
    maps = tf.convert_to_tensor(maps)
    if tuple(maps.shape[1:]) == tuple(size):
        return np.asarray(maps, dtype=np.float32)
    up = tf.image.resize(maps[..., None], size, method="bilinear")[..., 0]
    return np.clip(np.asarray(up, dtype=np.float32), 0.0, 1.0)


def peaks(heatmaps: np.ndarray) -> np.ndarray:
    """(N, H, W) -> (N, 2) int (y, x) of each map's maximum."""
    n, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, -1).argmax(axis=1)
    return np.stack([flat // w, flat % w], axis=1).astype(np.int32)


# ------------------------------------------------------------------------------------ the base explainer


class BaseCAM(Explainer):
    """Class activation maps: target resolution, batching, the gradient step, scaling, upsampling.

    Subclasses override :meth:`cam_weights` (and set ``needs_gradients`` False when they do not use them).

    Args:
        model: a Keras model taking (N, H, W, 3) float32 in [0, 1] and returning (N, C) class scores.
        layer: conv layer to explain (name, path ``backbone/name``, or layer); None = the last conv layer.
        batch_size: images per gradient pass.
    """

    method = "base"
    needs_gradients = True
    step_key: tuple = ()  # options the compiled step depends on (part of its cache key)

    def __init__(self, model, layer: str | keras.layers.Layer | None = None, *, batch_size: int = 256):
        if batch_size < 1:
            raise ValueError(f"batch_size {batch_size}: expected at least 1")
        self.model = model
        self.layer = layer
        self.batch_size = batch_size

    @classmethod
    def from_options(cls, model, options) -> BaseCAM:
        """``options``: the method's options (``layer``, ``batch_size``)."""
        return cls(model, options.layer, batch_size=options.batch_size)

    def cam_weights(self, acts: tf.Tensor, grads: tf.Tensor | None, targets: tf.Tensor) -> tf.Tensor:
        """Channel weights (N, K) from activations (N, h, w, K), their gradients and targets (N,)."""
        raise NotImplementedError

    def cam_map(self, x: tf.Tensor, acts: tf.Tensor, grads: tf.Tensor | None, targets: tf.Tensor) -> tf.Tensor:
        """The (N, h, w) map before ReLU and scaling; by default sum_k weight_k * activation_k."""
        return tf.einsum("nhwk,nk->nhw", acts, self.cam_weights(acts, grads, targets))

    def images_per_step(self, ref: LayerRef) -> int:
        """Images per compiled step (methods that call the model once per channel take fewer)."""
        return self.batch_size

    def _step(self):
        ref = find_layer(self.model, self.layer)
        key = ("cam-step", type(self), ref.path, self.step_key)
        return cached(self.model, key, lambda: (ref, self._build_step(ref)))

    def _build_step(self, ref: LayerRef):
        """The compiled gradient step of this method at ``ref`` (built once per model, see ``cached``)."""
        self.check(ref)
        traced = trace_model(self.model, [ref])

        @tf.function(reduce_retracing=True)
        def step(x, targets):
            with tf.GradientTape() as tape:
                acts, scores = traced(x, training=False)
                acts, scores = tf.cast(acts, tf.float32), tf.cast(scores, tf.float32)
                targets = tf.where(targets < 0, tf.argmax(scores, axis=-1, output_type=tf.int32), targets)
                score = tf.gather(scores, targets, batch_dims=1)  # (N,): each image its own class
            # the gradient of the sum is each image's own gradient: images never mix in inference
            grads = tape.gradient(score, acts) if self.needs_gradients else None
            return scale_maps(self.cam_map(x, acts, grads, targets)), targets, score

        return step

    def check(self, ref: LayerRef) -> None:
        """Raise ValueError when the method cannot explain ``ref`` in this model (CAM's structure check)."""

    def explain(self, images, targets=None, *, upsample: bool = True) -> HeatmapResult:
        """Heatmaps for ``images``, each for its own target class.

        Args:
            images: (N, H, W, 3) float in [0, 1]; never modified.
            targets: (N,) class ids, or one int for all, or None for each image's predicted class.
            upsample: resize the maps to (H, W); False keeps the layer's (h, w).

        Returns:
            A :class:`HeatmapResult` with (N, H, W) float32 heatmaps in [0, 1].
        """
        images = check_images(images)
        num_classes = int(self.model.output_shape[-1])
        targets = check_targets(targets, len(images), num_classes)
        ref, step = self._step()
        per = self.images_per_step(ref)
        maps, resolved, scores = [], [], []
        for start in range(0, len(images), per):
            m, t, s = step(tf.constant(images[start:start + per]), tf.constant(targets[start:start + per]))
            maps.append(m.numpy())
            resolved.append(t.numpy())
            scores.append(s.numpy())
        heat = np.concatenate(maps).astype(np.float32)
        if upsample:
            heat = upsample_maps(heat, images.shape[1:3])
        return HeatmapResult(heat, np.concatenate(resolved).astype(np.int64), np.concatenate(scores), ref.path)


# ------------------------------------------------------------------------------------ input-space explainers


def logits_fn(model):
    """A compiled ``x -> (N, C)`` float32 pre-softmax scores of ``model`` (a final softmax left out), cached."""
    def build():
        traced = trace_model(model, [])

        @tf.function(reduce_retracing=True)
        def scores(x):
            out = traced(x, training=False)
            return tf.cast(out[0] if isinstance(out, list | tuple) else out, tf.float32)

        return scores

    return cached(model, ("logits",), build)


def gradient_fn(model):
    """A compiled ``(x, targets) -> (d score[target] / d x (N, H, W, 3), targets, score[target])`` on
    pre-softmax scores, cached; a target below 0 is the image's top class (resolved in the same pass)."""
    def build():
        scores = logits_fn(model)

        @tf.function(reduce_retracing=True)
        def grads(x, targets):
            with tf.GradientTape() as tape:
                tape.watch(x)
                s = scores(x)
                targets = tf.cast(targets, tf.int32)
                targets = tf.where(targets < 0, tf.argmax(s, axis=-1, output_type=tf.int32), targets)
                score = tf.gather(s, targets, batch_dims=1)
            return tape.gradient(score, x), targets, score  # each image's own gradient: images never mix

        return grads

    return cached(model, ("input-gradient",), build)


def scale_per_image(maps: np.ndarray, *, minmax: bool = False) -> np.ndarray:
    """(N, H, W) -> float32 in [0, 1]: ReLU then divide by each map's maximum (``minmax``: subtract each
    map's minimum first); a constant or all-zero map becomes zero, NaN never appears."""
    maps = np.asarray(maps, dtype=np.float32)
    if minmax:
        maps = maps - maps.min(axis=(1, 2), keepdims=True)
    maps = np.maximum(maps, 0.0)
    top = maps.max(axis=(1, 2), keepdims=True)
    return np.divide(maps, top, out=np.zeros_like(maps), where=top > 0)


@dataclass(frozen=True)
class Attribution:
    """What an adaptive method's :meth:`BaseAttribution.attribute` (or ``attribute_scored``) returns: the raw
    (N, H, W) maps (any scale; positive = evidence), the (N,) model passes spent on each image and the (N,)
    stopping statistic each reached (``HeatmapResult.passes`` / ``convergence``; None where not counted)."""

    raw: np.ndarray
    passes: np.ndarray | None = None
    convergence: np.ndarray | None = None


class BaseAttribution(Explainer):
    """Explainers of the input pixels: targets, batching and scaling shared; subclasses override
    :meth:`attribute`.

    Args:
        model: a Keras model taking (N, H, W, 3) float32 in [0, 1] and returning (N, C) class scores.
        batch_size: model inputs per call (gradient or forward pass).
    """

    method = "base"
    layer = "input"

    def __init__(self, model, *, batch_size: int = 256):
        if batch_size < 1:
            raise ValueError(f"batch_size {batch_size}: expected at least 1")
        self.model = model
        self.batch_size = batch_size

    @classmethod
    def from_options(cls, model, options) -> BaseAttribution:
        """``options``: the method's options (``batch_size``; subclasses read their own fields)."""
        return cls(model, batch_size=options.batch_size)

    def attribute(self, images: np.ndarray, targets: np.ndarray) -> np.ndarray | Attribution:
        """(N, H, W) raw importance of each pixel for each image's target (any scale; positive = evidence)."""
        raise NotImplementedError

    def attribute_scored(self, images: np.ndarray, targets: np.ndarray,
                         scores: np.ndarray) -> np.ndarray | Attribution:
        """:meth:`attribute`, given each target's pre-softmax score at its image (N,) from the forward pass
        :meth:`explain` already made (Integrated Gradients' completeness gap needs it)."""
        return self.attribute(images, targets)

    def scale(self, raw: np.ndarray) -> np.ndarray:
        """Raw importance -> (N, H, W) in [0, 1]."""
        return scale_per_image(raw)

    def logits(self, images: np.ndarray) -> np.ndarray:
        """(M, H, W, 3) -> (M, C) float32 pre-softmax scores, ``batch_size`` at a time."""
        scores = logits_fn(self.model)
        return np.concatenate([scores(tf.constant(images[i:i + self.batch_size])).numpy()
                               for i in range(0, len(images), self.batch_size)])

    def explain(self, images, targets=None) -> HeatmapResult:
        """Heatmaps for ``images``, each for its own target class.

        Args:
            images: (N, H, W, 3) float in [0, 1]; never modified.
            targets: (N,) class ids, or one int for all, or None for each image's predicted class.

        Returns:
            A :class:`HeatmapResult` with (N, H, W) float32 heatmaps in [0, 1] (layer ``input``).
        """
        images = check_images(images)
        num_classes = int(self.model.output_shape[-1])
        targets = check_targets(targets, len(images), num_classes)
        scores = self.logits(images)
        targets = np.where(targets < 0, scores.argmax(axis=1), targets).astype(np.int32)
        picked = scores[np.arange(len(images)), targets].astype(np.float32)
        raw = self.attribute_scored(images, targets, picked)
        passes = convergence = None
        if isinstance(raw, Attribution):  # an adaptive method: what it spent and where it stopped
            raw, passes, convergence = raw.raw, raw.passes, raw.convergence
        heat = self.scale(raw)
        return HeatmapResult(heat.astype(np.float32), targets.astype(np.int64), picked, self.layer,
                             passes=passes, convergence=convergence)
