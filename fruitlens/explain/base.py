"""Shared machinery of the heatmap explainers: finding layers, tracing models, targets, batching, scaling.

Keras' own recipe, ``Model(model.inputs, [layer.output, model.output])``, fails on a Sequential model that
was never called and on layers inside a nested backbone (their ``.output`` belongs to the backbone's own
graph). Here every model is *re-traced* instead: its layers are called again on a fresh ``keras.Input``,
recursing into nested Sequential and functional models, which yields one flat functional graph whose outputs
are any inner layers we want to look at plus the class scores. Weights are shared, nothing of the model is
changed, and the last softmax is left out of the traced graph (a Dense layer with a softmax activation is
recomputed as ``x @ kernel + bias``), so gradients are taken on pre-softmax logits.

Each CAM method subclasses :class:`BaseCAM` and overrides only :meth:`BaseCAM.cam_weights`.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
from keras import ops
from keras.src.models.functional import Functional  # not exported; needed to walk nested graphs

log = logging.getLogger(__name__)

CONV_TYPES = (keras.layers.Conv2D, keras.layers.SeparableConv2D, keras.layers.DepthwiseConv2D,
              keras.layers.Conv2DTranspose)
EPS = 1e-7


# ------------------------------------------------------------------------------------ walking models


@dataclass(frozen=True)
class LayerRef:
    """A layer somewhere in a (possibly nested) model: its path ``outer/inner/name`` and its ancestors."""

    path: str
    layer: keras.layers.Layer
    parents: tuple  # the nested models that contain it, outermost first (the top model excluded)

    @property
    def name(self) -> str:
        return self.layer.name


def _is_graph(layer) -> bool:
    """A model whose layers we can re-trace in order: Sequential or functional (not subclassed)."""
    return isinstance(layer, keras.Sequential | Functional)


def _children(model) -> list:
    return [lay for lay in model.layers if not isinstance(lay, keras.layers.InputLayer)]


def walk_layers(model, _prefix: str = "", _parents: tuple = ()) -> list[LayerRef]:
    """Every layer of ``model`` in execution order, nested Sequential/functional models expanded.

    A nested model appears itself, followed by its own layers (paths ``backbone/block5_conv3``).
    """
    refs: list[LayerRef] = []
    for lay in _children(model):
        path = f"{_prefix}{lay.name}"
        refs.append(LayerRef(path, lay, _parents))
        if _is_graph(lay):
            refs.extend(walk_layers(lay, f"{path}/", (*_parents, lay)))
    return refs


def conv_layers(model) -> list[LayerRef]:
    """The convolutional layers of ``model`` (nested backbones included), in execution order."""
    return [ref for ref in walk_layers(model) if isinstance(ref.layer, CONV_TYPES)]


def find_layer(model, layer: str | keras.layers.Layer | None = None) -> LayerRef:
    """Resolve ``layer`` (None = the last conv layer, a name, a path ``outer/inner``, or a layer object).

    Raises:
        ValueError: no such layer (the message lists the conv layers), or a name that is ambiguous.
    """
    refs = walk_layers(model)
    convs = [r.path for r in refs if isinstance(r.layer, CONV_TYPES)]
    if layer is None:
        if not convs:
            raise ValueError(f"model {model.name!r} has no convolutional layer; pass layer= explicitly")
        return next(r for r in refs if r.path == convs[-1])
    if isinstance(layer, keras.layers.Layer):
        found = [r for r in refs if r.layer is layer]
    else:
        found = [r for r in refs if r.path == layer] or [r for r in refs if r.name == layer]
    if not found:
        raise ValueError(f"layer {layer!r} not found in model {model.name!r}; conv layers: {', '.join(convs)}")
    if len(found) > 1:
        raise ValueError(f"layer name {layer!r} is ambiguous; use one of the paths {[r.path for r in found]}")
    return found[0]


def _is_softmax(fn) -> bool:
    return getattr(fn, "__name__", "") == "softmax"


def find_head(model) -> LayerRef | None:
    """The layer that produces ``model``'s output (inside nested models too); None for subclassed models."""
    if isinstance(model, keras.Sequential):
        last = _children(model)[-1]
    elif isinstance(model, Functional):
        if len(model.outputs) != 1:
            raise ValueError(f"model {model.name!r} has {len(model.outputs)} outputs; expected one (class scores)")
        last = model.outputs[0]._keras_history.operation
    else:
        return None
    if _is_graph(last):
        inner = find_head(last)
        return None if inner is None else LayerRef(f"{last.name}/{inner.path}", inner.layer, (last, *inner.parents))
    return LayerRef(last.name, last, ())


