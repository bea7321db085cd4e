"""Perturbation explainers of the input pixels: occlusion and RISE; no gradients, only model calls.

Both share :class:`fruitlens.explain.base.BaseAttribution` and one compiled step that scores many masked
copies of a group of images at once: ``keep * image + (1 - keep) * fill`` for each of M masks, the target's
softmax probability of each (the same whether the model ends in a softmax or not). Masks depend on the image
size, the options and the round only, never on the batch, so an image's map does not depend on the batch it is in.

Definitions (per image x, target t, f = p_t = the target's softmax probability):

- occlusion (Zeiler & Fergus 2014): a ``window`` square slides with ``stride`` (the last one flush with the
  border); a pixel's importance is the mean of p_t(x) - p_t(x with the window filled) over the windows that
  cover it. Coarse to fine (``coarse`` > 1): windows ``coarse`` times larger first, then the fine windows only
  where the coarse drop around them (the smallest of the coarse windows containing them) reaches ``threshold``
  of the largest; the fine windows left out count as 0 (where the model ignores a region, a coarse window
  inside it drops 0, and so does every fine window there).
- RISE (Petsiuk et al. 2018): random binary ``cells`` x ``cells`` grids M (each cell kept with probability
  ``keep`` = p), bilinearly upsampled to (cells + 1) x cell size and cropped with a random shift; the paper's
  map is (1 / (n p)) sum_i f(x . M_i) M_i. We compute (1 / (n p)) sum_i (f_i - b) M_i with b the mean score over
  the masks (a control variate: E[M] = p everywhere, so it shifts the expected map by the constant b, which the
  min-max scaling removes, and it cancels the noise of pixels that happen to be kept more often). Masks come in
  rounds of ``round_size``, stratified within a round (each cell kept in round_size x p of them, the shifts
  spread evenly), seeded by (seed, round); after each round an image whose map's standard error (root mean
  square over pixels, relative to the map's range) is at most ``tolerance`` stops; ``masks`` is the most any
  image gets (``tolerance`` 0: always all of them). ``benchmarks/README.md`` ("RISE against the paper").

Removed pixels take the ``fill``: black, gray, each image's mean colour, or a blurred copy of the image
(``fruitlens.explain.faithfulness.baseline_images``); the paper's fill is black (it multiplies by the mask).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import tensorflow as tf

from fruitlens.explain.base import Attribution, BaseAttribution, cached, logits_fn, scale_per_image

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


def row_prob_fn(model):
    """Compiled ``(x (K,H,W,3), fill (K,H,W,3), keep (K,H,W), targets (K,)) -> (K,)`` target probability of each
    row under its own mask, cached per model."""
    def build():
        scores = logits_fn(model)

        @tf.function(reduce_retracing=True)
        def probs(x, fill, keep, targets):
            k = keep[..., None]
            p = tf.nn.softmax(scores(k * x + (1.0 - k) * fill), axis=-1)
            return tf.gather(p, targets, axis=1, batch_dims=1)

        return probs

    return cached(model, ("row-probs",), build)


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

    def row_probs(self, images: np.ndarray, targets: np.ndarray, rows: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """(K,) p_t of image ``rows[k]`` (K,) with its own mask ``keep[k]`` (K, H, W), ``batch_size`` rows a call."""
        step = row_prob_fn(self.model)
        fills = fill_images(images, self.fill)
        out = np.empty(len(rows), np.float32)
        for p in range(0, len(rows), self.batch_size):
            r = rows[p:p + self.batch_size]
            out[p:p + len(r)] = step(tf.constant(images[r]), tf.constant(fills[r]),
                                     tf.constant(keep[p:p + len(r)]), tf.constant(targets[r])).numpy()
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


def _boxes(size: tuple[int, int], window: tuple[int, int], stride: tuple[int, int]):
    """(y, x) corners and (wh, ww) of the windows, the last flush with the border; (P, H, W) float32 masks."""
    (h, w), (wh, ww), (sy, sx) = size, window, stride
    wh, ww = min(wh, h), min(ww, w)
    boxes = [(y, x) for y in _starts(h, wh, sy) for x in _starts(w, ww, sx)]
    masks = np.zeros((len(boxes), h, w), np.float32)
    for i, (y, x) in enumerate(boxes):  # P boxes once per call, not per image
        masks[i, y:y + wh, x:x + ww] = 1.0
    return boxes, (wh, ww), masks


def _spread(drops: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """(N, P) window values -> (N, H, W) each pixel's mean over the windows that cover it."""
    covered = windows.sum(axis=0)
    total = np.einsum("np,phw->nhw", drops, windows)
    return np.divide(total, covered, out=np.zeros_like(total), where=covered > 0)


