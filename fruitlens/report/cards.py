"""One explained image as a card (photo, LIME, Grad-CAM, faithfulness scores), and what the explanations
of a group of images say about the evidence."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from fruitlens.captions import layer_title
from fruitlens.layout import picture_stem
from fruitlens.report.html import esc, figure, fmt, glob_escape, natural_key, prob, table
from fruitlens.report.loader import ReportData

SCORE_HELP = {
    "deletion_auc": "deletion AUC ↓",
    "insertion_auc": "insertion AUC ↑",
    "pointing_hit": "peak on the evidence",
}
SCORE_LEGEND = ("<p class=\"note\">Faithfulness scores under each image: <b>LIME fit R²</b>, how well LIME's local "
                "linear model matches the network around this image (higher: the LIME picture can be trusted "
                "more); <b>deletion AUC ↓</b>, how fast the predicted probability falls as the pixels Grad-CAM "
                "ranks highest are removed (lower is more faithful); <b>insertion AUC ↑</b>, how fast it rises as "
                "they are added back (higher is more faithful).</p>")
LIME_PREFERRED = ("outline", "block")  # the pictures fruitlens.explain.lime draws, best first
LIME_CAPTIONS = {"outline": "LIME · green for, red against", "block": "LIME · top superpixels only"}
LIME_SKIP = ("segments", "boundaries", "density")  # not explanations of one label at image size


def photo(data: ReportData, row: pd.Series | dict) -> str | None:
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


def _rows_of(frame: pd.DataFrame, image_id: str) -> pd.DataFrame:
    """The rows of ``frame`` (sorted by image_id, as the loader leaves it) for one image: a binary search."""
    ids = frame["image_id"].to_numpy()
    lo, hi = np.searchsorted(ids, image_id, "left"), np.searchsorted(ids, image_id, "right")
    return frame.iloc[lo:hi]


def _explained_rows(frame: pd.DataFrame | None, image_id: str, prefer_label: str | None) -> pd.DataFrame | None:
    """An explanation table's rows for one image, narrowed to ``prefer_label`` when it was explained."""
    if frame is None or "image_id" not in frame.columns:
        return None
    rows = _rows_of(frame, image_id)
    if rows.empty:
        return None
    if "label" in rows.columns and prefer_label is not None and (rows["label"] == prefer_label).any():
        return rows[rows["label"] == prefer_label]
    return rows


def lime_rows(data: ReportData, image_id: str, prefer_label: str | None) -> pd.DataFrame | None:
    """The LIME rows of one image for one label (``prefer_label``, else the most probable explained one)."""
    rows = _explained_rows(data.lime, image_id, prefer_label)
    if rows is None or not {"label", "label_prob"} <= set(rows.columns) or rows["label"].nunique() == 1:
        return rows
    best = rows.sort_values("label_prob", ascending=False)["label"].iloc[0]
    return rows[rows["label"] == best]


def gradcam_row(data: ReportData, image_id: str, prefer_label: str | None) -> pd.Series | None:
    rows = _explained_rows(data.gradcam, image_id, prefer_label)
    return None if rows is None else rows.iloc[0]


def is_score(column: str) -> bool:
    """Faithfulness columns of the gradcam table: the schema's AUCs and any extra *_auc, *_score, *_hit."""
    return column in SCORE_HELP or column.endswith(("_auc", "_score", "_hit"))


def lime_images(data: ReportData, image_id: str, label: str | None,
                rows: pd.DataFrame | None = None) -> list[tuple[Path, str]]:
    """The LIME picture of an image with its caption, as a list: the ``picture_path`` its rows name, else
    ``explain/lime/<image_id>_*.png`` (runs written before pictures were named after their photos)."""
    if rows is not None and "picture_path" in rows:
        named = [p for p in rows["picture_path"].dropna().astype(str) if p]
        path = data.run.file(named[0], data.run.explain.root) if named else None
        if path is not None:
            return [(path, LIME_CAPTIONS.get("outline", "LIME"))]
    folder = data.run.explain.pictures_dir("lime")
    if not folder.is_dir():
        return []
    found = sorted(folder.glob(f"{glob_escape(image_id)}_*.png"), key=lambda p: natural_key(p.name))
    tagged = [(p, p.stem[len(image_id) + 1:]) for p in found]

    def rank(item: tuple[Path, str]) -> int:
        tag = item[1]
        if tag in LIME_PREFERRED:
            return LIME_PREFERRED.index(tag)
        if label and label in tag:
            return len(LIME_PREFERRED)
        return 99 if any(k in tag for k in LIME_SKIP) else 50

    tagged.sort(key=rank)
    chosen = [t for t in tagged if rank(t) < 99][:1] or tagged[:1]
    return [(p, LIME_CAPTIONS.get(tag, f"LIME · {tag}")) for p, tag in chosen]