def head_kind(layer) -> str | None:
    """How the final softmax is removed: 'dense' (recompute the logits), 'skip' (a softmax layer), or None."""
    if isinstance(layer, keras.layers.Dense) and _is_softmax(layer.activation):
        return "dense"
    if isinstance(layer, keras.layers.Softmax):
        return "skip"
    if isinstance(layer, keras.layers.Activation) and _is_softmax(layer.activation):
        return "skip"
    return None


# ------------------------------------------------------------------------------------ re-tracing


class _Tracer:
    """Calls a model's layers again on new inputs, capturing some layers and stripping the final softmax."""

    def __init__(self, model, capture: Sequence[LayerRef], logits: bool, pre_activation: bool = False):
        self.capture = {id(r.layer) for r in capture}
        self.pre_activation = pre_activation
        head = find_head(model) if logits else None
        self.head = head.layer if head is not None and head_kind(head.layer) else None
        if logits and head is None:
            log.warning("model %s is not Sequential/functional: scores are taken from its output", model.name)
        wanted = [*capture, *([head] if self.head is not None else [])]
        self.expand = {id(p) for r in wanted for p in r.parents}
        self.store: dict[int, object] = {}

    def run(self, op, args, kwargs):
        if op is self.head:
            x = args[0]
            if head_kind(op) == "skip":
                out = x
            else:
                out = ops.matmul(x, op.kernel)
                if op.use_bias:
                    out = out + op.bias
        elif id(op) in self.expand and isinstance(op, keras.Sequential):
            out = args[0]
            for lay in _children(op):
                out = self.run(lay, (out,), {})
        elif id(op) in self.expand:
            out = op._run_through_graph(args[0], operation_fn=lambda o: lambda *a, **k: self.run(o, a, k))
        elif id(op) in self.capture and self.pre_activation and _has_activation(op):
            pre = op.convolution_op(args[0], op.kernel)
            if op.use_bias:
                pre = pre + op.bias  # channels_last: the bias broadcasts over the last axis
            self.store[id(op)] = pre
            return op.activation(pre)
        else:
            out = op(*args, **kwargs)
        if id(op) in self.capture:
            self.store[id(op)] = out
        return out


def _has_activation(layer) -> bool:
    """A channels-last Conv2D with a non-linear activation built in (its pre-activation can be taken)."""
    return (isinstance(layer, keras.layers.Conv2D) and layer.data_format == "channels_last"
            and layer.activation is not None and getattr(layer.activation, "__name__", "") != "linear")


def trace_model(model, capture: Sequence[LayerRef], *, logits: bool = True, outputs: bool = True,
                pre_activation: bool = False) -> keras.Model:
    """A new functional model over ``model``'s layers (shared weights) returning the captured layers' outputs.

    Args:
        model: a built Sequential, functional, or nested model taking (N, H, W, 3).
        capture: layers (from :func:`walk_layers` / :func:`find_layer`) whose outputs to return, in order.
        logits: drop the final softmax (the last output is then the pre-softmax scores).
        outputs: also return the model's (pre-softmax) output as the last element; without it the graph is
            pruned to what the captured layers need (faster for activations and filter patterns).
        pre_activation: for captured Conv2D layers with a built-in activation, return the value before it
            (filter visualisation: a ReLU that is off everywhere has no gradient to climb).

    Returns:
        A keras Model: ``x -> [captured..., scores]`` (or ``[captured...]``).
    """
    if not model.built:
        raise ValueError(f"model {model.name!r} is not built; build or call it on data first")
    shape = tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else tuple(model.input_shape[1:])
    inp = keras.Input(shape=shape, dtype="float32")
    tracer = _Tracer(model, capture, logits and outputs, pre_activation)
    if _is_graph(model):
        tracer.expand.add(id(model))
        out = tracer.run(model, (inp,), {})
    elif capture:
        raise ValueError(f"model {model.name!r} is subclassed: its layers cannot be re-traced")
    else:
        out = model(inp)
    missing = [r.path for r in capture if id(r.layer) not in tracer.store]
    if missing:
        raise ValueError(f"layers {missing} are not on the path from the input to the output")
    got = [tracer.store[id(r.layer)] for r in capture]
    for ref, tensor in zip(capture, got, strict=True):
        if len(tensor.shape) != 4:
            raise ValueError(f"layer {ref.path!r} has output shape {tuple(tensor.shape)}; "
                             "expected a 4-D (N, h, w, channels) feature map")
    got += [out] if outputs else []
    return keras.Model(inp, got, name=f"{model.name}_traced")


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


