"""Everything fruitlens does with a Keras model's graph, and the only module that touches Keras' private API.

Keras' own recipe, ``Model(model.inputs, [layer.output, model.output])``, fails on a Sequential model that
was never called and on layers inside a nested backbone (their ``.output`` belongs to the backbone's own
graph). Here every model is *re-traced* instead: its layers are called again on a fresh ``keras.Input``,
recursing into nested Sequential and functional models, which yields one flat functional graph whose outputs
are any inner layers we want to look at plus the class scores. Weights are shared, nothing of the model is
changed, and the last softmax is left out of the traced graph (a Dense layer with a softmax activation is
recomputed as ``x @ kernel + bias``), so gradients are taken on pre-softmax logits.

Private Keras API used (``tests/test_keras_graph.py`` fails when a Keras release changes any of it):

- ``keras.src.models.functional.Functional``: the class of functional models (not exported);
- ``Functional._run_through_graph(x, operation_fn=...)``: runs a functional model's graph calling our function
  for each operation;
- ``KerasTensor._keras_history.operation``: the operation that produced a model's output;
- ``Conv.convolution_op(x, kernel)``: a convolution without its activation.

Compiled functions built on traced graphs are kept per model in one cache (:func:`cached`), released with the
model.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
from keras import ops
from keras.src.models.functional import Functional  # not exported; needed to walk nested graphs

from fruitlens.errors import OptionError

log = logging.getLogger(__name__)

CONV_TYPES = (keras.layers.Conv2D, keras.layers.SeparableConv2D, keras.layers.DepthwiseConv2D,
              keras.layers.Conv2DTranspose)


# ------------------------------------------------------------------------------------ the private API, fenced


def output_operation(tensor) -> Any:
    """The operation (layer or model) that produced a symbolic tensor."""
    return tensor._keras_history.operation


def run_through_graph(model, x, operation_fn: Callable) -> Any:
    """Run a functional ``model``'s graph on ``x``, calling ``operation_fn(op)(*args, **kwargs)`` for each op."""
    return model._run_through_graph(x, operation_fn=operation_fn)


def convolution(layer, x) -> Any:
    """A conv layer's convolution of ``x`` with its kernel, without bias or activation."""
    return layer.convolution_op(x, layer.kernel)


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def cached(model, key: Hashable, build: Callable[[], Any]) -> Any:
    """``build()`` once per (model, key): traced graphs and compiled steps, kept as long as the model lives."""
    per_model = _CACHE.setdefault(model, {})
    if key not in per_model:
        per_model[key] = build()
    return per_model[key]


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
        raise OptionError("layer", layer, f"a layer of model {model.name!r} (not found; conv layers: "
                                          f"{', '.join(convs)})")
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
        last = output_operation(model.outputs[0])
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
            out = run_through_graph(op, args[0], lambda o: lambda *a, **k: self.run(o, a, k))
        elif id(op) in self.capture and self.pre_activation and _has_activation(op):
            pre = convolution(op, args[0])
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
