"""The explanation parts of the report: why the model confuses its most confused pairs, explanations per
class, activation and filter grids. Which images are shown is decided by ``fruitlens.selection``, the same
rules the pipeline uses to choose which images to explain."""

from __future__ import annotations

from fruitlens.report.cards import SCORE_LEGEND, explanation_card, faithfulness_table, pointing_summary, sanity_flag
from fruitlens.report.evaluation import pair_sentence
from fruitlens.report.html import esc, figure, missing, natural_key, table
from fruitlens.report.loader import ReportData, ReportOptions
from fruitlens.selection import class_rows, pair_rows


def _explain_status(data: ReportData) -> str:
    have = [name for name, t in (("LIME", data.lime), ("Grad-CAM", data.gradcam)) if t is not None]
    if not have:
        return ""
    return f"{len(data.explained):,} images were explained ({' and '.join(have)})"


def _absent_tables(data: ReportData) -> tuple[str, str]:
    ex = data.run.explain
    return data.run.rel(ex.table("lime")), data.run.rel(ex.table("gradcam"))


def section_why(data: ReportData, opts: ReportOptions) -> str:
    if data.predictions is None:
        return missing("Explanations of the confusions", data.run.rel(data.layout.predictions))
    if not data.pairs:
        return "<p class=\"good\">The model confuses no classes on this split, so there is nothing to explain.</p>"
    parts = ["<p>For each confused pair: the mistakes themselves, explained, and for comparison an image of the "
             "class they were taken for that the model got right. Where LIME and Grad-CAM light up on the same "
             "region in both, that region is what the model takes as evidence for the wrong class.</p>", SCORE_LEGEND]
    if data.lime is None and data.gradcam is None:
        parts.append(missing("LIME and Grad-CAM explanations", *_absent_tables(data)))
    pred = data.predictions
    y, p = pred["label"], pred["pred_label"]
    for pair in data.pairs[:opts.top_pairs]:
        mistakes, right = pair_rows(pred, pair.true, pair.pred, opts.per_pair, data.explained)
        all_mistakes = pred[(y == pair.true) & (p == pair.pred)]
        n_expl = int(all_mistakes["image_id"].astype(str).isin(data.explained).sum()) if "image_id" in pred else 0
        parts.append(f"<h3>{pair_sentence(pair)}</h3>")
        if data.explained and not n_expl:
            parts.append("<p class=\"missing\">None of these mistakes was explained in this run "
                         f"({esc(_explain_status(data))}); their photos and predictions follow.</p>")
        hint = pointing_summary(data, all_mistakes, pred[(y == pair.pred) & (p == pair.pred)], pair.pred)
        if hint:
            parts.append(f"<p>{hint}</p>")
        cards = [explanation_card(data, r, note="mistake") for _, r in mistakes.iterrows()]
        cards += [explanation_card(data, r, note=f"a {esc(pair.pred)} the model got right")
                  for _, r in right.iterrows()]
        parts.append(f"<div class=\"cards\">{''.join(cards)}</div>")
    return "".join(parts)


def section_explanations(data: ReportData, opts: ReportOptions) -> str:
    if data.lime is None and data.gradcam is None:
        return missing("LIME and Grad-CAM explanations", *_absent_tables(data))
    if data.predictions is None:
        return missing("Predictions for the explained images", data.run.rel(data.layout.predictions))
    pred = data.predictions
    explained = pred[pred["image_id"].astype(str).isin(data.explained)]
    shown = [(cls, class_rows(explained, cls, opts.samples_per_class, data.explained)) for cls in data.classes]
    without = [cls for cls, rows in shown if rows.empty]
    parts = [f"<p>{esc(_explain_status(data))}. For each class, up to {opts.samples_per_class} explained images: a "
             "right prediction, and a mistake where there is one. LIME shows the superpixels that speak for the "
             "prediction; Grad-CAM the regions whose gradient drives it. Click a picture to enlarge it.</p>"]
    if without:
        parts.append(f"<p class=\"note\">{len(shown) - len(without):,} of {len(shown):,} classes have an explained "
                     f"image; none was explained for {esc(', '.join(without[:30]))}"
                     f"{' …' if len(without) > 30 else ''}.</p>")
    from fruitlens.batch.stability import stability_line

    if line := stability_line(data.stability):
        parts.append(f"<p class=\"note\" id=\"lime-stability\">{esc(line)}</p>")
    parts.append(amortised_audit_block(data))
    parts.append(SCORE_LEGEND)
    blocks = []
    for cls, chosen in shown:
        body = "".join(explanation_card(data, r) for _, r in chosen.iterrows()) if len(chosen) else \
            "<p class=\"missing\">No image of this class was explained in this run.</p>"
        blocks.append(f"<div class=\"class-block\" data-class=\"{esc(cls)}\"><h3 class=\"cls\">{esc(cls)}</h3>"
                      f"<div class=\"cards\">{body}</div></div>")
    parts.append(f"<div class=\"class-grid\">{''.join(blocks)}</div>")
    parts.append(faithfulness_table(data))
    if data.failed is not None and len(data.failed):
        parts.append(f"<h3>Images that could not be explained ({len(data.failed):,})</h3>"
                     + table(data.failed, limit=100))
    return "".join(parts)


