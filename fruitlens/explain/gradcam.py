"""Grad-CAM, Grad-CAM++, CAM, Layer-CAM and Score-CAM heatmaps, batched, for any Sequential/functional model.

All five share :class:`fruitlens.explain.base.BaseCAM` (layer lookup, re-tracing, targets, one compiled
gradient step per batch, scaling, upsampling) and differ only in how the channel weights are computed:

- Grad-CAM (Selvaraju et al. 2017): the class score's gradient averaged over space.
- Grad-CAM++ (Chattopadhay et al. 2018): positive gradients weighted by second/third-order terms.
- CAM (Zhou et al. 2016): the final Dense layer's weights of the class, for models ending in
  conv -> global average pooling -> Dense.
- Layer-CAM (Jiang et al. 2021): each activation weighted by its own positive gradient, location by location.
- Score-CAM (Wang et al. 2020): no gradients; channel k's weight is the target's softmax probability of the
  image multiplied by channel k's activation (upsampled to the input, min-max scaled to [0, 1]). All
  channels of a group of images go through the model in one batch. Faster Score-CAM (``channels``): only the
  channels of highest activation variance are scored, the others weigh 0.

The map is ReLU(sum_k weight_k * activation_k), divided by its own maximum (all-zero stays zero). Gradients
are taken on pre-softmax scores.
Batch runs build them from their options (``from_options``, ``fruitlens.registry``).
"""

from __future__ import annotations

import logging
from typing import Literal

import keras
import numpy as np
import tensorflow as tf

from fruitlens.explain.base import EPS, BaseCAM, logits_fn
from fruitlens.explain.keras_graph import LayerRef, find_head, walk_layers

log = logging.getLogger(__name__)

Variant = Literal["gradcam", "gradcam++", "cam", "layercam", "scorecam"]


class GradCAM(BaseCAM):
    """Grad-CAM: channel weights are the spatial mean of the target score's gradient."""

    method = "gradcam"

    @classmethod
    def from_options(cls, model, options) -> BaseCAM:
        """``options``: ``CamOptions``; its ``variant`` picks Grad-CAM, Grad-CAM++ or CAM."""
        return VARIANTS[options.variant](model, options.layer, batch_size=options.batch_size)

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


class LayerCAM(BaseCAM):
    """Layer-CAM: sum_k ReLU(gradient_k) * activation_k at each location (weights vary over space)."""

    method = "layercam"

    def cam_map(self, x, acts, grads, targets):
        return tf.reduce_sum(tf.nn.relu(grads) * acts, axis=-1)


class ScoreCAM(BaseCAM):
    """Score-CAM: channel weights are the target probabilities of the image masked by each channel.

    Args:
        channels: Faster Score-CAM: score only this many channels (highest spatial variance of the
            activation, per image); None scores all.
        batch_size: model inputs per call; ``batch_size // channels`` images go through at once.
    """

    method = "scorecam"
    needs_gradients = False

    def __init__(self, model, layer=None, *, batch_size: int = 256, channels: int | None = None):
        super().__init__(model, layer, batch_size=batch_size)
        if channels is not None and channels < 1:
            raise ValueError(f"channels {channels}: expected at least 1 or None (all)")
        self.channels = channels
        self.step_key = (channels,)

    @classmethod
    def from_options(cls, model, options) -> ScoreCAM:
        return cls(model, options.layer, batch_size=options.batch_size, channels=options.channels)

    def _used(self, ref: LayerRef) -> int:
        k = int(ref.layer.output.shape[-1])
        return k if self.channels is None else min(k, self.channels)

    def images_per_step(self, ref: LayerRef) -> int:
        return max(1, self.batch_size // self._used(ref))

    def cam_map(self, x, acts, grads, targets):
        n, k = tf.shape(acts)[0], acts.shape[-1]
        size = tf.shape(x)[1:3]
        used = k if self.channels is None else min(k, self.channels)
        if used < k:  # Faster Score-CAM: the channels of highest variance, per image
            keep = tf.math.top_k(tf.math.reduce_variance(acts, axis=(1, 2)), used).indices  # (N, used)
            picked = tf.gather(acts, keep, axis=3, batch_dims=1)
        else:
            keep, picked = None, acts
        up = tf.image.resize(picked, size, method="bilinear")  # (N, H, W, used)
        low = tf.reduce_min(up, axis=(1, 2), keepdims=True)
        masks = tf.math.divide_no_nan(up - low, tf.reduce_max(up, axis=(1, 2), keepdims=True) - low)
        masked = tf.transpose(masks, (0, 3, 1, 2))[..., None] * x[:, None]  # (N, used, H, W, 3)
        flat = tf.reshape(masked, tf.concat([[n * used], tf.shape(x)[1:]], 0))
        probs = tf.nn.softmax(logits_fn(self.model)(flat), axis=-1)
        probs = tf.reshape(probs, (n, used, -1))
        weights = tf.gather(probs, targets, axis=2, batch_dims=1)  # (N, used)
        if keep is not None:
            weights = tf.reduce_sum(tf.one_hot(keep, k) * weights[..., None], axis=1)  # (N, K), 0 elsewhere
        return tf.einsum("nhwk,nk->nhw", acts, weights)


VARIANTS: dict[str, type[BaseCAM]] = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "cam": CAM,
                                      "layercam": LayerCAM, "scorecam": ScoreCAM}


def explainer(model, variant: Variant = "gradcam", layer=None, *, batch_size: int = 256,
              channels: int | None = None) -> BaseCAM:
    """The explainer of ``variant`` (gradcam, gradcam++, cam, layercam, scorecam); an unknown name is a
    ValueError. ``channels``: Score-CAM's channel subset (Faster Score-CAM), None for all."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown Grad-CAM variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    if variant == "scorecam":
        return ScoreCAM(model, layer, batch_size=batch_size, channels=channels)
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
