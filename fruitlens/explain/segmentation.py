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
from typing import Any, Literal, get_args

import numpy as np

from fruitlens.typed import short

Method = Literal["quickshift", "slic", "felzenszwalb"]
METHODS: tuple[str, ...] = get_args(Method)

#: every parameter each method takes, with its default
DEFAULTS: dict[str, dict[str, Any]] = {
    # lime's LimeImageExplainer defaults (kernel_size 4, max_dist 200, ratio 0.2)
    "quickshift": {"kernel_size": 4.0, "max_dist": 200.0, "ratio": 0.2, "sigma": 0.0},
    # the R lime package: n_superpixels (default 50) and weight (its compactness, default 20)
    "slic": {"n_superpixels": 50, "compactness": 20.0, "sigma": 0.0, "max_num_iter": 10},
    # scale 100 / sigma 0.5 / min_size 50: skimage's gallery settings, sensible at 100x100
    "felzenszwalb": {"scale": 100.0, "sigma": 0.5, "min_size": 50},
}
# Upper limits (LIME's masks are samples x superpixels; the segmenters' time grows with these)
PARAM_LIMITS = {"n_superpixels": 10_000, "max_num_iter": 1_000, "kernel_size": 100.0}


@dataclass(frozen=True)
class Segmenter:
    """A superpixel method and its parameters (every parameter resolved, defaults filled in).

    Build it with ``make_segmenter(method, **params)``; ``params`` is a sorted tuple of (name, value).
    """

    method: Method = "slic"
    params: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.method not in DEFAULTS:
            raise ValueError(f"unknown segmentation method {short(self.method)}; expected one of {', '.join(METHODS)}")
        given = dict(self.params)
        valid = DEFAULTS[self.method]
        unknown = sorted(set(given) - set(valid))
        if unknown:
            raise ValueError(f"unknown {self.method} parameter(s) {', '.join(unknown)}; "
                             f"expected some of {', '.join(valid)}")
        resolved = {}
        for name, default in valid.items():
            value = given.get(name, default)
            if isinstance(default, int) and not isinstance(value, (int, np.integer)):
                if not (isinstance(value, (float, np.floating)) and float(value).is_integer()):
                    raise ValueError(f"{self.method} parameter {name}={short(value)}: expected an integer")
            try:
                value = type(default)(value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{self.method} parameter {name}={short(value)}: expected a "
                                 f"{type(default).__name__}") from exc
            if value < 0 or (name in ("n_superpixels", "max_num_iter", "kernel_size", "scale") and value <= 0):
                raise ValueError(f"{self.method} parameter {name}={short(value)}: expected a positive number")
            if name in PARAM_LIMITS and value > PARAM_LIMITS[name]:
                raise ValueError(f"{self.method} parameter {name}={short(value)}: "
                                 f"expected at most {PARAM_LIMITS[name]}")
            resolved[name] = value
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
    if method not in DEFAULTS:
        raise ValueError(f"unknown segmentation method {short(method)}; expected one of {', '.join(METHODS)}")
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
