"""How faithful is an explanation? Deletion and insertion curves, their areas, and the pointing game.

Deletion (Petsiuk et al., RISE 2018): remove pixels most-important-first (replace them by a baseline) and
follow the model's probability of the explained class; a faithful saliency map makes it fall fast (low
area under the curve). Insertion: start from the baseline and put pixels back most-important-first; the
probability should rise fast (high area). Any explanation works: a heatmap (N, H, W), or LIME's superpixel
weights turned into per-pixel saliency by :func:`saliency_from_superpixels`.

All steps of all images are scored in large batches: the perturbed images of a group of images are built
at once with one vectorised ``np.where`` over a (N, steps + 1, H, W) rank mask and fed to the model
``batch_size`` at a time.

The pointing game (Zhang et al. 2016): a hit when the saliency maximum falls inside the known evidence
region (the demo data's sticker masks).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from fruitlens.explain.base import check_images
from fruitlens.explain.results import FaithfulnessResult
from fruitlens.runs import as_predict_fn

Baseline = float | Literal["mean", "blur"]
BASELINES = ("mean", "blur")


def baseline_images(images: np.ndarray, baseline: Baseline) -> np.ndarray:
    """What removed pixels become: a constant gray level, each image's mean colour, or a strong blur.

    Returns an array broadcastable against ``images`` (N, H, W, 3).
    """
    if isinstance(baseline, int | float) and not isinstance(baseline, bool):
        if not 0.0 <= baseline <= 1.0:
            raise ValueError(f"baseline {baseline}: expected a gray level in [0, 1] or one of {BASELINES}")
        return np.full((1, 1, 1, 3), baseline, np.float32)
    if baseline == "mean":
        return images.mean(axis=(1, 2), keepdims=True, dtype=np.float32)
    if baseline == "blur":
        from scipy.ndimage import gaussian_filter

        sigma = max(images.shape[1:3]) / 10.0
        return gaussian_filter(images, sigma=(0, sigma, sigma, 0), mode="nearest").astype(np.float32)
    raise ValueError(f"baseline {baseline!r}: expected a gray level in [0, 1] or one of {BASELINES}")


def pixel_ranks(saliency: np.ndarray, seed: int | Sequence = 0) -> np.ndarray:
    """(N, H, W) saliency -> (N, H, W) int rank of each pixel, 0 = most important; ties in seeded random order.

    ``seed``: one seed for the batch, or one per image (an int or a tuple of ints each), so that an image's
    ranks do not depend on the batch it is in.
    """
    n = len(saliency)
    flat = saliency.reshape(n, -1)
    if np.isscalar(seed):
        tie = np.random.default_rng(seed).random(flat.shape)
    else:
        if len(seed) != n:
            raise ValueError(f"{len(seed)} seeds for {n} images: expected one seed or one per image")
        tie = np.stack([np.random.default_rng(s).random(flat.shape[1]) for s in seed])
    order = np.lexsort((tie, -flat), axis=-1)  # most salient first, ties broken at random
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(flat.shape[1])[None, :].repeat(n, 0), axis=-1)
    return ranks.reshape(saliency.shape)


def deletion_insertion(model_or_fn, images, saliency, targets, *, steps: int = 20, baseline: Baseline = "mean",
                       batch_size: int = 256, seed: int | Sequence = 0) -> FaithfulnessResult:
    """Deletion and insertion curves of saliency maps, scored by the model in large batches.

    Args:
        model_or_fn: a Keras model or a function (M, H, W, 3) -> (M, C) returning class probabilities.
        images: (N, H, W, 3) float in [0, 1]; never modified.
        saliency: (N, H, W) importance per pixel (any scale; only the order matters), e.g. a heatmap or
            :func:`saliency_from_superpixels`; resized to (H, W) with nearest-neighbour when it differs.
        targets: (N,) class ids whose probability is followed.
        steps: number of removal / insertion steps (S); each removes ``H*W/S`` more pixels.
        baseline: value of removed pixels: a gray level in [0, 1], ``"mean"`` (each image's mean colour) or
            ``"blur"`` (a strongly blurred copy).
        batch_size: images per model call.
        seed: order of pixels with equal saliency: one seed, or one per image (see ``pixel_ranks``).

    Returns:
        A :class:`FaithfulnessResult` with (N, S + 1) curves and (N,) areas (trapezoid over fractions 0..1).
    """
    images = check_images(images)
    n, h, w, _ = images.shape
    saliency = np.asarray(saliency, dtype=np.float32)
    if saliency.ndim != 3 or len(saliency) != n:
        raise ValueError(f"saliency of shape {saliency.shape}: expected ({n}, H, W)")
    if saliency.shape[1:] != (h, w):
        ys = (np.arange(h) * saliency.shape[1] // h)[:, None]
        xs = (np.arange(w) * saliency.shape[2] // w)[None, :]
        saliency = saliency[:, ys, xs]
    if np.isnan(saliency).any():
        raise ValueError("saliency contains NaN; expected finite importance values")
    targets = np.asarray(targets)
    if targets.shape != (n,) or not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"targets of shape {targets.shape}: expected ({n},) integer class ids")
    if steps < 1:
        raise ValueError(f"steps {steps}: expected at least 1")
    predict = as_predict_fn(model_or_fn)
    base = np.broadcast_to(baseline_images(images, baseline), images.shape)
    ranks = pixel_ranks(saliency, seed)
    counts = np.round(np.linspace(0, h * w, steps + 1)).astype(np.int64)  # pixels removed at each step

    per_group = max(1, batch_size // (steps + 1))  # images whose 2 x (S + 1) variants are built together
    deletion = np.empty((n, steps + 1), np.float32)
    insertion = np.empty((n, steps + 1), np.float32)
    for start in range(0, n, per_group):
        sl = slice(start, start + per_group)
        removed = (ranks[sl, None] < counts[None, :, None, None])[..., None]  # (g, S+1, H, W, 1)
        img, bas = images[sl, None], base[sl, None]
        batch = np.concatenate([np.where(removed, bas, img), np.where(removed, img, bas)], axis=1)
        g = batch.shape[0]
        flat = batch.reshape(-1, h, w, 3)
        probs = np.concatenate([predict(flat[i:i + batch_size]) for i in range(0, len(flat), batch_size)])
        probs = probs.reshape(g, 2 * (steps + 1), -1)
        picked = np.take_along_axis(probs, targets[sl, None, None].astype(np.int64), axis=2)[..., 0]
        deletion[sl], insertion[sl] = picked[:, :steps + 1], picked[:, steps + 1:]
    fractions = counts / float(h * w)
    return FaithfulnessResult(fractions, deletion, insertion,
                              np.trapezoid(deletion, fractions, axis=1), np.trapezoid(insertion, fractions, axis=1))


def saliency_from_superpixels(segments, weights) -> np.ndarray:
    """Per-pixel saliency from superpixel weights: each pixel gets its superpixel's weight.

    Args:
        segments: (N, H, W) or (H, W) int superpixel ids 0..S-1.
        weights: (N, S) or (S,) array, or a sequence of N (S_i,) arrays (images with different S).

    Returns:
        (N, H, W) float32 saliency (same scale as the weights; negative weights rank last).
    """
    seg = np.asarray(segments)
    if seg.ndim == 2:
        seg = seg[None]
    if seg.ndim != 3 or not np.issubdtype(seg.dtype, np.integer):
        raise ValueError(f"segments of shape {seg.shape} and dtype {seg.dtype}: expected (N, H, W) integer ids")
    if isinstance(weights, np.ndarray) and weights.ndim == 1 or (
            isinstance(weights, Sequence) and len(weights) and np.ndim(weights[0]) == 0):
        weights = [np.asarray(weights)]
    rows = [np.asarray(wt, dtype=np.float32) for wt in weights]
    if len(rows) != len(seg):
        raise ValueError(f"{len(rows)} weight vectors for {len(seg)} segmentations; expected one per image")
    width = max(len(r) for r in rows)
    table = np.zeros((len(rows), width), np.float32)
    for i, r in enumerate(rows):  # one row per image, not per pixel
        table[i, :len(r)] = r
    if seg.min() < 0 or seg.max() >= width:
        raise ValueError(f"segment ids {seg.min()}..{seg.max()}: expected ids in [0, {width})")
    n = len(seg)
    return np.take_along_axis(table, seg.reshape(n, -1), axis=1).reshape(seg.shape)


def pointing_game(heatmaps, masks, *, tolerance: int = 0) -> np.ndarray:
    """Whether each heatmap's maximum falls inside its evidence mask.

    Args:
        heatmaps: (N, H, W) saliency.
        masks: (N, H', W') bool evidence regions (resized to (H, W) with nearest-neighbour when different).
        tolerance: also a hit within this many pixels of the mask (the original game uses 15 at 224 px).

    Returns:
        (N,) bool hits; an all-zero heatmap (no point) is a miss. ``hits.mean()`` is the pointing score.
    """
    heat = np.asarray(heatmaps, dtype=np.float32)
    masks = np.asarray(masks, dtype=bool)
    if heat.ndim != 3 or masks.ndim != 3 or len(masks) != len(heat):
        raise ValueError(f"heatmaps {heat.shape} and masks {masks.shape}: expected (N, H, W) each")
    n, h, w = heat.shape
    if masks.shape[1:] != (h, w):
        ys = (np.arange(h) * masks.shape[1] // h)[:, None]
        xs = (np.arange(w) * masks.shape[2] // w)[None, :]
        masks = masks[:, ys, xs]
    if tolerance > 0:
        from scipy.ndimage import binary_dilation

        masks = binary_dilation(masks, structure=np.ones((1, 2 * tolerance + 1, 2 * tolerance + 1), bool))
    flat = heat.reshape(n, -1)
    arg = flat.argmax(axis=1)
    hit = masks.reshape(n, -1)[np.arange(n), arg]
    return hit & (flat.max(axis=1) > 0)
