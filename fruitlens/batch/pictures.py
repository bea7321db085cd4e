"""The PNGs of batch explanation runs: each method's pictures of one chunk, and the side-by-side composition.

Every explanation is drawn on the photo at its own resolution and aspect (shrunk to at most 512 px), with a
caption band under it (file, true and predicted label, probability, method, layer or segmenter, legend or
colour scale) that is also stored in the PNG's metadata. File names come from ``fruitlens.layout``
(``<method>/<stem>_<kind>.png``, stem = readable file name + id); the paths returned are relative to the
explanation folder, as the tables record them.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd

from fruitlens import plots, tables
from fruitlens.captions import MIN_SIDE, Caption, add_caption, layer_title
from fruitlens.layout import ExplainLayout, picture_stem
from fruitlens.lime_options import LimeOptions
from fruitlens.lime_pictures import lime_weight_density
from fruitlens.method_options import CamOptions
from fruitlens.overlays import display_size, heat_on_photo, lime_legend, lime_on_photo

log = logging.getLogger(__name__)

SIDE_BY_SIDE_KINDS = (("Grad-CAM", "gradcam", "overlay"), ("LIME", "lime", "outline"))


class _Drawn:
    """The side-by-side's panels as they were saved (pixels and text chunks), by PNG path, so that composing
    them does not decode them again (12 of 38 ms per image); a panel not here is read from its file. Holds
    the most recent ``capacity`` pictures (two chunks of 16 images, about 25 MB); thread-safe."""

    def __init__(self, capacity: int = 64):
        self.capacity = capacity
        self._items: OrderedDict[Path, tuple[np.ndarray, dict[str, str]]] = OrderedDict()
        self._lock = threading.Lock()

    def keep(self, path: Path, pixels: np.ndarray, text: dict[str, str]) -> None:
        with self._lock:
            self._items[Path(path)] = (pixels, text)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def take(self, path: Path) -> tuple[np.ndarray, dict[str, str]] | None:
        with self._lock:
            return self._items.pop(Path(path), None)


DRAWN = _Drawn()


def _save_panel(picture: np.ndarray, target: Path, caption: Caption, text: dict[str, str]) -> None:
    """Save a captioned panel of the side-by-side and keep its pixels and text for the composition."""
    plots.save_png(picture, target, caption, text=text)
    DRAWN.keep(target, picture, {**text, "Description": caption.text()})


def stems(rows: pd.DataFrame) -> list[str]:
    return [picture_stem(p, i) for p, i in zip(rows["path"], rows["image_id"], strict=True)]


def _rel(out: ExplainLayout, path: Path) -> str:
    return path.relative_to(out.root).as_posix()


def display_photo(path: str, model_input: np.ndarray) -> np.ndarray:
    """The photo to draw on: the file's own pixels (upright, shrunk to at most 512 px), else the model input."""
    from fruitlens.images import read_rgb

    try:
        photo = read_rgb(path)
    except ValueError:
        photo = model_input
    return plots.display_photo(photo, model_input)


class _Shown:
    """Each image's photo as every picture of it is drawn on (read, shrunk, enlarged for the text: about 2 ms),
    kept for the few pictures drawn of it, by (path, the file's size and time, model input size, fit) so that
    a changed file is read again; thread-safe."""

    def __init__(self, capacity: int = 32):
        self.capacity = capacity
        self._items: OrderedDict[tuple, tuple[np.ndarray, tuple[int, int, int, int]]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str, model_input: np.ndarray, card) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        """(uint8 photo at display size, the box the model saw in it)."""
        try:
            stat = os.stat(path)
            version = (stat.st_size, stat.st_mtime_ns)
        except OSError:
            version = None
        key = (str(path), version, model_input.shape, tuple(card.image_size), getattr(card, "fit", "resize"))
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        photo = display_photo(path, model_input)
        shown = display_size(photo, model_box(photo, card), MIN_SIDE)
        shown[0].flags.writeable = False  # shared by the pictures drawn on it
        with self._lock:
            self._items[key] = shown
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return shown


SHOWN = _Shown()


def model_box(photo: np.ndarray, card) -> tuple[int, int, int, int] | None:
    """The part of the (display) photo the model saw: None for the whole photo, a centred box when it crops."""
    if getattr(card, "fit", "resize") == "resize":
        return None
    from fruitlens.modelio import fit_photo

    return fit_photo(photo, card.image_size, card.fit)[1]


def _label(value) -> str | None:
    return value if isinstance(value, str) and value else None


def _prob(value: float) -> float:
    return float(np.clip(np.nan_to_num(value), 0.0, 1.0))  # models that end in logits: shown clipped


