"""LIME's explanation as the lime package draws it (supporting superpixels green, opposing ones red, outlined
or filled), for notebooks, and the density of its weights per label (to pick a threshold), which explain
writes with ``lime.plots: all`` or ``density``. The photo-resolution pictures of a run are drawn by
``fruitlens.overlays`` and ``fruitlens.batch.pictures``.
"""

from __future__ import annotations

import numpy as np

from fruitlens.overlays import OPPOSE_RGB, SUPPORT_RGB, lime_superpixel_signs
from fruitlens.plots import plt


def lime_explanation(image: np.ndarray, segments: np.ndarray, weights: np.ndarray, *, threshold: float = 0.0,
                     num_features: int | None = None, display: str = "outline", hide_rest: bool = False,
                     show_negative: bool = True, fill_alpha: float = 0.4, rest_value: float = 0.5) -> np.ndarray:
    """LIME's explanation drawn over the image: supporting superpixels green, opposing ones red.

    Args:
        image: (H, W, 3) float RGB in [0, 1].
        segments: (H, W) int superpixel ids 0..S-1.
        weights: (S,) weight per superpixel for one label.
        threshold: only superpixels with |weight| above it are drawn (the R package's ``threshold``).
        num_features: at most this many superpixels, by |weight| (None: all above the threshold).
        display: "outline" (coloured boundaries) or "block" (coloured fill, ``fill_alpha`` opaque).
        hide_rest: paint every superpixel not drawn with ``rest_value`` (gray).
        show_negative: draw opposing superpixels too.

    Returns:
        (H, W, 3) float32 in [0, 1].
    """
    from skimage.segmentation import find_boundaries

    if display not in ("outline", "block"):
        raise ValueError(f"unknown display {display!r}; expected outline or block")
    signs = lime_superpixel_signs(weights, threshold=threshold, num_features=num_features,
                                  show_negative=show_negative)[segments]
    out = np.clip(np.asarray(image, dtype=np.float32), 0, 1).copy()
    if hide_rest:
        out[signs == 0] = rest_value
    for sign, rgb in ((1, SUPPORT_RGB), (-1, OPPOSE_RGB)):
        region = signs == sign
        if not region.any():
            continue
        if display == "block":
            out[region] = (1 - fill_alpha) * out[region] + fill_alpha * np.asarray(rgb, np.float32)
        else:  # the boundary of each drawn superpixel, inside it
            labels = np.where(region, segments + 1, 0)
            edge = find_boundaries(labels, mode="inner") & region
            out[edge] = rgb
    return out


def lime_weight_density(weights: dict[str, np.ndarray], *, threshold: float | None = None, title: str | None = None):
    """A figure with the density of superpixel weights per label (to pick a threshold), ±threshold dashed."""
    from scipy.stats import gaussian_kde

    fig, ax = plt.subplots(figsize=(4.5, 3.0))
    values = [np.asarray(w, dtype=np.float64) for w in weights.values()]
    lo = min((v.min() for v in values if v.size), default=-1.0)
    hi = max((v.max() for v in values if v.size), default=1.0)
    pad = 0.1 * (hi - lo) + 1e-6
    grid = np.linspace(lo - pad, hi + pad, 200)
    for name, v in zip(weights, values, strict=True):
        if v.size >= 2 and np.ptp(v) > 0:
            try:
                ax.plot(grid, gaussian_kde(v)(grid), label=str(name))
                ax.plot(v, np.zeros_like(v), "|", color=ax.lines[-1].get_color(), alpha=0.6)
                continue
            except np.linalg.LinAlgError:
                pass
        ax.hist(v, bins=10, density=True, alpha=0.5, label=str(name))
    if threshold is not None:
        for t in (threshold, -threshold):
            ax.axvline(t, color="gray", linestyle="--", linewidth=1)
    ax.set_xlabel("superpixel weight")
    ax.set_ylabel("density")
    ax.legend(fontsize=8, loc="upper right")
    if title:
        ax.set_title(title, fontsize=9)
    return fig
