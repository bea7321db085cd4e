"""The report of an explain folder (``fruitlens explain --out DIR``): your own photos and their explanations.

``build_photos_report(explain_dir)`` writes ``DIR/report.html`` with the look of the run report (the same
``assets/report.css``, header tiles, lightbox, the same loader and building blocks): per photo its
prediction, the picture of every method that explained it, and the faithfulness scores; then the methods
ranked by faithfulness (the run report's section) and the photos that could not be read.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fruitlens import tables
from fruitlens.captions import layer_title
from fruitlens.layout import FAILED, REPORT_FILE, ExplainLayout, RunLayout
from fruitlens.report.html import asset, esc, figure, fmt, missing, prob, problems_box, table
from fruitlens.report.loader import ReportData, ReportOptions, RunFiles, by_image, thumbnail_uri

PHOTO_SIZE = 600  # longest side, in pixels, of the photo embedded beside its explanations
SECTIONS: tuple[tuple[str, str], ...] = (
    ("photos", "Your photos and their explanations"),
    ("ranking", "Explanation methods ranked by faithfulness"),
    ("failed", "Photos that could not be explained"),
)


@dataclass
class ExplainFiles(RunFiles):
    """:class:`RunFiles` whose explanation folder is the root itself (``fruitlens explain --out DIR``)."""

    @property
    def explain(self) -> ExplainLayout:
        return ExplainLayout(self.root)


def explain_methods(root: Path) -> list[str]:
    """The methods whose consolidated table lies at the top of ``root``, in the registry's order."""
    from fruitlens.config import METHODS

    return [m for m in METHODS if ExplainLayout(root).table(m).is_file()]


def is_explain_folder(root: Path) -> bool:
    """An explain folder: a method's table at its top level (a run keeps them in ``RUN/explain``)."""
    return Path(root).is_dir() and bool(explain_methods(Path(root)))


def _title(method: str) -> str:
    from fruitlens.registry import title

    return title(method)


