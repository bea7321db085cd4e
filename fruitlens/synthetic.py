"""The generated demo dataset: fruit-like images whose class is decided by a known region.

Every image is a fruit (a shaded ellipse with a stem, on a white background) carrying one *sticker*;
the sticker's colour and shape decide the class, nothing else does. Fruit colour, size, rotation,
lighting and a few muted blemishes vary at random and carry no class information. The sticker's pixels
are written as a mask next to each image (``<name>.mask.png``, 255 inside), so tests can check that an
explanation points at the evidence. Generation is deterministic in the seed, one image at a time, so the
same seed gives the same bytes whatever the number of images.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from fruitlens.images import MASK_SUFFIX

SIZE = 100

# class name -> (sticker colour, sticker shape)
STICKERS: dict[str, tuple[tuple[int, int, int], str]] = {
    "red_dot": ((220, 20, 30), "disc"),
    "blue_dot": ((30, 60, 220), "disc"),
    "green_square": ((20, 170, 40), "square"),
    "purple_triangle": ((140, 30, 170), "triangle"),
    "black_cross": ((25, 25, 25), "cross"),
    "cyan_ring": ((0, 190, 210), "ring"),
}
CLASSES = tuple(sorted(STICKERS))


@dataclass(frozen=True)
class Sample:
    image: np.ndarray  # (SIZE, SIZE, 3) uint8
    mask: np.ndarray  # (SIZE, SIZE) bool, True on the sticker
    label: str


def _muted_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """A fruit-ish colour (orange, yellow, yellow-green, brown), never a sticker colour."""
    hue = rng.uniform(0.02, 0.22)  # red-orange .. yellow-green
    sat = rng.uniform(0.35, 0.7)
    val = rng.uniform(0.65, 0.95)
    rgb = np.array(Image.new("HSV", (1, 1), (int(hue * 255), int(sat * 255), int(val * 255)))
                   .convert("RGB").getpixel((0, 0)))
    return tuple(int(c) for c in rgb)


def _sticker(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill) -> None:
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "disc":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle((cx - 0.85 * r, cy - 0.85 * r, cx + 0.85 * r, cy + 0.85 * r), fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + 0.8 * r), (cx - r, cy + 0.8 * r)], fill=fill)
    elif shape == "cross":
        w = max(2, int(r * 0.45))
        draw.line((cx - r, cy - r, cx + r, cy + r), fill=fill, width=w)
        draw.line((cx - r, cy + r, cx + r, cy - r), fill=fill, width=w)
    elif shape == "ring":
        draw.ellipse(box, outline=fill, width=max(2, int(r * 0.4)))
    else:
        raise ValueError(f"unknown sticker shape {shape!r}")


def make_sample(label: str, rng: np.random.Generator, *, moved: bool = False) -> Sample:
    """One demo image of class ``label`` with its evidence mask.

    ``moved`` (the drift variant): the deciding sticker sits in the image's top-left corner, off the fruit, and
    the fruit carries a decoy sticker of another class instead, so a model trained on such images looks
    elsewhere than one trained on the standard ones. The fruit is the same as without ``moved``.
    """
    if label not in STICKERS:
        raise ValueError(f"unknown demo class {label!r}; expected one of {', '.join(CLASSES)}")
    colour, shape = STICKERS[label]

    # the fruit: an ellipse with a stem, drawn upright then rotated, on a transparent layer
    fruit = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
    draw = ImageDraw.Draw(fruit)
    rx, ry = rng.uniform(28, 40), rng.uniform(28, 40)
    cx, cy = SIZE / 2 + rng.uniform(-6, 6), SIZE / 2 + rng.uniform(-4, 6)
    draw.line((cx, cy - ry + 4, cx + rng.uniform(-4, 4), cy - ry - 8), fill=(90, 60, 30, 255), width=3)
    draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=_muted_colour(rng) + (255,))
    for _ in range(rng.integers(1, 4)):  # blemishes: muted blobs that carry no class information
        bx, by = cx + rng.uniform(-0.6, 0.6) * rx, cy + rng.uniform(-0.6, 0.6) * ry
        br = rng.uniform(3, 8)
        draw.ellipse((bx - br, by - br * rng.uniform(0.6, 1.4), bx + br, by + br), fill=_muted_colour(rng) + (255,))
    fruit = fruit.rotate(rng.uniform(-30, 30), resample=Image.Resampling.BILINEAR, center=(cx, cy))

    # shading: light from a random direction over the fruit only
    arr = np.asarray(fruit, dtype=np.float32)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = ((xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)) / max(rx, ry)
    light = rng.uniform(0.85, 1.1) * (1.0 + 0.18 * ramp)
    arr[..., :3] = np.clip(arr[..., :3] * light[..., None], 0, 255)

    # the sticker: the only thing that decides the class, somewhere on the fruit
    r = rng.uniform(4.5, 10)  # some stickers are small: at 32 px they cover a few pixels
    t = rng.uniform(0, 2 * np.pi)
    d = rng.uniform(0, 0.7)
    sx, sy = cx + d * (rx - r) * np.cos(t), cy + d * (ry - r) * np.sin(t)
    if moved:  # a decoy of another class where the sticker was; the real one moves to the corner
        others = [c for c in CLASSES if c != label]
        decoy_colour, decoy_shape = STICKERS[others[int(rng.integers(len(others)))]]
        decoy = Image.new("L", (SIZE, SIZE), 0)
        _sticker(ImageDraw.Draw(decoy), decoy_shape, sx, sy, r, 255)
        arr[np.asarray(decoy) > 127, :3] = decoy_colour
        arr[np.asarray(decoy) > 127, 3] = 255
        r = max(r, 6.0)
        sx, sy = r + 2.0, r + 2.0
    mask_img = Image.new("L", (SIZE, SIZE), 0)
    _sticker(ImageDraw.Draw(mask_img), shape, sx, sy, r, 255)
    mask = np.asarray(mask_img) > 127
    sticker_rgb = np.array(colour, dtype=np.float32) * rng.uniform(0.9, 1.05)
    fade = rng.uniform(0.5, 1.0)  # some stickers are faded: part fruit colour shows through
    arr[mask, :3] = np.clip(fade * sticker_rgb + (1 - fade) * arr[mask, :3], 0, 255)
    arr[mask, 3] = 255

    # composite on white, plus a little sensor noise on the fruit
    alpha = arr[..., 3:4] / 255.0
    rgb = arr[..., :3] * alpha + 255.0 * (1 - alpha)
    rgb += rng.normal(0, 3, rgb.shape) * alpha
    return Sample(image=np.clip(rgb, 0, 255).astype(np.uint8), mask=mask, label=label)


def write_demo_dataset(
    out_dir: str | os.PathLike,
    *,
    n_train: int = 200,
    n_test: int = 50,
    classes: tuple[str, ...] = CLASSES,
    seed: int = 0,
    quality: int = 92,
    moved: tuple[str, ...] = (),
) -> Path:
    """Write the demo dataset as ``out_dir/{Training,Test}/<class>/<i>.jpg`` with ``<i>.mask.png`` beside.

    Deterministic: image ``i`` of a class and split depends only on (seed, class, split, i). The classes in
    ``moved`` get the drift variant (their sticker in the corner, a decoy on the fruit; see ``make_sample``).
    Returns ``out_dir``.
    """
    out = Path(out_dir)
    unknown = sorted(set(moved) - set(CLASSES))
    if unknown:
        raise ValueError(f"moved classes {', '.join(unknown)}: expected demo classes ({', '.join(CLASSES)})")
    for split_i, (split, n) in enumerate((("Training", n_train), ("Test", n_test))):
        for label in classes:
            folder = out / split / label
            folder.mkdir(parents=True, exist_ok=True)
            class_i = CLASSES.index(label)
            for i in range(n):
                sample = make_sample(label, np.random.default_rng([seed, class_i, split_i, i]),
                                     moved=label in moved)
                Image.fromarray(sample.image).save(folder / f"{i:04d}.jpg", quality=quality)
                Image.fromarray(sample.mask.astype(np.uint8) * 255).save(folder / f"{i:04d}{MASK_SUFFIX}")
    return out


def read_mask(path: str | os.PathLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read an evidence mask as (H, W) bool, optionally resized to ``size`` = (height, width)."""
    with Image.open(path) as img:
        img = img.convert("L")
        if size is not None and img.size != (size[1], size[0]):
            img = img.resize((size[1], size[0]), Image.Resampling.NEAREST)
        return np.asarray(img) > 127