def lime_files(out: ExplainLayout, rows: pd.DataFrame, options: LimeOptions) -> list[dict[str, str]]:
    """What ``write_lime`` writes for each image: {kind: path relative to the explanation folder}."""
    files = []
    for stem in stems(rows):
        entry = {"segments": _rel(out, out.pictures_dir("lime") / f"{stem}_segments.npy")}
        if "outline" in options.plot_kinds:
            entry["outline"] = _rel(out, out.picture("lime", stem, "outline"))
        files.append(entry)
    return files


def cam_files(out: ExplainLayout, rows: pd.DataFrame, method: str) -> list[dict[str, str]]:
    """What ``write_cam`` writes for each image: {kind: path relative to the explanation folder}."""
    return [{kind: _rel(out, out.picture(method, stem, kind)) for kind in ("heatmap", "overlay")}
            for stem in stems(rows)]


def write_lime(out: ExplainLayout, rows: pd.DataFrame, images: np.ndarray, results, card,
               options: LimeOptions, fine: list[np.ndarray] | None = None) -> list[dict[str, str]]:
    """Segments (.npy) and the LIME PNGs of each image; per image {kind: relative path}.

    ``fine``: per image the superpixel ids at the photo's working size (``segmentation.photo_segments``), so
    outlines and boundaries follow the photo's edges; default the ids at the model's input size.

    The kinds in ``options.plot_kinds``: ``outline``, the top label's strongest superpixels on the photo;
    ``boundaries``, every superpixel (to tune the segmenter); ``density``, the weights' distribution per label
    (a matplotlib figure: by far the dearest).
    """
    written = []
    fine = fine if fine is not None else [res.segments for res in results]
    for image, res, stem, path, true, drawn_ids in zip(images, results, stems(rows), rows["path"], rows["label"],
                                                       fine, strict=True):
        files: dict[str, str] = {}
        seg_path = out.pictures_dir("lime") / f"{stem}_segments.npy"
        with tables.atomic_path(seg_path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, res.segments)
        files["segments"] = _rel(out, seg_path)
        kinds = options.plot_kinds
        top = res.labels[0]
        label = card.classes[top]
        photo, box = SHOWN.get(path, image, card) if kinds & {"outline", "boundaries"} else (None, None)
        if "outline" in kinds:
            caption = Caption(file=Path(path).name, true_label=_label(true), pred_label=label,
                              prob=_prob(res.label_prob[top]), method="LIME",
                              detail=f"{res.num_superpixels} superpixels ({options.segmenter}), "
                                     f"{res.num_samples} samples, fit R2 {res.score[top]:.2f}",
                              legend=f"green supports {label}, red against")
            pic = lime_on_photo(photo, drawn_ids, res.weights[top], threshold=options.threshold,
                                num_features=options.display_features, box=box)
            target = out.picture("lime", stem, "outline")
            _save_panel(add_caption(pic, caption, legend=lime_legend(label)), target, caption,
                        {"panel": f"LIME · {res.num_superpixels} superpixels ({options.segmenter})", "label": label,
                         plots.PICTURE_HEIGHT: str(pic.shape[0])})
            files["outline"] = _rel(out, target)
        if "boundaries" in kinds:
            seg = plots.lime_boundaries(photo, _boundary_ids(drawn_ids, photo.shape[:2], box))
            plots.save_png(add_caption(seg, [f"{res.num_superpixels} superpixels ({options.segmenter}) of "
                                             f"{Path(path).name}"]), out.picture("lime", stem, "boundaries"))
        if "density" in kinds:
            names = {card.classes[lab]: res.weights[lab] for lab in res.labels}
            fig = lime_weight_density(names, threshold=options.threshold or None,
                                       title=f"{Path(path).name}: {label} ({res.label_prob[top]:.2f})")
            plots.save_figure(fig, out.picture("lime", stem, "density"))
        written.append(files)
    return written


def _boundary_ids(segments: np.ndarray, size: tuple[int, int], box) -> np.ndarray:
    """Superpixel ids over the whole (display) photo: the seen ``box`` holds ``segments``, the rest -1."""
    from fruitlens.overlays import resize_ids

    if box is None:
        return resize_ids(segments, size)
    y0, x0, y1, x1 = box
    ids = np.full(size, -1, np.int64)
    ids[y0:y1, x0:x1] = resize_ids(segments, (y1 - y0, x1 - x0))
    return ids