def _number(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _photo_card(run: ExplainFiles, image_id: str, frames: dict[str, pd.DataFrame]) -> str:
    """One photo: its prediction, the picture of every method, and each method's faithfulness."""
    first = next(f.iloc[0] for f in frames.values())
    path = Path(str(first["path"]))
    try:
        photo_src = thumbnail_uri(path, PHOTO_SIZE) if path.is_file() else None
    except (OSError, ValueError):
        photo_src = None
    label = str(first.get("label", ""))
    probability = _number(first.get("label_prob", first.get("target_prob")))
    truth = first.get("true_label")
    truth_text = "" if not isinstance(truth, str) or not truth else \
        f" · labelled <b>{esc(truth)}</b> <span class=\"badge {'right' if truth == label else 'wrong'}\">" \
        f"{'right' if truth == label else 'wrong'}</span>"
    figures = [figure(photo_src, "photo", alt=f"photo {path.name}", cls="photo")]
    scores = []
    for method, rows in frames.items():
        row = rows.iloc[0]
        column = "picture_path" if method == "lime" else "overlay_path"
        picture = run.file(row.get(column), run.root, run.explain.pictures_dir(method)) if column in row else None
        if picture is None and method != "lime":
            picture = run.file(row.get("heatmap_path"), run.root)
        caption = _title(method) + (f" · {esc(layer_title(row['layer']))}" if method == "gradcam" and
                                   isinstance(row.get("layer"), str) else "")
        if method == "lime":  # the picture comes without its caption band: its legend in words
            caption += f" · green for {esc(label)}, red against"
        figures.append(figure(run.image_src(picture) if picture else None, caption,
                              alt=f"{_title(method)} of {path.name}"))
        parts = []
        if method == "lime" and _number(row.get("score")) is not None:
            parts.append(f"fit R² <b>{fmt(row['score'], 2)}</b>")
        for key, name in (("deletion_auc", "deletion ↓"), ("insertion_auc", "insertion ↑")):
            if _number(row.get(key)) is not None:
                parts.append(f"{name} <b>{fmt(row[key], 2)}</b>")
        if parts:
            scores.append(f"{esc(_title(method))}: {', '.join(parts)}")
    p = prob(probability)
    head = (f"<div class=\"card-head\"><b>{esc(path.name)}</b> → predicted <b>{esc(label)}</b>"
            f"{f' (p {p})' if p else ''}{truth_text}<div class=\"note\">{esc(path)}</div></div>")
    return (f"<div class=\"card photo-card\" data-image-id=\"{esc(image_id)}\">{head}"
            f"<div class=\"figs\">{''.join(figures)}</div>"
            f"<p class=\"scores\">{' · '.join(scores) or 'no faithfulness measured'}</p></div>")


def section_photos(run: ExplainFiles, frames: dict[str, pd.DataFrame]) -> str:
    if not frames:
        return missing("Explanations", "lime.parquet", "gradcam.parquet")
    ids = sorted(set().union(*(set(f["image_id"]) for f in frames.values())))
    paths = {}
    for f in frames.values():
        paths.update(zip(f["image_id"], f["path"].astype(str), strict=True))
    ids.sort(key=lambda i: paths.get(i, ""))
    cards = []
    for image_id in ids:
        per = {m: f[f["image_id"] == image_id] for m, f in frames.items()}
        per = {m: rows for m, rows in per.items() if len(rows)}
        if "lime" in per and "label_prob" in per["lime"]:  # LIME's most probable explained label
            best = per["lime"].sort_values("label_prob", ascending=False)["label"].iloc[0]
            per["lime"] = per["lime"][per["lime"]["label"] == best]
        cards.append(_photo_card(run, image_id, per))
    intro = (f"<p>{len(ids):,} photos, explained by {', '.join(_title(m) for m in frames)}. Under each photo: "
             "the predicted class and its probability, then each method's picture of why (click to enlarge). "
             "Faithfulness: <b>deletion ↓</b>, how fast the predicted probability falls as the pixels the method "
             "ranks highest are removed (lower is more faithful); <b>insertion ↑</b>, how fast it rises as they "
             "are added back (higher is more faithful); LIME's <b>fit R²</b>, how well its local linear model "
             "matches the network around the photo.</p>")
    return intro + f"<div class=\"cards\">{''.join(cards)}</div>"


def _page(root: Path, run: ExplainFiles, frames: dict[str, pd.DataFrame]) -> str:
    from fruitlens.report.explanations import section_ranking

    data = ReportData(run=run, card=run.json(run.root / "model.json"), run_json=None, index_meta=None, images=None,
                      history=None, predictions=None, metrics_json=None, lime=frames.get("lime"),
                      gradcam=frames.get("gradcam"), failed=None, comparison=None, classes=[], dataset_root=None)
    failed = run.table(run.explain.table(FAILED))
    bodies = {
        "photos": section_photos(run, frames),
        "ranking": section_ranking(data, ReportOptions()),
        "failed": table(failed, limit=200) if failed is not None and len(failed) else
        "<p>Every photo could be read.</p>",
    }
    ids = set().union(*(set(f["image_id"]) for f in frames.values())) if frames else set()
    card = data.card or {}
    tiles = [(f"{len(ids):,}", "photos"), (f"{len(frames)}", "methods"),
             (f"{0 if failed is None else len(failed):,}", "unreadable")]
    if card.get("classes"):
        tiles.append((f"{len(card['classes']):,}", "classes"))
    tiles_html = "".join(f"<div class=\"tile\"><div class=\"big\">{esc(v)}</div><div class=\"small\">{esc(k)}</div>"
                         f"</div>" for v, k in tiles)
    toc = "".join(f"<li><a href=\"#{sid}\">{esc(title)}</a></li>" for sid, title in SECTIONS)
    sections = "\n".join(f"<section id=\"{sid}\"><h2>{esc(title)}</h2>\n{bodies[sid]}\n</section>"
                         for sid, title in SECTIONS)
    problems = problems_box(run.problems)
    name = root.resolve().name
    built = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    model = f"model {esc(card.get('arch') or card.get('name') or '')}" if card else "model unknown"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fruitlens photos · {esc(name)}</title>
<style>{asset("report.css")}
#photos .cards{{grid-template-columns:1fr}}
.photo-card figure img{{width:300px;height:auto;object-fit:contain;image-rendering:auto}}
.photo-card figure{{width:302px}}
</style>
</head>
<body>
<header><div class="inner">
<h1>fruitlens explanations · {esc(name)}</h1>
<div class="sub">{esc(root.resolve())} · {model} · built {built}</div>
<div class="tiles">{tiles_html}</div>
</div></header>
<main>
<nav class="toc" id="contents"><h2>Contents</h2><ol>{toc}</ol></nav>
{problems}
{sections}
<footer>Built by <code>fruitlens report {esc(root)}</code> from the explain folder's tables and pictures alone;
rebuild it any time with the same command. No network is needed to view this page.</footer>
</main>
<script>{asset("report.js")}</script>
</body>
</html>
"""


def build_photos_report(explain_dir: str | os.PathLike, *, embed: bool = True) -> Path:
    """Write ``explain_dir/report.html`` from an explain folder's tables and pictures; returns its path.

    Args:
        explain_dir: a folder written by ``fruitlens explain --out``.
        embed: embed the pictures as data URIs (one portable file); False references them relatively.

    Raises:
        RunError: the folder holds no explanation table.
    """
    from fruitlens.runs import RunError

    root = Path(explain_dir)
    methods = explain_methods(root) if root.is_dir() else []
    if not methods:
        raise RunError(f"{root}: no explanation table (lime.parquet, gradcam.parquet, ...); expected a folder "
                       "written by `fruitlens explain --out`")
    run = ExplainFiles(RunLayout(root), embed=embed)
    frames = {}
    for method in methods:
        frame = by_image(run.table(run.explain.table(method)))
        if frame is not None and {"image_id", "path"} <= set(frame.columns) and len(frame):
            frames[method] = frame
    path = root / REPORT_FILE
    tables.write_bytes(path, _page(root, run, frames).encode("utf-8"))
    return path
