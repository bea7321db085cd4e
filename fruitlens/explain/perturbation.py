"""Perturbation explainers of the input pixels: occlusion and RISE; no gradients, only model calls.

Both share :class:`fruitlens.explain.base.BaseAttribution` and one compiled step that scores many masked
copies of a group of images at once: ``keep * image + (1 - keep) * fill`` for each of M masks, the target's
softmax probability of each (the same whether the model ends in a softmax or not). Masks are built once per
call (they depend on the image size and the options only, never on the batch), so an image's map does not
depend on the batch it is in.

Definitions (per image x, target t, p_t = the target's softmax probability):

- occlusion (Zeiler & Fergus 2014): a ``window`` square slides with ``stride`` (the last one flush with the
  border); a pixel's importance is the mean of p_t(x) - p_t(x with the window filled) over the windows that
  cover it.
- RISE (Petsiuk et al. 2018): ``masks`` random binary ``cells`` x ``cells`` grids (each cell kept with
  probability ``keep``), bilinearly upsampled and randomly shifted, seeded; importance = sum_i p_t(x * M_i)
  M_i / sum_i M_i (the paper divides by masks * keep; dividing by each pixel's own mask total removes the
  bias of pixels that happen to be kept more often), scaled min-max to [0, 1].

Removed pixels take the ``fill``: black, gray, each image's mean colour, or a blurred copy of the image
(``fruitlens.explain.faithfulness.baseline_images``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import tensorflow as tf

from fruitlens.explain.base import BaseAttribution, logits_fn, scale_per_image
from fruitlens.explain.keras_graph import cached

Fill = Literal["black", "gray", "mean", "blur"]
FILLS: tuple[str, ...] = ("black", "gray", "mean", "blur")


def fill_images(images: np.ndarray, fill: Fill) -> np.ndarray:
    """(N, H, W, 3) float32 values of removed pixels."""
    from fruitlens.explain.faithfulness import baseline_images

    if fill not in FILLS:
        raise ValueError(f"fill {fill!r}: expected one of {', '.join(FILLS)}")
    value = {"black": 0.0, "gray": 0.5}.get(fill, fill)
    return np.ascontiguousarray(np.broadcast_to(baseline_images(images, value), images.shape), np.float32)


def masked_prob_fn(model):
    """Compiled ``(x (g,H,W,3), fill (g,H,W,3), keep (m,H,W), targets (g,)) -> (g, m)`` target
    probabilities of every image under every mask, cached per model."""
    def build():
        scores = logits_fn(model)

        @tf.function(reduce_retracing=True)
        def probs(x, fill, keep, targets):
            g, m = tf.shape(x)[0], tf.shape(keep)[0]
            k = keep[None, ..., None]
            mixed = k * x[:, None] + (1.0 - k) * fill[:, None]  # (g, m, H, W, 3)
            p = tf.nn.softmax(scores(tf.reshape(mixed, tf.concat([[g * m], tf.shape(x)[1:]], 0))), axis=-1)
            p = tf.reshape(p, (g, m, -1))
            return tf.gather(p, targets, axis=2, batch_dims=1)

        return probs

    return cached(model, ("masked-probs",), build)


class _MaskMethod(BaseAttribution):
    """Target probabilities of N images under M masks, ``batch_size`` masked images per model call."""

    fill: Fill = "mean"

    def masked_probs(self, images: np.ndarray, targets: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """(N, M) p_t of each image with ``keep`` (M, H, W) in [0, 1] applied (1 = the image's pixel)."""
        step = masked_prob_fn(self.model)
        fills = fill_images(images, self.fill)
        n, m = len(images), len(keep)
        per_images = max(1, self.batch_size // m)
        per_masks = min(m, self.batch_size)
        out = np.empty((n, m), np.float32)
        for start in range(0, n, per_images):
            rows = slice(start, min(n, start + per_images))
            x, f, t = tf.constant(images[rows]), tf.constant(fills[rows]), tf.constant(targets[rows])
            for p in range(0, m, per_masks):
                out[rows, p:p + per_masks] = step(x, f, tf.constant(keep[p:p + per_masks]), t).numpy()
        return out

    def probs(self, images: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """(N,) p_t of the unmasked images (through the same step as the masked ones)."""
        return self.masked_probs(images, targets, np.ones((1, *images.shape[1:3]), np.float32))[:, 0]


def _pair(v, name: str) -> tuple[int, int]:
    pair = (v, v) if np.isscalar(v) else tuple(v)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"{name} {v!r}: expected a positive int or (height, width)")
    return int(pair[0]), int(pair[1])


def _starts(size: int, window: int, stride: int) -> list[int]:
    last = max(size - window, 0)
    starts = list(range(0, last + 1, stride))
    return starts if starts[-1] == last else [*starts, last]


class Occlusion(_MaskMethod):
    """Occlusion: the drop of the target's probability when a sliding window is filled.

    Args:
        window: side of the occluding square (or (height, width)), clipped to the image.
        stride: step between windows (or (dy, dx)).
        fill: what the window shows: black, gray, mean, blur.
    """

    method = "occlusion"

    def __init__(self, model, *, window: int | tuple[int, int] = 8, stride: int | tuple[int, int] = 4,
                 fill: Fill = "mean", batch_size: int = 256):
        super().__init__(model, batch_size=batch_size)
        if fill not in FILLS:
            raise ValueError(f"fill {fill!r}: expected one of {', '.join(FILLS)}")
        self.window, self.stride, self.fill = _pair(window, "window"), _pair(stride, "stride"), fill

    @classmethod
    def from_options(cls, model, options) -> Occlusion:
        return cls(model, window=options.window, stride=options.stride, fill=options.fill,
                   batch_size=options.batch_size)

    def windows(self, size: tuple[int, int]) -> np.ndarray:
        """(P, H, W) float32, 1 inside each window."""
        (h, w), (wh, ww), (sy, sx) = size, self.window, self.stride
        wh, ww = min(wh, h), min(ww, w)
        boxes = [(y, x) for y in _starts(h, wh, sy) for x in _starts(w, ww, sx)]
        masks = np.zeros((len(boxes), h, w), np.float32)
        for i, (y, x) in enumerate(boxes):  # P boxes once per call, not per image
            masks[i, y:y + wh, x:x + ww] = 1.0
        return masks

    def attribute(self, images, targets):
        windows = self.windows(images.shape[1:3])
        drop = self.probs(images, targets)[:, None] - self.masked_probs(images, targets, 1.0 - windows)
        covered = windows.sum(axis=0)
        total = np.einsum("np,phw->nhw", drop, windows)
        return np.divide(total, covered, out=np.zeros_like(total), where=covered > 0)


class RISE(_MaskMethod):
    """RISE: importance = probability-weighted mean of random smooth masks.

    Args:
        masks: number of random masks (model calls per image).
        cells: grid cells per side before upsampling.
        keep: probability that a cell is kept.
        seed: the mask draw (the same masks for every image).
        fill: what removed pixels show: black, gray, mean, blur.
    """

    method = "rise"

    def __init__(self, model, *, masks: int = 500, cells: int = 7, keep: float = 0.5, seed: int = 0,
                 fill: Fill = "mean", batch_size: int = 256):
        super().__init__(model, batch_size=batch_size)
        if masks < 1 or cells < 1 or not 0.0 < keep < 1.0 or fill not in FILLS:
            raise ValueError(f"masks {masks}, cells {cells}, keep {keep}, fill {fill!r}: expected masks >= 1, "
                             f"cells >= 1, keep in (0, 1), fill one of {', '.join(FILLS)}")
        self.num_masks, self.cells, self.keep, self.seed, self.fill = masks, cells, keep, seed, fill

    @classmethod
    def from_options(cls, model, options) -> RISE:
        return cls(model, masks=options.masks, cells=options.cells, keep=options.keep, seed=options.seed,
                   fill=options.fill, batch_size=options.batch_size)

    def masks(self, size: tuple[int, int]) -> np.ndarray:
        """(M, H, W) float32 in [0, 1], seeded: the same for every image of that size."""
        h, w = size
        rng = np.random.default_rng(self.seed)
        grid = (rng.random((self.num_masks, self.cells, self.cells)) < self.keep).astype(np.float32)
        ch, cw = -(-h // self.cells), -(-w // self.cells)
        up = tf.image.resize(grid[..., None], ((self.cells + 1) * ch, (self.cells + 1) * cw), "bilinear")
        up = up.numpy()[..., 0]
        dy, dx = rng.integers(0, ch, self.num_masks), rng.integers(0, cw, self.num_masks)
        rows = dy[:, None] + np.arange(h)[None]  # (M, H)
        cols = dx[:, None] + np.arange(w)[None]  # (M, W)
        return up[np.arange(self.num_masks)[:, None, None], rows[:, :, None], cols[:, None, :]]

    def attribute(self, images, targets):
        masks = self.masks(images.shape[1:3])
        probs = self.masked_probs(images, targets, masks)
        total = masks.sum(axis=0)
        raw = np.einsum("nm,mhw->nhw", probs, masks)
        return np.divide(raw, total, out=np.zeros_like(raw), where=total > 0)

    def scale(self, raw):
        return scale_per_image(raw, minmax=True)
