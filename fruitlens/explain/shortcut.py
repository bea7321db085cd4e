"""Shortcut alert: does a class's Grad-CAM evidence sit on the image border or on plain background?

A model that tells classes apart by a watermark in a corner, the frame of the photo or the empty backdrop has
learned a shortcut, not the object. Without evidence masks two regions can still be named in any image:

- the *border*: the outer :data:`BORDER_BAND` of each side (10 % of the height at the top and bottom, of the
  width left and right: 36 % of the area);
- the *background*: pixels whose neighbourhood (:data:`BACKGROUND_WINDOW` px square) is near-constant, grey
  level standard deviation below :data:`BACKGROUND_STD`, in a plain area that reaches the image's edge (a
  studio backdrop, the white of Fruits-360, the plain field of the demo images); a flat-coloured object
  inside its own outline is not background.

Per image, the share of the heatmap's mass on each region; per class, the mean over its images. A class is
flagged when, on either region, the share is at least :data:`MAX_SHARE` (the evidence sits *mostly* there)
and the heat per pixel on the region is at least :data:`MIN_LIFT` times the heat per pixel off it (a heatmap
spread evenly over a photo that is three quarters backdrop puts three quarters of its heat there, with a lift
of 1: not flagged). The thresholds live here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

BORDER_BAND = 0.10  # share of the height (top, bottom) and width (left, right) that counts as the border
BACKGROUND_WINDOW = 5  # px: the neighbourhood whose grey-level spread decides "near-constant"
BACKGROUND_STD = 0.02  # grey-level standard deviation (images in [0, 1]) below which a neighbourhood is plain
MAX_SHARE = 0.5  # flagged at or above: most of the heat is on the region
MIN_LIFT = 2.0  # ... and the heat per pixel there at least this many times the heat per pixel elsewhere

REGIONS = ("border", "background")
SHARE_COLUMNS = ("border_share", "border_area", "background_share", "background_area")


def border_mask(height: int, width: int, band: float = BORDER_BAND) -> np.ndarray:
    """(H, W) bool: True on the outer ``band`` of each side (at least one pixel when band > 0)."""
    if not 0.0 <= band < 0.5:
        raise ValueError(f"border band {band}: expected a share in [0, 0.5)")
    dy, dx = (max(1, int(round(band * n))) if band > 0 else 0 for n in (height, width))
    mask = np.zeros((height, width), bool)
    mask[:dy], mask[height - dy:], mask[:, :dx], mask[:, width - dx:] = True, True, True, True
    return mask


def background_mask(images: np.ndarray, window: int = BACKGROUND_WINDOW, max_std: float = BACKGROUND_STD
                    ) -> np.ndarray:
    """(N, H, W) bool: True where the grey level of ``images`` (N, H, W, 3) in [0, 1] is near-constant over a
    ``window`` x ``window`` neighbourhood (local standard deviation below ``max_std``) and that plain area
    (4-connected) touches the image's edge."""
    from scipy.ndimage import label, uniform_filter

    grey = np.asarray(images, np.float64).mean(axis=-1)
    size = (1, window, window)
    mean = uniform_filter(grey, size=size, mode="reflect")
    var = uniform_filter(grey ** 2, size=size, mode="reflect") - mean ** 2
    plain = np.sqrt(np.clip(var, 0.0, None)) < max_std
    out = np.zeros_like(plain)
    for i, p in enumerate(plain):  # one labelling per image: N is a batch of a few hundred at most
        parts, _ = label(p)
        touching = np.unique(np.concatenate([parts[0], parts[-1], parts[:, 0], parts[:, -1]]))
        out[i] = np.isin(parts, touching[touching > 0])
    return out