def sanity_flag(data: ReportData, *methods: str) -> str:
    """A warning (HTML) for a caption when any of ``methods`` fails the randomisation test; "" otherwise."""
    failed = [m for m in methods if m in data.sanity_failed]
    if not failed:
        return ""
    why = "; ".join(f"{m}: {data.sanity_failed[m]}" for m in failed)
    return (f" <a class=\"sanity-fail\" href=\"#sanity\" title=\"{esc(why)}\">⚠ fails the sanity check"
            f"{'' if len(methods) == 1 else ' (' + esc(', '.join(failed)) + ')'}</a>")


def _gradcam_figure(data: ReportData, g: pd.Series, image_id: str) -> str:
    ex = data.run.explain
    bases = (ex.root, ex.pictures_dir("gradcam"))
    path = data.run.file(g.get("overlay_path"), *bases) or data.run.file(g.get("heatmap_path"), *bases)
    layer = f" · {esc(layer_title(g['layer']))}" if isinstance(g.get("layer"), str) else ""
    return figure(data.run.image_src(path) if path else None, f"Grad-CAM{layer}{sanity_flag(data, 'gradcam')}",
                  alt=f"Grad-CAM of {image_id}")


def _scores(lime: pd.DataFrame | None, lime_label: str, g: pd.Series | None) -> list[str]:
    scores: list[str] = []
    if lime is not None:
        first = lime.iloc[0]
        if "score" in first and pd.notna(first["score"]):
            scores.append(f"LIME fit R² <b>{fmt(first['score'], 2)}</b>")
        if "weight" in lime and "superpixel" in lime and len(lime):
            pos = lime[lime["weight"] > 0]
            scores.append(f"{len(pos)} of {len(lime)} superpixels speak for <b>{esc(lime_label)}</b>")
    if g is not None:
        for key in [c for c in g.index if is_score(c)]:
            value = g[key]
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            scores.append(f"{esc(SCORE_HELP.get(key, key.replace('_', ' ')))} <b>{esc(fmt(value, 2))}</b>")
    if lime is None and g is None:
        scores.append("not explained in this run")
    return scores


def explanation_card(data: ReportData, row: pd.Series, *, note: str = "") -> str:
    """Photo, prediction, LIME and Grad-CAM of one predictions row, with the faithfulness scores."""
    image_id = str(row.get("image_id", ""))
    label, pred = str(row.get("label", "")), str(row.get("pred_label", ""))
    correct = bool(row.get("correct", label == pred))
    verdict = "right" if correct else "wrong"
    p = prob(row.get("pred_prob"))
    prob_text = f" (p {p})" if p else ""
    figures = [figure(photo(data, row), "photo", alt=f"photo of {label}")]
    lime = lime_rows(data, image_id, pred)
    lime_label = str(lime["label"].iloc[0]) if lime is not None and "label" in lime else pred
    figures += [figure(data.run.image_src(path), esc(tag) + sanity_flag(data, "lime"),
                       alt=f"LIME explanation of {image_id}")
                for path, tag in lime_images(data, image_id, lime_label, lime)]
    g = gradcam_row(data, image_id, pred)
    if g is not None:
        figures.append(_gradcam_figure(data, g, image_id))
    if lime is None and g is None:
        side = data.run.explain.side_by_side(picture_stem(str(row.get("path", "")), image_id))
        if side.is_file():
            figures.append(figure(data.run.image_src(side), "explanations side by side"
                                  + sanity_flag(data, "lime", "gradcam")))
    head = (f"<div class=\"card-head\"><span class=\"badge {verdict}\">{verdict}</span> "
            f"<b>{esc(label)}</b> → predicted <b>{esc(pred)}</b>{prob_text}"
            f"{f' <span class=note>{note}</span>' if note else ''}</div>")
    return (f"<div class=\"card\" data-image-id=\"{esc(image_id)}\" data-label=\"{esc(label)}\">{head}"
            f"<div class=\"figs\">{''.join(figures)}</div>"
            f"<p class=\"scores\">{' · '.join(_scores(lime, lime_label, g))}</p></div>")


