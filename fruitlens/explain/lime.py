"""LIME for images: the `lime` package's mathematics, vectorised and batched over many images.

For each image (Ribeiro et al. 2016, as in ``lime.lime_image`` / ``lime.lime_base``):

1. superpixels ``segments`` (H, W) with ids 0..S-1 (``fruitlens.explain.segmentation``). The default is SLIC
   with 50 superpixels (the R package's default): quickshift with lime's parameters gives 1-8 superpixels on
   Fruits-360 at 100x100 and a single one at 20x20, which leaves nothing to explain;
2. ``num_samples`` binary rows z (S,) drawn uniformly, the first row all ones (the image itself): independent
   rows as the reference draws them (``design="random"``), or fold-over randomised Hadamard blocks
   (``design="balanced"``, :func:`draw_masks`): each row is still uniform, but within a block every superpixel
   is hidden in half the rows and independently of every other one, which takes sampling noise out of the
   weights (benchmarks/README.md, "The balanced design");
3. perturbed image for row z: superpixel s kept where z[s] = 1, else filled with its mean colour
   (``hide_color=None``) or a given colour; built by indexing, ``where(z[segments], image, fill)``;
4. the model's output (probabilities: the Ridge is fitted on what the model returns, like the reference);
5. cosine distance of each z to the all-ones row, exponential kernel ``sqrt(exp(-d**2 / 0.25**2))``;
6. per explained label a weighted Ridge (alpha 1, scikit-learn) of the label's probability on z, after
   optional feature selection (auto / highest_weights / forward_selection / none, ``num_features``).

Unlike the reference there is no per-sample Python loop: the masks of all samples of all images are
expanded by indexing, perturbed images are built directly at the model's input size into batches of
``batch_size`` rows that span image boundaries, and a Keras model runs through its compiled predict step
(``predict_on_batch``: no per-call ``predict`` setup, no eager per-layer overhead).

Adaptive sampling (``adaptive=True``): instead of a fixed ``num_samples``, samples come in rounds of
``round_size`` rows and each image stops as soon as its explanation is stable, at most ``num_samples`` rows.
The criterion bounds the uncertainty of the weights themselves: after each round the weighted Ridge
(the one that gives the weights: alpha 1, every superpixel, kernel weights ``sw``) is refitted in closed form
and the heteroscedasticity-robust (HC0 sandwich) covariance of its coefficients,
``A^-1 (sum_i sw_i^2 r_i^2 x_i x_i') A^-1`` with ``A = X'WX + alpha I`` on the centred design and ``r`` the
residuals, gives a standard error per weight. The image's *stability* is ``max_s SE(w_s) / max_s |w_s|``
(the largest standard error relative to the strongest weight, the worst over the explained labels); it stops
when that is at most ``tolerance`` (default 0.05: every weight known to a twentieth of the strongest one, at
one standard error). It needs no model of the classifier, holds for any residual variance pattern, and is what
decides both the ranking (top-k overlap) and the weights' order (Spearman). A tolerance of 0 never stops
early. Images that have stopped leave the next round's model batches: only the unfinished ones are perturbed
and predicted. All rows of image i are drawn up front from its generator, so an adaptive run that stops
image i at n rows gives exactly the explanation of a fixed run with ``num_samples=n`` (the first n rows of
a draw are a smaller draw); the stability is reported in fixed mode too.

Control variate (``control_variate=True``, :class:`fruitlens.explain.lime_fit.Surrogate`): a weighted logistic
fit ``g`` of the explained probability on the rows is the control variate. The weights are the Ridge of ``f - g``
on the drawn rows plus the same Ridge of ``g`` on a fixed draw of 8192 rows that needs no model call, so only
what the logistic model misses carries the few rows' sampling noise. Same estimand, fewer rows for the same
agreement (benchmarks/README.md, "The control variate and the new defaults"). Outputs outside [0, 1] (logits)
are explained without it, with a warning.

Randomness: image i draws its samples from ``np.random.default_rng((seed, i))`` when ``seed`` is an int
(its position in the batch), or from ``np.random.default_rng(seed[i])`` when ``seed`` is a sequence with one
entry per image (an int or a tuple of ints). So ``explain_lime(m, x, o, seed=s)[i]`` equals
``explain_lime(m, x[i:i + 1], o, seed=[(s, i)])[0]``; the batch runner seeds each image by its image id.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from fruitlens.explain.explainer import Explainer
from fruitlens.explain.lime_fit import (
    draw_masks,
    fit_explanation,
    fit_surrogate,
    stability,
)
from fruitlens.explain.results import LimeExplanation, LimeResult
from fruitlens.explain.segmentation import make_segmenter, relabel
from fruitlens.lime_options import HIDE_COLORS, LimeOptions
from fruitlens.runs import as_predict_fn

log = logging.getLogger(__name__)

KERNEL_WIDTH = 0.25
BATCH_BYTES = 16 << 20  # default model batch: about 16 MiB of float32 pixels (139 images at 100x100)


def explain_lime(
    model_or_fn,
    images: np.ndarray,
    options: LimeOptions,
    *,
    segments: np.ndarray | None = None,
    labels: np.ndarray | Sequence | None = None,
    seed: int | Sequence | None = None,
) -> list[LimeExplanation]:
    """Explain each image's prediction with LIME over superpixels, as ``options`` say.

    ``options`` is taken whole (every field that changes the explanation is read here, so no caller can drop
    one): ``num_samples``, ``hide_color``, ``top_labels``, ``segmenter`` and ``segmenter_params``,
    ``num_features``, ``feature_selection``, ``batch_size``, ``adaptive``, ``round_size``, ``tolerance``,
    ``min_samples``, ``design``, ``control_variate`` (their meaning: :class:`fruitlens.lime_options.LimeOptions`
    and the module docstring). ``LimeOptions.reference()`` is the `lime` package's own procedure (exactly
    ``num_samples`` independent random rows, plain Ridge).

    Args:
        model_or_fn: a Keras model (run with ``predict_on_batch``, inference mode) or a function
            (B, H, W, 3) -> (B, C) returning class probabilities.
        images: (N, H, W, 3) float RGB in [0, 1], at the model's input size. Not modified.
        options: the estimator (``LimeOptions``, validated where it was made).
        segments: (N, H, W) int superpixels (any ids; renumbered 0..S-1); default: the options' segmenter.
        labels: classes to explain per image, (N,) or (N, k) ints; default the ``top_labels`` predicted ones.
        seed: None (the options' seed), an int (image i uses ``default_rng((seed, i))``) or one seed per image
            (``default_rng(seed[i])``; batch runs seed each image by its image id).

    Returns:
        One ``LimeExplanation`` per image, in order.

    Raises:
        ValueError: bad shapes, labels or model output, naming the value and what was expected.
    """
    o = options
    if not isinstance(o, LimeOptions):
        raise TypeError(f"options of type {type(o).__name__}: expected LimeOptions (LimeOptions.reference() is "
                        "the lime package's procedure)")
    num_samples, top_labels, num_features, feature_selection = o.num_samples, o.top_labels, o.num_features, \
        o.feature_selection
    adaptive, round_size, tolerance, min_samples = o.adaptive, o.round_size, o.tolerance, o.min_samples
    design, control_variate, batch_size, kernel_width = o.design, o.control_variate, o.batch_size, KERNEL_WIDTH
    segmenter = make_segmenter(o.segmenter, **o.segmenter_params)
    hide_color = o.fill
    seed = o.seed if seed is None else seed
    x = _check_images(images)
    n, h, w, _ = x.shape
    entropy = _entropy(seed, n)
    seg, seg_name = _segments(x, segments, segmenter, entropy)
    fill = _fills(x, seg, hide_color)
    sizes = seg.reshape(n, -1).max(axis=1) + 1
    if (sizes < 2).any():
        log.warning("%d of %d images have a single superpixel (%s): nothing to explain there; try another "
                    "segmenter or its parameters", int((sizes < 2).sum()), n, seg_name)
    rngs = [np.random.default_rng(e) for e in entropy]
    masks = [draw_masks(rng, num_samples, int(s), design) for rng, s in zip(rngs, sizes, strict=True)]
    if batch_size is None:
        batch_size = int(np.clip(BATCH_BYTES // (h * w * 3 * 4), 32, 1024))
    fn = as_predict_fn(model_or_fn)
    # the fits are tiny (num_samples x S): one BLAS thread, else its threads fight TensorFlow's spinning ones
    # (benchmarks/README.md, "Figures once kept in the code")
    from threadpoolctl import threadpool_limits

    if not adaptive:
        probs = _predict_perturbed(fn, x, seg, fill, [(i, 0, num_samples) for i in range(n)], masks, batch_size)
        probs = probs.reshape(n, num_samples, -1)
        targets = _targets(labels, top_labels, probs[:, 0], n)
        _check_probabilities(probs, control_variate)
        with threadpool_limits(limits=1, user_api="blas"):
            cvs = [fit_surrogate(masks[i], probs[i][:, targets[i]], kernel_width, control_variate) for i in range(n)]
            stab = [stability(masks[i], probs[i][:, targets[i]], kernel_width, cvs[i]) for i in range(n)]
            return [fit_explanation(masks[i], probs[i], targets[i], seg[i], num_samples, num_features,
                                    feature_selection, kernel_width, seg_name, stab[i], tolerance, num_samples,
                                    cvs[i]) for i in range(n)]
    used = np.zeros(n, np.int64)
    outs: list[list[np.ndarray]] = [[] for _ in range(n)]
    stab = np.full(n, np.inf)
    active = list(range(n))
    targets = None
    cvs: list = [None] * n
    while active:
        pieces = [(i, int(used[i]), int(min(used[i] + round_size, num_samples))) for i in active]
        probs = _predict_perturbed(fn, x, seg, fill, pieces, masks, batch_size)
        start = 0
        for i, a, b in pieces:
            outs[i].append(probs[start:start + b - a])
            start += b - a
            used[i] = b
        if targets is None:  # the first round holds every image's unperturbed row
            targets = _targets(labels, top_labels, np.stack([outs[i][0][0] for i in range(n)]), n)
        _check_probabilities(probs, control_variate)
        with threadpool_limits(limits=1, user_api="blas"):
            for i in active:
                y = np.concatenate(outs[i])
                outs[i] = [y]
                z = masks[i][:used[i]]
                cvs[i] = fit_surrogate(z, y[:, targets[i]], kernel_width, control_variate)
                stab[i] = stability(z, y[:, targets[i]], kernel_width, cvs[i])
        active = [i for i in active if used[i] < num_samples and not (stab[i] <= tolerance and used[i] >= min_samples)]
    with threadpool_limits(limits=1, user_api="blas"):
        return [fit_explanation(masks[i][:used[i]], outs[i][0], targets[i], seg[i], int(used[i]), num_features,
                                feature_selection, kernel_width, seg_name, float(stab[i]), tolerance, num_samples,
                                cvs[i]) for i in range(n)]


class LimeExplainer(Explainer):
    """LIME with the same verb as every explainer: ``explain(images, targets=None) -> LimeResult``.

    Args:
        model_or_fn: a Keras model or a function (B, H, W, 3) -> (B, C) of class probabilities.
        options: ``LimeOptions``, passed whole to :func:`explain_lime` (its segments come from its segmenter;
            the fields of the pictures stay with the batch run).
    """

    method = "lime"

    def __init__(self, model_or_fn, options: LimeOptions):
        self.model = model_or_fn
        self.options = options
        self.segmenter = make_segmenter(options.segmenter, **options.segmenter_params)

    @classmethod
    def from_options(cls, model, options: LimeOptions) -> LimeExplainer:
        return cls(model, options)

    def segment(self, images, seeds: Sequence | None = None) -> np.ndarray:
        """(N, H, W) int superpixels ``explain`` uses for ``images`` with ``seeds`` (default: the options' seed)."""
        x = _check_images(images)
        return _segments(x, None, self.segmenter, _entropy(self.options.seed if seeds is None else seeds, len(x)))[0]

    def explain(self, images, targets=None, *, segments: np.ndarray | None = None,
                seeds: Sequence | None = None) -> LimeResult:
        """Explain ``images`` (N, H, W, 3) in [0, 1] for ``targets`` ((N,) or (N, k) class ids, or one int
        for all; None: the ``top_labels`` predicted ones). ``segments`` (N, H, W) skips segmentation;
        ``seeds`` (one per image) replaces the options' seed (batch runs seed each image by its image id)."""
        if targets is not None and np.ndim(targets) == 0:
            targets = np.full(len(images), int(targets))
        return LimeResult(tuple(explain_lime(self.model, images, self.options, segments=segments, labels=targets,
                                             seed=seeds)))


# ------------------------------------------------------------------------------------ sampling and prediction


def _check_images(images: np.ndarray) -> np.ndarray:
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] != 3 or x.shape[0] < 1:
        raise ValueError(f"images of shape {x.shape}: expected (N, H, W, 3) with N >= 1")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"images of dtype {x.dtype}: expected float RGB in [0, 1]")
    return x.astype(np.float32, copy=False)


