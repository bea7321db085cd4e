"""The run report: one self-contained HTML page per run folder, built from its tables and files alone.

``build_report(run_dir)`` reads what a run wrote (see the run folder layout in DESIGN.md) and writes
``run_dir/report.html``: a header with the headline numbers, a table of contents, then one section per
part of the run. Every section reads only what exists; a missing file gives a plain "not produced in
this run" line, never an error. Images are embedded as data URIs (or, with ``embed=False``, referenced
relatively beside the report), CSS and the few lines of JavaScript that sort tables are inline: the page
needs no network and works from ``file://`` and when served.

Accuracy, per-class metrics and the confusion matrix are computed here from ``eval/predictions.parquet``
(the core columns of the ``predictions`` table), so the report agrees with the predictions whatever else
``metrics.json`` holds; its other entries are listed as they are.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import logging
import math
import mimetypes
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from fruitlens import tables
from fruitlens.runs import RunError

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
THUMB_SIZE = 128  # longest side, in pixels, of photos embedded from the dataset
EMBED_MAX_BYTES = 4_000_000  # run files larger than this are referenced beside the report, not embedded

# The sections, in page order: (anchor id, title). Tests check that each is present.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("dataset", "Dataset"),
    ("training", "Training"),
    ("metrics", "Accuracy and per-class metrics"),
    ("confusion", "Confusion matrix"),
    ("mistakes", "Most confident mistakes"),
    ("why", "Why the model confuses them"),
    ("explanations", "Explanations per class"),
    ("visualize", "Activations and filters"),
    ("comparison", "Comparison with the previous model"),
    ("run", "Configuration, versions and timings"),
)

# Files each section reads, relative to the run folder (named in "not produced" lines).
PREDICTIONS = "eval/predictions.parquet"
LIME = "explain/lime.parquet"
GRADCAM = "explain/gradcam.parquet"


# ------------------------------------------------------------------------------------ reading the run


@dataclass
class _Run:
    """Reads a run folder's files: a missing file gives None, an unreadable one None and a line in ``problems``."""

    root: Path
    embed: bool
    problems: list[str] = field(default_factory=list)  # files that exist but could not be read
    _uris: dict[str, str] = field(default_factory=dict)

    def table(self, rel: str) -> pd.DataFrame | None:
        path = self.root / rel
        if not path.exists():
            return None
        try:
            return tables.read_table(path)
        except (OSError, ValueError, pa.ArrowException) as exc:  # one bad table must not stop the report
            self.problems.append(f"{rel}: unreadable ({type(exc).__name__}: {exc})")
            return None

    def json(self, rel: str) -> Any:
        path = self.root / rel
        if not path.is_file():
            return None
        try:
            return tables.read_json(path)
        except (OSError, ValueError) as exc:
            self.problems.append(f"{rel}: unreadable ({exc})")
            return None

    def file(self, value: Any, *bases: str) -> Path | None:
        """An existing file from a path stored in a table: absolute, or relative to the run or ``bases``."""
        if not isinstance(value, str) or not value:
            return None
        p = Path(value)
        candidates = [p] if p.is_absolute() else [self.root / p, *(self.root / b / p for b in bases)]
        if not p.is_absolute():
            candidates += [self.root / b / p.name for b in bases]
        return next((c for c in candidates if c.is_file()), None)

    def image_src(self, path: Path) -> str | None:
        """A data URI for an image file (or its path relative to the report when ``embed`` is off)."""
        key = str(path)
        if key in self._uris:
            return self._uris[key]
        src: str | None
        try:
            inside = path.resolve().is_relative_to(self.root.resolve())
            if inside and (not self.embed or path.stat().st_size > EMBED_MAX_BYTES):
                src = Path(os.path.relpath(path, self.root)).as_posix()
            elif inside and path.suffix.lower() in (".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp"):
                mime = mimetypes.guess_type(path.name)[0] or "image/png"
                src = f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")
            else:  # a photo outside the run (the dataset): embed a small thumbnail
                src = _thumbnail_uri(path)
        except (OSError, ValueError) as exc:
            log.warning("cannot embed %s: %s", path, exc)
            src = None
        self._uris[key] = src
        return src


def _thumbnail_uri(path: Path, size: int = THUMB_SIZE) -> str:
    from PIL import Image

    from fruitlens.images import read_rgb, to_uint8

    rgb = to_uint8(read_rgb(path))  # any mode -> RGB, alpha over white
    img = Image.fromarray(rgb)
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


@dataclass
class _Data:
    """Everything read from the run, with the derived tables the sections share."""

    run: _Run
    card: dict | None
    run_json: dict | None
    index_meta: dict | None
    images: pd.DataFrame | None
    history: pd.DataFrame | None
    predictions: pd.DataFrame | None
    metrics_json: dict | None
    lime: pd.DataFrame | None
    gradcam: pd.DataFrame | None
    failed: pd.DataFrame | None
    comparison: pd.DataFrame | None
    classes: list[str]
    dataset_root: Path | None
    confusion: pd.DataFrame | None = None  # rows true label, columns predicted label
    per_class: pd.DataFrame | None = None
    pairs: list[tuple[str, str, int, int]] = field(default_factory=list)  # (true, predicted, n, support)
    explained: set[str] = field(default_factory=set)
    unknown_labels: int = 0  # evaluated images whose label is not a class of the model (left out)


def _load(run: _Run) -> _Data:
    card = run.json("model.json")
    index_meta = run.json("index/index.json")
    images = run.table("index/images.parquet")
    predictions = run.table(PREDICTIONS)
    if predictions is not None and not {"label", "pred_label"} <= set(predictions.columns):
        run.problems.append(f"{PREDICTIONS}: no label/pred_label columns; expected the predictions table")
        predictions = None
    classes: list[str] = []
    if card and card.get("classes"):
        classes = [str(c) for c in card["classes"]]
    elif (classes_json := run.json("index/classes.json")) is not None:
        classes = sorted(classes_json, key=lambda c: classes_json[c]) if isinstance(classes_json, dict) \
            else [str(c) for c in classes_json]
    unknown = 0
    if predictions is not None and card and card.get("classes"):  # labels the model cannot predict
        known = predictions["label"].astype(str).isin(set(classes))
        unknown = int((~known).sum())
        predictions = predictions[known].reset_index(drop=True)
    elif predictions is not None:
        seen = set(predictions["label"].astype(str)) | set(predictions["pred_label"].astype(str))
        classes += sorted(seen - set(classes) - {""})
    root = None  # the dataset root that relative prediction paths hang from
    metrics_json = run.json("eval/metrics.json")
    run_json = run.json("run.json")
    for meta, key in ((index_meta, "root"), (metrics_json, "data"), (run_json, "data_dir")):
        if isinstance(meta, dict) and isinstance(meta.get(key), str) and Path(meta[key]).is_dir():
            root = Path(meta[key])
            break
    lime, gradcam = (_by_image(run.table(name)) for name in (LIME, GRADCAM))
    data = _Data(run=run, card=card, run_json=run_json, index_meta=index_meta, images=images,
                 history=run.table("history.parquet"), predictions=predictions,
                 metrics_json=metrics_json, lime=lime, gradcam=gradcam,
                 failed=run.table("explain/failed.parquet"), comparison=run.table("comparison.parquet"),
                 classes=classes, dataset_root=root, unknown_labels=unknown)
    for t in (lime, gradcam):
        if t is not None and "image_id" in t.columns:
            data.explained |= set(t["image_id"].astype(str))
    if predictions is not None and len(predictions):
        _derive_metrics(data)
    return data


def _by_image(table: pd.DataFrame | None) -> pd.DataFrame | None:
    """An explanation table with string image ids, sorted by them (so one image's rows are a slice)."""
    if table is None or "image_id" not in table.columns:
        return table
    table = table.assign(image_id=table["image_id"].astype(str))
    return table.sort_values("image_id", kind="stable", ignore_index=True)


