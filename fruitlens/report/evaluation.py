"""The evaluation parts of the report: the header's numbers, per-class metrics, the confusion matrix and
the confused pairs, the most confident mistakes. Every number comes from ``fruitlens.metrics`` (via the
loader), so the report agrees with metrics.json and with model promotion."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from fruitlens.metrics import ConfusedPair
from fruitlens.report.cards import photo
from fruitlens.report.html import details, esc, figure, flatten, fmt, kv, missing, pct, prob, table
from fruitlens.report.loader import ReportData, ReportOptions

FULL_MATRIX_MAX = 20  # above this many classes the heat matrix shows the confused classes, the full one folded
TIES_NAMED = 4  # tied confusions named in the header before "and N more"


def pair_sentence(p: ConfusedPair) -> str:
    """``<b>a</b> is taken for <b>b</b> in 3 cases (50.0% of the 6 a images)``."""
    share = f" ({pct(p.share)} of the {p.support:,} {esc(p.true)} images)" if p.support else ""
    return (f"<b>{esc(p.true)}</b> is taken for <b>{esc(p.pred)}</b> in {p.count:,} "
            f"case{'s' if p.count != 1 else ''}{share}")


def top_confusion_words(pairs: Sequence[ConfusedPair]) -> str:
    """The header's sentence on the most frequent confusion, or the confusions that tie for it."""
    if not pairs:
        return ""
    top = [p for p in pairs if p.count == pairs[0].count]
    if len(top) == 1:
        return f"Its most frequent confusion: {pair_sentence(top[0])} (<a href=\"#why\">why</a>)."
    named = ", ".join(f"<b>{esc(p.true)}</b> → <b>{esc(p.pred)}</b>" for p in top[:TIES_NAMED])
    more = f" and {len(top) - TIES_NAMED} more" if len(top) > TIES_NAMED else ""
    k = pairs[0].count
    return (f"{len(top)} confusions tie at {k} case{'s' if k != 1 else ''} each: {named}{more} "
            "(<a href=\"#confusion\">all pairs</a>, <a href=\"#why\">why</a>).")


def headline(data: ReportData) -> tuple[str, str]:
    """The stat tiles of the header (HTML) and the "in short" paragraph."""
    tiles: list[tuple[str, str]] = []
    words: list[str] = []
    if data.headline and data.headline["n"]:
        h, pred = data.headline, data.predictions
        tiles += [(pct(h["accuracy"]), "accuracy"), (fmt(h["macro_f1"]), "macro F1")]
        words.append(f"The model classifies <b>{pct(h['accuracy'])}</b> of {h['n']:,} evaluation images right.")
        worst = data.per_class.sort_values("f1", kind="stable").iloc[0]
        if worst["f1"] < 1:
            words.append(f"Its weakest class is <b>{esc(worst['class'])}</b> (F1 {fmt(worst['f1'])}).")
        for key, value in (data.metrics_json or {}).items():
            k = re.fullmatch(r"top(\d+)_accuracy", key)  # worth a tile when k is small against the classes
            if k and isinstance(value, (int, float)) and 2 * int(k.group(1)) <= len(data.classes):
                tiles.append((pct(float(value)), key.replace("_", " ")))
        tiles.append((f"{int((pred['label'] != pred['pred_label']).sum()):,}", "mistakes"))
        if data.pairs:
            words.append(top_confusion_words(data.pairs))
    if data.classes:
        tiles.append((f"{len(data.classes):,}", "classes"))
    if data.images is not None and "status" in data.images:
        tiles.append((f"{int((data.images['status'] == 'ok').sum()):,}", "images"))
    if data.history is not None and len(data.history):
        tiles.append((f"{len(data.history):,}", "epochs"))
    if data.card:
        size = data.card.get("image_size")
        dims = f" · {size[0]}×{size[1]}" if isinstance(size, list | tuple) and len(size) == 2 else ""
        tiles.append((esc(data.card.get("arch", "")), "architecture" + dims))
    if not words:
        words.append("This run has no evaluation yet; the sections below show what it produced.")
    tiles_html = "".join(f"<div class=\"tile\"><div class=\"big\">{v}</div><div class=\"small\">{esc(k)}</div>"
                         f"</div>" for v, k in tiles)
    return tiles_html, " ".join(words)


