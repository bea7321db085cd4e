"""Reading image files as RGB arrays, one conversion for every step (index, train, predict, explain).

Every mode the index marks usable is converted the same way: grayscale is replicated, CMYK goes through
PIL's conversion, transparency is composited over white (Fruits-360 and the demo data have white
backgrounds), and 16-bit images are scaled down to 8 bits.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

# Refuse images whose declared size is larger than this (decompression bombs): 8k x 8k.
MAX_PIXELS = 64_000_000


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert a PIL image of any usable mode to 8-bit RGB (alpha composited over white)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.uint32)
        scale = 257 if arr.max(initial=0) > 255 else 1  # 16-bit -> 8-bit, 8-bit stored as I stays
        img = Image.fromarray((arr // scale).clip(0, 255).astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def read_rgb(path: str | os.PathLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read one image file as (H, W, 3) float32 RGB in [0, 1], resized to ``size`` = (height, width).

    Raises:
        ValueError: the file is not a usable image (message names the file and the reason).
    """
    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_PIXELS:
                raise ValueError(f"{path}: {img.width}x{img.height} pixels, expected at most {MAX_PIXELS}")
            rgb = to_rgb(img)
            if size is not None and rgb.size != (size[1], size[0]):
                rgb = rgb.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.float32) / 255.0
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{path}: cannot read image ({exc})") from exc


def read_batch(paths: Sequence[str | os.PathLike], size: tuple[int, int]) -> np.ndarray:
    """Read many files as (N, H, W, 3) float32 in [0, 1]; all resized to ``size`` = (height, width)."""
    out = np.empty((len(paths), size[0], size[1], 3), dtype=np.float32)
    for i, path in enumerate(paths):
        out[i] = read_rgb(path, size)
    return out


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[0, 1] float images -> uint8, for writing PNGs."""
    return (np.clip(images, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
