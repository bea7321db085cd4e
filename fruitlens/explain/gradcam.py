"""Grad-CAM, Grad-CAM++ and CAM heatmaps, batched, on pre-softmax scores, for any Sequential/functional model.

All three share :class:`fruitlens.explain.base.BaseCAM` (layer lookup, re-tracing, targets, one compiled
gradient step per batch, scaling, upsampling) and differ only in how the channel weights are computed:

- Grad-CAM (Selvaraju et al. 2017): the class score's gradient averaged over space.
- Grad-CAM++ (Chattopadhay et al. 2018): positive gradients weighted by second/third-order terms.
- CAM (Zhou et al. 2016): the final Dense layer's weights of the class, for models ending in
  conv -> global average pooling -> Dense.

The map is ReLU(sum_k weight_k * activation_k), divided by its own maximum (all-zero stays zero).
Batch runs call them through ``fruitlens.batch.methods``.
"""

from __future__ import annotations

import logging
from typing import Literal

import keras
import numpy as np
import tensorflow as tf

from fruitlens.explain.base import EPS, BaseCAM, LayerRef, find_head, walk_layers

log = logging.getLogger(__name__)

Variant = Literal["gradcam", "gradcam++", "cam"]


class GradCAM(BaseCAM):
    """Grad-CAM: channel weights are the spatial mean of the target score's gradient."""

    method = "gradcam"

    def cam_weights(self, acts, grads, targets):
        return tf.reduce_mean(grads, axis=(1, 2))  # per image: (N, K); never over the batch


class GradCAMPlusPlus(BaseCAM):
    """Grad-CAM++: positive gradients weighted by alpha = g^2 / (2 g^2 + sum(A) g^3)."""

    method = "gradcam++"

    def cam_weights(self, acts, grads, targets):
        g2 = tf.square(grads)
        g3 = g2 * grads
        total = tf.reduce_sum(acts, axis=(1, 2), keepdims=True)
        alpha = tf.where(grads != 0, g2 / (2.0 * g2 + total * g3 + EPS), tf.zeros_like(grads))
        return tf.reduce_sum(alpha * tf.nn.relu(grads), axis=(1, 2))


class CAM(BaseCAM):
    """CAM: for models ending in conv -> GlobalAveragePooling2D -> (Dropout) -> Dense, the Dense weights."""

    method = "cam"
    needs_gradients = False

    def check(self, ref: LayerRef) -> None:
        refs = [r for r in walk_layers(self.model) if not isinstance(r.layer, keras.Model)]
        after = [r.layer for r in refs[[r.layer for r in refs].index(ref.layer) + 1:]]
        kinds = [type(lay).__name__ for lay in after]
        ok = (len(after) >= 2 and isinstance(after[0], keras.layers.GlobalAveragePooling2D)
              and isinstance(after[-1], keras.layers.Dense)
              and all(isinstance(lay, keras.layers.Dropout) for lay in after[1:-1]))
        if not ok:
            raise ValueError(f"CAM needs {ref.path} -> GlobalAveragePooling2D -> Dense at the end of the model; "
                             f"found {ref.path} -> {' -> '.join(kinds) or 'nothing'} (use gradcam instead)")

    def cam_weights(self, acts, grads, targets):
        dense = find_head(self.model).layer
        return tf.gather(tf.transpose(tf.cast(dense.kernel, tf.float32)), targets)  # (N, K)


VARIANTS: dict[str, type[BaseCAM]] = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "cam": CAM}


def explainer(model, variant: Variant = "gradcam", layer=None, *, batch_size: int = 256) -> BaseCAM:
    """The explainer of ``variant`` (gradcam, gradcam++, cam); an unknown name is a ValueError."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown Grad-CAM variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    return VARIANTS[variant](model, layer, batch_size=batch_size)


def gradcam(model, images, targets=None, layer=None, upsample: bool = True) -> np.ndarray:
    """Grad-CAM heatmaps of N images in one gradient pass, each for its own target.

    Args:
        model: Keras model taking (N, H, W, 3) float32 in [0, 1]; a final softmax is left out (scores are
            pre-softmax logits) without changing the model.
        images: (N, H, W, 3) float in [0, 1].
        targets: (N,) class ids (or one int); None = each image's predicted class.
        layer: conv layer name or path (``backbone/block5_conv3``); None = the last conv layer, nested
            backbones included.
        upsample: resize to (H, W); False returns the layer's (h, w).

    Returns:
        (N, H, W) float32 in [0, 1], no NaN (an all-zero map stays zero).
    """
    return GradCAM(model, layer).explain(images, targets, upsample=upsample).heatmaps


def gradcam_plus_plus(model, images, targets=None, layer=None, upsample: bool = True) -> np.ndarray:
    """Grad-CAM++ heatmaps; arguments and result as :func:`gradcam`."""
    return GradCAMPlusPlus(model, layer).explain(images, targets, upsample=upsample).heatmaps


def cam(model, images, targets=None, layer=None, upsample: bool = True) -> np.ndarray:
    """CAM heatmaps for conv -> GAP -> Dense models; arguments and result as :func:`gradcam`."""
    return CAM(model, layer).explain(images, targets, upsample=upsample).heatmaps