def amortised_audit_block(data: ReportData) -> str:
    """The amortised explainer's audit: one sentence, then the classes it was audited on ("" without one)."""
    from fruitlens.batch.amortised_audit import audit_line

    line = audit_line(data.amortised_audit)
    if not line:
        return ""
    shown = data.amortised_audit[data.amortised_audit["audited"] > 0].sort_values("rank_correlation")
    # headers that wrap at spaces, so that the eleven columns fit the page and class names stay whole
    shown = shown.round(3).rename(columns=lambda c: AUDIT_HEADERS.get(c, c.replace("_", " ")))
    return f"<div id=\"amortised-audit\"><p class=\"note\">{esc(line)}</p>" + table(shown, limit=100) + "</div>"


AUDIT_HEADERS = {"rank_correlation": "rank correlation", "exact_seed_to_seed": "exact seed-to-seed",
                 "top_k_overlap": "top-k overlap", "deletion_auc_amortised": "deletion AUC amortised",
                 "deletion_auc_exact": "deletion AUC exact", "insertion_auc_amortised": "insertion AUC amortised",
                 "insertion_auc_exact": "insertion AUC exact"}


def section_ranking(data: ReportData, opts: ReportOptions) -> str:
    """The explanation methods of the run ranked by faithfulness (``faithfulness.parquet``)."""
    from fruitlens.batch.ranking import FAITHFULNESS
    from fruitlens.registry import title

    path = data.run.explain.table(FAITHFULNESS)
    ranked = data.run.table(path)
    if ranked is None or ranked.empty:
        return missing("The faithfulness of the explanation methods", data.run.rel(path))
    shown = ranked.assign(method=[title(str(v)) if title(str(v)) != str(v) else title(m)
                                  for m, v in zip(ranked["method"], ranked["variant"], strict=True)])
    best = shown.iloc[0]
    text = (f"<p>{len(shown):,} explanation methods ran on this data; the most faithful is "
            f"<b>{esc(best['method'])}</b> (deletion AUC {best['deletion_auc']:.3f}, insertion AUC "
            f"{best['insertion_auc']:.3f}"
            + (f", peak on the evidence in {best['pointing_game']:.0%} of {int(best['pointed'])} images"
               if best["pointing_game"] == best["pointing_game"] else "") + ").</p>"
            "<p class=\"note\">Rank: the mean of each method's ranks on deletion AUC (lower is more faithful: "
            "the class probability falls fast as the most important pixels are removed), insertion AUC (higher "
            "is more faithful) and the pointing game (the share of images with an evidence mask whose heatmap "
            "peak falls inside it; empty where there are no masks, and for LIME). Scores are means over the "
            "explained images.</p>")
    return text + table(shown, columns=["rank", "method", "variant", "images", "deletion_auc", "insertion_auc",
                                        "pointing_game", "pointed"],
                        headers={"deletion_auc": "deletion AUC ↓", "insertion_auc": "insertion AUC ↑",
                                 "pointing_game": "pointing game ↑", "pointed": "images with a mask"})


def section_visualize(data: ReportData, opts: ReportOptions) -> str:
    from fruitlens.captions import layer_title

    parts = []
    for kind, title, text in (
            ("activations", "Activation grids", "What each convolutional layer outputs for one image, "
                                                "one tile per channel."),
            ("filters", "Filter patterns", "Inputs that excite single filters most (gradient ascent).")):
        folder = data.layout.visualize_kind_dir(kind)
        files = sorted(folder.glob("*.png"), key=lambda p: natural_key(p.name)) if folder.is_dir() else []
        parts.append(f"<h3>{title}</h3>")
        if not files:
            parts.append(missing(title, f"{data.run.rel(folder)}/*.png"))
            continue
        parts.append(f"<p>{text}</p>")
        parts.extend(figure(data.run.image_src(f), f"layer <b>{esc(layer_title(f.stem))}</b>", cls="wide grid",
                            alt=f"{kind} of layer {f.stem}")
                     for f in files)
    return "".join(parts)


