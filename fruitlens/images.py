"""Reading image files as RGB arrays, one rule and one conversion for every step (index, train, predict, explain).

``open_image`` is the single accept/refuse rule: a regular file, a recognised format, at most ``MAX_PIXELS``,
a still image, a usable mode. Every mode it accepts is converted the same way: the EXIF orientation is
applied (a photo stored sideways with tag 6 is read upright), grayscale is replicated, CMYK goes through
PIL's conversion, transparency is composited over white (Fruits-360 and the demo data have white
backgrounds), and 16-bit images are scaled down to 8 bits. JPEGs read at a much smaller size are decoded
at reduced scale first (DCT scaling), so a huge photo read at 32x32 never holds its full-size pixels.
"""

from __future__ import annotations

import os
import stat
import struct
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Refuse images whose declared size is larger than this (decompression bombs): 8k x 8k.
MAX_PIXELS = 64_000_000
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}
MASK_SUFFIX = ".mask.png"  # evidence masks written next to demo images; not images to classify
USABLE_MODES = {"RGB", "RGBA", "L", "LA", "P", "PA", "CMYK", "YCbCr", "I;16", "I;16B", "I;16L", "I", "1", "RGBX"}
ORIENTATION_TAG = 0x0112
_SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that turn the stored image by 90 degrees
# What a broken EXIF block can raise inside PIL; never a reason to refuse an otherwise good image.
_EXIF_ERRORS = (OSError, ValueError, TypeError, KeyError, IndexError, SyntaxError, struct.error, ZeroDivisionError)