class Occlusion(_MaskMethod):
    """Occlusion: the drop of the target's probability when a sliding window is filled, coarse to fine.

    Args:
        window: side of the occluding square (or (height, width)), clipped to the image.
        stride: step between windows (or (dy, dx)).
        fill: what the window shows: black, gray, mean, blur.
        coarse: the first pass's windows and strides are this many times larger; 1: the full fine grid only.
        threshold: a fine window is measured where its coarse drop (the smallest in magnitude of the coarse
            windows that contain it, or overlap it where none contains it) is at least this share of the largest
            coarse drop (0: every fine window, the full grid's answer); the others count as a drop of 0.
    """

    method = "occlusion"

    def __init__(self, model, *, window: int | tuple[int, int] = 8, stride: int | tuple[int, int] = 4,
                 fill: Fill = "mean", coarse: int = 1, threshold: float = 0.1, batch_size: int = 256):
        super().__init__(model, batch_size=batch_size)
        if fill not in FILLS:
            raise ValueError(f"fill {fill!r}: expected one of {', '.join(FILLS)}")
        if coarse < 1 or not 0.0 <= threshold <= 1.0:
            raise ValueError(f"coarse {coarse}, threshold {threshold}: expected coarse >= 1, threshold in [0, 1]")
        self.window, self.stride, self.fill = _pair(window, "window"), _pair(stride, "stride"), fill
        self.coarse, self.threshold = int(coarse), float(threshold)

    @classmethod
    def from_options(cls, model, options) -> Occlusion:
        return cls(model, window=options.window, stride=options.stride, fill=options.fill, coarse=options.coarse,
                   threshold=options.threshold, batch_size=options.batch_size)

    def windows(self, size: tuple[int, int]) -> np.ndarray:
        """(P, H, W) float32, 1 inside each fine window."""
        return _boxes(size, self.window, self.stride)[2]

    def attribute(self, images, targets):
        size = images.shape[1:3]
        boxes, (wh, ww), fine = _boxes(size, self.window, self.stride)
        base = self.probs(images, targets)
        n = len(images)
        if self.coarse == 1:
            drops = base[:, None] - self.masked_probs(images, targets, 1.0 - fine)
            return Attribution(_spread(drops, fine), np.full(n, len(fine) + 1), np.zeros(n))
        big = tuple(v * self.coarse for v in self.window), tuple(v * self.coarse for v in self.stride)
        cboxes, (ch, cw), coarse = _boxes(size, *big)
        cdrop = base[:, None] - self.masked_probs(images, targets, 1.0 - coarse)  # (N, Q)
        # each fine window's coarse evidence: the coarse windows that contain it (those that overlap it if none)
        fy, fx = np.array(boxes).T[:, :, None]
        cy, cx = np.array(cboxes).T[:, None, :]
        contains = (cy <= fy) & (cy + ch >= fy + wh) & (cx <= fx) & (cx + cw >= fx + ww)  # (P, Q)
        overlaps = (cy < fy + wh) & (cy + ch > fy) & (cx < fx + ww) & (cx + cw > fx)
        related = np.where(contains.any(axis=1, keepdims=True), contains, overlaps)
        mag = np.where(related[None], np.abs(cdrop)[:, None, :], np.inf)  # (N, P, Q)
        pick = mag.argmin(axis=2)
        guess = np.take_along_axis(cdrop, pick.reshape(n, -1), axis=1).reshape(pick.shape)  # (N, P)
        share = np.abs(guess) / np.maximum(np.abs(cdrop).max(axis=1, keepdims=True), 1e-12)  # (N, P)
        need = share >= self.threshold
        rows, cols = np.nonzero(need)
        drops = np.zeros((n, len(boxes)), np.float32)  # a window left out: its drop is taken as 0
        drops[rows, cols] = base[rows] - self.row_probs(images, targets, rows, 1.0 - fine[cols])
        convergence = np.where(need, 0.0, share).max(axis=1)  # the largest coarse share left unmeasured
        return Attribution(_spread(drops, fine), len(coarse) + need.sum(axis=1) + 1, convergence)