def section_metrics(data: ReportData, opts: ReportOptions) -> str:
    parts = []
    lay = data.layout
    if data.per_class is None:
        parts.append(missing("Per-image predictions", data.run.rel(lay.predictions)))
    else:
        h, pc = data.headline, data.per_class.sort_values("f1", kind="stable")
        right = int(round(h["accuracy"] * h["n"]))
        parts.append(f"<p>Accuracy <b>{pct(h['accuracy'])}</b>: {right:,} of {h['n']:,} images right; macro F1 "
                     f"<b>{fmt(h['macro_f1'])}</b>, the mean F1 over the {len(pc):,} classes that occur in the "
                     "labels or the predictions. Precision: of the images predicted as a class, the share that "
                     "are; recall: of the images of a class, the share found; F1: their harmonic mean.</p>")
        s = pc["support"].to_numpy(dtype=float)
        w = s / s.sum() if s.sum() else s
        foot = pd.DataFrame([
            ["macro average", pc["precision"].mean(), pc["recall"].mean(), h["macro_f1"], int(s.sum())],
            ["weighted average", float((pc["precision"] * w).sum()), float((pc["recall"] * w).sum()),
             float((pc["f1"] * w).sum()), int(s.sum())],
        ], columns=pc.columns)
        parts.append(table(pc, foot=foot, headers={"f1": "F1"}))
        absent = [c for c in data.classes if c not in set(pc["class"])]
        if absent:
            parts.append(f"<p class=\"note\">{len(absent):,} of the model's classes have no image and no prediction "
                         f"here, so they are left out of the averages: {esc(', '.join(absent[:20]))}"
                         f"{' …' if len(absent) > 20 else ''}.</p>")
        if data.unknown_labels:
            parts.append(f"<p class=\"note\">{data.unknown_labels:,} evaluated images have a label that is not one "
                         "of the model's classes; they are left out of every number here.</p>")
        parts.append("<p class=\"note\">Sorted by F1, weakest class first; click a header to sort.</p>")
    m = data.metrics_json
    if m is None:
        parts.append(missing("Evaluation metrics file", data.run.rel(lay.metrics)))
    else:
        scalars = [(k, v) for k, v in flatten(m) if not isinstance(v, (list, dict)) and "per_class" not in k
                   and not re.search(r"\.(precision|recall|f1|f1-score|support)$", k)]
        if scalars:
            parts.append(details(f"All entries of {esc(data.run.rel(lay.metrics))}", kv(scalars[:200])))
    return "".join(parts)


def heat_table(conf: pd.DataFrame) -> str:
    """The confusion matrix as a colored table (blue diagonal, red mistakes) in its own scrolling box."""
    labels = list(conf.index)
    counts = conf.to_numpy()
    row_sum = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, np.maximum(row_sum, 1))
    head = "<th class=\"corner\">true ↓ · predicted →</th>" + "".join(
        f"<th class=\"col\" scope=\"col\"><span>{esc(c)}</span></th>" for c in labels)
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
            title = f"{name} predicted as {other}: {n} ({pct(frac)} of {name})"
            cells.append(f"<td class=\"{'diag' if i == j else 'off'}\" title=\"{esc(title)}\" "
                         f"style=\"background:{color}\"><span{fg}>{n if n else '·'}</span></td>")
        body.append(f"<tr><th scope=\"row\">{esc(name)}</th>{''.join(cells)}"
                    f"<td class=\"rowsum\">{int(row_sum[i, 0])}</td></tr>")
    return (f"<div class=\"heat-box\"><table class=\"heat\"><thead><tr>{head}<th class=\"col\"><span>total"
            f"</span></th></tr></thead><tbody>{''.join(body)}</tbody></table></div>")


def _pairs_table(pairs: Sequence[ConfusedPair]) -> str:
    frame = pd.DataFrame({"true class": [p.true for p in pairs], "predicted as": [p.pred for p in pairs],
                          "cases": [p.count for p in pairs],
                          "share of the true class": [pct(p.share) for p in pairs]})
    return table(frame, limit=100)