@dataclass(frozen=True)
class CAMResult:
    """Heatmaps of N images and what they explain.

    Attributes:
        heatmaps: (N, H, W) float32 in [0, 1] (or (N, h, w) at the layer's resolution), no NaN.
        targets: (N,) int class ids explained.
        scores: (N,) float32 pre-softmax score of each target.
        layer: path of the layer the maps come from.
    """

    heatmaps: np.ndarray
    targets: np.ndarray
    scores: np.ndarray
    layer: str

    def __post_init__(self) -> None:
        n = len(self.heatmaps)
        if self.heatmaps.ndim != 3 or self.targets.shape != (n,) or self.scores.shape != (n,):
            raise ValueError(f"CAMResult shapes {self.heatmaps.shape}, {self.targets.shape}, {self.scores.shape}: "
                             "expected (N, H, W), (N,), (N,)")

    @property
    def peaks(self) -> np.ndarray:
        """(N, 2) int (y, x) of each heatmap's maximum."""
        return peaks(self.heatmaps)


# compiled gradient steps, per model, per (method, layer): reused by later calls on the same model
_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class BaseCAM:
    """Class activation maps: target resolution, batching, the gradient step, scaling, upsampling.

    Subclasses override :meth:`cam_weights` (and set ``needs_gradients`` False when they do not use them).

    Args:
        model: a Keras model taking (N, H, W, 3) float32 in [0, 1] and returning (N, C) class scores.
        layer: conv layer to explain (name, path ``backbone/name``, or layer); None = the last conv layer.
        batch_size: images per gradient pass.
    """

    method = "base"
    needs_gradients = True

    def __init__(self, model, layer: str | keras.layers.Layer | None = None, *, batch_size: int = 256):
        if batch_size < 1:
            raise ValueError(f"batch_size {batch_size}: expected at least 1")
        self.model = model
        self.layer = layer
        self.batch_size = batch_size

    def cam_weights(self, acts: tf.Tensor, grads: tf.Tensor | None, targets: tf.Tensor) -> tf.Tensor:
        """Channel weights (N, K) from activations (N, h, w, K), their gradients and targets (N,)."""
        raise NotImplementedError

    def _step(self):
        ref = find_layer(self.model, self.layer)
        key = (type(self), ref.path)
        cache = _STEPS.setdefault(self.model, {})
        if key not in cache:
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
                weights = self.cam_weights(acts, grads, targets)
                cams = tf.einsum("nhwk,nk->nhw", acts, weights)
                return scale_maps(cams), targets, score

            cache[key] = (ref, step)
        return cache[key]

    def check(self, ref: LayerRef) -> None:
        """Raise ValueError when the method cannot explain ``ref`` in this model (CAM's structure check)."""

    def explain(self, images, targets=None, *, upsample: bool = True) -> CAMResult:
        """Heatmaps for ``images``, each for its own target class.

        Args:
            images: (N, H, W, 3) float in [0, 1]; never modified.
            targets: (N,) class ids, or one int for all, or None for each image's predicted class.
            upsample: resize the maps to (H, W); False keeps the layer's (h, w).

        Returns:
            A :class:`CAMResult` with (N, H, W) float32 heatmaps in [0, 1].
        """
        images = check_images(images)
        num_classes = int(self.model.output_shape[-1])
        targets = check_targets(targets, len(images), num_classes)
        ref, step = self._step()
        maps, resolved, scores = [], [], []
        for start in range(0, len(images), self.batch_size):
            m, t, s = step(tf.constant(images[start:start + self.batch_size]),
                           tf.constant(targets[start:start + self.batch_size]))
            maps.append(m.numpy())
            resolved.append(t.numpy())
            scores.append(s.numpy())
        heat = np.concatenate(maps).astype(np.float32)
        if upsample:
            heat = upsample_maps(heat, images.shape[1:3])
        return CAMResult(heat, np.concatenate(resolved).astype(np.int64), np.concatenate(scores), ref.path)
