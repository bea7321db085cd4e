"""Gradient explainers of the input pixels: vanilla gradients, SmoothGrad, Integrated Gradients.

All three share :class:`fruitlens.explain.base.BaseAttribution` (targets, batching, scaling) and one compiled
gradient of the target's pre-softmax score with respect to the input (``gradient_fn``); they differ only in
which inputs the gradient is taken at and how the gradients are combined. Every input of every image goes
through the model ``batch_size`` at a time (images and noise samples / path steps together).

Definitions (per image, target t, score f_t = pre-softmax logit):

- vanilla gradients (Simonyan et al. 2014): ``max_c |d f_t / d x|`` (the largest over the colour channels).
- SmoothGrad (Smilkov et al. 2017): ``max_c |mean_s d f_t / d x (x + e_s)|`` with e_s ~ N(0, (noise *
  (max x - min x))^2), ``samples`` draws; the noise is seeded and the same for every image, so an image's
  map does not depend on the batch it is in.
- Integrated Gradients (Sundararajan et al. 2017): ``(x - x') * mean of the gradients at x' + a (x - x')``
  over ``steps`` points a of [0, 1] (trapezoid rule), summed over the colour channels; positive attributions
  are kept. The reference x' is black, white, gray, each image's mean colour, or a blurred copy.

Each map is then divided by its own maximum (an all-zero map stays zero).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import tensorflow as tf

from fruitlens.explain.base import BaseAttribution, check_images, check_targets, gradient_fn
from fruitlens.explain.results import HeatmapResult

Reference = Literal["black", "white", "gray", "mean", "blur"]
REFERENCES: tuple[str, ...] = ("black", "white", "gray", "mean", "blur")


def reference_images(images: np.ndarray, reference: Reference | float) -> np.ndarray:
    """Integrated Gradients' starting points x', broadcastable against ``images`` (N, H, W, 3)."""
    from fruitlens.explain.faithfulness import baseline_images

    levels = {"black": 0.0, "white": 1.0, "gray": 0.5}
    if isinstance(reference, str) and reference not in REFERENCES:
        raise ValueError(f"reference {reference!r}: expected one of {', '.join(REFERENCES)} or a gray level")
    return baseline_images(images, levels.get(reference, reference) if isinstance(reference, str) else reference)


class _GradientMethod(BaseAttribution):
    """Gradients at K inputs per image, combined per image: the batching shared by the three methods."""

    def gradient_sum(self, images: np.ndarray, targets: np.ndarray, k: int,
                     inputs: Callable[[np.ndarray, slice, slice], np.ndarray],
                     weights: np.ndarray | None = None) -> np.ndarray:
        """(N, H, W, 3) sum_j weights_j * gradient at ``inputs(images[i], ..., j)`` for j < k.

        ``inputs(x, rows, cols)`` returns the (g, m, H, W, 3) inputs of images ``x[rows]`` (g images) and
        points ``cols`` (m of the k); they go through the model ``batch_size`` at a time.
        """
        grads = gradient_fn(self.model)
        weights = np.ones(k, np.float32) if weights is None else weights.astype(np.float32)
        n, h, w, _ = images.shape
        per_images = max(1, self.batch_size // k)  # images whose k inputs fit in one call
        per_points = min(k, self.batch_size)  # or, when k alone exceeds it, points per call
        out = np.zeros(images.shape, np.float32)
        for start in range(0, n, per_images):
            rows = slice(start, min(n, start + per_images))
            g = rows.stop - rows.start
            total = tf.zeros((g, h, w, 3), tf.float32)
            for p in range(0, k, per_points):
                cols = slice(p, min(k, p + per_points))
                m = cols.stop - cols.start
                x = tf.constant(inputs(images, rows, cols).reshape(g * m, h, w, 3))
                t = tf.constant(np.repeat(targets[rows], m))
                got = tf.reshape(grads(x, t)[0], (g, m, h, w, 3))
                total += tf.einsum("gmhwc,m->ghwc", got, tf.constant(weights[cols]))
            out[rows] = total.numpy()
        return out


class Saliency(_GradientMethod):
    """Vanilla gradients: max over colour channels of |d score / d pixel|."""

    method = "saliency"

    def attribute(self, images, targets):
        g = self.gradient_sum(images, targets, 1, lambda x, rows, cols: x[rows, None])
        return np.abs(g).max(axis=-1)

    def explain(self, images, targets=None) -> HeatmapResult:
        """As :meth:`BaseAttribution.explain`, in one compiled pass per batch: the forward pass that gives the
        gradient also resolves the targets and their scores (the base's separate forward pass and per-batch
        sums took half the time of this method)."""
        images = check_images(images)
        targets = check_targets(targets, len(images), int(self.model.output_shape[-1])).astype(np.int32)
        grads = gradient_fn(self.model)
        parts = [grads(tf.constant(images[i:i + self.batch_size]), tf.constant(targets[i:i + self.batch_size]))
                 for i in range(0, len(images), self.batch_size)]
        raw = np.concatenate([tf.reduce_max(tf.abs(g), axis=-1).numpy() for g, _, _ in parts])
        resolved, picked = (np.concatenate([p[j].numpy() for p in parts]) for j in (1, 2))
        return HeatmapResult(self.scale(raw).astype(np.float32), resolved.astype(np.int64), picked.astype(np.float32),
                         self.layer)



class SmoothGrad(_GradientMethod):
    """SmoothGrad: gradients averaged over ``samples`` noisy copies (noise std = ``noise`` x value range).

    Args:
        samples: noisy copies per image.
        noise: noise standard deviation as a share of each image's value range (max - min).
        seed: the noise draw (the same for every image).
    """

    method = "smoothgrad"

    def __init__(self, model, *, samples: int = 25, noise: float = 0.15, seed: int = 0, batch_size: int = 256):
        super().__init__(model, batch_size=batch_size)
        if samples < 1 or not noise >= 0:
            raise ValueError(f"samples {samples}, noise {noise}: expected samples >= 1 and noise >= 0")
        self.samples, self.noise, self.seed = samples, noise, seed

    @classmethod
    def from_options(cls, model, options) -> SmoothGrad:
        return cls(model, samples=options.samples, noise=options.noise, seed=options.seed,
                   batch_size=options.batch_size)

    def attribute(self, images, targets):
        draws = np.random.default_rng(self.seed).standard_normal((self.samples, *images.shape[1:]), np.float32)
        sigma = (self.noise * (images.max(axis=(1, 2, 3)) - images.min(axis=(1, 2, 3)))).astype(np.float32)

        def inputs(x, rows, cols):
            return x[rows, None] + sigma[rows, None, None, None, None] * draws[None, cols]

        g = self.gradient_sum(images, targets, self.samples, inputs) / self.samples
        return np.abs(g).max(axis=-1)


class IntegratedGradients(_GradientMethod):
    """Integrated Gradients along the straight path from a reference image, ``steps`` points, trapezoid rule.

    Args:
        steps: points on the path (at least 2: both ends included).
        reference: the path's start: black, white, gray, mean (each image's mean colour), blur, or a gray level.
    """

    method = "integrated_gradients"

    def __init__(self, model, *, steps: int = 32, reference: Reference | float = "black", batch_size: int = 256):
        super().__init__(model, batch_size=batch_size)
        if steps < 2:
            raise ValueError(f"steps {steps}: expected at least 2 (both ends of the path)")
        reference_images(np.zeros((1, 1, 1, 3), np.float32), reference)  # a bad reference fails here
        self.steps, self.reference = steps, reference

    @classmethod
    def from_options(cls, model, options) -> IntegratedGradients:
        return cls(model, steps=options.steps, reference=options.reference, batch_size=options.batch_size)

    def attributions(self, images, targets) -> np.ndarray:
        """(N, H, W, 3) signed attributions; they sum to about f_t(x) - f_t(x') (completeness)."""
        base = np.broadcast_to(reference_images(images, self.reference), images.shape).astype(np.float32)
        alphas = np.linspace(0.0, 1.0, self.steps, dtype=np.float32)
        weights = np.full(self.steps, 1.0 / (self.steps - 1), np.float32)
        weights[[0, -1]] /= 2  # trapezoid rule over [0, 1]

        def inputs(x, rows, cols):
            a = alphas[cols][None, :, None, None, None]
            return base[rows, None] + a * (x[rows, None] - base[rows, None])

        return (images - base) * self.gradient_sum(images, targets, self.steps, inputs, weights)

    def attribute(self, images, targets):
        return self.attributions(images, targets).sum(axis=-1)
