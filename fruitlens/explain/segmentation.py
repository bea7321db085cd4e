"""Superpixels for LIME: quickshift (lime's default), SLIC (the R package's default), felzenszwalb.

A segmenter is a frozen ``Segmenter`` config; ``segment(images, seed)`` returns (N, H, W) int32 superpixel
ids 0..S-1 per image (relabelled contiguously, whatever skimage numbered them). Unknown methods or
parameters are a ``ValueError`` naming the valid ones, never silently ignored.

Seeding: quickshift draws tie-breaking noise seeded by ``seed`` (skimage's ``rng``, an int);
SLIC and felzenszwalb are deterministic, so the seed does not change them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fruitlens.segmenter_params import SegmenterName, resolve_params


@dataclass(frozen=True)
class Segmenter:
    """A superpixel method and its parameters (every parameter resolved, defaults filled in).

    Build it with ``make_segmenter(method, **params)``; ``params`` is a sorted tuple of (name, value).
    """

    method: SegmenterName = "slic"
    params: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        resolved = resolve_params(self.method, dict(self.params))
        object.__setattr__(self, "params", tuple(sorted(resolved.items())))

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def name(self) -> str:
        """A short description for tables, e.g. ``slic(compactness=20,max_num_iter=10,n_superpixels=50,...)``."""
        return f"{self.method}({','.join(f'{k}={v:g}' for k, v in self.params)})"

    def segment(self, images: np.ndarray, seed: int | Sequence[int] = 0) -> np.ndarray:
        """Superpixels of each image.

        Args:
            images: (N, H, W, 3) float RGB in [0, 1] (or one (H, W, 3) image).
            seed: one seed for every image, or one per image (only quickshift is random).

        Returns:
            (N, H, W) int32 superpixel ids 0..S_i-1 per image ((H, W) for one image).
        """
        arr = np.asarray(images)
        single = arr.ndim == 3
        batch = arr[None] if single else arr
        if batch.ndim != 4 or batch.shape[-1] != 3:
            raise ValueError(f"images of shape {arr.shape}: expected (N, H, W, 3) or (H, W, 3)")
        seeds = _seeds(seed, len(batch))
        out = np.empty(batch.shape[:3], dtype=np.int32)
        for i in range(len(batch)):  # skimage segments one image at a time
            out[i] = relabel(self._one(batch[i].astype(np.float64), seeds[i]))
        return out[0] if single else out

    def _one(self, image: np.ndarray, seed: int) -> np.ndarray:
        from skimage import segmentation as sk

        p = self.options
        if self.method == "quickshift":
            return sk.quickshift(image, kernel_size=p["kernel_size"], max_dist=p["max_dist"], ratio=p["ratio"],
                                 sigma=p["sigma"], rng=seed % 2**31)  # its Cython takes an int
        if self.method == "slic":
            return sk.slic(image, n_segments=p["n_superpixels"], compactness=p["compactness"], sigma=p["sigma"],
                           max_num_iter=p["max_num_iter"], start_label=0, channel_axis=-1)
        return sk.felzenszwalb(image, scale=p["scale"], sigma=p["sigma"], min_size=p["min_size"], channel_axis=-1)


def make_segmenter(method: str | Segmenter = "slic", **params: Any) -> Segmenter:
    """A ``Segmenter`` from a method name and parameters (unknown ones are a ValueError naming the valid ones).

    Parameters: quickshift ``kernel_size, max_dist, ratio, sigma``; slic ``n_superpixels, compactness, sigma,
    max_num_iter``; felzenszwalb ``scale, sigma, min_size``. Passing a ``Segmenter`` with no params returns it.
    """
    if isinstance(method, Segmenter):
        if params:
            return Segmenter(method.method, tuple({**method.options, **params}.items()))
        return method
    resolve_params(method, params)  # an unknown method named before anything else
    return Segmenter(method, tuple(params.items()))


def segment_images(images: np.ndarray, method: str | Segmenter = "slic", *, seed: int | Sequence[int] = 0,
                   **params: Any) -> np.ndarray:
    """(N, H, W, 3) [0, 1] images -> (N, H, W) int32 superpixel ids 0..S-1; see ``make_segmenter``."""
    return make_segmenter(method, **params).segment(images, seed)


def relabel(segments: np.ndarray) -> np.ndarray:
    """Renumber one (H, W) label image to contiguous ids 0..S-1 (in order of the original ids), int32."""
    _, inverse = np.unique(segments, return_inverse=True)
    return inverse.reshape(segments.shape).astype(np.int32)


def _seeds(seed: int | Sequence[int], n: int) -> list[int]:
    if np.isscalar(seed):
        return [int(seed)] * n
    seeds = [int(s) for s in seed]
    if len(seeds) != n:
        raise ValueError(f"{len(seeds)} seeds for {n} images: expected one seed or one per image")
    return seeds


# ------------------------------------------------------------------------- segmenting at the photo's resolution

WORKING_SIDE = 256
"""LIME segments a photo at its own resolution, its longest side capped at this many pixels (the one working
size: ``fruitlens superpixels`` previews at the same size). Measured cost and effect: benchmarks/README.md."""


@dataclass(frozen=True)
class PhotoSegments:
    """Superpixels of one photo: ``coarse`` (H, W) ids 0..S-1 at the model's input size (what LIME perturbs),
    ``fine`` (h, w) the same ids at the working size over the part of the photo the model sees (what the
    pictures draw, so outlines follow the photo's edges)."""

    coarse: np.ndarray
    fine: np.ndarray


def working_photo(photo: np.ndarray, side: int = WORKING_SIDE) -> np.ndarray:
    """(H0, W0, 3) photo -> float32 [0, 1] with its longest side at most ``side`` (area-averaged; never enlarged)."""
    from PIL import Image

    arr = np.asarray(photo)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"photo of shape {arr.shape}: expected (H, W, 3)")
    if side < 1:
        raise ValueError(f"side {side}: expected at least 1")
    u8 = arr if arr.dtype == np.uint8 else (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    h0, w0 = u8.shape[:2]
    scale = min(1.0, side / max(h0, w0))
    if scale < 1.0:
        size = (max(1, round(w0 * scale)), max(1, round(h0 * scale)))
        u8 = np.asarray(Image.fromarray(u8).resize(size, Image.Resampling.BOX))
    return u8.astype(np.float32) / 255.0


def photo_segments(photo: np.ndarray, image_size: tuple[int, int], segmenter: Segmenter, *, fit: str = "resize",
                   seed: int = 0, side: int = WORKING_SIDE) -> PhotoSegments:
    """Segment ``photo`` at its working size and map the superpixels to the model's input.

    The working photo (:func:`working_photo`) is segmented; the part the model sees (all of it for ``fit``
    resize, the centred box for crop) is mapped nearest-neighbour to ``image_size``; superpixels too small to
    keep a pixel there are merged into the superpixel that covers them at the input size.

    Returns:
        :class:`PhotoSegments` with the same ids 0..S-1 in ``coarse`` (image_size) and ``fine``.
    """
    from fruitlens.modelio import fit_photo
    from fruitlens.overlays import resize_ids

    work = working_photo(photo, side)
    raw = segmenter.segment(work, seed)
    _, (y0, x0, y1, x1) = fit_photo(work, image_size, fit)
    seen = raw[y0:y1, x0:x1]
    coarse_raw = resize_ids(seen, tuple(image_size))
    kept, coarse = np.unique(coarse_raw, return_inverse=True)
    coarse = coarse.reshape(coarse_raw.shape).astype(np.int32)
    lookup = np.full(int(raw.max()) + 1, -1, np.int64)
    lookup[kept] = np.arange(len(kept))
    fine = lookup[seen]
    lost = fine < 0
    if lost.any():  # a sliver that vanished at the input size: drawn as the superpixel that covers it there
        fine[lost] = resize_ids(coarse, seen.shape)[lost]
    return PhotoSegments(coarse=coarse, fine=fine.astype(np.int32))
