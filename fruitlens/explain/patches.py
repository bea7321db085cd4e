"""The players of the amortised explainer and of KernelSHAP on a grid: patches of a fixed grid, Shapley-kernel
coalitions in complement pairs, and what a removed patch shows (the fill)."""

from __future__ import annotations

import numpy as np


def patch_index(size: tuple[int, int], grid: int) -> np.ndarray:
    """(H, W) int32 patch id (row-major, 0..grid^2-1) of each pixel: row ``y * grid // H``, column ``x * grid // W``.

    Raises:
        ValueError: an image smaller than the grid.
    """
    h, w = size
    if h < grid or w < grid:
        raise ValueError(f"image size {h}x{w}: expected at least {grid}x{grid} pixels for a {grid}x{grid} grid")
    rows = np.arange(h) * grid // h
    cols = np.arange(w) * grid // w
    return (rows[:, None] * grid + cols[None, :]).astype(np.int32)


def patch_masks(size: tuple[int, int], grid: int) -> np.ndarray:
    """(grid^2, H, W) float32: 1 on the pixels of each patch."""
    index = patch_index(size, grid)
    return (index[None] == np.arange(grid * grid)[:, None, None]).astype(np.float32)


def shapley_subsets(rng: np.random.Generator, n: int, masks: int, players: int) -> np.ndarray:
    """(n, masks, players) float32 0/1 subsets: ``masks / 2`` draws from the Shapley kernel distribution
    (size k in 1..d-1 with probability proportional to (d-1) / (k (d-k)), then k players uniformly), each
    followed by its complement (paired sampling). One player: its single non-trivial subset is all of it."""
    half = masks // 2
    if players == 1:
        out = np.zeros((n, masks, 1), np.float32)
        out[:, ::2] = 1.0
        return out
    k = np.arange(1, players)
    p = (players - 1) / (k * (players - k))
    sizes = rng.choice(k, size=(n, half), p=p / p.sum())
    ranks = rng.random((n, half, players)).argsort(axis=2).argsort(axis=2)  # a uniform permutation per draw
    drawn = (ranks < sizes[..., None]).astype(np.float32)
    out = np.empty((n, masks, players), np.float32)
    out[:, 0::2] = drawn
    out[:, 1::2] = 1.0 - drawn
    return out


def fill_of(images: np.ndarray, fill: str) -> np.ndarray:
    """(N, H, W, 3) float32 values of removed patches: black, gray or each image's mean colour."""
    if fill == "mean":
        return np.broadcast_to(images.mean(axis=(1, 2), keepdims=True), images.shape).astype(np.float32)
    value = {"black": 0.0, "gray": 0.5}.get(fill)
    if value is None:
        raise ValueError(f"fill {fill!r}: expected one of black, gray, mean")
    return np.full(images.shape, value, np.float32)
