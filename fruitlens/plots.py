"""Every PNG fruitlens writes: explanation pictures, grids, curves. All writes are atomic.

The picture API for explanations (numpy compositing and PIL text, no matplotlib figure per picture):

- ``lime_on_photo`` / ``heat_on_photo`` draw LIME superpixels or a heatmap on the photo at the photo's own
  resolution and aspect (``overlays.py``), ``colorbar`` / ``with_colorbar`` give it a colour scale;
- ``Caption`` says what a picture shows; ``add_caption`` writes it in a white band under the picture
  (with colour swatches and a colour scale), ``save_png(image, path, caption)`` stores it in the PNG's
  ``Description`` (``read_caption``) (``captions.py``);
- ``side_by_side`` puts titled panels in a row; ``labelled_grid``, ``activation_grid``, ``filter_grid``
  and ``plot_gallery`` title their grids and label their tiles.

Matplotlib runs on the Agg backend (no display) for curves, the confusion matrix and LIME's weight density.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from PIL import Image  # noqa: E402

from fruitlens.captions import (  # noqa: E402, F401  (re-exported: the picture API lives in plots)
    MIN_SIDE,
    Caption,
    add_caption,
    as_uint8,
    colorbar,
    enlarge,
    legend_band,
    text_band,
    title_band,
    wrapped_count,
)
from fruitlens.images import to_uint8  # noqa: E402
from fruitlens.overlays import (  # noqa: E402, F401  (re-exported)
    ANNOTATED_MAX_SIDE,
    OPPOSE_RGB,
    SUPPORT_RGB,
    Box,
    annotate,
    colorize,
    display_size,
    heat_on_photo,
    lime_legend,
    lime_on_photo,
    lime_superpixel_signs,
    photo_box,
    resize_heat,
    resize_ids,
    upscale_nearest,
    with_colorbar,
)
from fruitlens.pngs import encode_png  # noqa: E402
from fruitlens.tables import atomic_path  # noqa: E402

# The one matplotlib style of every figure fruitlens draws (curves, confusion, sanity, class evidence, trend,
# LIME density): the font the PIL captions use too (``captions.FONT_FAMILY``), no label under 8 pt.
STYLE = {"font.family": "sans-serif", "font.sans-serif": ["DejaVu Sans"], "font.size": 9, "axes.titlesize": 9,
         "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8, "legend.fontsize": 8,
         "figure.titlesize": 10, "savefig.bbox": "tight", "savefig.pad_inches": 0.05}
MIN_FONT_PT = 8


class _Pyplot:
    """``matplotlib.pyplot`` with ``STYLE``, imported on first use: a cached rerun draws nothing and should not
    pay for it (0.2-0.7 s, every pipeline run imports this module through the explanation engine). Every
    module draws with this ``plt`` (``from fruitlens.plots import plt``), never its own pyplot import."""

    def __getattr__(self, name: str):
        import matplotlib.pyplot

        matplotlib.rcParams.update(STYLE)
        return getattr(matplotlib.pyplot, name)


plt = _Pyplot()


PICTURE_HEIGHT = "picture_height"  # text chunk: the rows of a captioned PNG above its caption band


def save_png(image: np.ndarray, path: str | os.PathLike, caption: Caption | str | None = None, *,
             text: dict[str, str] | None = None) -> Path:
    """Write an (H, W, 3) or (H, W) image, float in [0, 1] or uint8, as a PNG, atomically.

    ``caption`` (a ``Caption`` or text) is stored as the PNG's ``Description`` text chunk, so tools and
    tests can read what the picture shows (``read_caption``) without looking at pixels; ``text`` adds
    other chunks (e.g. the ``palette`` of a heatmap, for pictures composed from this one; ``PICTURE_HEIGHT``,
    the rows above the caption band, which the report shows without the band).
    """
    arr = image if image.dtype == np.uint8 else to_uint8(image)
    chunks = dict(text or {})
    if caption is not None:
        chunks["Description"] = caption.text() if isinstance(caption, Caption) else str(caption)
    data = encode_png(arr, chunks)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
    return Path(path)


def read_png_text(path: str | os.PathLike) -> dict[str, str]:
    """Every text chunk ``save_png`` stored in a PNG (``Description``, and any ``text`` it was given)."""
    with Image.open(path) as img:
        img.load()
        return dict(getattr(img, "text", {}))


def read_caption(path: str | os.PathLike) -> str | None:
    """The ``Description`` text ``save_png`` stored in a PNG, None when it has none."""
    return read_png_text(path).get("Description")


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Write a matplotlib figure as a PNG atomically and close it."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return Path(path)


def overlay(image: np.ndarray, heatmap: np.ndarray, palette: str = "viridis", alpha: float = 0.4) -> np.ndarray:
    """Blend a (h, w) heatmap in [0, 1] over an (H, W, 3) image in [0, 1]; the heatmap is resized to (H, W)."""
    if heatmap.shape != image.shape[:2]:
        resized = Image.fromarray(np.clip(heatmap, 0, 1).astype(np.float32), mode="F").resize(
            (image.shape[1], image.shape[0]), Image.Resampling.BILINEAR)
        heatmap = np.asarray(resized)
    return (1.0 - alpha) * image + alpha * colorize(heatmap, palette)


def image_grid(images: np.ndarray, ncols: int = 8, pad: int = 2, pad_value: float = 1.0) -> np.ndarray:
    """Tile (N, H, W, C) or (N, H, W) images into one array, ``ncols`` per row, with padding."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    n, h, w, c = images.shape
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), pad_value, dtype=images.dtype)
    for i in range(n):
        r, q = divmod(i, ncols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = images[i]
    return grid[..., 0] if c == 1 else grid


def titled_grid(images: Sequence[np.ndarray], titles: Sequence[str], ncols: int = 5, size: float = 2.0,
                suptitle: str | None = None):
    """A matplotlib figure of images with a title under each (for galleries and previews)."""
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.3), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img, title in zip(axes.ravel(), images, titles, strict=False):
        ax.imshow(np.clip(img, 0, 1), cmap=None if img.ndim == 3 else "gray")
        ax.set_title(title, fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


# --- LIME ---------------------------------------------------------------------------------------------------

def lime_boundaries(image: np.ndarray, segments: np.ndarray, color=(1.0, 1.0, 0.0)) -> np.ndarray:
    """(H, W, 3) image with the boundaries of every superpixel of (H, W) ``segments`` drawn in ``color``.

    A uint8 image comes back uint8 (``color`` scaled to 0-255), any other as float32 in [0, 1].
    """
    from fruitlens.overlays import inner_edges

    segments = np.asarray(segments)
    if segments.shape != np.shape(image)[:2]:
        raise ValueError(f"segments of shape {segments.shape}: expected the image's {np.shape(image)[:2]}")
    if np.asarray(image).dtype == np.uint8:
        out, ink = np.array(image), np.round(np.asarray(color, np.float64) * 255).astype(np.uint8)
    else:
        out, ink = np.clip(np.asarray(image, np.float32), 0, 1), np.asarray(color, np.float32)
    out[inner_edges(segments.astype(np.int64) + 1)] = ink  # + 1: superpixel 0 is no background
    return out


# --- Grad-CAM, activations, filters (issue 5) ---

DISPLAY_MAX = 512  # longest side of photos shown under heatmaps


def display_photo(photo: np.ndarray, fallback: np.ndarray, max_side: int = DISPLAY_MAX) -> np.ndarray:
    """The photo to draw a heatmap on: the original file's pixels, shrunk to ``max_side``, or ``fallback``.

    Tiny model inputs (20 x 20) make unreadable overlays, so the original photo is preferred; ``fallback``
    (the model input) is used when the photo is smaller than it.
    """
    if photo.shape[0] * photo.shape[1] < fallback.shape[0] * fallback.shape[1]:
        photo = fallback
    h, w = photo.shape[:2]
    if max(h, w) > max_side:
        scale = max_side / max(h, w)
        img = Image.fromarray(to_uint8(photo)).resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                                      Image.Resampling.BILINEAR)
        photo = np.asarray(img, dtype=np.float32) / 255.0
    return photo