def heat_shares(heatmaps: np.ndarray, images: np.ndarray, band: float = BORDER_BAND) -> dict[str, np.ndarray]:
    """Per image, the share of heat and of area on each region.

    Args:
        heatmaps: (N, H, W) in [0, 1].
        images: (N, H, W, 3) in [0, 1], the images the heatmaps explain (same H, W).

    Returns:
        {column: (N,) float64 in [0, 1]} for the :data:`SHARE_COLUMNS` (border_share, border_area,
        background_share, background_area). An all-zero heatmap has no heat anywhere: its shares are 0.
    """
    heat = np.asarray(heatmaps, np.float64)
    if heat.ndim != 3 or np.asarray(images).shape[:3] != heat.shape:
        raise ValueError(f"heatmaps of shape {heat.shape} and images of shape {np.asarray(images).shape}: "
                         "expected (N, H, W) and (N, H, W, 3)")
    n, h, w = heat.shape
    regions = {"border": np.broadcast_to(border_mask(h, w, band), heat.shape), "background": background_mask(images)}
    total = heat.sum(axis=(1, 2))
    out = {}
    for name, mask in regions.items():
        out[f"{name}_share"] = np.divide((heat * mask).sum(axis=(1, 2)), total, out=np.zeros(n), where=total > 0)
        out[f"{name}_area"] = mask.reshape(n, -1).mean(axis=1)
    return out


def lift(share: float, area: float) -> float:
    """Heat per pixel on a region (``share`` of the heat on ``area`` of the image) over heat per pixel off it."""
    on = share / area if area > 0 else 0.0
    off = (1.0 - share) / (1.0 - area) if area < 1 else 0.0
    return float("inf") if off == 0 and on > 0 else (on / off if off > 0 else 0.0)


def image_rows(labels: Sequence[str], shares: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per image (images = 1) from :func:`heat_shares`, the input :func:`shortcut_table` takes."""
    return pd.DataFrame({"label": [str(x) for x in labels], "images": 1,
                         **{k: np.asarray(shares[k], np.float64) for k in SHARE_COLUMNS}})


def shortcut_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The ``shortcut`` rows: per class, the shares averaged over its images, and the flag.

    Args:
        frame: rows with label, images and the :data:`SHARE_COLUMNS` (means over ``images`` images): one row
            per image (:func:`image_rows`), or per class and group (the ``class_evidence`` table).

    Returns:
        Columns label, images, border_share, border_area, background_share, background_area, flagged, reason.
    """
    rows = []
    for label, t in frame.groupby("label", sort=True):
        n = t["images"].to_numpy(np.float64)
        row = {"label": str(label), "images": int(n.sum())}
        reasons = []
        for region in REGIONS:
            share, area = (float(np.average(t[f"{region}_{k}"], weights=n)) for k in ("share", "area"))
            row[f"{region}_share"], row[f"{region}_area"] = share, area
            if share >= MAX_SHARE and lift(share, area) >= MIN_LIFT:
                reasons.append(f"{share:.0%} of the heat on the {region} ({area:.0%} of the area)")
        rows.append({**row, "flagged": bool(reasons), "reason": "; ".join(reasons)})
    return pd.DataFrame(rows, columns=["label", "images", *SHARE_COLUMNS, "flagged", "reason"])


def flagged_classes(table: pd.DataFrame | None) -> dict[str, dict[str, float]]:
    """{class: {"border": share, "background": share}} of the flagged rows of a ``shortcut`` table."""
    if table is None or not len(table):
        return {}
    return {str(r.label): {"border": round(float(r.border_share), 4), "background": round(float(r.background_share), 4)}
            for r in table[table["flagged"]].itertuples()}


def shortcut_line(table: pd.DataFrame | None) -> str:
    """One sentence on a ``shortcut`` table ("" when there is none)."""
    if table is None or not len(table):
        return ""
    flagged = table[table["flagged"]]
    if not len(flagged):
        return (f"No class's Grad-CAM evidence sits mostly on the image border or plain background (largest shares: "
                f"border {table['border_share'].max():.0%}, background {table['background_share'].max():.0%}).")
    named = "; ".join(f"{r.label}: {r.reason}" for r in flagged.itertuples())
    return (f"Shortcut alert: {len(flagged)} of {len(table)} classes have their Grad-CAM evidence mostly on the "
            f"image border or plain background ({named}).")