def _derive_metrics(data: _Data) -> None:
    from sklearn.metrics import precision_recall_fscore_support

    pred = data.predictions
    y_true, y_pred = pred["label"].astype(str), pred["pred_label"].astype(str)
    labels = [c for c in data.classes if c in set(y_true) | set(y_pred)]
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    data.per_class = pd.DataFrame({"class": labels, "precision": p, "recall": r, "f1": f, "support": s})
    data.confusion, data.pairs = _confusion(pred, labels)


def _confusion(pred: pd.DataFrame, labels: Sequence[str]) -> tuple[pd.DataFrame, list[tuple[str, str, int, int]]]:
    """Counts (rows true, columns predicted, over ``labels``) and the confused pairs, most cases first.

    A pair is (true, predicted, cases, images of the true class); ties keep the order of ``labels``.
    """
    y_true, y_pred = pred["label"].astype(str), pred["pred_label"].astype(str)
    labels = list(labels)
    conf = pd.crosstab(y_true, y_pred).reindex(index=labels, columns=labels, fill_value=0).fillna(0).astype(int)
    support = conf.sum(axis=1).to_numpy()
    off = conf.to_numpy().copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")
    order = order[off.ravel()[order] > 0]
    rows, cols = np.divmod(order, off.shape[1])
    pairs = [(labels[i], labels[j], int(off[i, j]), int(support[i])) for i, j in zip(rows, cols, strict=True)]
    return conf, pairs


# ------------------------------------------------------------------------------------ HTML helpers


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 3) -> str:
    """A short human form of a table cell."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return ""
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 10 ** -digits):
            return f"{v:.{digits}g}"
        return f"{v:.{digits}f}"
    if isinstance(value, (list, tuple, np.ndarray)):
        return ", ".join(_fmt(v, digits) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, default=str)
    return str(value)


def _pct(value: float, digits: int = 1) -> str:
    return f"{100 * value:.{digits}f}%"


def _sort_value(value: Any) -> str | None:
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, (int, float, np.integer, np.floating)) and not (
            isinstance(value, float) and math.isnan(value)):
        return repr(float(value))
    return None


def _cell(value: Any, digits: int = 3, tag: str = "td", align: bool = True) -> str:
    text = _fmt(value, digits)
    sv = _sort_value(value)
    attr = f' data-v="{sv}"' if sv is not None else ""
    cls = ' class="num"' if sv is not None and align else ""
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        return f"<{tag}{attr}><a href=\"{_e(value)}\">{_e(value)}</a></{tag}>"
    return f"<{tag}{attr}{cls}>{_e(text)}</{tag}>"


def _table(df: pd.DataFrame, *, columns: Sequence[str] | None = None, headers: dict[str, str] | None = None,
           digits: int = 3, sortable: bool = True, foot: pd.DataFrame | None = None, limit: int | None = None,
           cls: str = "") -> str:
    """An HTML table of ``df`` (sortable by clicking a header); ``foot`` rows stay at the bottom."""
    columns = [c for c in (columns or list(df.columns)) if c in df.columns]
    headers = headers or {}
    shown = df if limit is None else df.head(limit)
    head = "".join(f"<th scope=\"col\">{_e(headers.get(c, c))}</th>" for c in columns)
    rows = "\n".join("<tr>" + "".join(_cell(v, digits) for v in row) + "</tr>"
                     for row in shown[columns].itertuples(index=False, name=None))
    tfoot = ""
    if foot is not None and len(foot):
        tfoot = "<tfoot>" + "".join("<tr>" + "".join(_cell(v, digits) for v in row) + "</tr>"
                                    for row in foot[columns].itertuples(index=False, name=None)) + "</tfoot>"
    classes = " ".join(c for c in ("sortable" if sortable else "", cls) if c)
    more = ""
    if limit is not None and len(df) > limit:
        more = f"<p class=\"note\">Showing {limit} of {len(df):,} rows.</p>"
    return (f"<div class=\"table-wrap\"><table class=\"{classes}\"><thead><tr>{head}</tr></thead>"
            f"<tbody>\n{rows}\n</tbody>{tfoot}</table></div>{more}")


def _kv(items: Iterable[tuple[str, Any]], digits: int = 4) -> str:
    rows = "".join(f"<tr><th scope=\"row\">{_e(k)}</th>{_cell('—' if v is None else v, digits, align=False)}</tr>"
                   for k, v in items)
    return f"<div class=\"table-wrap\"><table class=\"kv\"><tbody>{rows}</tbody></table></div>" if rows else ""


def _missing(what: str, *files: str) -> str:
    named = " and ".join(f"<code>{_e(f)}</code>" for f in files)
    absent = f" ({named} {'is' if len(files) == 1 else 'are'} absent)" if files else ""
    return f"<p class=\"missing\">{_e(what)}: not produced in this run{absent}.</p>"


def _figure(src: str | None, caption: str = "", *, alt: str = "", cls: str = "") -> str:
    if not src:
        return f"<figure class=\"{cls} absent\"><div class=\"noimg\">no image</div>" \
               f"<figcaption>{caption}</figcaption></figure>"
    return (f"<figure class=\"{cls}\"><img src=\"{src}\" alt=\"{_e(alt or caption)}\" loading=\"eager\">"
            f"<figcaption>{caption}</figcaption></figure>")


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts -> dotted keys, for config tables."""
    if isinstance(obj, dict):
        out: list[tuple[str, Any]] = []
        for k, v in obj.items():
            out += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return [(prefix, obj)]


