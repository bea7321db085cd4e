"""Gradient explainers of the input pixels: vanilla gradients, SmoothGrad, Integrated Gradients.

All three share :class:`fruitlens.explain.base.BaseAttribution` (targets, batching, scaling) and one compiled
gradient of the target's pre-softmax score with respect to the input (``gradient_fn``); they differ only in
which inputs the gradient is taken at and how the gradients are combined. Every input of every image goes
through the model ``batch_size`` at a time (images and noise samples / path steps together).

Definitions (per image, target t, score f_t = pre-softmax logit):

- vanilla gradients (Simonyan et al. 2014): ``max_c |d f_t / d x|`` (the largest over the colour channels).
- SmoothGrad (Smilkov et al. 2017): ``max_c |mean_s d f_t / d x (x + e_s)|`` with e_s ~ N(0, (noise *
  (max x - min x))^2), at most ``samples`` draws in rounds of ``round_size``: Latin hypercubes (stratified per
  pixel value), antithetic pairs (e, -e), scrambled
  Sobol points through the normal inverse CDF, or iid normal draws. An image leaves once the relative standard
  error of its mean gradient, ``||SE||_2 / ||mean||_2`` over its pixels and channels, is at most ``tolerance``.
  The noise is seeded and the same for every image, so an image's map does not depend on the batch it is in.
- Integrated Gradients (Sundararajan et al. 2017): ``(x - x') * integral over a in [0, 1] of the gradient at
  x' + a (x - x')``, summed over the colour channels; positive attributions are kept. The reference x' is
  black, white, gray, each image's mean colour, or a blurred copy. The integral is, by default, the
  completeness-weighted trapezoid rule: ``steps`` evenly spaced points, and on each interval between two of
  them the weights lambda and 1 - lambda of its ends (the trapezoid rule: 1/2 and 1/2) chosen so that the
  interval's attributions sum to the change of f_t over it, which the same passes give (the score at each
  point). In a ReLU network the gradient along the path is piecewise constant; where it jumps once in an
  interval, this is exact. lambda is clipped to [0, 1]. Or a Gauss-Legendre rule (Captum's default) or the
  trapezoid rule, in rounds of 4, 8, 16, ... points up to ``steps`` (the trapezoid rule in nested rounds of 5,
  9, 17, ... points reuses the earlier ones); an image leaves once its completeness gap ``|sum of attributions -
  (f_t(x) - f_t(x'))| / |f_t(x) - f_t(x')|`` (Captum's ``convergence_delta``, relative) is at most
  ``tolerance``. The completeness-weighted rule closes that gap by construction (up to the clipped
  intervals), so it runs once at ``steps`` and reports the gap that remains.

Each map is then divided by its own maximum (an all-zero map stays zero). The adaptive methods report per
image the model passes spent (gradient rows, plus Integrated Gradients' forward pass at the reference) and
the statistic reached (``HeatmapResult.passes`` / ``.convergence``). Measurements: benchmarks/README.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import tensorflow as tf

from fruitlens.explain.base import Attribution, BaseAttribution, check_images, check_targets, gradient_fn
from fruitlens.explain.results import HeatmapResult

Reference = Literal["black", "white", "gray", "mean", "blur"]
REFERENCES: tuple[str, ...] = ("black", "white", "gray", "mean", "blur")
NODES: tuple[str, ...] = ("completeness", "gauss-legendre", "riemann")
SAMPLING: tuple[str, ...] = ("latin", "antithetic", "sobol", "iid")
FIRST_NODES = 4  # Integrated Gradients' first round (Gauss-Legendre; the trapezoid rule starts at 5 points)
SOBOL_MAX_DIM = 21_201  # scipy's Sobol direction numbers: at most this many pixel x channel values


def path_rule(nodes: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(k,) points a in [0, 1] and (k,) weights of a quadrature rule over [0, 1]: Gauss-Legendre (Captum's
    ``gausslegendre``: numpy's nodes on [-1, 1] mapped to [0, 1]) or the trapezoid rule (both ends, k >= 2)."""
    if nodes == "gauss-legendre":
        x, w = np.polynomial.legendre.leggauss(k)
        return ((x + 1) / 2).astype(np.float32), (w / 2).astype(np.float32)
    alphas = np.linspace(0.0, 1.0, k)
    weights = np.full(k, 1.0 / (k - 1))
    weights[[0, -1]] /= 2
    return alphas.astype(np.float32), weights.astype(np.float32)


