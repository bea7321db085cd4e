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

from fruitlens.segmenter_params import DEFAULTS, METHODS, Method, resolve_params  # noqa: F401 - part of this API


@dataclass(frozen=True)
class Segmenter:
    """A superpixel method and its parameters (every parameter resolved, defaults filled in).

    Build it with ``make_segmenter(method, **params)``; ``params`` is a sorted tuple of (name, value).
    """

    method: Method = "slic"
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