def _entropy(seed, n: int) -> list:
    if isinstance(seed, (int, np.integer)):
        return [(int(seed), i) for i in range(n)]
    seeds = list(seed)
    if len(seeds) != n:
        raise ValueError(f"{len(seeds)} seeds for {n} images: expected an int or one seed per image")
    return [tuple(int(v) for v in s) if isinstance(s, (tuple, list)) else int(s) for s in seeds]


def _segments(x: np.ndarray, segments, segmenter, entropy) -> tuple[np.ndarray, str]:
    n, h, w, _ = x.shape
    if segments is None:
        seg_cfg = make_segmenter(segmenter)
        seg_seeds = [int(np.random.SeedSequence(e).generate_state(1)[0]) for e in entropy]
        return seg_cfg.segment(x, seg_seeds), seg_cfg.name
    seg = np.asarray(segments)
    if seg.shape != (n, h, w) or not np.issubdtype(seg.dtype, np.integer):
        raise ValueError(f"segments of shape {seg.shape} and dtype {seg.dtype}: expected ({n}, {h}, {w}) integers")
    return np.stack([relabel(s) for s in seg]), "given"


def _fills(x: np.ndarray, seg: np.ndarray, hide_color) -> np.ndarray:
    """(N, H, W, 3) float32 colour of each pixel when its superpixel is hidden."""
    if isinstance(hide_color, str):
        if hide_color not in HIDE_COLORS:
            raise ValueError(f"unknown hide_color {hide_color!r}; expected one of {', '.join(HIDE_COLORS)}, "
                             "a number in [0, 1] or an RGB triple")
        hide_color = HIDE_COLORS[hide_color]
    if hide_color is not None:
        colour = np.asarray(hide_color, dtype=np.float32)
        if colour.shape not in ((), (3,)):
            raise ValueError(f"hide_color {hide_color!r}: expected a number or an RGB triple")
        return np.broadcast_to(colour, x.shape)
    n = len(x)
    s_max = int(seg.max()) + 1
    flat = (seg + np.arange(n)[:, None, None] * s_max).ravel()  # one id per (image, superpixel)
    counts = np.bincount(flat, minlength=n * s_max)
    means = np.stack([np.bincount(flat, weights=x[..., c].ravel(), minlength=n * s_max) for c in range(3)], axis=-1)
    means = (means / np.maximum(counts, 1)[:, None]).astype(np.float32)
    return means[flat].reshape(x.shape)


