"""Explanations drawn on photos at the photo's own resolution: LIME superpixels, heatmaps, colour scales.

``fruitlens.plots`` re-exports every public name here; import them from there.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import matplotlib
import numpy as np
from PIL import Image

from fruitlens.captions import MIN_SIDE, as_uint8, colorbar
from fruitlens.images import to_uint8

SUPPORT_RGB = (0.0, 0.8, 0.0)  # green: superpixels supporting the label
OPPOSE_RGB = (0.9, 0.0, 0.0)  # red: superpixels opposing it


def upscale_nearest(array: np.ndarray, factor: int, axes: tuple[int, int] = (0, 1)) -> np.ndarray:
    """Repeat the two image ``axes`` of ``array`` ((H, W, ...) by default) ``factor`` times (nearest neighbour)."""
    if factor <= 1:
        return array
    return np.repeat(np.repeat(array, factor, axis=axes[0]), factor, axis=axes[1])


@lru_cache(maxsize=32)
def _lut(palette: str) -> np.ndarray:
    cmap = matplotlib.colormaps[palette]
    return cmap(np.arange(cmap.N))[:, :3].astype(np.float32)


def colorize(heatmap: np.ndarray, palette: str = "viridis") -> np.ndarray:
    """(H, W) values in [0, 1] -> (H, W, 3) float RGB through a matplotlib colormap.

    The colormap's own lookup table, indexed as matplotlib indexes it (value * N, the top value in the last
    entry), without its per-call checks and RGBA conversion.
    """
    lut = _lut(palette)
    values = np.clip(np.asarray(heatmap), 0.0, 1.0)
    return lut[np.minimum((values * len(lut)).astype(np.intp), len(lut) - 1)]


def lime_superpixel_signs(weights: np.ndarray, *, threshold: float = 0.0, num_features: int | None = None,
                          show_negative: bool = True) -> np.ndarray:
    """(S,) int8: +1 for superpixels whose weight exceeds ``threshold``, -1 below ``-threshold``, else 0.

    Only the ``num_features`` largest |weight| count (all when None); ``show_negative=False`` drops the -1s.
    """
    w = np.asarray(weights, dtype=np.float64)
    signs = np.where(w > threshold, 1, np.where(w < -threshold, -1 if show_negative else 0, 0)).astype(np.int8)
    if num_features is not None:
        order = np.argsort(-np.abs(w), kind="stable")
        signs[order[num_features:]] = 0
    return signs


def lime_legend(label: str) -> list[tuple[tuple[float, float, float], str]]:
    """The swatches that say what ``lime_on_photo``'s colours mean for ``label``."""
    return [(SUPPORT_RGB, f"supports {label}"), (OPPOSE_RGB, f"against {label}")]


Box = tuple[int, int, int, int]  # (y0, x0, y1, x1): the region of a photo the model saw, y1/x1 exclusive


def photo_box(shape: Sequence[int], box: Sequence[int] | None) -> Box:
    """``box`` checked against a photo of ``shape`` (H, W, ...); None -> the whole photo."""
    h, w = int(shape[0]), int(shape[1])
    if box is None:
        return 0, 0, h, w
    y0, x0, y1, x1 = (int(v) for v in box)
    if not (0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w):
        raise ValueError(f"box {tuple(box)}: expected (y0, x0, y1, x1) with 0 <= y0 < y1 <= {h}, 0 <= x0 < x1 <= {w}")
    return y0, x0, y1, x1


def resize_ids(ids: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an (h, w) int map to ``size`` = (H, W), sampling at pixel centres."""
    h, w = ids.shape
    rows = np.minimum(((np.arange(size[0]) + 0.5) * h / size[0]).astype(np.intp), h - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * w / size[1]).astype(np.intp), w - 1)
    return ids[rows[:, None], cols[None, :]]


def resize_heat(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an (h, w) heatmap to ``size`` = (H, W), clipped to [0, 1]."""
    heat = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0.0, 1.0)
    if heat.shape != tuple(size):
        heat = np.asarray(Image.fromarray(heat, mode="F").resize((size[1], size[0]), Image.Resampling.BILINEAR))
    return np.clip(heat, 0.0, 1.0)