def heatmap_picture(heatmap: np.ndarray, size: tuple[int, int] | None = None, palette: str = "viridis") -> np.ndarray:
    """(h, w) heatmap in [0, 1] -> (H, W, 3) colours, bilinearly resized to ``size`` = (H, W)."""
    heatmap = np.clip(np.asarray(heatmap, dtype=np.float32), 0.0, 1.0)
    if size is not None and heatmap.shape != tuple(size):
        heatmap = np.asarray(Image.fromarray(heatmap, mode="F").resize((size[1], size[0]), Image.Resampling.BILINEAR))
    return colorize(heatmap, palette)


def _fit_height(image: np.ndarray, height: int) -> np.ndarray:
    """uint8 (H, W, 3) resized to ``height`` rows, keeping its aspect (nearest when enlarging by an integer)."""
    h, w = image.shape[:2]
    if h == height:
        return image
    if height % h == 0:
        return upscale_nearest(image, height // h)
    width = max(1, round(w * height / h))
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS))


def side_by_side(panels: Sequence[tuple[str, np.ndarray] | np.ndarray], *, height: int | None = None,
                 pad: int = 6) -> np.ndarray:
    """Panels in one row, each with its title above it, all scaled to one height keeping their aspect.

    Args:
        panels: (title, (H_i, W_i, 3) image) pairs, float in [0, 1] or uint8; a bare image has no title.
        height: panel height in pixels (default: the tallest panel, at least 224).
        pad: white gap between and around panels.

    Returns:
        (h, w, 3) uint8: the title bands (all as tall as the tallest) over the panels, on white.
    """
    if len(panels) == 0:
        raise ValueError("side_by_side got no panel: expected at least one (title, image)")
    pairs = [p if isinstance(p, tuple) else ("", p) for p in panels]
    images = [as_uint8(img, f"panel {title!r}") for title, img in pairs]
    height = height or max(224, *(img.shape[0] for img in images))
    fitted = [_fit_height(img, height) for img in images]
    titles = [str(title) for title, _ in pairs]
    size = min(18, max(14, height // 16))
    lines = max(wrapped_count([t], img.shape[1], size) if t else 0 for t, img in zip(titles, fitted, strict=True))
    columns = [np.concatenate([text_band([t], img.shape[1], size=size, align="center", min_lines=lines), img])
               if lines else img for t, img in zip(titles, fitted, strict=True)]
    tallest = max(c.shape[0] for c in columns)
    row = [np.full((tallest, pad, 3), 255, np.uint8)]
    for col in columns:
        row += [np.pad(col, ((0, tallest - col.shape[0]), (0, 0), (0, 0)), constant_values=255),
                np.full((tallest, pad, 3), 255, np.uint8)]
    return np.pad(np.concatenate(row, axis=1), ((pad, pad), (0, 0), (0, 0)), constant_values=255)


def save_side_by_side(path: str | os.PathLike, photo: np.ndarray, gradcam_overlay: np.ndarray,
                      lime_path: str | os.PathLike | None = None) -> Path:
    """Write photo | Grad-CAM overlay | LIME explanation (when ``lime_path`` is given) as one titled PNG."""
    panels = [("photo", photo), ("Grad-CAM", gradcam_overlay)]
    if lime_path is not None:
        with Image.open(lime_path) as img:
            panels.append(("LIME", np.asarray(img.convert("RGB"))))
    return save_png(side_by_side(panels), path)


GRID_TITLE_SIZE = 14


def labelled_grid(tiles: Sequence[np.ndarray], labels: Sequence[str], *, ncols: int = 8,
                  title: str | Sequence[str] | None = None, pad: int = 4, label_size: int = 11) -> np.ndarray:
    """Tiles in rows of ``ncols``, each with its label under it, and a title band over the whole grid.

    Args:
        tiles: (h_i, w_i, 3) images, float in [0, 1] or uint8; all are resized to the first one's size.
        labels: one text per tile, wrapped to the tile width (every label band as tall as the tallest).
        title: a line or lines centred over the grid.

    Returns:
        (H, W, 3) uint8 on white.
    """
    if len(tiles) != len(labels):
        raise ValueError(f"{len(tiles)} tiles but {len(labels)} labels: expected one label per tile")
    if len(tiles) == 0:
        raise ValueError("labelled_grid got no tile: expected at least one")
    first = as_uint8(tiles[0], "tile 0")
    h, w = first.shape[:2]
    fitted = [first] + [_fit_tile(as_uint8(t, f"tile {i + 1}"), (h, w)) for i, t in enumerate(tiles[1:])]
    lines = max(wrapped_count([str(lab)], w, label_size) for lab in labels)
    cells = [np.concatenate([t, text_band([str(lab)], w, size=label_size, align="center", min_lines=lines)])
             for t, lab in zip(fitted, labels, strict=True)]
    grid = image_grid(np.stack(cells), ncols=ncols, pad=pad, pad_value=255)
    if title is None:
        return grid
    return np.concatenate([title_band(title, grid.shape[1], size=GRID_TITLE_SIZE), grid])


def _fit_tile(tile: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if tile.shape[:2] == tuple(size):
        return tile
    return np.asarray(Image.fromarray(tile).resize((size[1], size[0]), Image.Resampling.BILINEAR))


def _upscale(images: np.ndarray, min_side: int) -> np.ndarray:
    """Nearest-neighbour integer upscaling of (N, h, w, ...) so that tiles are at least ``min_side`` px."""
    factor = max(1, -(-min_side // max(1, min(images.shape[1:3]))))
    return upscale_nearest(images, factor, axes=(1, 2))


def activation_grid(maps: np.ndarray, channels: int = 40, ncols: int = 8, palette: str = "viridis",
                    min_side: int = 48, *, title: str | Sequence[str] | None = None,
                    input_image: np.ndarray | None = None) -> np.ndarray:
    """One layer's (h, w, K) activations -> a grid of the first ``channels`` maps, ``ncols`` per row.

    Each channel is scaled to [0, 1] on its own (a constant channel is drawn as zeros). Without ``title``
    and ``input_image`` the bare grid comes back (float, 2 px padding); with either, a labelled uint8 grid:
    ``title`` over it (model, layer, input file), the input image as the first tile labelled "input",
    each map labelled with its channel number, and a colour scale under the title.
    """
    maps = np.asarray(maps, dtype=np.float32)[..., :channels]
    lo = maps.min(axis=(0, 1), keepdims=True)
    span = maps.max(axis=(0, 1), keepdims=True) - lo
    scaled = np.divide(maps - lo, span, out=np.zeros_like(maps), where=span > 0)
    tiles = _upscale(colorize(np.moveaxis(scaled, -1, 0), palette), min_side)  # (K, H, W, 3)
    if title is None and input_image is None:
        return image_grid(tiles, ncols=ncols, pad=2)
    cells = list(tiles)
    labels = [f"ch {k}" for k in range(len(cells))]
    if input_image is not None:
        cells.insert(0, _fit_tile(as_uint8(input_image, "input_image"), tiles.shape[1:3]))
        labels.insert(0, "input")
    grid = labelled_grid(cells, labels, ncols=ncols)
    scale = colorbar(min(grid.shape[1], 360), palette, ("low", "high (per channel)"), orientation="horizontal")
    scale = np.pad(scale, ((0, 0), (0, grid.shape[1] - scale.shape[1]), (0, 0)), constant_values=255)
    head = [title_band(title, grid.shape[1], size=GRID_TITLE_SIZE)] if title is not None else []
    return np.concatenate([*head, scale, grid])


def filter_grid(patterns: np.ndarray, ncols: int = 8, min_side: int = 48, *,
                title: str | Sequence[str] | None = None) -> np.ndarray:
    """(F, H, W, 3) filter patterns in [0, 1] -> one grid, ``ncols`` per row, each stretched to full contrast.

    With ``title`` the grid comes back as uint8 with the title over it and each pattern labelled with its
    filter number; without, the bare float grid.
    """
    p = np.asarray(patterns, dtype=np.float32)
    lo = p.min(axis=(1, 2, 3), keepdims=True)
    span = p.max(axis=(1, 2, 3), keepdims=True) - lo
    stretched = _upscale(np.divide(p - lo, span, out=np.full_like(p, 0.5), where=span > 0), min_side)
    if title is None:
        return image_grid(stretched, ncols=ncols, pad=2)
    return labelled_grid(list(stretched), [f"filter {k}" for k in range(len(stretched))], ncols=ncols, title=title)


# --- report ---


def history_figure(history, title: str | None = None):
    """Loss and accuracy per epoch (train and validation) from a ``history`` table, as a figure.

    Training saves it as ``curves.png``; the report draws it itself when a run has no ``curves.png``.
    """
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    epochs = history["epoch"] if "epoch" in history else np.arange(1, len(history) + 1)
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for col, style in ((metric, "-"), (f"val_{metric}", "--")):
            if col in history and history[col].notna().any():
                ax.plot(epochs, history[col], style, marker="o", markersize=3, label=col)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 1.5
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# --- Training and evaluation (curves, confusion matrix, galleries, annotated copies, augmentation) ---


def plot_history(history, path: str | os.PathLike, title: str | None = None) -> Path:
    """Loss and accuracy per epoch, train and validation, side by side (a `history` table in)."""
    return save_figure(history_figure(history, title=title), path)


def plot_confusion(matrix: np.ndarray, classes: Sequence[str], path: str | os.PathLike,
                   title: str | None = None) -> Path:
    """A (C, C) confusion matrix (rows: true, columns: predicted), row-normalised colours, counts written."""
    matrix = np.asarray(matrix)
    n = len(classes)
    side = min(16.0, 2.0 + 0.45 * n)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=float), where=rows > 0)
    im = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), classes, rotation=90, fontsize=7 if n > 15 else 9)
    ax.set_yticks(range(n), classes, fontsize=7 if n > 15 else 9)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 40:
        for i, j in zip(*np.nonzero(matrix), strict=True):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=6 if n > 15 else 8,
                    color="white" if share[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of true class")
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def plot_gallery(images: Sequence[np.ndarray], titles: Sequence[str], path: str | os.PathLike, ncols: int = 5,
                 suptitle: str | None = None, empty_text: str = "nothing to show", min_side: int = 128) -> Path:
    """A titled grid of images (mistakes, previews) written as PNG; a small note when there are none.

    Each title is wrapped under its own tile (every tile's text band as tall as the longest title), so
    titles never overlap; small images are enlarged (nearest neighbour) to ``min_side`` pixels first.
    """
    if len(images) == 0:
        return save_png(text_band([suptitle, empty_text] if suptitle else [empty_text], 320, align="center"),
                        path, empty_text)
    tiles = [enlarge(as_uint8(img, f"image {i}"), min_side) for i, img in enumerate(images)]
    grid = labelled_grid(tiles, [str(t) for t in titles], ncols=ncols, title=suptitle, label_size=12)
    return save_png(grid, path, suptitle)