def _predict_perturbed(fn, x, seg, fill, pieces, masks, batch_size: int) -> np.ndarray:
    """Model outputs for rows ``a:b`` of image i's samples, for each piece ``(i, a, b)`` in order:
    (total rows, C) float64.

    A batch holds consecutive rows, across piece (image) boundaries; each piece's part is one ``np.where`` over
    flat (rows, H*W*3) arrays (kept superpixel: the image, else the fill), which numpy runs far faster than
    the same selection with a trailing axis of 3.
    """
    n, h, w, _ = x.shape
    flat_x, flat_fill = x.reshape(n, -1), np.ascontiguousarray(fill).reshape(n, -1)
    seg_flat = seg.reshape(n, -1)
    bounds = np.cumsum([0] + [b - a for _, a, b in pieces])  # piece p covers global rows bounds[p]:bounds[p+1]
    total = int(bounds[-1])
    pixel_ids: dict[int, np.ndarray] = {}
    outs = []
    for start in range(0, total, batch_size):
        stop = min(start + batch_size, total)
        parts = []
        first = int(np.searchsorted(bounds, start, side="right")) - 1
        for p in range(first, len(pieces)):  # the pieces this batch spans
            if bounds[p] >= stop:
                break
            i, a, _ = pieces[p]
            lo, hi = max(start, bounds[p]) - bounds[p] + a, min(stop, bounds[p + 1]) - bounds[p] + a
            if i not in pixel_ids:
                pixel_ids[i] = np.repeat(seg_flat[i], 3)  # (H*W*3,): superpixel of each value
            keep = masks[i][lo:hi][:, pixel_ids[i]]  # (hi - lo, H*W*3) by indexing
            parts.append(np.where(keep, flat_x[i], flat_fill[i]))
        batch = (parts[0] if len(parts) == 1 else np.concatenate(parts)).reshape(-1, h, w, 3)
        out = np.asarray(fn(batch))
        if out.ndim != 2 or out.shape[0] != len(batch):
            raise ValueError(f"model output of shape {out.shape} for {len(batch)} images: expected "
                             f"({len(batch)}, classes)")
        outs.append(out.astype(np.float64))
    probs = np.concatenate(outs)
    if not np.isfinite(probs).all():
        raise ValueError("model output has NaN or infinite values")
    return probs


def _check_probabilities(probs: np.ndarray, control_variate: bool) -> None:
    if control_variate and (probs.min() < 0.0 or probs.max() > 1.0):
        log.warning("control_variate: the model's outputs span [%.3g, %.3g], not probabilities in [0, 1]; "
                    "those images are explained without it", probs.min(), probs.max())


def _targets(labels, top_labels: int, probs0: np.ndarray, n: int) -> np.ndarray:
    """(N, k) class indices to explain per image."""
    c = probs0.shape[1]
    if labels is None:
        if not 1 <= top_labels <= c:
            raise ValueError(f"top_labels {top_labels}: expected 1..{c} (the model has {c} classes)")
        # as the reference: the top_labels highest, highest first
        return np.argsort(probs0, axis=1, kind="stable")[:, ::-1][:, :top_labels]
    t = np.asarray(labels)
    if t.ndim == 1:
        t = t[:, None]
    if t.ndim != 2 or t.shape[0] != n or not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"labels of shape {t.shape} and dtype {t.dtype}: expected ({n},) or ({n}, k) class indices")
    if t.min() < 0 or t.max() >= c:
        raise ValueError(f"labels {sorted(set(t.ravel().tolist()))}: expected class indices in 0..{c - 1}")
    return t
