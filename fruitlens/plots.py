"""Every PNG fruitlens writes: grids, overlays, curves. All writes are atomic.

Matplotlib runs on the Agg backend (no display). Functions that build a picture return arrays or
figures; ``save_*`` functions write them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from fruitlens.images import to_uint8  # noqa: E402
from fruitlens.tables import atomic_path  # noqa: E402


def save_png(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write an (H, W, 3) or (H, W) image, float in [0, 1] or uint8, as a PNG, atomically."""
    arr = image if image.dtype == np.uint8 else to_uint8(image)
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
    return Path(path)


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Write a matplotlib figure as a PNG atomically and close it."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return Path(path)


def colorize(heatmap: np.ndarray, palette: str = "viridis") -> np.ndarray:
    """(H, W) values in [0, 1] -> (H, W, 3) float RGB through a matplotlib colormap."""
    return matplotlib.colormaps[palette](np.clip(heatmap, 0.0, 1.0))[..., :3].astype(np.float32)


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


# --- Training and evaluation (curves, confusion matrix, galleries, annotated copies, augmentation) ---


def plot_history(history, path: str | os.PathLike, title: str | None = None) -> Path:
    """Loss and accuracy per epoch, train and validation, side by side (a `history` table in)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        ax.plot(history["epoch"], history[metric], marker="o", label=f"train {metric}")
        if history[f"val_{metric}"].notna().any():
            ax.plot(history["epoch"], history[f"val_{metric}"], marker="o", label=f"validation {metric}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


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
                 suptitle: str | None = None, empty_text: str = "nothing to show") -> Path:
    """A titled grid of images (mistakes, previews) written as PNG; a small note when there are none."""
    if len(images) == 0:
        fig, ax = plt.subplots(figsize=(4, 1))
        ax.axis("off")
        ax.text(0.5, 0.5, empty_text, ha="center", va="center")
        return save_figure(fig, path)
    return save_figure(titled_grid(images, titles, ncols=ncols, suptitle=suptitle), path)


def annotate(image: np.ndarray, text: str, min_side: int = 160) -> np.ndarray:
    """An (H, W, 3) image (float [0, 1] or uint8) with ``text`` on a dark band at the top; returns uint8.

    Small images are enlarged (nearest neighbour) to at least ``min_side`` pixels so the text is readable.
    """
    from PIL import ImageDraw, ImageFont

    arr = image if image.dtype == np.uint8 else to_uint8(image)
    img = Image.fromarray(arr)
    scale = max(1, -(-min_side // max(1, min(img.size))))
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
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