def completeness_weights(alphas: np.ndarray, slopes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(G, K) weights of the completeness-weighted trapezoid rule over the (K,) points ``alphas`` of [0, 1].

    ``slopes`` (G, K): each point's directional derivative ``(x - x') . gradient``; ``scores`` (G, K): f_t there.
    On interval j of width h_j, the ends get h_j lambda_j and h_j (1 - lambda_j), with lambda_j solving
    ``lambda s_j + (1 - lambda) s_{j+1} = (f_{j+1} - f_j) / h_j`` (its attributions then sum to f's change over
    it), clipped to [0, 1]; 1/2 (the trapezoid rule) where the two slopes are equal."""
    slopes, scores = slopes.astype(np.float64), scores.astype(np.float64)
    width = np.diff(alphas.astype(np.float64))
    change = np.diff(scores, axis=1) / width
    step = slopes[:, :-1] - slopes[:, 1:]
    lam = np.divide(change - slopes[:, 1:], step, out=np.full(step.shape, 0.5), where=step != 0)
    lam = np.clip(lam, 0.0, 1.0)
    weights = np.zeros(slopes.shape)
    weights[:, :-1] += width * lam
    weights[:, 1:] += width * (1 - lam)
    return weights


def relative_gap(total: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """(N,) ``|total - delta| / |delta|`` (the absolute gap where delta is 0)."""
    gap = np.abs(total.astype(np.float64) - delta)
    return np.divide(gap, np.abs(delta), out=gap.copy(), where=np.abs(delta) > 0)


def relative_se(s1: np.ndarray, s2: np.ndarray, units: np.ndarray) -> np.ndarray:
    """(N,) ``||SE||_2 / ||mean||_2`` of a mean over ``units`` iid draws from their sum ``s1`` and sum of squares
    ``s2`` (N, ...) per element; inf with fewer than 2 draws, 0 for an all-zero mean of zero spread."""
    u = units.astype(np.float64).reshape(-1, *([1] * (s1.ndim - 1)))
    mean = s1 / np.maximum(u, 1)
    var = np.maximum(s2 / np.maximum(u, 1) - mean ** 2, 0) * u / np.maximum(u - 1, 1)
    axes = tuple(range(1, s1.ndim))
    se = np.sqrt((var / np.maximum(u, 1)).sum(axis=axes))
    norm = np.sqrt((mean.astype(np.float64) ** 2).sum(axis=axes))
    out = np.divide(se, norm, out=np.where(se > 0, np.inf, 0.0), where=norm > 0)
    return np.where(units >= 2, out, np.inf)


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

    def gradient_moments(self, images: np.ndarray, targets: np.ndarray, k: int,
                         inputs: Callable[[np.ndarray, slice, slice], np.ndarray],
                         unit: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(N, H, W, 3) x 2: the sum and the sum of squares, over the ``k / unit`` units, of each unit's mean
        gradient (a unit: ``unit`` consecutive points, e.g. an antithetic pair). ``inputs`` as in
        :meth:`gradient_sum`; a call holds at least one unit even where ``batch_size`` is smaller."""
        grads = gradient_fn(self.model)
        n, h, w, _ = images.shape
        per_images = max(1, self.batch_size // k)
        per_points = max(unit, min(k, self.batch_size) // unit * unit)
        s1, s2 = np.zeros(images.shape, np.float32), np.zeros(images.shape, np.float32)
        for start in range(0, n, per_images):
            rows = slice(start, min(n, start + per_images))
            g = rows.stop - rows.start
            t1 = t2 = tf.zeros((g, h, w, 3), tf.float32)
            for p in range(0, k, per_points):
                cols = slice(p, min(k, p + per_points))
                m = cols.stop - cols.start
                x = tf.constant(inputs(images, rows, cols).reshape(g * m, h, w, 3))
                t = tf.constant(np.repeat(targets[rows], m))
                means = tf.reduce_mean(tf.reshape(grads(x, t)[0], (g, m // unit, unit, h, w, 3)), axis=2)
                t1 += tf.reduce_sum(means, axis=1)
                t2 += tf.reduce_sum(tf.square(means), axis=1)
            s1[rows], s2[rows] = t1.numpy(), t2.numpy()
        return s1, s2


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
    """SmoothGrad: gradients averaged over noisy copies (noise std = ``noise`` x value range), in rounds, until
    the map is stable.

    Args:
        samples: the most noisy copies per image.
        noise: noise standard deviation as a share of each image's value range (max - min).
        seed: the noise draw (the same for every image).
        tolerance: an image stops once ``||SE||_2 / ||mean gradient||_2`` is at most this (0: always ``samples``).
        round_size: copies per round (even: antithetic pairs stay together).
        sampling: ``latin`` (each round a Latin hypercube: every pixel value's draws fall one in each of
            ``round_size`` equal-probability strata of the normal; the SE is over round means, so it needs two
            rounds), ``antithetic`` (pairs e, -e: the SE is over pair means), ``sobol`` (scrambled Sobol points
            through the normal inverse CDF, one sequence continued across rounds; its SE uses the iid formula,
            which overstates a quasi-random error, so it stops late rather than early), or ``iid``.
    """

    method = "smoothgrad"

    def __init__(self, model, *, samples: int = 64, noise: float = 0.15, seed: int = 0, tolerance: float = 0.12,
                 round_size: int = 8, sampling: str = "latin", batch_size: int = 256):
        super().__init__(model, batch_size=batch_size)
        if samples < 1 or not noise >= 0:
            raise ValueError(f"samples {samples}, noise {noise}: expected samples >= 1 and noise >= 0")
        if not 0 <= tolerance < 1 or round_size < 2 or round_size % 2:
            raise ValueError(f"tolerance {tolerance}, round_size {round_size}: expected a tolerance in [0, 1) and "
                             "an even round_size >= 2")
        if sampling not in SAMPLING:
            raise ValueError(f"sampling {sampling!r}: expected one of {', '.join(SAMPLING)}")
        if sampling == "antithetic" and samples < 2:
            raise ValueError(f"samples {samples}: expected at least 2 with antithetic sampling (pairs)")
        self.samples, self.noise, self.seed = samples, noise, seed
        self.tolerance, self.round_size, self.sampling = tolerance, round_size, sampling

    @classmethod
    def from_options(cls, model, options) -> SmoothGrad:
        return cls(model, samples=options.samples, noise=options.noise, seed=options.seed,
                   tolerance=options.tolerance, round_size=options.round_size, sampling=options.sampling,
                   batch_size=options.batch_size)

    def unit(self, k: int) -> int:
        """Copies of a round of ``k`` whose mean is one draw of the SE: a pair (antithetic), the whole round
        (latin: a round is one Latin hypercube, its copies are not independent), else one copy."""
        return {"antithetic": 2, "latin": k}.get(self.sampling, 1)

    def rounds(self) -> list[int]:
        """Copies per round: ``round_size`` until ``samples`` (antithetic: whole pairs only; latin: whole rounds,
        at least one)."""
        unit = 2 if self.sampling == "antithetic" else 1
        if self.sampling == "latin":
            unit = min(self.round_size, self.samples)
        total = self.samples // unit * unit
        return [min(self.round_size, total - used) for used in range(0, total, self.round_size)]

    def draws(self, shape: tuple[int, ...]):
        """A function ``(round, k) -> (k, *shape)`` float32 standard normal noise, the same for every image."""
        if self.sampling == "sobol":
            from scipy.stats import norm, qmc

            dim = int(np.prod(shape))
            if dim > SOBOL_MAX_DIM:
                raise ValueError(f"sampling 'sobol' at {shape[0]}x{shape[1]} pixels: {dim} noise values per copy; "
                                 f"expected at most {SOBOL_MAX_DIM} (use antithetic or iid)")
            engine = qmc.Sobol(dim, scramble=True, seed=np.random.default_rng(self.seed))

            def sobol(r, k):
                u = engine.random(k)  # the sequence continues across rounds (rounds are drawn in order)
                return norm.ppf(np.clip(u, 1e-7, 1 - 1e-7)).reshape(k, *shape).astype(np.float32)

            return sobol

        def normal(r, k):
            rng = np.random.default_rng([self.seed, r])
            if self.sampling == "latin":  # each value's k draws: one in each of k equal-probability strata
                from scipy.special import ndtri

                dim = int(np.prod(shape))
                strata = rng.permuted(np.broadcast_to(np.arange(k, dtype=np.float32), (dim, k)), axis=1).T
                u = (strata + rng.random((k, dim), np.float32)) / k
                return ndtri(np.clip(u, 1e-7, 1 - 1e-7)).reshape(k, *shape).astype(np.float32)
            if self.sampling == "iid":
                return rng.standard_normal((k, *shape), np.float32)
            e = rng.standard_normal((k // 2, *shape), np.float32)
            return np.stack([e, -e], axis=1).reshape(k, *shape)  # pairs side by side: e0, -e0, e1, -e1, ...

        return normal

    def estimate(self, images: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N, H, W, 3) mean gradients, (N,) copies used and (N,) relative standard error reached."""
        n = len(images)
        sigma = (self.noise * (images.max(axis=(1, 2, 3)) - images.min(axis=(1, 2, 3)))).astype(np.float32)
        draw = self.draws(images.shape[1:])
        s1, s2 = np.zeros(images.shape, np.float64), np.zeros(images.shape, np.float64)
        used, units, se = np.zeros(n, np.int64), np.zeros(n, np.int64), np.full(n, np.inf)
        active = np.arange(n)
        for r, k in enumerate(self.rounds()):
            noise = draw(r, k)
            x, sig = images[active], sigma[active]

            def inputs(x, rows, cols, sig=sig, noise=noise):
                return x[rows, None] + sig[rows, None, None, None, None] * noise[None, cols]

            unit = self.unit(k)
            a, b = self.gradient_moments(x, targets[active], k, inputs, unit)
            s1[active] += a
            s2[active] += b
            used[active] += k
            units[active] += k // unit
            se[active] = relative_se(s1[active], s2[active], units[active])
            if self.tolerance > 0:
                active = active[se[active] > self.tolerance]
            if not len(active):
                break
        mean = s1 / np.maximum(units, 1).reshape(-1, 1, 1, 1)
        return mean.astype(np.float32), used, se

    def attribute(self, images, targets):
        return np.abs(self.estimate(images, targets)[0]).max(axis=-1)

    def attribute_scored(self, images, targets, scores) -> Attribution:
        mean, used, se = self.estimate(images, targets)
        return Attribution(np.abs(mean).max(axis=-1), used, se.astype(np.float32))


class IntegratedGradients(_GradientMethod):
    """Integrated Gradients along the straight path from a reference image, in rounds until complete.

    Args:
        steps: the most points of one round (at least 2).
        reference: the path's start: black, white, gray, mean (each image's mean colour), blur, or a gray level.
        tolerance: an image stops once its relative completeness gap is at most this (0: one round of ``steps``;
            ``completeness`` takes 0 only).
        nodes: ``completeness`` (the completeness-weighted trapezoid rule at ``steps`` points, one round; where
            ``steps`` exceeds ``batch_size``, two passes over the points), ``riemann`` (the trapezoid rule;
            rounds of 5, 9, 17, ... points, each reusing the last; a last round of ``steps`` points that is not of
            that form starts afresh) or ``gauss-legendre`` (rounds of 4, 8, 16, ... points, each new).
    """

    method = "integrated_gradients"

    def __init__(self, model, *, steps: int = 33, reference: Reference | float = "black", tolerance: float = 0.0,
                 nodes: str = "completeness", batch_size: int = 256):
        super().__init__(model, batch_size=batch_size)
        if steps < 2:
            raise ValueError(f"steps {steps}: expected at least 2 (both ends of the path)")
        if not 0 <= tolerance < 1:
            raise ValueError(f"tolerance {tolerance}: expected 0 (off) to below 1")
        if nodes not in NODES:
            raise ValueError(f"nodes {nodes!r}: expected one of {', '.join(NODES)}")
        if nodes == "completeness" and tolerance != 0:
            raise ValueError(f"nodes 'completeness' with tolerance {tolerance}: expected tolerance 0 (it closes the "
                             "completeness gap itself; riemann or gauss-legendre stop by it)")
        reference_images(np.zeros((1, 1, 1, 3), np.float32), reference)  # a bad reference fails here
        self.steps, self.reference, self.tolerance, self.nodes = steps, reference, tolerance, nodes

    @classmethod
    def from_options(cls, model, options) -> IntegratedGradients:
        return cls(model, steps=options.steps, reference=options.reference, tolerance=options.tolerance,
                   nodes=options.nodes, batch_size=options.batch_size)

    def rounds(self) -> list[int]:
        """Points per round: 4, 8, 16, ... (trapezoid: 5, 9, 17, ...) below ``steps``, then ``steps``."""
        if self.tolerance == 0:
            return [self.steps]
        riemann = self.nodes == "riemann"
        k, out = FIRST_NODES + riemann, []
        while k < self.steps:
            out.append(k)
            k = 2 * k - 1 if riemann else 2 * k
        return [*out, self.steps]

    def integrate(self, images: np.ndarray, targets: np.ndarray, scores: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N, H, W, 3) signed attributions (they sum to about f_t(x) - f_t(x'): completeness), (N,) model passes
        per image (gradient rows and the reference's forward pass) and (N,) relative completeness gap reached.

        ``scores``: (N,) f_t(x), when the caller has them (else one more forward pass, not counted).
        """
        n = len(images)
        base = np.broadcast_to(reference_images(images, self.reference), images.shape).astype(np.float32)
        rows = np.arange(n)
        if scores is None:
            scores = self.logits(images)[rows, targets]
        delta = scores.astype(np.float64) - self.logits(base)[rows, targets]
        if self.nodes == "completeness":
            integral, rows_per_image = self.completeness_integral(images, base, targets)
            gap = relative_gap(((images - base) * integral).sum(axis=(1, 2, 3)), delta)
            return (images - base) * integral, np.full(n, 1 + rows_per_image), gap
        integral = np.zeros(images.shape, np.float32)  # each image's current estimate of the path integral
        passes, gap = np.ones(n, np.int64), np.full(n, np.inf)
        active, last = rows, 0
        for k in self.rounds():
            alphas, weights = path_rule(self.nodes, k)
            nested = self.nodes == "riemann" and last >= 2 and (k - 1) % (last - 1) == 0
            if nested:  # the trapezoid rule on the refined grid: the old points' sum halves, new ones are added
                fresh = np.ones(k, bool)
                fresh[::(k - 1) // (last - 1)] = False
                alphas, weights = alphas[fresh], weights[fresh]
            x, b = images[active], base[active]

            def inputs(x, rows, cols, b=b, alphas=alphas):
                a = alphas[cols][None, :, None, None, None]
                return b[rows, None] + a * (x[rows, None] - b[rows, None])

            got = self.gradient_sum(x, targets[active], len(alphas), inputs, weights)
            integral[active] = integral[active] * ((last - 1) / (k - 1)) + got if nested else got
            passes[active] += len(alphas)
            gap[active] = relative_gap(((x - b) * integral[active]).sum(axis=(1, 2, 3)), delta[active])
            last = k
            if self.tolerance > 0:
                active = active[gap[active] > self.tolerance]
            if not len(active):
                break
        return (images - base) * integral, passes, gap

    def completeness_integral(self, images: np.ndarray, base: np.ndarray, targets: np.ndarray
                              ) -> tuple[np.ndarray, int]:
        """(N, H, W, 3) the completeness-weighted trapezoid rule's mean gradient along each image's path, and the
        gradient rows per image: ``steps`` where an image's points fit one call (their gradients and scores give
        the weights, then the sum), else twice that (the weights from a first pass, the sum from a second:
        memory stays at ``batch_size`` rows)."""
        grads = gradient_fn(self.model)
        k, n, (h, w) = self.steps, len(images), images.shape[1:3]
        alphas = np.linspace(0.0, 1.0, k).astype(np.float32)
        out = np.zeros(images.shape, np.float32)

        def path(i, cols):  # (len(i), m, H, W, 3) the points cols of images i, and their gradients and scores
            x, b = images[i], base[i]
            pts = b[:, None] + alphas[None, cols, None, None, None] * (x - b)[:, None]
            got, _, score = grads(tf.constant(pts.reshape(-1, h, w, 3)),
                                  tf.constant(np.repeat(targets[i], len(alphas[cols]))))
            return got.numpy().reshape(len(x), -1, h, w, 3), score.numpy().reshape(len(x), -1)

        if k <= self.batch_size:
            per_images = self.batch_size // k
            for start in range(0, n, per_images):
                i = np.arange(start, min(n, start + per_images))
                got, score = path(i, slice(None))
                slopes = np.einsum("gkhwc,ghwc->gk", got, images[i] - base[i])
                weights = completeness_weights(alphas, slopes, score).astype(np.float32)
                out[i] = np.einsum("gkhwc,gk->ghwc", got, weights)
            return out, k
        chunks = [slice(p, min(k, p + self.batch_size)) for p in range(0, k, self.batch_size)]
        for j in range(n):
            i = np.array([j])
            slopes, scores = np.zeros((1, k)), np.zeros((1, k))
            for c in chunks:
                got, scores[:, c] = path(i, c)
                slopes[:, c] = np.einsum("gkhwc,ghwc->gk", got, images[i] - base[i])
            weights = completeness_weights(alphas, slopes, scores).astype(np.float32)
            for c in chunks:
                out[i] += np.einsum("gkhwc,gk->ghwc", path(i, c)[0], weights[:, c])
        return out, 2 * k

    def attributions(self, images, targets) -> np.ndarray:
        """(N, H, W, 3) signed attributions; they sum to about f_t(x) - f_t(x') (completeness)."""
        return self.integrate(images, targets)[0]

    def attribute(self, images, targets):
        return self.attributions(images, targets).sum(axis=-1)

    def attribute_scored(self, images, targets, scores) -> Attribution:
        attr, passes, gap = self.integrate(images, targets, scores)
        return Attribution(attr.sum(axis=-1), passes, gap.astype(np.float32))