def display_size(photo: np.ndarray, box: Sequence[int] | None, min_side: int) -> tuple[np.ndarray, Box]:
    """The uint8 photo enlarged (Lanczos, integer factor) so its short side is at least ``min_side``, and
    ``box`` checked and scaled with it; photos already large enough come back at their own resolution."""
    base = as_uint8(photo, "photo")
    y0, x0, y1, x1 = photo_box(base.shape, box)
    factor = max(1, -(-min_side // min(base.shape[:2])))
    if factor > 1:
        h, w = base.shape[:2]
        base = np.asarray(Image.fromarray(base).resize((w * factor, h * factor), Image.Resampling.LANCZOS))
    return base, (y0 * factor, x0 * factor, y1 * factor, x1 * factor)


def inner_edges(labels: np.ndarray) -> np.ndarray:
    """Pixels of a non-zero region that touch another value (4-connected): ``skimage.segmentation.
    find_boundaries(labels, mode="inner")``, in four array comparisons instead of two morphology filters."""
    edge = np.zeros(labels.shape, bool)
    down = labels[1:] != labels[:-1]
    edge[1:] |= down
    edge[:-1] |= down
    right = labels[:, 1:] != labels[:, :-1]
    edge[:, 1:] |= right
    edge[:, :-1] |= right
    return edge & (labels != 0)


def _thicken(mask: np.ndarray, width: int) -> np.ndarray:
    """``mask`` dilated by a ``width`` x ``width`` square, centred as skimage's ``dilation`` centres it."""
    h, w = mask.shape
    out = np.zeros_like(mask)
    offsets = range(-((width - 1) // 2), width - (width - 1) // 2)  # each pixel takes its neighbours' value
    for dy in offsets:
        for dx in offsets:
            out[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)] |= \
                mask[max(0, dy):h - max(0, -dy), max(0, dx):w - max(0, -dx)]
    return out


def _blend(base: np.ndarray, colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """uint8 ``base`` + ``alpha`` * (colour - base), per pixel; pixels with alpha 0 stay bit-identical."""
    out = base.astype(np.float32)
    out += alpha[..., None] * (np.asarray(colour, np.float32) - out)
    return np.where(alpha[..., None] > 0, np.clip(out + 0.5, 0, 255).astype(np.uint8), base)


def lime_on_photo(photo: np.ndarray, segments: np.ndarray, weights: np.ndarray, *, box: Sequence[int] | None = None,
                  threshold: float = 0.0, num_features: int | None = 5, fill_alpha: float = 0.45,
                  outline: int | None = None, min_side: int = MIN_SIDE) -> np.ndarray:
    """LIME's superpixels drawn on the photo at the photo's own resolution and aspect.

    The superpixel id map (computed at the model's input size) is resized nearest-neighbour onto ``box``
    of the photo; the ``num_features`` superpixels with the largest |weight| above ``threshold`` get a
    translucent fill (green supporting, red opposing) and a crisp outline drawn at photo resolution; the
    rest of the photo is untouched.

    Args:
        photo: (H0, W0, 3) float in [0, 1] or uint8, at its own resolution.
        segments: (h, w) int superpixel ids 0..S-1 at the model's input size.
        weights: (S,) weight per superpixel id, for one label.
        box: (y0, x0, y1, x1) region of the photo the model saw (default: the whole photo).
        threshold, num_features: which superpixels are drawn (see ``lime_superpixel_signs``).
        fill_alpha: opacity of the fills.
        outline: outline width in pixels (default 1, 2 when the photo's short side is 300 px or more).
        min_side: photos with a shorter short side are first enlarged by the integer factor
            f = ceil(min_side / short side), so outlines stay crisp at display size.

    Returns:
        (H0 * f, W0 * f, 3) uint8; f = 1 for photos at least ``min_side`` pixels on the short side.
    """
    base, box = display_size(photo, box, min_side)
    segments = np.asarray(segments)
    weights = np.asarray(weights, dtype=np.float64)
    if segments.ndim != 2 or not np.issubdtype(segments.dtype, np.integer):
        raise ValueError(f"segments of shape {segments.shape} and dtype {segments.dtype}: expected (h, w) int ids")
    if weights.ndim != 1 or segments.size and (segments.min() < 0 or segments.max() >= len(weights)):
        raise ValueError(f"weights of shape {weights.shape}: expected (S,) covering superpixel ids 0..{segments.max()}")
    if not 0.0 <= fill_alpha <= 1.0:
        raise ValueError(f"fill_alpha {fill_alpha}: expected an opacity in [0, 1]")
    y0, x0, y1, x1 = box
    signs = np.zeros(base.shape[:2], np.int8)
    signs[y0:y1, x0:x1] = lime_superpixel_signs(weights, threshold=threshold, num_features=num_features)[
        resize_ids(segments, (y1 - y0, x1 - x0))]
    ids = np.full(base.shape[:2], -1, np.int64)
    ids[y0:y1, x0:x1] = resize_ids(segments, (y1 - y0, x1 - x0))
    drawn = np.where(signs != 0, ids + 1, 0)
    edge = inner_edges(drawn)
    width = outline or (2 if min(base.shape[:2]) >= 300 else 1)
    if width > 1:
        edge = _thicken(edge, width) & (signs != 0)
    out = base.copy()
    alpha = np.float32(fill_alpha)
    for sign, rgb in ((1, SUPPORT_RGB), (-1, OPPOSE_RGB)):
        where = signs == sign
        if fill_alpha > 0 and where.any():  # only the drawn pixels are blended; the rest stay the photo's
            pixels = out[where].astype(np.float32)
            pixels += alpha * (np.asarray(rgb, np.float32) * np.float32(255.0) - pixels)
            out[where] = np.clip(pixels + 0.5, 0, 255).astype(np.uint8)
        out[edge & where] = to_uint8(np.asarray(rgb, np.float32) * 0.8)
    return out


def heat_on_photo(photo: np.ndarray, heatmap: np.ndarray, *, box: Sequence[int] | None = None, palette: str = "jet",
                  max_alpha: float = 0.7, gamma: float = 1.0, min_side: int = MIN_SIDE) -> np.ndarray:
    """A heatmap over the photo, opaque where it is hot and absent where it is cold.

    The (h, w) heatmap is resized bilinearly onto ``box`` of the photo, coloured with ``palette`` and
    blended with per-pixel opacity ``max_alpha * heat ** gamma``: pixels with zero heat (and every pixel
    outside ``box``) keep the photo's exact values.

    Args:
        photo: (H0, W0, 3) float in [0, 1] or uint8, at its own resolution.
        heatmap: (h, w) in [0, 1] (e.g. Grad-CAM at the model's input or layer resolution).
        box: (y0, x0, y1, x1) region of the photo the model saw (default: the whole photo).
        palette: a matplotlib colormap name ("jet", "inferno", "magma", ...).
        max_alpha: opacity at heat 1.
        gamma: > 1 fades lukewarm regions, < 1 shows them more.
        min_side: photos with a shorter short side are first enlarged by the integer factor
            f = ceil(min_side / short side).

    Returns:
        (H0 * f, W0 * f, 3) uint8; f = 1 for photos at least ``min_side`` pixels on the short side.
    """
    base, box = display_size(photo, box, min_side)
    heatmap = np.asarray(heatmap)
    if heatmap.ndim != 2:
        raise ValueError(f"heatmap of shape {heatmap.shape}: expected (h, w)")
    if palette not in matplotlib.colormaps:
        raise ValueError(f"unknown palette {palette!r}; expected a matplotlib colormap such as jet, inferno")
    if not 0.0 <= max_alpha <= 1.0 or gamma <= 0:
        raise ValueError(f"max_alpha {max_alpha}, gamma {gamma}: expected max_alpha in [0, 1] and gamma > 0")
    y0, x0, y1, x1 = box
    heat = resize_heat(heatmap, (y1 - y0, x1 - x0))
    out = base.copy()
    out[y0:y1, x0:x1] = _blend(base[y0:y1, x0:x1], colorize(heat, palette) * 255.0,
                               (max_alpha * heat ** gamma).astype(np.float32))
    return out


def with_colorbar(image: np.ndarray, palette: str = "jet", labels: tuple[str, str] = ("low", "high")) -> np.ndarray:
    """(H, W, 3) picture with a vertical colour scale appended on its right; uint8 (H, W + bar, 3)."""
    top = as_uint8(image)
    return np.concatenate([top, colorbar(top.shape[0], palette, labels)], axis=1)


ANNOTATED_MAX_SIDE = 1024  # the long side of an annotated copy: never enlarged beyond it


def annotate(image: np.ndarray, text: str, min_side: int = 160, max_side: int = ANNOTATED_MAX_SIDE) -> np.ndarray:
    """An (H, W, 3) image (float [0, 1] or uint8) with ``text`` on a dark band at the top; returns uint8.

    Small images are enlarged (nearest) towards ``min_side`` pixels, never beyond ``max_side`` on the long
    side; a thinner strip (65535x1) is set on a white canvas of ``min_side``, so the text stays readable.
    """
    from PIL import ImageDraw, ImageFont

    img = Image.fromarray(image if image.dtype == np.uint8 else to_uint8(image))
    scale = max(1, min(-(-min_side // max(1, min(img.size))), max_side // max(img.size)))
    img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST) if scale > 1 else img
    if min(img.size) < min_side:
        canvas = Image.new("RGB", (max(img.width, min_side), max(img.height, min_side)), (255, 255, 255))
        canvas.paste(img, ((canvas.width - img.width) // 2, (canvas.height - img.height) // 2))
        img = canvas
    font_size = max(10, min(img.width // 14, 28))
    try:
        font = ImageFont.load_default(size=font_size)
    except TypeError:  # Pillow without FreeType sizes
        font = ImageFont.load_default()
    draw = ImageDraw.Draw(img)
    box = draw.textbbox((0, 0), text, font=font)
    band = box[3] - box[1] + 8
    draw.rectangle((0, 0, img.width, band), fill=(0, 0, 0))
    draw.text((4, 4 - box[1]), text, fill=(255, 255, 255), font=font)
    return np.asarray(img)