def section_sanity(data: ReportData, opts: ReportOptions) -> str:
    """The model parameter randomisation test (``fruitlens sanity --out RUN/sanity``): a verdict per method."""
    from fruitlens.explain.sanity import THRESHOLDS, verdicts
    from fruitlens.sanity_names import method_title

    lay = data.layout.sanity
    if data.sanity is None:
        return missing(f"The randomisation test of the explanations (fruitlens sanity --model {data.run.root} "
                       f"--data DATA --out {lay.root})", data.run.rel(lay.table))
    found = verdicts(data.sanity)
    parts = [f"<p>Each explanation method was run on {int(data.sanity['image_id'].nunique()):,} images while the "
             "model's layers were re-initialised one after the other, from the top down (Adebayo et al., "
             "<i>Sanity Checks for Saliency Maps</i>, 2018). An explanation that depends on the model changes; one "
             "that stays the same shows the image, not what the model learned. A method passes when, from the first "
             f"convolution re-initialised on, its explanations keep a mean rank correlation below "
             f"{THRESHOLDS.max_rank} with the original (and SSIM below {THRESHOLDS.max_ssim}, or for LIME a top-5 "
             f"superpixel overlap below {THRESHOLDS.max_top_k}).</p>", "<ul>"]
    for v in found.to_dict("records"):
        name = esc(method_title(v["method"]))
        word = "<b class=\"good\">passes</b>" if v["passed"] else "<b class=\"bad\">fails</b>"
        ran = f" <span class=\"note\">(ran with: {esc(v['options'])})</span>" if v.get("options") else ""
        parts.append(f"<li>{name} {word}: {esc(v['reason'])}.{ran}</li>")
    parts.append("</ul>")
    if lay.figure.is_file():
        parts.append(figure(data.run.image_src(lay.figure), "The cascade for two images (left: the photo; then "
                            "the explanation of the original model and after each layer is re-initialised) and "
                            "the mean similarity per step", cls="wide"))
    columns = ["method", "images", "steps", "first_conv_layer", "rank_at_first_conv", "rank", "ssim", "top_k",
               "final_rank", "passed"]
    parts.append(table(found, columns=columns, cls="fit", headers={  # fits the page: headers wrap
        "first_conv_layer": "first conv layer", "rank_at_first_conv": "rank corr. at first conv",
        "rank": "mean rank corr. from first conv", "ssim": "mean SSIM", "top_k": "mean top-5 overlap",
        "final_rank": "rank corr., all random"}))
    return "".join(parts)


def section_evidence(data: ReportData, opts: ReportOptions) -> str:
    """Per class: the mean Grad-CAM heatmap over its right predictions and its mistakes; pointing game and
    evidence share where the data has masks (``fruitlens.explain.evidence``)."""
    t = data.class_evidence
    lay = data.layout
    if t is None:
        return missing("Evidence per class", data.run.rel(lay.class_evidence))
    parts = ["<p>For every image of the split, Grad-CAM of the predicted class, averaged per true class over the "
             "images the model got right and over its mistakes. Where the data has evidence masks, the pointing "
             "game (how often the heatmap's peak is on the evidence) and the evidence share (how much of the heat "
             "is on it) say whether the model looks at what decides the class.</p>"]
    masked = t[t["with_mask"] > 0] if "with_mask" in t.columns else t.iloc[:0]
    if len(masked):
        both = masked.pivot(index="label", columns="group", values="pointing_game")
        if {"correct", "mistake"} <= set(both.columns):
            gap = both.dropna()
            if len(gap):
                worse = int((gap["mistake"] < gap["correct"]).sum())
                parts.append(f"<p>In {worse} of {len(gap)} classes with mistakes, the mistakes point at the evidence "
                             "less often than the right predictions.</p>")
    if lay.class_evidence_png.is_file():
        parts.append(figure(data.run.image_src(lay.class_evidence_png), "Mean Grad-CAM heatmap per class: right "
                            "predictions and mistakes" + sanity_flag(data, "gradcam"), cls="wide"))
    parts.append(table(t, columns=[c for c in t.columns if not c.endswith("_area")],
                       headers={"pointing_game": "pointing game", "evidence_share": "evidence share",
                                "with_mask": "with mask", "border_share": "heat on border",
                                "background_share": "heat on background"}))
    parts.append(_shortcut(data))
    return "".join(parts)


def _shortcut(data: ReportData) -> str:
    """The shortcut alert (``fruitlens.explain.shortcut``): is a class's evidence on the border or backdrop?"""
    from fruitlens.explain import shortcut

    t = data.run.table(data.layout.shortcut)
    if t is None:
        return "<h3 id=\"shortcut\">Shortcut alert</h3>" + missing("The shortcut alert",
                                                                  data.run.rel(data.layout.shortcut))
    flagged = t[t["flagged"]] if len(t) else t
    text = (f"<p>Without masks: per class, the share of Grad-CAM heat on the image border (the outer "
            f"{shortcut.BORDER_BAND:.0%} of each side) and on plain background (near-constant areas reaching the "
            f"edge). A class is flagged when at least {shortcut.MAX_SHARE:.0%} of its heat is on one of them and "
            f"its heat per pixel there is at least {shortcut.MIN_LIFT:g}x the heat per pixel elsewhere: the model "
            "may tell the class by the frame or the backdrop instead of the object.</p>")
    line = esc(shortcut.shortcut_line(t))
    text += f"<p class=\"{'bad' if len(flagged) else 'good'}\">{line}</p>" if line else ""
    return "<h3 id=\"shortcut\">Shortcut alert</h3>" + text + table(t, headers={
        "border_share": "heat on border", "border_area": "border area", "background_share": "heat on background",
        "background_area": "background area"})