def section_confusion(data: ReportData, opts: ReportOptions) -> str:
    if data.confusion is None:
        return missing("Confusion matrix", data.run.rel(data.layout.predictions))
    conf = data.confusion
    parts = ["<h3 id=\"confused-pairs\">Which classes the model confuses</h3>"]
    if not data.pairs:
        parts.append("<p class=\"good\">No confusions: every test image was classified right.</p>")
    else:
        items = "".join(f"<li>{pair_sentence(p)}.</li>" for p in data.pairs[:opts.top_pairs])
        parts.append(f"<ol class=\"pairs\">{items}</ol>")
        if len(data.pairs) > opts.top_pairs:
            parts.append(details(f"All {len(data.pairs):,} confused pairs, most cases first",
                                 _pairs_table(data.pairs), open_=len(conf) > FULL_MATRIX_MAX))
    parts.append("<h3>Counts per true and predicted class</h3><p>Rows are the true classes, columns the "
                 "predicted ones; the diagonal (blue) holds the images classified right, red cells the mistakes. "
                 "Hover a cell for its share of the row; the matrix scrolls inside its box.</p>")
    involved = sorted({p.true for p in data.pairs} | {p.pred for p in data.pairs}, key=list(conf.index).index)
    if len(conf) <= FULL_MATRIX_MAX or not involved:
        parts.append(heat_table(conf))
    else:
        parts.append(f"<p>The {len(involved):,} classes involved in a mistake (of {len(conf):,}):</p>"
                     + heat_table(conf.loc[involved, involved]))
        parts.append(details(f"The full {len(conf):,} × {len(conf):,} matrix", heat_table(conf)))
    png = data.layout.confusion_png
    if png.is_file():
        parts.append(details(f"The confusion matrix as written by the evaluation (<code>{esc(data.run.rel(png))}"
                             "</code>)", figure(data.run.image_src(png), "confusion matrix", cls="wide")))
    return "".join(parts)


def _truth_note(row: pd.Series) -> str:
    """What the model gave the true class of a mistake, from its top-k."""
    if "topk_labels" not in row or row["topk_labels"] is None or "topk_probs" not in row:
        return ""
    labels, probs = list(row["topk_labels"]), list(row["topk_probs"])
    if row["label"] in labels:
        return f"{esc(row['label'])} had p {prob(probs[labels.index(row['label'])])}"
    return f"{esc(row['label'])} not in the top {len(labels)}"


def section_mistakes(data: ReportData, opts: ReportOptions) -> str:
    if data.predictions is None:
        return missing("Mistakes", data.run.rel(data.layout.predictions))
    pred = data.predictions
    wrong = pred[pred["label"] != pred["pred_label"]]
    if wrong.empty:
        return "<p class=\"good\">No mistakes on this split.</p>"
    if "pred_prob" in wrong:
        wrong = wrong.sort_values("pred_prob", ascending=False, kind="stable")
    top = wrong.head(opts.top_mistakes)
    parts = [f"<p>{len(wrong):,} mistakes; the {len(top)} the model was surest about, surest first (p: the "
             "predicted probability). Confident mistakes point at labels worth checking or at classes that look "
             "alike. Click a photo to enlarge it.</p>"]
    cards = []
    for _, row in top.iterrows():
        p = prob(row.get("pred_prob"))
        truth = _truth_note(row)
        caption = (f"<b>{esc(row['label'])}</b> → {esc(row['pred_label'])}{f' p {p}' if p else ''}"
                   + (f"<br><span class=note>{truth}</span>" if truth else ""))
        cards.append(figure(photo(data, row), caption, alt=f"{row['label']} predicted {row['pred_label']}",
                            cls="thumb"))
    if any("no image" not in c for c in cards):
        parts.append(f"<div class=\"gallery\">{''.join(cards)}</div>")
    png = data.layout.mistakes_png
    if png.is_file():
        parts.append(details(f"The mistakes as drawn by the evaluation (<code>{esc(data.run.rel(png))}</code>)",
                             figure(data.run.image_src(png), "most confident mistakes", cls="wide")))
    cols = ["path", "label", "pred_label", "pred_prob", "image_id"]
    parts.append(details("Mistakes table", table(wrong, columns=cols, limit=200,
                                                 headers={"pred_label": "predicted", "pred_prob": "p"})))
    return "".join(parts)