def _natural_key(text: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


# ------------------------------------------------------------------------------------ images of one picture


def _photo(data: _Data, row: pd.Series | dict) -> str | None:
    """The dataset photo of a predictions row, as an embeddable src (None when the file is gone)."""
    value = row.get("path") if hasattr(row, "get") else None
    if not isinstance(value, str) or not value:
        return None
    p = Path(value)
    if not p.is_absolute():
        if data.dataset_root is None:
            return None
        p = data.dataset_root / p
    return data.run.image_src(p) if p.is_file() else None


def _rows_of(table: pd.DataFrame, image_id: str) -> pd.DataFrame:
    """The rows of ``table`` (sorted by image_id, as ``_load`` leaves it) for one image: a binary search."""
    ids = table["image_id"].to_numpy()
    lo, hi = np.searchsorted(ids, image_id, "left"), np.searchsorted(ids, image_id, "right")
    return table.iloc[lo:hi]


def _explained_rows(table: pd.DataFrame | None, image_id: str, prefer_label: str | None) -> pd.DataFrame | None:
    """An explanation table's rows for one image, narrowed to ``prefer_label`` when it was explained."""
    if table is None or "image_id" not in table.columns:
        return None
    rows = _rows_of(table, image_id)
    if rows.empty:
        return None
    if "label" in rows.columns and prefer_label is not None and (rows["label"] == prefer_label).any():
        return rows[rows["label"] == prefer_label]
    return rows


def _lime_rows(data: _Data, image_id: str, prefer_label: str | None) -> pd.DataFrame | None:
    rows = _explained_rows(data.lime, image_id, prefer_label)
    if rows is None or not {"label", "label_prob"} <= set(rows.columns) or rows["label"].nunique() == 1:
        return rows
    best = rows.sort_values("label_prob", ascending=False)["label"].iloc[0]  # the most probable explained label
    return rows[rows["label"] == best]


def _gradcam_row(data: _Data, image_id: str, prefer_label: str | None) -> pd.Series | None:
    rows = _explained_rows(data.gradcam, image_id, prefer_label)
    return None if rows is None else rows.iloc[0]


def _is_score(column: str) -> bool:
    """Faithfulness columns of the gradcam table: the schema's AUCs and any extra *_auc, *_score, *_hit."""
    return column in _SCORE_HELP or column.endswith(("_auc", "_score", "_hit"))


_LIME_PREFERRED = ("outline", "block")  # the pictures fruitlens.explain.lime draws, best first
_LIME_CAPTIONS = {"outline": "LIME · green for, red against", "block": "LIME · top superpixels only"}
_LIME_SKIP = ("segments", "boundaries", "density")  # not explanations of one label at image size


def _lime_images(data: _Data, image_id: str, label: str | None) -> list[tuple[Path, str]]:
    """The LIME picture of an image (``explain/lime/<image_id>_*.png``) with its caption, as a list."""
    folder = data.run.root / "explain" / "lime"
    if not folder.is_dir():
        return []
    found = sorted(folder.glob(f"{glob_escape(image_id)}_*.png"), key=lambda p: _natural_key(p.name))
    tagged = [(p, p.stem[len(image_id) + 1:]) for p in found]

    def rank(item: tuple[Path, str]) -> int:
        tag = item[1]
        if tag in _LIME_PREFERRED:
            return _LIME_PREFERRED.index(tag)
        if label and label in tag:
            return len(_LIME_PREFERRED)
        return 99 if any(k in tag for k in _LIME_SKIP) else 50

    tagged.sort(key=rank)
    chosen = [t for t in tagged if rank(t) < 99][:1] or tagged[:1]
    return [(p, _LIME_CAPTIONS.get(tag, f"LIME · {tag}")) for p, tag in chosen]


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


_SCHEMA_GRADCAM = set(tables.SCHEMAS["gradcam"].names)
_SCORE_HELP = {
    "deletion_auc": "deletion AUC ↓",
    "insertion_auc": "insertion AUC ↑",
    "pointing_hit": "peak on the evidence",
}
_SCORE_LEGEND = ("<p class=\"note\">Faithfulness scores under each image: <b>LIME fit R²</b>, how well LIME's local "
                 "linear model matches the network around this image (higher: the LIME picture can be trusted "
                 "more); <b>deletion AUC ↓</b>, how fast the predicted probability falls as the pixels Grad-CAM "
                 "ranks highest are removed (lower is more faithful); <b>insertion AUC ↑</b>, how fast it rises as "
                 "they are added back (higher is more faithful).</p>")


def _explanation_card(data: _Data, row: pd.Series, *, note: str = "") -> str:
    """Photo, prediction, LIME and Grad-CAM of one predictions row, with the faithfulness scores."""
    image_id = str(row.get("image_id", ""))
    label, pred = str(row.get("label", "")), str(row.get("pred_label", ""))
    prob = row.get("pred_prob")
    correct = bool(row.get("correct", label == pred))
    verdict = "right" if correct else "wrong"
    prob_text = f" ({_pct(float(prob))})" if isinstance(prob, (float, np.floating)) else ""
    figures = [_figure(_photo(data, row), "photo", alt=f"photo of {label}")]
    lime_rows = _lime_rows(data, image_id, pred)
    lime_label = str(lime_rows["label"].iloc[0]) if lime_rows is not None and "label" in lime_rows else pred
    for path, tag in _lime_images(data, image_id, lime_label):
        figures.append(_figure(data.run.image_src(path), _e(tag),
                               alt=f"LIME explanation of {image_id}"))
    g = _gradcam_row(data, image_id, pred)
    if g is not None:
        gpath = data.run.file(g.get("overlay_path"), "explain", "explain/gradcam") or \
            data.run.file(g.get("heatmap_path"), "explain", "explain/gradcam")
        layer = f" · {_e(g['layer'])}" if isinstance(g.get("layer"), str) else ""
        figures.append(_figure(data.run.image_src(gpath) if gpath else None, f"Grad-CAM{layer}",
                               alt=f"Grad-CAM of {image_id}"))
    if lime_rows is None and g is None:
        side = data.run.root / "explain" / "side_by_side" / f"{image_id}.png"
        if side.is_file():
            figures.append(_figure(data.run.image_src(side), "explanations side by side"))
    scores: list[str] = []
    if lime_rows is not None:
        first = lime_rows.iloc[0]
        if "score" in first and pd.notna(first["score"]):
            scores.append(f"LIME fit R² <b>{_fmt(first['score'], 2)}</b>")
        if "weight" in lime_rows and "superpixel" in lime_rows and len(lime_rows):
            pos = lime_rows[lime_rows["weight"] > 0]
            scores.append(f"{len(pos)} of {len(lime_rows)} superpixels speak for <b>{_e(lime_label)}</b>")
    if g is not None:
        for key in [c for c in g.index if _is_score(c)]:
            value = g[key]
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            scores.append(f"{_e(_SCORE_HELP.get(key, key.replace('_', ' ')))} <b>{_e(_fmt(value, 2))}</b>")
    if lime_rows is None and g is None:
        scores.append("not explained in this run")
    head = (f"<div class=\"card-head\"><span class=\"badge {verdict}\">{verdict}</span> "
            f"<b>{_e(label)}</b> → predicted <b>{_e(pred)}</b>{prob_text}"
            f"{f' <span class=note>{note}</span>' if note else ''}</div>")
    return (f"<div class=\"card\" data-image-id=\"{_e(image_id)}\">{head}<div class=\"figs\">{''.join(figures)}"
            f"</div><p class=\"scores\">{' · '.join(scores)}</p></div>")


def _pick(explained: set[str], rows: pd.DataFrame, n: int) -> pd.DataFrame:
    """Up to ``n`` rows, explained images first, most confident first."""
    if rows.empty:
        return rows
    key = rows["image_id"].astype(str).isin(explained) if "image_id" in rows else False
    order = rows.assign(_explained=key)
    sort_cols = ["_explained"] + (["pred_prob"] if "pred_prob" in rows else [])
    order = order.sort_values(sort_cols, ascending=False, kind="stable")
    return order.drop(columns="_explained").head(n)


def _pair_rows(explained: set[str], pred: pd.DataFrame, true: str, other: str, n: int
               ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``n`` mistakes ``true -> other`` shown for a confused pair, and one right ``other`` beside them."""
    y, p = pred["label"].astype(str), pred["pred_label"].astype(str)
    return _pick(explained, pred[(y == true) & (p == other)], n), _pick(explained, pred[(y == other) & (p == other)], 1)


def _class_rows(explained: set[str], pred: pd.DataFrame, cls: str, n: int) -> pd.DataFrame:
    """The ``n`` images of class ``cls`` shown in "Explanations per class": right ones, and a mistake if any."""
    y, p = pred["label"].astype(str), pred["pred_label"].astype(str)
    right = _pick(explained, pred[(y == cls) & (p == cls)], n)
    wrong = _pick(explained, pred[(y == cls) & (p != cls)], 1)
    return pd.concat([right.head(max(n - len(wrong), 1)), wrong]).head(n)


def images_to_explain(predictions: pd.DataFrame, *, samples_per_class: int = 2, top_pairs: int = 5,
                      per_pair: int = 2) -> list[str]:
    """The image ids the report shows explanations for, so a pipeline can explain exactly those.

    With the same arguments as ``build_report``, explaining these images fills "Why the model confuses
    them" (the most confident mistakes of each of the ``top_pairs`` most confused pairs, and one right
    prediction of the class they were taken for) and "Explanations per class" (``samples_per_class`` per
    class, a mistake among them where there is one). Deterministic: most confident first, ties by row order.

    Args:
        predictions: the ``predictions`` table (image_id, label, pred_label, pred_prob at least).

    Returns:
        Image ids, the confused pairs' first, without duplicates.
    """
    missing = [c for c in ("image_id", "label", "pred_label") if c not in predictions.columns]
    if missing:
        raise ValueError(f"predictions table without columns {missing}; expected the predictions schema")
    pred = predictions[predictions["label"].astype(str) != ""]
    classes = sorted(set(pred["label"].astype(str)))
    _, pairs = _confusion(pred, classes)
    chosen: list[pd.DataFrame] = []
    for true, other, _n, _support in pairs[:top_pairs]:
        chosen.extend(_pair_rows(set(), pred, true, other, per_pair))
    chosen.extend(_class_rows(set(), pred, cls, samples_per_class) for cls in classes)
    ids = pd.concat(chosen)["image_id"].astype(str) if chosen else pd.Series([], dtype=str)
    return list(dict.fromkeys(ids))


# ------------------------------------------------------------------------------------ sections


def _section_dataset(data: _Data) -> str:
    parts = []
    meta, images = data.index_meta, data.images
    if meta is None and images is None:
        return _missing("Dataset index", "index/index.json", "index/images.parquet")
    if images is not None and {"label", "split", "status"} <= set(images.columns):
        ok = images[images["status"] == "ok"]
        counts = pd.crosstab(ok["label"], ok["split"]) if len(ok) else pd.DataFrame()
        splits = [s for s in ("train", "val", "test") if s in counts.columns] + \
            [s for s in counts.columns if s not in ("train", "val", "test")]
        counts = counts.reindex(columns=splits)
        bad = images[images["status"] != "ok"]
    else:
        raw = (meta or {}).get("counts", {})
        counts = pd.DataFrame(raw).fillna(0).astype(int) if raw else pd.DataFrame()
        bad = None
    if len(counts):
        counts = counts.reindex(sorted(counts.index, key=lambda c: (c not in data.classes, str(c)))).fillna(0)
        counts = counts.astype(int)
        counts["total"] = counts.sum(axis=1)
        df = counts.reset_index(names="class")
        foot = pd.DataFrame([["all classes", *counts.sum(axis=0).tolist()]], columns=df.columns)
        n_ok = int(counts["total"].sum())
        split_txt = ", ".join(f"{int(counts[s].sum()):,} {s}" for s in counts.columns if s != "total")
        parts.append(f"<p>{n_ok:,} usable images in {len(counts)} classes ({split_txt}).</p>")
        parts.append(_table(df, foot=foot))
    n_bad = len(bad) if bad is not None else int((meta or {}).get("num_bad", 0))
    if n_bad:
        parts.append(f"<h3>Bad files ({n_bad:,})</h3><p>Files that could not be used, with the reason. "
                     "Every later step leaves them out.</p>")
        if bad is not None:
            parts.append(_table(bad, columns=["path", "split", "label", "status", "error"], limit=200))
        else:
            parts.append(_kv(sorted((meta or {}).get("bad_by_status", {}).items())))
    else:
        parts.append("<p>No bad files: every file could be read.</p>")
    warnings = (meta or {}).get("warnings") or []
    if warnings:
        parts.append("<h3>Warnings</h3><ul>" + "".join(f"<li>{_e(w)}</li>" for w in warnings) + "</ul>")
    if meta:
        parts.append(_kv([(k, meta[k]) for k in ("root", "layout", "fingerprint", "num_files", "seconds")
                          if k in meta]))
    return "".join(parts)


def _section_training(data: _Data) -> str:
    parts = []
    curves = data.run.root / "curves.png"
    h = data.history
    if curves.is_file():
        parts.append(_figure(data.run.image_src(curves), "loss and accuracy per epoch", cls="wide"))
    elif h is not None and len(h):
        from fruitlens.plots import history_figure

        buf = io.BytesIO()
        fig = history_figure(h)
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(fig)
        uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
        parts.append(_figure(uri, "loss and accuracy per epoch (drawn from history.parquet)", cls="wide"))
    if h is None:
        parts.append(_missing("Training history", "history.parquet"))
        if not curves.is_file():
            parts.append(_missing("Training curves", "curves.png"))
        return "".join(parts)
    if len(h):
        last = h.iloc[-1]
        words = [f"{len(h)} epochs"]
        if "val_accuracy" in h and h["val_accuracy"].notna().any():
            at = h["val_accuracy"].idxmax()
            epoch = int(h.loc[at, "epoch"]) if "epoch" in h else int(h.index.get_loc(at)) + 1
            words.append(f"best validation accuracy {_pct(h.loc[at, 'val_accuracy'])} at epoch {epoch}")
        if "accuracy" in h and pd.notna(last.get("accuracy")):
            words.append(f"final training accuracy {_pct(last['accuracy'])}")
        if "seconds" in h and h["seconds"].notna().any():
            words.append(f"{h['seconds'].sum():.1f} s in all")
        parts.append(f"<p>{_e('; '.join(words))}.</p>")
    parts.append("<details><summary>History table</summary>" + _table(h, digits=4) + "</details>")
    return "".join(parts)


def _section_metrics(data: _Data) -> str:
    parts = []
    if data.per_class is None:
        parts.append(_missing("Per-image predictions", PREDICTIONS))
    else:
        pred = data.predictions
        correct = (pred["label"].astype(str) == pred["pred_label"].astype(str))
        parts.append(f"<p>Accuracy <b>{_pct(correct.mean())}</b>: {int(correct.sum()):,} of {len(pred):,} "
                     f"images right. Precision: of the images predicted as a class, the share that are; recall: "
                     f"of the images of a class, the share found; F1: their harmonic mean.</p>")
        pc = data.per_class.sort_values("f1", kind="stable")
        s = pc["support"].to_numpy(dtype=float)
        w = s / s.sum() if s.sum() else s
        foot = pd.DataFrame([
            ["macro average", pc["precision"].mean(), pc["recall"].mean(), pc["f1"].mean(), int(s.sum())],
            ["weighted average", float((pc["precision"] * w).sum()), float((pc["recall"] * w).sum()),
             float((pc["f1"] * w).sum()), int(s.sum())],
        ], columns=pc.columns)
        parts.append(_table(pc, foot=foot, headers={"f1": "F1"}))
        if data.unknown_labels:
            parts.append(f"<p class=\"note\">{data.unknown_labels:,} evaluated images have a label that is not one "
                         "of the model's classes; they are left out of every number here.</p>")
        parts.append("<p class=\"note\">Sorted by F1, weakest class first; click a header to sort.</p>")
    m = data.metrics_json
    if m is None:
        parts.append(_missing("Evaluation metrics file", "eval/metrics.json"))
    else:
        scalars = [(k, v) for k, v in _flatten(m) if not isinstance(v, (list, dict)) and "per_class" not in k
                   and not re.search(r"\.(precision|recall|f1|f1-score|support)$", k)]
        if scalars:
            parts.append("<details><summary>All entries of eval/metrics.json</summary>"
                         + _kv(scalars[:200]) + "</details>")
    return "".join(parts)


def _heat_table(conf: pd.DataFrame) -> str:
    labels = list(conf.index)
    counts = conf.to_numpy()
    row_sum = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, np.maximum(row_sum, 1))
    head = "<th class=\"corner\">true ↓ · predicted →</th>" + "".join(
        f"<th class=\"col\" scope=\"col\"><span>{_e(c)}</span></th>" for c in labels)
    body = []
    for i, name in enumerate(labels):
        cells = []
        for j, other in enumerate(labels):
            n, frac = int(counts[i, j]), float(share[i, j])
            if i == j:
                color = f"rgba(37, 99, 235, {0.08 + 0.72 * frac:.3f})"
            elif n:
                color = f"rgba(220, 38, 38, {0.15 + 0.85 * frac:.3f})"
            else:
                color = "transparent"
            fg = " style=\"color:#fff\"" if frac > 0.55 else ""
            title = f"{name} predicted as {other}: {n} ({_pct(frac)} of {name})"
            cells.append(f"<td class=\"{'diag' if i == j else 'off'}\" title=\"{_e(title)}\" "
                         f"style=\"background:{color}\"><span{fg}>{n if n else '·'}</span></td>")
        body.append(f"<tr><th scope=\"row\">{_e(name)}</th>{''.join(cells)}"
                    f"<td class=\"rowsum\">{int(row_sum[i, 0])}</td></tr>")
    return (f"<div class=\"table-wrap\"><table class=\"heat\"><thead><tr>{head}<th class=\"col\"><span>total"
            f"</span></th></tr></thead><tbody>{''.join(body)}</tbody></table></div>")


def _pair_sentence(true: str, pred: str, n: int, support: int) -> str:
    share = f" ({_pct(n / support, 0)} of the {support:,} {_e(true)} images)" if support else ""
    return f"<b>{_e(true)}</b> is taken for <b>{_e(pred)}</b> in {n:,} case{'s' if n != 1 else ''}{share}"


def _section_confusion(data: _Data, top_pairs: int) -> str:
    if data.confusion is None:
        return _missing("Confusion matrix", PREDICTIONS)
    parts = ["<p>Rows are the true classes, columns the predicted ones; the diagonal (blue) holds the images "
             "classified right, red cells the mistakes. Hover a cell for its share of the row.</p>",
             _heat_table(data.confusion)]
    parts.append("<h3 id=\"confused-pairs\">Which classes the model confuses</h3>")
    if not data.pairs:
        parts.append("<p class=\"good\">No confusions: every test image was classified right.</p>")
    else:
        items = "".join(f"<li>{_pair_sentence(*p)}.</li>" for p in data.pairs[:top_pairs])
        more = len(data.pairs) - top_pairs
        tail = f"<p class=\"note\">… and {more} more pairs with fewer cases.</p>" if more > 0 else ""
        parts.append(f"<ol class=\"pairs\">{items}</ol>{tail}")
    png = data.run.root / "eval" / "confusion.png"
    if png.is_file():
        parts.append("<details><summary>The confusion matrix as written by the evaluation "
                     "(<code>eval/confusion.png</code>)</summary>"
                     + _figure(data.run.image_src(png), "confusion matrix", cls="wide") + "</details>")
    return "".join(parts)


def _section_mistakes(data: _Data, top_mistakes: int) -> str:
    if data.predictions is None:
        return _missing("Mistakes", PREDICTIONS)
    pred = data.predictions
    wrong = pred[pred["label"].astype(str) != pred["pred_label"].astype(str)]
    if wrong.empty:
        return "<p class=\"good\">No mistakes on this split.</p>"
    if "pred_prob" in wrong:
        wrong = wrong.sort_values("pred_prob", ascending=False, kind="stable")
    top = wrong.head(top_mistakes)
    parts = [f"<p>{len(wrong):,} mistakes; the {len(top)} the model was surest about, surest first. "
             "Confident mistakes point at labels worth checking or at classes that look alike.</p>"]
    cards = []
    for _, row in top.iterrows():
        prob = row.get("pred_prob")
        prob_txt = f" {_pct(float(prob), 0)}" if prob is not None and pd.notna(prob) else ""
        truth = ""
        if "topk_labels" in row and row["topk_labels"] is not None and "topk_probs" in row:
            labels, probs = list(row["topk_labels"]), list(row["topk_probs"])
            if row["label"] in labels:
                truth = f"{_e(row['label'])} had {_pct(float(probs[labels.index(row['label'])]), 0)}"
            else:
                truth = f"{_e(row['label'])} not in the top {len(labels)}"
        caption = (f"<b>{_e(row['label'])}</b> → {_e(row['pred_label'])}{prob_txt}"
                   + (f"<br><span class=note>{truth}</span>" if truth else ""))
        cards.append(_figure(_photo(data, row), caption, alt=f"{row['label']} predicted {row['pred_label']}",
                             cls="thumb"))
    if any("no image" not in c for c in cards):
        parts.append(f"<div class=\"gallery\">{''.join(cards)}</div>")
    png = data.run.root / "eval" / "mistakes.png"
    if png.is_file():
        parts.append("<details><summary>The mistakes as drawn by the evaluation (<code>eval/mistakes.png</code>)"
                     "</summary>" + _figure(data.run.image_src(png), "most confident mistakes", cls="wide")
                     + "</details>")
    cols = ["path", "label", "pred_label", "pred_prob", "image_id"]
    parts.append("<details><summary>Mistakes table</summary>"
                 + _table(wrong, columns=cols, limit=200, headers={"pred_label": "predicted", "pred_prob": "prob"})
                 + "</details>")
    return "".join(parts)


def _explain_status(data: _Data) -> str:
    have = [name for name, t in (("LIME", data.lime), ("Grad-CAM", data.gradcam)) if t is not None]
    if not have:
        return ""
    return f"{len(data.explained):,} images were explained ({' and '.join(have)})"


def _section_why(data: _Data, top_pairs: int, per_pair: int) -> str:
    if data.predictions is None:
        return _missing("Explanations of the confusions", PREDICTIONS)
    if not data.pairs:
        return "<p class=\"good\">The model confuses no classes on this split, so there is nothing to explain.</p>"
    parts = ["<p>For each confused pair: the mistakes themselves, explained, and for comparison an image of the "
             "class they were taken for that the model got right. Where LIME and Grad-CAM light up on the same "
             "region in both, that region is what the model takes as evidence for the wrong class.</p>", _SCORE_LEGEND]
    if data.lime is None and data.gradcam is None:
        parts.append(_missing("LIME and Grad-CAM explanations", LIME, GRADCAM))
    pred = data.predictions
    y, p = pred["label"].astype(str), pred["pred_label"].astype(str)
    for true, other, n, support in data.pairs[:top_pairs]:
        mistakes, right = _pair_rows(data.explained, pred, true, other, per_pair)
        n_expl = int(pred[(y == true) & (p == other)]["image_id"].astype(str).isin(data.explained).sum()) \
            if "image_id" in pred else 0
        parts.append(f"<h3>{_pair_sentence(true, other, n, support)}</h3>")
        if data.explained and not n_expl:
            parts.append("<p class=\"missing\">None of these mistakes was explained in this run "
                         f"({_e(_explain_status(data))}); their photos and predictions follow.</p>")
        hint = _pointing_summary(data, pred[(y == true) & (p == other)], pred[(y == other) & (p == other)], other)
        if hint:
            parts.append(f"<p>{hint}</p>")
        cards = [_explanation_card(data, r, note="mistake") for _, r in mistakes.iterrows()]
        cards += [_explanation_card(data, r, note=f"a {_e(other)} the model got right")
                  for _, r in right.iterrows()]
        parts.append(f"<div class=\"cards\">{''.join(cards)}</div>")
    return "".join(parts)


def _evidence_hits(data: _Data, ids: set[str]) -> list[tuple[str, int, int]]:
    """For images ``ids``: how often each explanation points at the annotated evidence, when measured.

    Grad-CAM: ``pointing_hit`` (its peak inside the evidence mask). LIME: the strongest superpixel of the
    explained label lies mostly (> 50 %) inside the mask (``evidence`` column). Returns (what, hits, of).
    """
    out = []
    g = data.gradcam
    if g is not None and {"image_id", "pointing_hit"} <= set(g.columns):
        hits = g[g["image_id"].astype(str).isin(ids)].drop_duplicates("image_id")["pointing_hit"].dropna()
        if len(hits):
            out.append(("Grad-CAM's peak", int(hits.astype(bool).sum()), len(hits)))
    lime = data.lime
    if lime is not None and {"image_id", "weight", "evidence"} <= set(lime.columns):
        sub = lime[lime["image_id"].astype(str).isin(ids) & lime["evidence"].notna()]
        if "label_prob" in sub and "label" in sub and len(sub):  # the top explained label of each image
            top = sub.sort_values("label_prob", ascending=False).drop_duplicates("image_id")[["image_id", "label"]]
            sub = sub.merge(top, on=["image_id", "label"])
        if len(sub):
            best = sub.sort_values("weight", ascending=False).drop_duplicates("image_id")
            out.append(("LIME's strongest superpixel", int((best["evidence"] > 0.5).sum()), len(best)))
    return out


def _pointing_summary(data: _Data, mistakes: pd.DataFrame, right: pd.DataFrame, other: str) -> str:
    """Where the explanations looked in these mistakes, against right predictions of the class taken for."""
    if "image_id" not in mistakes:
        return ""
    wrong = _evidence_hits(data, set(mistakes["image_id"].astype(str)))
    if not wrong:
        return ""
    good = {what: (k, n) for what, k, n in _evidence_hits(data, set(right["image_id"].astype(str)))}
    phrases = []
    for what, k, n in wrong:
        text = f"{what} lies on the annotated evidence in {k} of {n} of these mistakes"
        if what in good:
            gk, gn = good[what]
            text += f" (against {gk} of {gn} images of {_e(other)} it got right)"
        phrases.append(text)
    what, k, n = wrong[0]  # the verdict follows the first measure (Grad-CAM when there is one)
    right_rate = good[what][0] / good[what][1] if what in good and good[what][1] else None
    if 2 * k >= n:
        verdict = "It did look at the evidence, and misread it: to this model the two classes' evidence looks alike."
    elif right_rate is None:
        verdict = "The model mostly looked away from the evidence when it made these mistakes."
    elif right_rate >= 0.5:
        verdict = "When it errs, the model looks away from the evidence it uses when it is right."
    else:
        verdict = ("The explanations rarely point at the evidence even on right predictions, so they do not single "
                   "out these mistakes: the model may rely on other cues, or the explanation is too coarse to "
                   "show it.")
    return "; ".join(phrases) + f". <b>{verdict}</b>"


def _faithfulness_table(data: _Data) -> str:
    if data.predictions is None or not data.explained:
        return ""
    pred = data.predictions[["image_id", "label"]].astype({"image_id": str})
    frames = []
    if data.lime is not None and {"image_id", "score"} <= set(data.lime.columns):
        lime = data.lime.groupby(data.lime["image_id"].astype(str))["score"].first().rename("LIME R²")
        frames.append(lime)
    if data.gradcam is not None and "image_id" in data.gradcam.columns:
        g = data.gradcam.assign(image_id=data.gradcam["image_id"].astype(str)).drop_duplicates("image_id")
        num = [c for c in g.columns if _is_score(c)]
        if num:
            frames.append(g.set_index("image_id")[num].astype(float))
    if not frames:
        return ""
    scores = pd.concat(frames, axis=1)
    joined = pred.merge(scores, left_on="image_id", right_index=True, how="inner")
    if joined.empty:
        return ""
    agg = joined.groupby("label").agg(images=("image_id", "size"),
                                      **{c: (c, "mean") for c in scores.columns}).reset_index(names="class")
    return ("<h3>Faithfulness per class (means over the explained images)</h3><p class=\"note\">LIME R²: how well "
            "the local linear model fits; deletion AUC: how fast the class probability falls as the most "
            "important pixels are removed (lower is more faithful); insertion AUC: how fast it rises as they "
            "are added (higher is more faithful).</p>"
            + _table(agg, headers={"deletion_auc": "deletion AUC ↓", "insertion_auc": "insertion AUC ↑",
                                   "pointing_hit": "peak on the evidence (share)"}))


def _section_explanations(data: _Data, per_class: int) -> str:
    if data.lime is None and data.gradcam is None:
        return _missing("LIME and Grad-CAM explanations", LIME, GRADCAM)
    if data.predictions is None:
        return _missing("Predictions for the explained images", PREDICTIONS)
    parts = [f"<p>{_e(_explain_status(data))}. For each class, up to {per_class} explained images: a right "
             "prediction, and a mistake where there is one. LIME shows the superpixels that speak for the "
             "prediction; Grad-CAM the regions whose gradient drives it.</p>", _SCORE_LEGEND]
    pred = data.predictions
    pred_ids = pred["image_id"].astype(str)
    explained = pred[pred_ids.isin(data.explained)]
    for cls in data.classes:
        chosen = _class_rows(data.explained, explained, cls, per_class)
        body = "".join(_explanation_card(data, r) for _, r in chosen.iterrows()) if len(chosen) else \
            "<p class=\"missing\">No image of this class was explained in this run.</p>"
        parts.append(f"<h3 class=\"cls\">{_e(cls)}</h3><div class=\"cards\">{body}</div>")
    parts.append(_faithfulness_table(data))
    if data.failed is not None and len(data.failed):
        parts.append(f"<h3>Images that could not be explained ({len(data.failed)})</h3>"
                     + _table(data.failed, limit=100))
    return "".join(parts)


def _section_visualize(data: _Data) -> str:
    parts = []
    root = data.run.root / "visualize"
    for kind, title, text in (
            ("activations", "Activation grids", "What each convolutional layer outputs for one image, "
                                                "one tile per channel."),
            ("filters", "Filter patterns", "Inputs that excite single filters most (gradient ascent).")):
        files = sorted((root / kind).glob("*.png"), key=lambda p: _natural_key(p.name)) \
            if (root / kind).is_dir() else []
        parts.append(f"<h3>{title}</h3>")
        if not files:
            parts.append(_missing(title, f"visualize/{kind}/*.png"))
            continue
        parts.append(f"<p>{text}</p>")
        parts.extend(_figure(data.run.image_src(f), f"layer <code>{_e(f.stem)}</code>", cls="wide grid")
                     for f in files)
    return "".join(parts)


def _section_comparison(data: _Data) -> str:
    c = data.comparison
    if c is None:
        return _missing("Comparison with the previous model (made by the nightly flow)", "comparison.parquet")
    if c.empty:
        return "<p class=\"missing\">comparison.parquet is empty.</p>"
    parts = ["<p>This run's model (new) against the current model it would replace, measured on the same "
             "images by the nightly flow.</p>"]
    if "promoted" in c.columns and c["promoted"].notna().any():
        promoted = bool(c["promoted"].dropna().iloc[0])
        first_model = "current" in c.columns and c["current"].isna().all()
        parts.append("<p class=\"good\">There was no current model: this one became the current model.</p>"
                     if first_model and promoted else
                     "<p class=\"good\">The new model was not worse: it became the current model.</p>" if promoted
                     else "<p class=\"missing\">The new model did worse: the current model was kept.</p>")
    if {"metric", "new", "current", "delta"} <= set(c.columns):
        lines = []
        for r in c.itertuples():
            if pd.notna(r.current) and pd.notna(r.delta):
                sign = "+" if r.delta >= 0 else "−"
                lines.append(f"<li>{_e(r.metric)}: new <b>{_fmt(r.new, 4)}</b>, current {_fmt(r.current, 4)} "
                             f"({sign}{_fmt(abs(float(r.delta)), 4)})</li>")
        if lines:
            parts.append(f"<ul>{''.join(lines)}</ul>")
    parts.append(_table(c, digits=4))
    return "".join(parts)


def _timings(run_json: dict | None) -> pd.DataFrame | None:
    """Step timings from run.json, whatever shape: {step: s}, {step: {seconds}}, or a list of records."""
    if not run_json:
        return None
    raw = next((run_json[k] for k in ("timings", "steps", "step_timings", "durations", "tasks")
                if k in run_json and run_json[k]), None)
    if raw is None:
        return None
    rows = []
    items = raw.items() if isinstance(raw, dict) else enumerate(raw) if isinstance(raw, list) else []
    for key, value in items:
        if isinstance(value, dict):
            name = value.get("name") or value.get("step") or value.get("task") or str(key)
            secs = next((value[k] for k in ("seconds", "duration_s", "duration", "elapsed", "wall_s")
                         if isinstance(value.get(k), (int, float))), None)
            extra = {k: v for k, v in value.items() if k not in ("name", "step", "task")
                     and not isinstance(v, (dict, list))}
            rows.append({"step": str(name), "seconds": secs, **{k: v for k, v in extra.items() if k != "seconds"}})
        elif isinstance(value, (int, float)):
            rows.append({"step": str(key), "seconds": float(value)})
    return pd.DataFrame(rows) if rows else None


def _section_run(data: _Data) -> str:
    parts = []
    rj, card = data.run_json, data.card
    if rj is None:
        parts.append(_missing("Pipeline record (config, versions, timings)", "run.json"))
    else:
        top = [(k, v) for k, v in rj.items() if not isinstance(v, (dict, list))]
        if top:
            parts.append("<h3>Run</h3>" + _kv(top))
        t = _timings(rj)
        parts.append("<h3>Timings of each step</h3>")
        if t is None:
            parts.append("<p class=\"missing\">run.json records no step timings.</p>")
        else:
            total = float(pd.to_numeric(t["seconds"], errors="coerce").fillna(0).sum())
            bars = []
            for _, r in t.iterrows():
                s = r["seconds"]
                s = float(s) if isinstance(s, (int, float, np.number)) and pd.notna(s) else 0.0
                width = 100 * s / total if total else 0
                bars.append(f"<div class=\"bar-row\"><span class=\"bar-label\">{_e(r['step'])}</span>"
                            f"<span class=\"bar\"><span style=\"width:{width:.1f}%\"></span></span>"
                            f"<span class=\"bar-value\">{s:.1f} s</span></div>")
            parts.append(f"<div class=\"bars\">{''.join(bars)}</div>"
                         f"<p class=\"note\">{total:.1f} s in all steps.</p>"
                         "<details><summary>Timings table</summary>" + _table(t) + "</details>")
        if isinstance(rj.get("config"), dict):
            parts.append("<h3>Pipeline configuration</h3>" + _kv(_flatten(rj["config"])))
        if isinstance(rj.get("versions"), dict):
            parts.append("<h3>Versions</h3>" + _kv(_flatten(rj["versions"])))
        rest = [(k, v) for k, v in rj.items() if isinstance(v, (dict, list)) and k not in (
            "config", "versions", "timings", "steps", "step_timings", "durations", "tasks")]
        for k, v in rest:
            parts.append(f"<details><summary>{_e(k)}</summary>" + _kv(_flatten(v) if isinstance(v, dict)
                                                                        else [(k, v)]) + "</details>")
    if card is None:
        parts.append(_missing("Model card", "model.json"))
    else:
        classes = card.get("classes") or []
        summary = [("arch", card.get("arch")), ("image_size (h, w)", card.get("image_size")),
                   ("preprocessing", card.get("preprocessing")),
                   ("classes", f"{len(classes)}: " + ", ".join(map(str, classes))),
                   ("seed", card.get("seed")), ("dataset fingerprint", card.get("fingerprint"))]
        parts.append("<h3>Model card (<code>model.json</code>)</h3>" + _kv([(k, v) for k, v in summary
                                                                           if v is not None]))
        if card.get("config"):
            parts.append("<h4>Training configuration</h4>" + _kv(_flatten(card["config"])))
        if card.get("metrics"):
            parts.append("<h4>Metrics recorded with the model</h4>" + _kv(_flatten(card["metrics"])))
        if card.get("versions") and not (rj and rj.get("versions")):
            parts.append("<h4>Versions</h4>" + _kv(_flatten(card["versions"])))
    return "".join(parts)


# ------------------------------------------------------------------------------------ the page


def _headline(data: _Data) -> tuple[str, str]:
    """The stat tiles of the header and the "in short" paragraph."""
    tiles: list[tuple[str, str]] = []
    words: list[str] = []
    if data.predictions is not None and len(data.predictions):
        pred = data.predictions
        acc = float((pred["label"].astype(str) == pred["pred_label"].astype(str)).mean())
        tiles.append((_pct(acc), "accuracy"))
        words.append(f"The model classifies <b>{_pct(acc)}</b> of {len(pred):,} evaluation images right.")
        if data.per_class is not None and len(data.per_class):
            tiles.append((f"{data.per_class['f1'].mean():.3f}", "macro F1"))
            worst = data.per_class.sort_values("f1", kind="stable").iloc[0]
            if worst["f1"] < 1:
                words.append(f"Its weakest class is <b>{_e(worst['class'])}</b> (F1 {worst['f1']:.2f}).")
        for key, value in (data.metrics_json or {}).items():
            k = re.fullmatch(r"top(\d+)_accuracy", key)  # worth a tile when k is small against the classes
            if k and isinstance(value, (int, float)) and 2 * int(k.group(1)) <= len(data.classes):
                tiles.append((_pct(float(value)), key.replace("_", " ")))
        wrong = int((pred["label"].astype(str) != pred["pred_label"].astype(str)).sum())
        tiles.append((f"{wrong:,}", "mistakes"))
        if data.pairs:
            words.append(f"Its most frequent confusion: {_pair_sentence(*data.pairs[0])} "
                         "(<a href=\"#why\">why</a>).")
    if data.classes:
        tiles.append((str(len(data.classes)), "classes"))
    if data.images is not None and "status" in data.images:
        tiles.append((f"{int((data.images['status'] == 'ok').sum()):,}", "images"))
    if data.history is not None and len(data.history):
        tiles.append((str(len(data.history)), "epochs"))
    if data.card:
        size = data.card.get("image_size")
        arch = _e(data.card.get("arch", ""))
        tiles.append((arch, "architecture" + (f" · {size[0]}×{size[1]}" if isinstance(size, list | tuple)
                                               and len(size) == 2 else "")))
    if not words:
        words.append("This run has no evaluation yet; the sections below show what it produced.")
    tiles_html = "".join(f"<div class=\"tile\"><div class=\"big\">{v}</div><div class=\"small\">{_e(k)}</div>"
                         f"</div>" for v, k in tiles)
    return tiles_html, " ".join(words)


_CSS = """
:root{--fg:#1f2328;--muted:#59636e;--line:#d8dee4;--bg:#fff;--soft:#f6f8fa;--accent:#2563eb;--bad:#dc2626;--ok:#15803d}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,sans-serif}
main,header .inner{max-width:1080px;margin:0 auto;padding:0 24px}
header{background:linear-gradient(135deg,#0f172a,#1e3a8a);color:#fff;padding:28px 0 22px}
header h1{margin:0 0 4px;font-size:26px;font-weight:650}
header .sub{color:#c7d2fe;font-size:13px;word-break:break-all}
header .short{margin:14px 0 4px;font-size:16px;color:#e0e7ff}
header .short a{color:#fff}
.tiles{display:flex;flex-wrap:wrap;gap:10px;margin-top:14px}
.tile{background:rgba(255,255,255,.1);border:1px solid rgba(255,255,255,.18);border-radius:10px;padding:8px 14px;
min-width:110px}
.tile .big{font-size:22px;font-weight:650;line-height:1.2}
.tile .small{font-size:12px;color:#c7d2fe;text-transform:uppercase;letter-spacing:.04em}
nav.toc{margin:22px 0 8px;padding:12px 18px;background:var(--soft);border:1px solid var(--line);border-radius:10px}
nav.toc h2{font-size:14px;margin:0 0 6px;text-transform:uppercase;letter-spacing:.05em;color:var(--muted);border:0;
padding:0}
nav.toc ol{margin:0;padding-left:22px;columns:2;column-gap:28px}
nav.toc a{color:var(--accent);text-decoration:none}
nav.toc a:hover{text-decoration:underline}
section{margin:34px 0;scroll-margin-top:12px}
h2{font-size:21px;margin:0 0 12px;padding-bottom:6px;border-bottom:2px solid var(--line)}
h3{font-size:16px;margin:22px 0 8px}
h3.cls{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:15px}
h4{font-size:14px;margin:16px 0 6px;color:var(--muted)}
code{font:13px ui-monospace,SFMono-Regular,Menlo,monospace;background:var(--soft);padding:1px 4px;border-radius:4px}
.missing{color:var(--muted);background:var(--soft);border-left:4px solid #9ca3af;padding:8px 12px;border-radius:4px}
.good{color:var(--ok);font-weight:600}
.note{color:var(--muted);font-size:13px}
.table-wrap{overflow-x:auto;margin:8px 0}
table{border-collapse:collapse;font-size:13px;min-width:40%}
th,td{padding:4px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}
thead th{background:var(--soft);position:sticky;top:0;font-weight:600;white-space:nowrap}
table.sortable thead th{cursor:pointer;user-select:none}
table.sortable thead th::after{content:" ↕";color:#9ca3af;font-size:11px}
table.sortable thead th[aria-sort=ascending]::after{content:" ↑";color:var(--accent)}
table.sortable thead th[aria-sort=descending]::after{content:" ↓";color:var(--accent)}
tfoot td{font-weight:600;background:var(--soft)}
table.kv th{width:32%;font-weight:500;color:var(--muted);background:none}
table.kv td{word-break:break-all}
table.heat{min-width:0;font-size:12px}
table.heat td,table.heat th{border:1px solid #eef0f3;padding:0;text-align:center}
table.heat td{width:30px;height:28px;min-width:28px;vertical-align:middle}
table.heat td span{display:block;padding:5px 2px;font-variant-numeric:tabular-nums}
table.heat tbody th{padding:2px 8px;text-align:right;white-space:nowrap;font-weight:500}
table.heat th.col{vertical-align:bottom;height:auto;padding:4px 2px;background:none}
table.heat th.col span{writing-mode:vertical-rl;transform:rotate(180deg);white-space:nowrap;font-weight:500}
table.heat th.corner{font-size:11px;color:var(--muted);vertical-align:bottom;background:none;font-weight:400}
table.heat td.rowsum{color:var(--muted);padding:0 6px}
ol.pairs li{margin:3px 0}
figure{margin:0;display:inline-block;vertical-align:top;text-align:center}
figure img{display:block;margin:0 auto;border:1px solid var(--line);border-radius:6px;background:#fff}
figure.wide img{max-width:100%;height:auto}
figure.grid{display:block;margin:10px 0;text-align:left}
figure.grid img{width:100%;max-width:760px;margin:0;image-rendering:pixelated}
figcaption{font-size:12px;color:var(--muted);margin-top:4px}
.noimg{width:128px;height:128px;display:flex;align-items:center;justify-content:center;color:#9ca3af;
border:1px dashed var(--line);border-radius:6px;font-size:12px}
.gallery{display:flex;flex-wrap:wrap;gap:14px}
.gallery figure img{width:128px;height:128px;object-fit:contain;image-rendering:auto}
.gallery figure{width:150px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:12px}
.card{border:1px solid var(--line);border-radius:10px;padding:10px 14px;background:#fff}
.card-head{font-size:14px;margin-bottom:8px}
.card .figs{display:flex;flex-wrap:wrap;gap:14px}
.card figure img{width:128px;height:128px;object-fit:contain;image-rendering:pixelated}
.card figure{width:140px}
.scores{margin:8px 0 0;font-size:13px;color:var(--muted)}
.badge{display:inline-block;padding:0 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff}
.badge.right{background:var(--ok)}.badge.wrong{background:var(--bad)}
details{margin:10px 0}
summary{cursor:pointer;color:var(--accent);font-size:14px}
.bars{margin:8px 0;max-width:760px}
.bar-row{display:flex;align-items:center;gap:10px;font-size:13px;margin:3px 0}
.bar-label{width:190px;text-align:right;color:var(--muted);overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.bar{flex:1;background:var(--soft);height:14px;border-radius:4px;overflow:hidden}
.bar span{display:block;height:100%;background:var(--accent)}
.bar-value{width:70px;font-variant-numeric:tabular-nums}
footer{color:var(--muted);font-size:12px;margin:40px 0 30px;border-top:1px solid var(--line);padding-top:10px}
@media (max-width:700px){nav.toc ol{columns:1}}
@media print{header{background:#1e3a8a !important;-webkit-print-color-adjust:exact}}
"""

# Sort a table by a clicked header: numbers by their data-v value, text otherwise; tfoot rows stay put.
_JS = """
(function(){
  function key(td){ if(!td) return ''; var v = td.getAttribute('data-v');
    return v !== null ? parseFloat(v) : td.textContent.trim().toLowerCase(); }
  function sortBy(th){
    var table = th.closest('table'), body = table.tBodies[0], col = th.cellIndex;
    var dir = th.getAttribute('aria-sort') === 'ascending' ? 'descending' : 'ascending';
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function(c){ c.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', dir);
    var rows = Array.prototype.slice.call(body.rows), sign = dir === 'ascending' ? 1 : -1;
    rows.sort(function(a, b){ var x = key(a.cells[col]), y = key(b.cells[col]);
      if (typeof x === 'number' && typeof y === 'number') return sign * (x - y);
      if (typeof x === 'number') return -1; if (typeof y === 'number') return 1;
      return sign * String(x).localeCompare(String(y), undefined, {numeric: true}); });
    rows.forEach(function(r){ body.appendChild(r); });
  }
  document.querySelectorAll('table.sortable thead th').forEach(function(th){
    th.addEventListener('click', function(){ sortBy(th); });
    th.title = 'click to sort';
  });
})();
"""


def build_report(run_dir: str | os.PathLike, *, samples_per_class: int = 2, top_mistakes: int = 12,
                 top_pairs: int = 5, per_pair: int = 2, embed: bool = True) -> Path:
    """Write ``run_dir/report.html`` from the run's tables and files; returns its path.

    Args:
        run_dir: a run folder (see the layout in DESIGN.md). Any part may be missing: its section then
            says so.
        samples_per_class: explained images shown per class in "Explanations per class".
        top_mistakes: confident mistakes shown as photos.
        top_pairs: confused class pairs listed and explained.
        per_pair: explained mistakes shown per confused pair.
        embed: embed the run's PNGs as data URIs (one portable file); with False they are referenced
            relatively (the report then needs the run folder beside it). Dataset photos, which live
            outside the run, are always embedded as small thumbnails.

    Returns:
        The path of ``report.html``.

    Raises:
        RunError: ``run_dir`` is not a folder, or holds none of the files of a run.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise RunError(f"{root}: no such run folder; expected a folder written by `fruitlens run` or `train`")
    known = ("model.json", "run.json", "index/index.json", "index/images.parquet", "history.parquet",
             PREDICTIONS, LIME, GRADCAM, "comparison.parquet")
    if not any((root / k).exists() for k in known):
        raise RunError(f"{root}: not a run folder; expected at least one of {', '.join(known)}")
    for name, value in (("samples_per_class", samples_per_class), ("top_mistakes", top_mistakes),
                        ("top_pairs", top_pairs), ("per_pair", per_pair)):
        if value < 1:
            raise ValueError(f"{name}={value}: expected at least 1")
    run = _Run(root=root, embed=embed)
    data = _load(run)
    bodies = {
        "dataset": _section_dataset(data),
        "training": _section_training(data),
        "metrics": _section_metrics(data),
        "confusion": _section_confusion(data, top_pairs),
        "mistakes": _section_mistakes(data, top_mistakes),
        "why": _section_why(data, top_pairs, per_pair),
        "explanations": _section_explanations(data, samples_per_class),
        "visualize": _section_visualize(data),
        "comparison": _section_comparison(data),
        "run": _section_run(data),
    }
    tiles, short = _headline(data)
    toc = "".join(f"<li><a href=\"#{sid}\">{_e(title)}</a></li>" for sid, title in SECTIONS)
    sections = "\n".join(f"<section id=\"{sid}\"><h2>{_e(title)}</h2>\n{bodies[sid]}\n</section>"
                         for sid, title in SECTIONS)
    problems = ""
    if run.problems:
        problems = ("<div class=\"missing\"><b>Some files could not be read:</b><ul>"
                    + "".join(f"<li>{_e(p)}</li>" for p in run.problems) + "</ul></div>")
    name = root.resolve().name
    built = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fruitlens report · {_e(name)}</title>
<style>{_CSS}</style>
</head>
<body>
<header><div class="inner">
<h1>fruitlens run report · {_e(name)}</h1>
<div class="sub">{_e(root.resolve())} · built {built}</div>
<p class="short">{short}</p>
<div class="tiles">{tiles}</div>
</div></header>
<main>
<nav class="toc" id="contents"><h2>Contents</h2><ol>{toc}</ol></nav>
{problems}
{sections}
<footer>Built by <code>fruitlens report {_e(root)}</code> from the run's tables and files alone; rebuild it
any time with the same command. No network is needed to view this page.</footer>
</main>
<script>{_JS}</script>
</body>
</html>
"""
    path = root / REPORT_FILE
    tables.write_bytes(path, page.encode("utf-8"))
    return path
