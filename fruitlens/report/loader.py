"""Reading a run folder for the report: every file through ``fruitlens.layout``, derived numbers through
``fruitlens.metrics``. A missing file gives None; an unreadable one None and a line in ``problems``."""

from __future__ import annotations

import base64
import io
import logging
import mimetypes
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from fruitlens import metrics, tables
from fruitlens.layout import FAILED, ExplainLayout, RunLayout
from fruitlens.metrics import ConfusedPair

log = logging.getLogger(__name__)

THUMB_SIZE = 128  # longest side, in pixels, of photos embedded from the dataset
EMBED_MAX_BYTES = 4_000_000  # run files larger than this are referenced beside the report, not embedded
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp")


@dataclass(frozen=True)
class ReportOptions:
    """How much the report shows (see ``build_report``)."""

    samples_per_class: int = 2
    top_mistakes: int = 12
    top_pairs: int = 5
    per_pair: int = 2
    embed: bool = True

    def __post_init__(self) -> None:
        for name in ("samples_per_class", "top_mistakes", "top_pairs", "per_pair"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: expected at least 1")


@dataclass
class RunFiles:
    """The run folder's files, read leniently; images as data URIs (cached) or relative paths."""

    layout: RunLayout
    embed: bool = True
    problems: list[str] = field(default_factory=list)  # files that exist but could not be read
    _uris: dict[str, str | None] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.layout.root

    @property
    def explain(self) -> ExplainLayout:
        return self.layout.explain

    def rel(self, path: Path) -> str:
        """``path`` relative to the run folder, for messages."""
        return path.relative_to(self.root).as_posix() if path.is_relative_to(self.root) else str(path)

    def table(self, path: Path) -> pd.DataFrame | None:
        if not path.exists():
            return None
        try:
            return tables.read_table(path)
        except (OSError, ValueError, pa.ArrowException) as exc:  # one bad table must not stop the report
            self.problems.append(f"{self.rel(path)}: unreadable ({type(exc).__name__}: {exc})")
            return None

    def json(self, path: Path) -> Any:
        if not path.is_file():
            return None
        try:
            return tables.read_json(path)
        except (OSError, ValueError) as exc:
            self.problems.append(f"{self.rel(path)}: unreadable ({exc})")
            return None

    def file(self, value: Any, *bases: Path) -> Path | None:
        """An existing file from a path stored in a table: absolute, or relative to the run or ``bases``."""
        if not isinstance(value, str) or not value:
            return None
        p = Path(value)
        candidates = [p] if p.is_absolute() else [self.root / p, *(b / p for b in bases), *(b / p.name for b in bases)]
        return next((c for c in candidates if c.is_file()), None)

    def image_src(self, path: Path) -> str | None:
        """A data URI for an image file (or its path relative to the report when ``embed`` is off)."""
        key = str(path)
        if key not in self._uris:
            self._uris[key] = self._src(path)
        return self._uris[key]

    def _src(self, path: Path) -> str | None:
        try:
            inside = path.resolve().is_relative_to(self.root.resolve())
            if inside and (not self.embed or path.stat().st_size > EMBED_MAX_BYTES):
                return Path(os.path.relpath(path, self.root)).as_posix()
            if inside and path.suffix.lower() == ".png":
                bare = picture_uri(path)  # a captioned explanation: the picture, the caption goes in HTML
                if bare is not None:
                    return bare
            if inside and path.suffix.lower() in IMAGE_SUFFIXES:
                mime = mimetypes.guess_type(path.name)[0] or "image/png"
                return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")
            return thumbnail_uri(path)  # a photo outside the run (the dataset): a small thumbnail
        except (OSError, ValueError) as exc:
            log.warning("cannot embed %s: %s", path, exc)
            return None


def thumbnail_uri(path: Path, size: int = THUMB_SIZE) -> str:
    """A PNG data URI of an image file, ``size`` pixels on its longest side (any mode -> RGB): drawn from the
    source at the size the page shows it (smooth resampling, up or down), so the browser never scales a tiny
    image up into blocks."""
    from PIL import Image

    from fruitlens.images import read_rgb, to_uint8

    img = Image.fromarray(to_uint8(read_rgb(path)))
    scale = size / max(img.size)
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def picture_uri(path: Path) -> str | None:
    """A PNG data URI of a captioned picture without its caption band (the rows above its
    ``plots.PICTURE_HEIGHT`` text chunk); None for a PNG without one (shown as it is)."""
    from PIL import Image

    from fruitlens.plots import PICTURE_HEIGHT

    with Image.open(path) as img:
        height = getattr(img, "text", {}).get(PICTURE_HEIGHT)
        if height is None or not str(height).isdigit() or not 0 < int(height) < img.height:
            return None
        top = img.convert("RGB").crop((0, 0, img.width, int(height)))
    from fruitlens.pngs import encode_png

    return "data:image/png;base64," + base64.b64encode(encode_png(np.asarray(top), level=3)).decode("ascii")


@dataclass
class ReportData:
    """Everything read from the run, with the numbers the sections share (from ``fruitlens.metrics``)."""

    run: RunFiles
    card: dict | None
    run_json: dict | None
    index_meta: dict | None
    images: pd.DataFrame | None
    history: pd.DataFrame | None
    predictions: pd.DataFrame | None  # labelled rows of the model's classes only
    metrics_json: dict | None
    lime: pd.DataFrame | None
    gradcam: pd.DataFrame | None
    failed: pd.DataFrame | None
    comparison: pd.DataFrame | None
    classes: list[str]
    dataset_root: Path | None
    sanity: pd.DataFrame | None = None  # RUN/sanity/sanity.parquet (fruitlens sanity), when present
    stability: pd.DataFrame | None = None  # RUN/explain/stability.parquet (LIME under two seeds)
    class_evidence: pd.DataFrame | None = None  # RUN/evidence/class_evidence.parquet
    drift: pd.DataFrame | None = None  # RUN/drift/drift.parquet (nightly: new vs current model's evidence)
    headline: dict[str, Any] | None = None  # metrics.headline_metrics
    confusion: pd.DataFrame | None = None  # rows true label, columns predicted label (classes that occur)
    per_class: pd.DataFrame | None = None
    pairs: list[ConfusedPair] = field(default_factory=list)
    explained: set[str] = field(default_factory=set)
    unknown_labels: int = 0  # evaluated images whose label is not a class of the model (left out)
    sanity_failed: dict[str, str] = field(default_factory=dict)  # {explain method: why it fails the sanity check}

    @property
    def layout(self) -> RunLayout:
        return self.run.layout


def _classes(run: RunFiles, card: dict | None, predictions: pd.DataFrame | None) -> list[str]:
    if card and card.get("classes"):
        return [str(c) for c in card["classes"]]
    classes: list[str] = []
    if (found := run.json(run.layout.classes_json)) is not None:
        classes = sorted(found, key=lambda c: found[c]) if isinstance(found, dict) else [str(c) for c in found]
    if predictions is not None:  # without a card, every label seen is a class
        seen = set(predictions["label"].astype(str)) | set(predictions["pred_label"].astype(str))
        classes += sorted(seen - set(classes) - {""})
    return classes


def _dataset_root(*metas: tuple[Any, str]) -> Path | None:
    """The dataset root that relative prediction paths hang from: the first recorded folder that exists."""
    for meta, key in metas:
        if isinstance(meta, dict) and isinstance(meta.get(key), str) and Path(meta[key]).is_dir():
            return Path(meta[key])
    return None


def by_image(table: pd.DataFrame | None) -> pd.DataFrame | None:
    """An explanation table with string image ids, sorted by them (so one image's rows are a slice)."""
    if table is None or "image_id" not in table.columns:
        return table
    table = table.assign(image_id=table["image_id"].astype(str))
    return table.sort_values("image_id", kind="stable", ignore_index=True)


def failed_methods(sanity: pd.DataFrame) -> dict[str, str]:
    """{explain method (lime, gradcam): reason} of the methods a ``sanity`` table's verdicts fail; Grad-CAM++
    is the gradcam method's ``gradcam++`` variant."""
    from fruitlens.explain.sanity import verdicts

    found = verdicts(sanity)
    return {("gradcam" if str(v["method"]).startswith("gradcam") else str(v["method"])): str(v["reason"])
            for v in found.to_dict("records") if not v["passed"]}


def load(root: Path, embed: bool = True) -> ReportData:
    """Read the run folder ``root``; derive per-class metrics, the confusion matrix and confused pairs."""
    run = RunFiles(RunLayout(root), embed=embed)
    lay = run.layout
    card, index_meta = run.json(lay.card), run.json(lay.index_json)
    predictions = run.table(lay.predictions)
    if predictions is not None and not {"label", "pred_label"} <= set(predictions.columns):
        run.problems.append(f"{run.rel(lay.predictions)}: no label/pred_label columns; expected the predictions "
                            "table")
        predictions = None
    classes = _classes(run, card, predictions)
    unknown = 0
    if predictions is not None:
        kept = metrics.labelled(predictions, classes or None)
        has_label = predictions["label"].fillna("").astype(str) != ""
        unknown = int(has_label.sum()) - len(kept)
        predictions = kept.reset_index(drop=True)
    metrics_json, run_json = run.json(lay.metrics), run.json(lay.run_record)
    lime, gradcam = (by_image(run.table(lay.explain.table(m))) for m in ("lime", "gradcam"))
    data = ReportData(run=run, card=card, run_json=run_json, index_meta=index_meta, images=run.table(lay.images_table),
                      history=run.table(lay.history), predictions=predictions, metrics_json=metrics_json,
                      lime=lime, gradcam=gradcam, failed=run.table(lay.explain.table(FAILED)),
                      comparison=run.table(lay.comparison), classes=classes, unknown_labels=unknown,
                      sanity=run.table(lay.sanity.table), drift=run.table(lay.drift),
                      class_evidence=run.table(lay.class_evidence), stability=run.table(lay.explain.stability),
                      dataset_root=_dataset_root((index_meta, "root"), (metrics_json, "data"),
                                                 (run_json, "data_dir")))
    if data.sanity is not None and len(data.sanity):
        data.sanity_failed = failed_methods(data.sanity)
    for t in (lime, gradcam):
        if t is not None and "image_id" in t.columns:
            data.explained |= set(t["image_id"])
    if predictions is not None and len(predictions):
        data.headline = metrics.headline_metrics(predictions, classes)
        data.per_class = metrics.per_class_metrics(predictions, classes)
        data.confusion = metrics.confusion_matrix(predictions, list(data.per_class["class"]))
        data.pairs = metrics.confused_pairs(predictions, classes)
    return data