class RISE(_MaskMethod):
    """RISE: importance = score-weighted mean of random smooth masks, in rounds until the map is stable.

    Args:
        masks: the most masks (model calls) any image gets.
        cells: grid cells per side before upsampling.
        keep: probability that a cell is kept (p).
        seed: the mask draw (the same masks, round by round, for every image).
        fill: what removed pixels show: black (the paper's), gray, mean, blur.
        round_size: masks per round; an image's stopping rule is checked after each.
        tolerance: stop an image when its map's standard error (root mean square over pixels) is at most this
            share of the map's range; 0: every image gets ``masks``.
    """

    method = "rise"

    def __init__(self, model, *, masks: int = 500, cells: int = 7, keep: float = 0.5, seed: int = 0,
                 fill: Fill = "mean", round_size: int = 250, tolerance: float = 0.0, batch_size: int = 256):
        super().__init__(model, batch_size=batch_size)
        if masks < 1 or cells < 1 or not 0.0 < keep < 1.0 or fill not in FILLS or round_size < 1 or tolerance < 0:
            raise ValueError(f"masks {masks}, cells {cells}, keep {keep}, fill {fill!r}, round_size {round_size}, "
                             f"tolerance {tolerance}: expected masks >= 1, cells >= 1, keep in (0, 1), fill one of "
                             f"{', '.join(FILLS)}, round_size >= 1, tolerance >= 0")
        self.num_masks, self.cells, self.keep, self.seed, self.fill = masks, cells, keep, seed, fill
        self.round_size, self.tolerance = round_size, tolerance

    @classmethod
    def from_options(cls, model, options) -> RISE:
        return cls(model, masks=options.masks, cells=options.cells, keep=options.keep, seed=options.seed,
                   fill=options.fill, round_size=options.round_size, tolerance=options.tolerance,
                   batch_size=options.batch_size)

    def round_masks(self, size: tuple[int, int], r: int, count: int) -> np.ndarray:
        """(count, H, W) float32 in [0, 1]: the first ``count`` masks of round ``r``, seeded by (seed, r).

        Stratified: each cell's ``round_size`` uniforms take one stratum each of [0, 1) in random order (so each
        cell is kept in round_size x keep masks, up to one), and so do the shifts; marginally every mask is the
        paper's (cells kept independently with probability keep, shifts uniform in [0, cell size))."""
        h, w = size
        c, n = self.cells, self.round_size
        rng = np.random.default_rng((self.seed, r))

        def strata(k):  # (n, k) uniforms, one per stratum of [0, 1) in each column
            return (rng.permuted(np.tile(np.arange(n), (k, 1)), axis=1).T + rng.random((n, k))) / n

        grid = (strata(c * c) < self.keep).astype(np.float32).reshape(n, c, c)[:count]
        ch, cw = -(-h // c), -(-w // c)
        up = tf.image.resize(grid[..., None], ((c + 1) * ch, (c + 1) * cw), "bilinear").numpy()[..., 0]
        shift = strata(2)[:count]
        dy, dx = (shift[:, 0] * ch).astype(int), (shift[:, 1] * cw).astype(int)
        rows = dy[:, None] + np.arange(h)[None]  # (M, H)
        cols = dx[:, None] + np.arange(w)[None]  # (M, W)
        return up[np.arange(count)[:, None, None], rows[:, :, None], cols[:, None, :]]

    def masks(self, size: tuple[int, int]) -> np.ndarray:
        """(masks, H, W) float32 in [0, 1]: every round's masks in order (what an image that never stops sees)."""
        counts = [min(self.round_size, self.num_masks - d) for d in range(0, self.num_masks, self.round_size)]
        return np.concatenate([self.round_masks(size, r, k) for r, k in enumerate(counts)])

    def attribute(self, images, targets):
        n, size = len(images), images.shape[1:3]
        p = self.keep
        fm, fm2, f2m2 = (np.zeros((n, *size)) for _ in range(3))  # sums of f M, f M^2, f^2 M^2 per image
        fsum = np.zeros(n)
        m1, m2 = np.zeros(size), np.zeros(size)  # sums of M and M^2 (the same for every image still running)
        raw, used, rel = np.zeros((n, *size), np.float32), np.zeros(n, np.int64), np.zeros(n)
        active, done, r = np.arange(n), 0, 0
        while active.size:
            count = min(self.round_size, self.num_masks - done)
            m = self.round_masks(size, r, count).astype(np.float64)
            f = self.masked_probs(images[active], targets[active], m.astype(np.float32)).astype(np.float64)
            msq = m * m
            fm[active] += np.einsum("am,mhw->ahw", f, m)
            fm2[active] += np.einsum("am,mhw->ahw", f, msq)
            f2m2[active] += np.einsum("am,mhw->ahw", f * f, msq)
            fsum[active] += f.sum(axis=1)
            m1 += m.sum(axis=0)
            m2 += msq.sum(axis=0)
            done, r = done + count, r + 1
            # c_i = (f_i - b) M_i / p with b the mean score: the map is mean(c_i), its standard error std(c_i)/sqrt(n)
            b = (fsum[active] / done)[:, None, None]
            s1 = (fm[active] - b * m1) / p
            s2 = (f2m2[active] - 2 * b * fm2[active] + b * b * m2) / (p * p)
            mean = s1 / done
            se = np.sqrt(np.maximum(s2 / done - mean ** 2, 0.0) / done)
            span = mean.max(axis=(1, 2)) - mean.min(axis=(1, 2))
            rms = np.sqrt((se ** 2).mean(axis=(1, 2)))
            stat = np.divide(rms, span, out=np.where(rms > 0, np.inf, 0.0), where=span > 0)  # flat and exact: 0
            stop = (stat <= self.tolerance) | (done >= self.num_masks)
            idx = active[stop]
            raw[idx], used[idx], rel[idx] = mean[stop], done, stat[stop]
            active = active[~stop]
        return Attribution(raw, used, rel)

    def scale(self, raw):
        return scale_per_image(raw, minmax=True)
