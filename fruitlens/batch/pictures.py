"""The PNGs of batch explanation runs: each method's pictures of one chunk, and the side-by-side composition.

File names come from ``fruitlens.layout`` (``<method>/<stem>_<kind>.png``, stem = readable file name + id);
the paths returned are relative to the explanation folder, as the tables record them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from fruitlens import plots, tables
from fruitlens.config import CamOptions, LimeOptions
from fruitlens.layout import ExplainLayout, picture_stem

log = logging.getLogger(__name__)


def stems(rows: pd.DataFrame) -> list[str]:
    return [picture_stem(p, i) for p, i in zip(rows["path"], rows["image_id"], strict=True)]


def _rel(out: ExplainLayout, path: Path) -> str:
    return path.relative_to(out.root).as_posix()


def display_photo(path: str, model_input: np.ndarray) -> np.ndarray:
    """The photo to draw on: the file's own pixels (shrunk to at most 512 px), else the model input."""
    from fruitlens.images import read_rgb

    try:
        photo = read_rgb(path)
    except ValueError:
        photo = model_input
    return plots.display_photo(photo, model_input)


def write_lime(out: ExplainLayout, rows: pd.DataFrame, images: np.ndarray, results, card,
               options: LimeOptions) -> list[dict[str, str]]:
    """Segments (.npy) and the LIME PNGs of each image; per image {kind: relative path}."""
    written = []
    factor = max(1, -(-200 // min(images.shape[1:3])))  # PNGs at least 200 px on the short side
    for image, res, stem in zip(images, results, stems(rows), strict=True):
        files: dict[str, str] = {}
        seg_path = out.pictures_dir("lime") / f"{stem}_segments.npy"
        with tables.atomic_path(seg_path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, res.segments)
        files["segments"] = _rel(out, seg_path)
        if options.plots != "none":
            big, seg = plots.upscale_nearest(image, factor), plots.upscale_nearest(res.segments, factor)
            top = res.labels[0]
            plots.save_png(plots.lime_boundaries(big, seg), out.picture("lime", stem, "boundaries"))
            for kind in ("outline", "block"):
                pic = plots.lime_explanation(big, seg, res.weights[top], threshold=options.threshold,
                                             num_features=options.display_features, display=kind,
                                             hide_rest=kind == "block")
                files[kind] = _rel(out, plots.save_png(pic, out.picture("lime", stem, kind)))
            if options.plots == "all":
                names = {card.classes[label]: res.weights[label] for label in res.labels}
                fig = plots.lime_weight_density(names, threshold=options.threshold or None,
                                                title=f"{stem}: {card.classes[top]} ({res.label_prob[top]:.2f})")
                plots.save_figure(fig, out.picture("lime", stem, "density"))
        written.append(files)
    return written


def write_cam(out: ExplainLayout, rows: pd.DataFrame, images: np.ndarray, result, card,
              options: CamOptions) -> list[dict[str, str]]:
    """Heatmap and overlay PNGs of each image, on the photo at its own size; per image {kind: relative path}."""
    written = []
    for i, stem in enumerate(stems(rows)):
        photo = display_photo(rows["path"].iloc[i], images[i])
        heat = out.picture("gradcam", stem, "heatmap")
        over = out.picture("gradcam", stem, "overlay")
        plots.save_png(plots.heatmap_picture(result.heatmaps[i], photo.shape[:2], options.palette), heat)
        plots.save_png(plots.overlay(photo, result.heatmaps[i], options.palette, options.alpha), over)
        written.append({"heatmap": _rel(out, heat), "overlay": _rel(out, over)})
    return written


SIDE_BY_SIDE_KINDS = (("gradcam", "overlay"), ("lime", "outline"))


def write_side_by_side(out: ExplainLayout, rows: pd.DataFrame, *, force: bool = True) -> list[Path]:
    """Photo | Grad-CAM | LIME for each image, from the methods' PNGs that exist (composed after all methods).

    ``force=False`` leaves pictures that exist alone.
    """
    from PIL import Image

    paths = []
    for i, stem in enumerate(stems(rows)):
        if not force and out.side_by_side(stem).is_file():
            continue
        panels = []
        for method, kind in SIDE_BY_SIDE_KINDS:
            path = out.picture(method, stem, kind)
            if path.is_file():
                with Image.open(path) as img:
                    panels.append(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0)
        if not panels:
            continue
        size = panels[0].shape[:2]
        photo = display_photo(rows["path"].iloc[i], np.zeros((*size, 3), np.float32))
        paths.append(plots.save_png(plots.side_by_side([photo, *panels]), out.side_by_side(stem)))
    return paths
