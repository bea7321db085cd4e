"""Text on pictures: captions under explanation PNGs, titles over panels and grids, legends, colour scales.

Everything is drawn with PIL on uint8 arrays (no matplotlib figure per picture). ``fruitlens.plots``
re-exports the public names; import them from there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fruitlens.images import to_uint8

MIN_SIDE = 224  # pictures with a shorter short side are enlarged before text goes under them
PAD = 6  # white margin around text, in pixels
INK = (20, 20, 20)
PAPER = (255, 255, 255)

LegendItem = tuple[Sequence[float], str]  # (rgb as floats in [0, 1] or ints in 0..255, text)


@dataclass(frozen=True)
class Caption:
    """What an explanation picture shows, written under it and into the PNG's metadata.

    Attributes:
        file: name of the explained image file (a name, not a full path).
        true_label: the image's label, None when unknown (unlabelled images).
        pred_label: the explained (predicted) class.
        prob: the model's probability for ``pred_label``, in [0, 1].
        method: e.g. "LIME", "Grad-CAM".
        detail: layer or segmenter, e.g. "layer conv2d_3", "slic 50 superpixels, 1000 samples".
        legend: what the colours mean, e.g. "green supports apple, red against apple".
    """

    file: str
    true_label: str | None
    pred_label: str
    prob: float
    method: str
    detail: str = ""
    legend: str | None = None

    def __post_init__(self) -> None:
        prob = float(self.prob)
        if not 0.0 <= prob <= 1.0:  # also refuses NaN
            raise ValueError(f"prob {self.prob!r}: expected a probability in [0, 1]")
        object.__setattr__(self, "prob", prob)

    def lines(self) -> list[str]:
        """Two or three short lines: prediction (and truth), method and file, legend."""
        first = f"predicted {self.pred_label} (p={self.prob:.2f})"
        if self.true_label:
            verdict = "right" if self.true_label == self.pred_label else "WRONG"
            first += f" | true {self.true_label} ({verdict})"
        second = " | ".join(part for part in (self.method, self.detail, self.file) if part)
        return [first, second] + ([self.legend] if self.legend else [])

    def text(self) -> str:
        """The lines joined by newlines (what ``save_png`` stores as the PNG's Description)."""
        return "\n".join(self.lines())


def layer_title(path: str) -> str:
    """How pictures name a layer: its own name, without the nested models it sits in, whose names Keras
    generates (``mobilenetv2_1.00_96_from_01/block_3_project`` -> ``block_3_project``; a file name written by
    ``layer_file_name``, ``..__block_3_project``, too). Tables keep the full path."""
    return str(path).replace("__", "/").rstrip("/").rsplit("/", 1)[-1]


def as_uint8(image: np.ndarray, name: str = "image") -> np.ndarray:
    """(H, W, 3) float in [0, 1] or uint8 -> uint8 (H, W, 3); (H, W) gray is replicated to RGB."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] != 3 or 0 in arr.shape:
        raise ValueError(f"{name} of shape {arr.shape}: expected (H, W, 3) or (H, W)")
    return arr if arr.dtype == np.uint8 else to_uint8(arr)


FONT_FILE = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"  # = plots.STYLE's font


@lru_cache(maxsize=16)
def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """The font of every picture at ``size`` pixels: DejaVu Sans, the one ``plots.STYLE`` gives matplotlib's
    figures (matplotlib ships it); Pillow's default font where it cannot be loaded."""
    try:
        return ImageFont.truetype(str(FONT_FILE), size)
    except (ImportError, OSError):  # no FreeType in this Pillow, or the file is gone
        try:
            return ImageFont.load_default(size=size)
        except (TypeError, ImportError, OSError):  # Pillow < 10.1 or built without FreeType
            return ImageFont.load_default()


def font_size(width: int) -> int:
    """A readable font size for text across a picture ``width`` pixels wide (12 to 18 px)."""
    return int(np.clip(width // 25, 12, 18))


def _line_height(fnt) -> int:
    ascent, descent = fnt.getmetrics()
    return ascent + descent + 3


def wrap(text: str, fnt, width: int) -> list[str]:
    """Split ``text`` into lines no wider than ``width`` pixels (at spaces; over-long words are cut)."""
    lines: list[str] = []
    for paragraph in str(text).split("\n"):
        if fnt.getlength(paragraph) <= width:  # most lines fit whole: one measurement instead of one per word
            lines.append(paragraph)
            continue
        current = ""
        for word in paragraph.split(" "):
            trial = f"{current} {word}" if current else word
            if fnt.getlength(trial) <= width:
                current = trial
                continue
            if current:
                lines.append(current)
            while fnt.getlength(word) > width and len(word) > 1:  # a word wider than the line: cut it
                cut = max(1, int(len(word) * width / fnt.getlength(word)))
                while cut > 1 and fnt.getlength(word[:cut]) > width:
                    cut -= 1
                lines.append(word[:cut])
                word = word[cut:]
            current = word
        lines.append(current)
    return lines


def text_band(lines: Sequence[str], width: int, *, size: int | None = None, align: str = "left",
              min_lines: int = 0) -> np.ndarray:
    """A white (h, width, 3) uint8 band with ``lines`` written in it, wrapped to the width, never cut.

    Args:
        lines: text lines (each may wrap onto several).
        width: band width in pixels.
        size: font size (default ``font_size(width)``).
        align: "left" or "center".
        min_lines: make the band at least this many lines tall (to line up bands side by side).
    """
    if align not in ("left", "center"):
        raise ValueError(f"unknown align {align!r}; expected left or center")
    fnt = font(size or font_size(width))
    inner = max(1, width - 2 * PAD)
    wrapped = [piece for line in lines for piece in wrap(line, fnt, inner)]
    step = _line_height(fnt)
    img = Image.new("RGB", (width, 2 * PAD + step * max(len(wrapped), min_lines)), PAPER)
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(wrapped):
        x = PAD if align == "left" else max(0, (width - fnt.getlength(line)) / 2)
        draw.text((x, PAD + i * step), line, fill=INK, font=fnt)
    return np.asarray(img)


def wrapped_count(lines: Sequence[str], width: int, size: int | None = None) -> int:
    """How many lines ``text_band`` needs for ``lines`` at ``width``."""
    fnt = font(size or font_size(width))
    return sum(len(wrap(line, fnt, max(1, width - 2 * PAD))) for line in lines)


def _rgb255(rgb: Sequence[float]) -> tuple[int, int, int]:
    values = [float(v) for v in rgb]
    if len(values) != 3:
        raise ValueError(f"colour {tuple(rgb)}: expected three values")
    if all(v <= 1.0 for v in values):
        values = [v * 255.0 for v in values]
    return tuple(int(round(min(255.0, max(0.0, v)))) for v in values)


def legend_band(items: Sequence[LegendItem], width: int, *, size: int | None = None) -> np.ndarray:
    """A white band with a colour swatch and its text per item, flowing onto new lines as needed (read-only:
    the same legend is drawn once per width and size)."""
    return _legend_band(tuple((tuple(rgb), str(text)) for rgb, text in items), int(width), size)


@lru_cache(maxsize=128)
def _legend_band(items: tuple[LegendItem, ...], width: int, size: int | None) -> np.ndarray:
    fnt = font(size or font_size(width))
    step = _line_height(fnt)
    box = step - 5
    placed: list[tuple[int, int, LegendItem]] = []
    x, row = PAD, 0
    for item in items:
        text = str(item[1])
        need = box + 4 + int(math.ceil(fnt.getlength(text))) + 2 * PAD
        if x > PAD and x + need > width:
            x, row = PAD, row + 1
        placed.append((x, row, item))
        x += need
    img = Image.new("RGB", (width, 2 * PAD + step * (row + 1)), PAPER)
    draw = ImageDraw.Draw(img)
    for x, r, (rgb, text) in placed:
        y = PAD + r * step
        draw.rectangle((x, y + 2, x + box, y + 2 + box), fill=_rgb255(rgb), outline=INK)
        draw.text((x + box + 4, y), str(text), fill=INK, font=fnt)
    return _read_only(np.asarray(img))


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def colorbar(length: int, palette: str = "jet", labels: tuple[str, str] = ("low", "high"), *,
             thickness: int = 14, orientation: str = "vertical", size: int | None = None) -> np.ndarray:
    """A colour scale strip with its two end labels, uint8 (read-only: each scale is drawn once).

    Args:
        length: pixels along the scale (the picture's height for "vertical", width for "horizontal").
        palette: a matplotlib colormap name.
        labels: texts at the low and the high end.
        thickness: pixels across the colour strip.
        orientation: "vertical" (high at the top, labels to the right: append to a picture's right side)
            or "horizontal" (low at the left, labels beside the strip: put it under a picture).

    Returns:
        (length, w, 3) for vertical, (h, length, 3) for horizontal; white background.
    """
    return _colorbar(int(length), str(palette), tuple(str(t) for t in labels), int(thickness), orientation, size)


@lru_cache(maxsize=64)
def _colorbar(length: int, palette: str, labels: tuple[str, ...], thickness: int, orientation: str,
              size: int | None) -> np.ndarray:
    if palette not in matplotlib.colormaps:
        raise ValueError(f"unknown palette {palette!r}; expected a matplotlib colormap such as jet, inferno")
    if orientation not in ("vertical", "horizontal"):
        raise ValueError(f"unknown orientation {orientation!r}; expected vertical or horizontal")
    fnt = font(size or 12)
    low, high = (str(t) for t in labels)
    step = _line_height(fnt)
    if orientation == "vertical":
        ramp = np.linspace(1.0, 0.0, max(2, length - 2 * PAD))[:, None].repeat(thickness, axis=1)
        text_w = int(math.ceil(max(fnt.getlength(low), fnt.getlength(high)))) + 2 * PAD
        img = Image.new("RGB", (PAD + thickness + text_w, length), PAPER)
        img.paste(Image.fromarray(_colours(ramp, palette)), (PAD, PAD))
        draw = ImageDraw.Draw(img)
        draw.text((PAD + thickness + 4, PAD), high, fill=INK, font=fnt)
        draw.text((PAD + thickness + 4, length - PAD - step), low, fill=INK, font=fnt)
        return _read_only(np.asarray(img))
    low_w, high_w = (int(math.ceil(fnt.getlength(t))) for t in (low, high))
    strip = length - low_w - high_w - 6 * PAD
    if strip >= length // 2:  # labels beside the strip
        ramp = np.linspace(0.0, 1.0, strip)[None, :].repeat(thickness, axis=0)
        img = Image.new("RGB", (length, max(thickness, step) + 2 * PAD), PAPER)
        img.paste(Image.fromarray(_colours(ramp, palette)), (3 * PAD + low_w, PAD))
        draw = ImageDraw.Draw(img)
        draw.text((PAD, PAD), low, fill=INK, font=fnt)
        draw.text((4 * PAD + low_w + strip, PAD), high, fill=INK, font=fnt)
        return _read_only(np.asarray(img))
    strip = max(2, length - 2 * PAD)  # labels under the strip's two ends (wrapped when they meet)
    ramp = np.linspace(0.0, 1.0, strip)[None, :].repeat(thickness, axis=0)
    half = max(1, strip // 2 - PAD)
    low_lines, high_lines = wrap(low, fnt, half), wrap(high, fnt, half)
    img = Image.new("RGB", (length, thickness + 2 * PAD + step * max(len(low_lines), len(high_lines))), PAPER)
    img.paste(Image.fromarray(_colours(ramp, palette)), (PAD, PAD))
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(low_lines):
        draw.text((PAD, PAD + thickness + 2 + i * step), line, fill=INK, font=fnt)
    for i, line in enumerate(high_lines):
        draw.text((length - PAD - fnt.getlength(line), PAD + thickness + 2 + i * step), line, fill=INK, font=fnt)
    return _read_only(np.asarray(img))


def _colours(values: np.ndarray, palette: str) -> np.ndarray:
    return to_uint8(matplotlib.colormaps[palette](np.clip(values, 0.0, 1.0))[..., :3])


def enlarge(image: np.ndarray, min_side: int = MIN_SIDE) -> np.ndarray:
    """Nearest-neighbour integer enlargement of (H, W, C) so the short side is at least ``min_side``."""
    factor = max(1, -(-min_side // max(1, min(image.shape[:2]))))
    if factor == 1:
        return image
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def add_caption(image: np.ndarray, caption: Caption | Sequence[str], *, legend: Sequence[LegendItem] | None = None,
                scale: str | None = None, scale_labels: tuple[str, str] = ("low", "high"),
                min_side: int = MIN_SIDE) -> np.ndarray:
    """The picture with a white band under it: caption lines, then colour swatches, then a colour scale.

    Args:
        image: (H, W, 3) float in [0, 1] or uint8.
        caption: a ``Caption`` or text lines; lines wrap to the picture's width, the band grows to fit.
        legend: (rgb, text) items drawn as swatches; when given, a ``Caption``'s own legend line is not
            repeated as text.
        scale: a palette name: a horizontal colour scale with ``scale_labels`` at its ends.
        min_side: pictures with a shorter short side are first enlarged (nearest neighbour, integer
            factor) so the text has room and stays readable.

    Returns:
        (H' + band, W', 3) uint8 where (H', W') is the (possibly enlarged) picture, unchanged on top.
    """
    top = enlarge(as_uint8(image), min_side)
    width = top.shape[1]
    if isinstance(caption, Caption):
        lines = caption.lines()
        if legend and caption.legend:
            lines = lines[:-1]
    elif isinstance(caption, str):
        raise ValueError("caption is a str: expected a Caption or a sequence of lines")
    else:
        lines = [str(line) for line in caption]
    parts = [top, text_band(lines, width)]
    if legend:
        parts.append(legend_band(legend, width))
    if scale is not None:
        bar = colorbar(min(width, 420), scale, scale_labels, orientation="horizontal", size=font_size(width) - 1)
        parts.append(np.pad(bar, ((0, 0), (0, width - bar.shape[1]), (0, 0)), constant_values=255))
    return np.concatenate(parts, axis=0)


def title_band(title: str | Sequence[str], width: int, *, size: int | None = None) -> np.ndarray:
    """A white band with ``title`` (one string or lines) centred, for the top of a grid or a panel."""
    lines = [title] if isinstance(title, str) else list(title)
    return text_band(lines, width, size=size, align="center")