def evidence_hits(data: ReportData, ids: set[str]) -> list[tuple[str, int, int]]:
    """For images ``ids``: how often each explanation points at the annotated evidence, when measured.

    Grad-CAM: ``pointing_hit`` (its peak inside the evidence mask). LIME: the strongest superpixel of the
    explained label lies mostly (> 50 %) inside the mask (``evidence`` column). Returns (what, hits, of).
    """
    out = []
    g = data.gradcam
    if g is not None and {"image_id", "pointing_hit"} <= set(g.columns):
        hits = g[g["image_id"].isin(ids)].drop_duplicates("image_id")["pointing_hit"].dropna()
        if len(hits):
            out.append(("Grad-CAM's peak", int(hits.astype(bool).sum()), len(hits)))
    lime = data.lime
    if lime is not None and {"image_id", "weight", "evidence"} <= set(lime.columns):
        sub = lime[lime["image_id"].isin(ids) & lime["evidence"].notna()]
        if "label_prob" in sub and "label" in sub and len(sub):  # the top explained label of each image
            top = sub.sort_values("label_prob", ascending=False).drop_duplicates("image_id")[["image_id", "label"]]
            sub = sub.merge(top, on=["image_id", "label"])
        if len(sub):
            best = sub.sort_values("weight", ascending=False).drop_duplicates("image_id")
            out.append(("LIME's strongest superpixel", int((best["evidence"] > 0.5).sum()), len(best)))
    return out


def _verdict(k: int, n: int, right_rate: float | None) -> str:
    if 2 * k >= n:
        return "It did look at the evidence, and misread it: to this model the two classes' evidence looks alike."
    if right_rate is None:
        return "The model mostly looked away from the evidence when it made these mistakes."
    if right_rate >= 0.5:
        return "When it errs, the model looks away from the evidence it uses when it is right."
    return ("The explanations rarely point at the evidence even on right predictions, so they do not single out "
            "these mistakes: the model may rely on other cues, or the explanation is too coarse to show it.")


def pointing_summary(data: ReportData, mistakes: pd.DataFrame, right: pd.DataFrame, other: str) -> str:
    """Where the explanations looked in these mistakes, against right predictions of the class taken for."""
    if "image_id" not in mistakes:
        return ""
    wrong = evidence_hits(data, set(mistakes["image_id"].astype(str)))
    if not wrong:
        return ""
    good = {what: (k, n) for what, k, n in evidence_hits(data, set(right["image_id"].astype(str)))}
    phrases = []
    for what, k, n in wrong:
        text = f"{what} lies on the annotated evidence in {k} of {n} of these mistakes"
        if what in good:
            gk, gn = good[what]
            text += f" (against {gk} of {gn} images of {esc(other)} it got right)"
        phrases.append(text)
    what, k, n = wrong[0]  # the verdict follows the first measure (Grad-CAM when there is one)
    right_rate = good[what][0] / good[what][1] if what in good and good[what][1] else None
    return "; ".join(phrases) + f". <b>{_verdict(k, n, right_rate)}</b>"


def faithfulness_table(data: ReportData) -> str:
    """Mean faithfulness scores per class over the explained images ("" when none were measured)."""
    if data.predictions is None or not data.explained:
        return ""
    pred = data.predictions[["image_id", "label"]].astype({"image_id": str})
    frames = []
    if data.lime is not None and {"image_id", "score"} <= set(data.lime.columns):
        frames.append(data.lime.groupby("image_id")["score"].first().rename("LIME R²"))
    if data.gradcam is not None and "image_id" in data.gradcam.columns:
        g = data.gradcam.drop_duplicates("image_id")
        num = [c for c in g.columns if is_score(c)]
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
            + table(agg, headers={"deletion_auc": "deletion AUC ↓", "insertion_auc": "insertion AUC ↑",
                                  "pointing_hit": "peak on the evidence (share)"}))