def write_cam(out: ExplainLayout, rows: pd.DataFrame, images: np.ndarray, result, card, options: CamOptions,
              probs: np.ndarray, *, method: str = "gradcam", title: str | None = None) -> list[dict[str, str]]:
    """Overlay and heatmap PNGs of each image on the photo at its own size; per image {kind: relative path}.

    The overlay's opacity follows the heat (cold regions show the photo untouched); both carry a colour
    scale and a caption naming the method and the layer (``input`` for pixel methods). Pictures go under
    ``<method>/``; ``title`` names the method in the caption (default: Grad-CAM's variant).
    """
    written = []
    name = title or {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "cam": "CAM"}[options.variant]
    for i, stem in enumerate(stems(rows)):
        path = rows["path"].iloc[i]
        photo, box = SHOWN.get(path, images[i], card)
        caption = Caption(file=Path(path).name, true_label=_label(rows["label"].iloc[i]),
                          pred_label=card.classes[result.targets[i]], prob=_prob(probs[i]), method=name,
                          detail="input pixels" if result.layer == "input"
                          else f"layer {layer_title(result.layer)}")
        over = out.picture(method, stem, "overlay")
        heat = out.picture(method, stem, "heatmap")
        pic = heat_on_photo(photo, result.heatmaps[i], palette=options.palette, max_alpha=options.alpha, box=box)
        panel = f"{name} · input pixels" if result.layer == "input" else \
            f"{name} · layer {layer_title(result.layer)}"  # a nested model's prefix dropped
        _save_panel(add_caption(pic, caption, scale=options.palette), over, caption,
                    {"palette": options.palette, "panel": panel, plots.PICTURE_HEIGHT: str(pic.shape[0])})
        plain = plots.heatmap_picture(result.heatmaps[i], pic.shape[:2], options.palette)
        plots.save_png(add_caption(plain, caption, scale=options.palette), heat, caption,
                       text={plots.PICTURE_HEIGHT: str(plain.shape[0])})
        written.append({"heatmap": _rel(out, heat), "overlay": _rel(out, over)})
    return written


def _panel(path: Path, photo_shape: tuple[int, ...]) -> tuple[np.ndarray, dict[str, str]] | None:
    """A captioned PNG's picture without its caption band (the rows its ``PICTURE_HEIGHT`` chunk names; in older
    files, a photo-shaped top) and its text chunks: as it was drawn when ``DRAWN`` still has it, else read from
    its file; None without one."""
    from PIL import Image

    drawn = DRAWN.take(path)
    if drawn is not None:
        if not path.is_file():  # drawn, then removed: the file decides, as it would without the store
            return None
        arr, text = drawn
    elif path.is_file():
        with Image.open(path) as img:
            arr = np.asarray(img.convert("RGB"))
            text = dict(getattr(img, "text", {}))
    else:
        return None
    recorded = str(text.get(plots.PICTURE_HEIGHT, ""))
    height = int(recorded) if recorded.isdigit() else round(arr.shape[1] * photo_shape[0] / photo_shape[1])
    return arr[:min(height, arr.shape[0])], text


def write_side_by_side(out: ExplainLayout, rows: pd.DataFrame, *, force: bool = True) -> list[Path]:
    """Photo | Grad-CAM | LIME for each image, titled, from the methods' PNGs that exist (after all methods).

    ``force=False`` leaves pictures that exist alone.
    """
    paths = []
    for i, stem in enumerate(stems(rows)):
        target = out.side_by_side(stem)
        if not force and target.is_file():
            continue
        path = rows["path"].iloc[i]
        photo = display_photo(path, np.zeros((8, 8, 3), np.float32))
        found = [(title, _panel(out.picture(method, stem, kind), photo.shape))
                 for title, method, kind in SIDE_BY_SIDE_KINDS]
        found = [(title, panel) for title, panel in found if panel is not None]
        if not found:
            continue
        # what each panel's PNG recorded when it was drawn: its title, the LIME label, the heatmap palette
        text = {title: chunks for title, (_, chunks) in found}
        panels = [(text[title].get("panel", title), pixels) for title, (pixels, _) in found]
        lines = [Path(path).name, *text[found[0][0]].get("Description", "").splitlines()[:1]]  # predicted X (p=..)
        lime_label = text.get("LIME", {}).get("label")
        row_of_panels = plots.side_by_side([("photo", photo), *panels])
        picture = add_caption(row_of_panels, lines, legend=lime_legend(lime_label) if lime_label else None,
                              scale=text.get("Grad-CAM", {}).get("palette"), scale_labels=("Grad-CAM low", "high"))
        paths.append(plots.save_png(picture, target, "\n".join(lines),
                                    text={plots.PICTURE_HEIGHT: str(row_of_panels.shape[0])}))
    return paths