class ImageRefused(ValueError):
    """A file that is not a usable image; ``status`` is the `images` table status, the message names the file."""

    def __init__(self, path: object, status: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.status = status
        self.reason = reason


def regular_file_problem(path: str | os.PathLike) -> str | None:
    """``None`` for a regular file (after symlinks); else a status: missing, unreadable or not_a_file.

    Checked before any ``open`` so a named pipe, socket or device is never opened (opening a FIFO blocks).
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "unreadable"
    return None if stat.S_ISREG(st.st_mode) else "not_a_file"


def open_image(source: str | os.PathLike | BinaryIO, name: object = None) -> Image.Image:
    """Open an image under the one accept/refuse rule used by index, train, predict and explain.

    Args:
        source: a path (checked to be a regular file first) or an open binary file (e.g. ``io.BytesIO``).
        name: how to name the file in errors (default: ``source``).

    Returns:
        The lazily loaded PIL image; close it (``with open_image(p) as img:``).

    Raises:
        ImageRefused: status not_a_file, missing, unreadable, not_image, corrupt, too_large, animated or
            unsupported_mode, with a one-line reason.
    """
    name = source if name is None else name
    if isinstance(source, (str, os.PathLike)):
        problem = regular_file_problem(source)
        if problem:
            raise ImageRefused(name, problem, problem.replace("_", " ") + ("; never opened" if problem == "not_a_file"
                                                                          else ""))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(source)
        except UnidentifiedImageError as exc:
            raise ImageRefused(name, "not_image",
                               "not a recognised image format (content does not match the suffix)") from exc
        except Image.DecompressionBombError as exc:
            raise ImageRefused(name, "too_large", str(exc)) from exc
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageRefused(name, "corrupt", f"cannot read header: {exc}") from exc
    try:
        _check_opened(img, name)
    except ImageRefused:
        img.close()
        raise
    return img


def _check_opened(img: Image.Image, name: object) -> None:
    if img.width * img.height > MAX_PIXELS:
        raise ImageRefused(name, "too_large", f"{img.width}x{img.height} pixels; expected at most {MAX_PIXELS} "
                           "(possible decompression bomb)")
    if getattr(img, "n_frames", 1) > 1:
        raise ImageRefused(name, "animated", f"animated {img.format} with {img.n_frames} frames; "
                           "expected a still image")
    if img.mode not in USABLE_MODES:
        raise ImageRefused(name, "unsupported_mode", f"mode {img.mode}; expected RGB, grayscale, CMYK or with alpha")


def orientation(img: Image.Image) -> int:
    """The EXIF orientation (1-8) of an opened image; 1 when absent or unreadable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # PIL's "Corrupt EXIF data": handled as no tag
            value = img.getexif().get(ORIENTATION_TAG, 1)
    except _EXIF_ERRORS:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def upright_size(img: Image.Image) -> tuple[int, int]:
    """(width, height) as a viewer shows the image, after its EXIF orientation."""
    return (img.height, img.width) if orientation(img) in _SWAPS_AXES else (img.width, img.height)


def upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation (``ImageOps.exif_transpose``); a broken EXIF block leaves the image as stored."""
    if orientation(img) == 1:
        return img
    try:
        return ImageOps.exif_transpose(img)
    except _EXIF_ERRORS:
        return img


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


def decode(img: Image.Image, size: tuple[int, int] | None = None) -> Image.Image:
    """An opened image as upright 8-bit RGB, resized (bilinear) to ``size`` = (height, width) if given.

    A JPEG much larger than ``size`` is decoded at 1/2, 1/4 or 1/8 scale first (``Image.draft``), never
    below ``size``, so memory follows the target size rather than the file's.
    """
    if size is not None and img.format == "JPEG":
        h, w = size
        stored = (h, w) if orientation(img) in _SWAPS_AXES else (w, h)
        img.draft("RGB", stored)
    rgb = to_rgb(upright(img))
    if size is not None and rgb.size != (size[1], size[0]):
        rgb = rgb.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return rgb


def bounded_size(width: int, height: int, max_side: int) -> tuple[int, int] | None:
    """(height, width) scaled down so the long side is at most ``max_side`` (aspect kept, each side >= 1);
    None when the image is already within it."""
    if max(width, height) <= max_side:
        return None
    scale = max_side / max(width, height)
    return max(1, round(height * scale)), max(1, round(width * scale))


def read_uint8(path: str | os.PathLike, size: tuple[int, int] | None = None,
               max_side: int | None = None) -> np.ndarray:
    """Read one image file as (H, W, 3) uint8 RGB, upright, resized to ``size`` = (height, width).

    ``max_side`` (with no ``size``): a larger image is read at a working size whose long side is ``max_side``
    (JPEGs decoded at reduced scale), so memory follows the working size, not the file.

    Raises:
        ImageRefused: the file is not a usable image (message names the file and the reason).
    """
    with open_image(path) as img:
        if size is None and max_side is not None:
            size = bounded_size(*upright_size(img), max_side)
        try:
            return np.asarray(decode(img, size), dtype=np.uint8)
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageRefused(path, "corrupt", f"cannot read image ({exc})") from exc


def read_rgb(path: str | os.PathLike, size: tuple[int, int] | None = None,
             max_side: int | None = None) -> np.ndarray:
    """Read one image file as (H, W, 3) float32 RGB in [0, 1], upright, resized to ``size`` = (height, width)
    (or bounded to ``max_side``, see ``read_uint8``).

    Raises:
        ValueError: the file is not a usable image (message names the file and the reason).
    """
    return read_uint8(path, size, max_side).astype(np.float32) / 255.0


def read_batch(paths: Sequence[str | os.PathLike], size: tuple[int, int]) -> np.ndarray:
    """Read many files as (N, H, W, 3) float32 in [0, 1]; all resized to ``size`` = (height, width)."""
    out = np.empty((len(paths), size[0], size[1], 3), dtype=np.float32)
    for i, path in enumerate(paths):
        out[i] = read_rgb(path, size)
    return out


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Every image file under ``folder`` (recursively, sorted), skipping hidden files/folders and masks.

    Raises:
        ValueError: ``folder`` is not a directory.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"{folder}: not a directory; expected a folder of images")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [Path(dirpath, n) for n in filenames
                  if not n.startswith(".") and not n.endswith(MASK_SUFFIX)
                  and os.path.splitext(n)[1].lower() in IMAGE_SUFFIXES]
    return sorted(found)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[0, 1] float images -> uint8, for writing PNGs."""
    return (np.clip(images, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
