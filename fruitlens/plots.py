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


# --- report ---


def history_figure(history):
    """Loss and accuracy per epoch (train and validation) from a ``history`` table, as a figure.

    The report draws this only when a run has ``history.parquet`` but no ``curves.png``.
    """
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    epochs = history["epoch"] if "epoch" in history else np.arange(1, len(history) + 1)
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for col, style in ((metric, "-"), (f"val_{metric}", "--")):
            if col in history and history[col].notna().any():
                ax.plot(epochs, history[col], style, marker="o", markersize=3, label=col)
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
