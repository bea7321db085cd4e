"""The record parts of the report: dataset, training, comparison with the previous model, configuration,
versions and timings.

One source for each fact: step timings come from run.json only (``timings``, ``total_seconds``), the best
epoch from the model card only (``metrics.best_epoch``, as training writes it).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import pandas as pd

from fruitlens.report.cards import sanity_flag
from fruitlens.report.html import details, esc, figure, flatten, fmt, kv, missing, pct, table
from fruitlens.report.loader import ReportData, ReportOptions

SPLIT_ORDER = ("train", "val", "test")
FOLD_ABOVE = 20  # classes above which the per-class counts table starts folded
TRANSFER_ONLY = ("weights", "mode")  # training options that apply to transfer:<backbone> architectures only
MOBILENET_ONLY = ("alpha",)
TIMING_KEYS = ("seconds", "seconds_per_epoch")  # timings recorded beside other facts; run.json is their source


def applicable_options(config: dict[str, Any]) -> dict[str, Any]:
    """A training config without the options its architecture ignores.

    ``weights`` and ``mode`` only for ``transfer:`` architectures, ``alpha`` only with mobilenet_v2,
    ``augment_options`` only when ``augment`` is on.
    """
    arch = str(config.get("arch", ""))
    drop: set[str] = set()
    if "arch" in config and not arch.startswith("transfer:"):
        drop |= set(TRANSFER_ONLY)
    if "arch" in config and "mobilenet_v2" not in arch:
        drop |= set(MOBILENET_ONLY)
    if config.get("augment") is False:
        drop.add("augment_options")
    return {k: v for k, v in config.items() if k not in drop}


def _pipeline_config(config: dict[str, Any]) -> dict[str, Any]:
    if isinstance(config.get("train"), dict):
        return {**config, "train": applicable_options(config["train"])}
    return applicable_options(config)


def section_dataset(data: ReportData, opts: ReportOptions) -> str:
    parts = []
    meta, images = data.index_meta, data.images
    lay = data.layout
    if meta is None and images is None:
        return missing("Dataset index", data.run.rel(lay.index_json), data.run.rel(lay.images_table))
    if images is not None and {"label", "split", "status"} <= set(images.columns):
        ok = images[images["status"] == "ok"]
        counts = pd.crosstab(ok["label"], ok["split"]) if len(ok) else pd.DataFrame()
        splits = [s for s in SPLIT_ORDER if s in counts.columns] + [s for s in counts.columns if s not in SPLIT_ORDER]
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
        split_txt = ", ".join(f"{int(counts[s].sum()):,} {s}{_train_split(data.card, int(counts[s].sum()))}"
                              if s == "train" else f"{int(counts[s].sum()):,} {s}"
                              for s in counts.columns if s != "total")
        low, high = int(counts["total"].min()), int(counts["total"].max())
        spread = f"{low:,} per class" if low == high else f"{low:,} to {high:,} per class"
        parts.append(f"<p>{int(counts['total'].sum()):,} usable images in {len(counts):,} classes ({split_txt}); "
                     f"{spread}.</p>")
        per_class = table(df, foot=foot)
        parts.append(per_class if len(counts) <= FOLD_ABOVE else details("Images per class and split", per_class))
    n_bad = len(bad) if bad is not None else int((meta or {}).get("num_bad", 0))
    if n_bad:
        parts.append(f"<h3>Bad files ({n_bad:,})</h3><p>Files that could not be used, with the reason. "
                     "Every later step leaves them out.</p>")
        parts.append(table(bad, columns=["path", "split", "label", "status", "error"], limit=200) if bad is not None
                     else kv(sorted((meta or {}).get("bad_by_status", {}).items())))
    else:
        parts.append("<p>No bad files: every file could be read.</p>")
    warnings = (meta or {}).get("warnings") or []
    if warnings:
        parts.append("<h3>Warnings</h3><ul>" + "".join(f"<li>{esc(w)}</li>" for w in warnings) + "</ul>")
    if meta:
        parts.append(kv([(k, meta[k]) for k in ("root", "layout", "fingerprint", "num_files") if k in meta]))
    return "".join(parts)


def _history_figure(h: pd.DataFrame) -> str:
    from fruitlens.plots import history_figure, plt

    buf = io.BytesIO()
    fig = history_figure(h)
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _best_epoch_words(card: dict | None) -> str:
    """The epoch whose model was kept, as the model card records it."""
    m = (card or {}).get("metrics") or {}
    if not isinstance(m.get("best_epoch"), (int, float)):
        return "the model card records no best epoch"
    words = f"the model kept is the one of epoch {int(m['best_epoch'])}"
    if isinstance(m.get("epochs"), (int, float)):
        words += f" of {int(m['epochs'])}"
    scores = [f"{name} {pct(m[key]) if 'accuracy' in key else fmt(m[key])}"
              for key, name in (("val_accuracy", "validation accuracy"), ("val_loss", "validation loss"))
              if isinstance(m.get(key), (int, float))]
    return words + (f" ({', '.join(scores)})" if scores else "")


def _train_split(card: dict | None, n_train: int) -> str:
    """How training used the index's train split, in the words of the training section ("" when it used it
    all): " (1,020 trained on, 180 held out for validation)" when the card's validation came out of it."""
    v = ((card or {}).get("config") or {}).get("validation")
    if not isinstance(v, dict):
        return ""
    held, trained = int(v.get("held_out", 0) or 0), int(v.get("trained_on", 0) or 0)
    if not held or held + trained != n_train:
        return ""
    return f" ({trained:,} trained on, {held:,} held out for validation)"


def holdout_paragraph(card: dict | None) -> str:
    """What was held out for validation and why, from the card (``config.validation``); a warning when the
    validation split was empty or tiny. Cards written before this was recorded get the counts only."""
    config = (card or {}).get("config") or {}
    v = config.get("validation")
    if not isinstance(v, dict):
        counts = config.get("counts") or {}
        if not isinstance(counts.get("val"), (int, float)):
            return ""
        n_val = int(counts["val"])
        return (f"<p>Validation: {n_val:,} images held out (the model card does not say where they came from).</p>"
                if n_val else "<p class=\"warning\">Warning: no validation images; the model card does not say "
                "which epoch was kept.</p>")
    n_val, n_train = int(v.get("held_out", 0)), int(v.get("trained_on", 0))
    kept = ("the last epoch was kept" if v.get("keep") == "last" else "the best epoch was kept")
    if n_val:
        words = (f"Validation: {n_val:,} images held out for validation ({esc(v.get('source', ''))}), not trained "
                 f"on; their role: {esc(v.get('why', ''))}; {kept}. {n_train:,} trained on.")
    else:
        words = (f"Validation: nothing held out ({esc(v.get('source', ''))}); trained on all {n_train:,} "
                 f"training images; {kept}.")
    out = f"<p>{words}</p>"
    if v.get("warning"):
        out += f"<p class=\"warning\">Warning: {esc(v['warning'])}.</p>"
    trained = config.get("trained")
    if isinstance(trained, dict) and trained.get("refit"):  # the saved model is not the run's kept epoch
        out += f"<p>The saved model: {esc(str(trained.get('what', 'refit')))}.</p>"
    return out


def section_training(data: ReportData, opts: ReportOptions) -> str:
    parts = []
    holdout = holdout_paragraph(data.card)
    curves = data.layout.curves
    h = data.history
    if curves.is_file():
        parts.append(figure(data.run.image_src(curves), "loss and accuracy per epoch", cls="wide"))
    elif h is not None and len(h):
        parts.append(figure(_history_figure(h), "loss and accuracy per epoch (drawn from history.parquet)",
                            cls="wide"))
    if h is None:
        parts.append(missing("Training history", data.run.rel(data.layout.history)))
        if not curves.is_file():
            parts.append(missing("Training curves", data.run.rel(curves)))
        return "".join(parts)
    if len(h):
        words = [f"{len(h):,} epochs", _best_epoch_words(data.card)]
        last = h.iloc[-1]
        if "accuracy" in h and pd.notna(last.get("accuracy")):
            words.append(f"final training accuracy {pct(last['accuracy'])}")
        parts.append(f"<p>{'; '.join(esc(w) for w in words)}.</p>")
    parts.append(holdout)
    parts.append(details("History table", table(h)))
    return "".join(parts)


def section_comparison(data: ReportData, opts: ReportOptions) -> str:
    c = data.comparison
    if c is None:
        return missing("Comparison with the previous model (made by the nightly flow)",
                       data.run.rel(data.layout.comparison))
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
        counts = c["metric"].isin(["n"])  # image counts: integers
        shown = c.astype({k: object for k in ("new", "current", "delta")})
        for k in ("new", "current", "delta"):
            shown.loc[counts, k] = [None if pd.isna(v) else int(round(float(v))) for v in c.loc[counts, k]]
        lines = []
        for r in shown.itertuples():
            if r.current is not None and pd.notna(r.current) and pd.notna(r.delta):
                sign = "+" if float(r.delta) >= 0 else "−"
                delta = r.delta if isinstance(r.delta, int) else float(r.delta)
                lines.append(f"<li>{esc(r.metric)}: new <b>{fmt(r.new)}</b>, current {fmt(r.current)} "
                             f"({sign}{fmt(abs(delta))})</li>")
        if lines:
            parts.append(f"<ul>{''.join(lines)}</ul>")
        c = shown
    parts.append(table(c))
    return "".join(parts)


def section_drift(data: ReportData, opts: ReportOptions, top: int = 4) -> str:
    """The nightly's explanation drift: the new and the current model's Grad-CAM on the same probe images."""
    from fruitlens.explain.drift import DRIFT_RANK, DRIFT_SHARE, drift_summary

    d = data.drift
    if d is None:
        return missing("Explanation drift (made by the nightly flow when a current model exists)",
                       data.run.rel(data.layout.drift))
    s = drift_summary(d)
    parts = [f"<p>The new model and the current one explained the same {s['images']:,} probe images with "
             f"Grad-CAM, each for its own prediction. An image's evidence <i>moved</i> when the two heatmaps' rank "
             f"correlation is below {DRIFT_RANK} or the share of heat on the evidence mask changed by "
             f"{DRIFT_SHARE} or more.</p>"]
    words = (f"The evidence moved on <b>{pct(s['moved_share'])}</b> of the probe images (mean rank correlation "
             f"{fmt(s['mean_rank'])}); the prediction changed on {s['predictions_changed']:,}.")
    if s["classes"]:
        named = ", ".join(f"{esc(c)} ({pct(v)})" for c, v in list(s["classes"].items())[:8])
        words += f" Classes whose evidence moved: {named}."
    parts.append(f"<p class=\"{'missing' if s['moved_share'] > 0 else 'good'}\">{words}</p>")
    shown = d[d["picture_path"].notna()] if "picture_path" in d.columns else d.iloc[:0]
    shown = shown.sort_values("heatmap_rank").head(top)
    figs = [figure(data.run.image_src(data.layout.drift_dir / str(r.picture_path)),
                   f"{esc(Path(str(r.path)).name)}: current {esc(r.old_pred)}, new {esc(r.new_pred)}, rank "
                   f"correlation {fmt(r.heatmap_rank)}{sanity_flag(data, 'gradcam')}") for r in shown.itertuples()]
    if figs:
        parts.append(f"<h3>The images whose evidence moved most (old vs new)</h3><div class=\"cards\">"
                     f"{''.join(figs)}</div>")
    parts.append(details("Every probe image", table(d.drop(columns=["picture_path", "path"], errors="ignore"))))
    return "".join(parts)


def section_trend(data: ReportData, opts: ReportOptions) -> str:
    """The nightly's trend across nights of its models home (``RUN/trend``, ``fruitlens.nights``)."""
    lay = data.layout
    t = data.run.table(lay.trend_table)
    if t is None or not len(t):
        return missing("The trend across nights (written by the nightly flow)", data.run.rel(lay.trend_table))
    t = t.sort_values("date", kind="stable", ignore_index=True)
    parts = [f"<p>{len(t):,} night{'s' if len(t) != 1 else ''} of the models home, one row per run folder and "
             "model: a rerun that ends with the same model rewrites its night (counted in <i>reruns</i>) instead of "
             "adding an identical one.</p>"]
    if len(t) >= 2:
        last, before = t.iloc[-1], t.iloc[-2]
        words = []
        for key, name in (("accuracy", "accuracy"), ("macro_f1", "macro F1")):
            if pd.notna(last[key]) and pd.notna(before[key]):
                words.append(f"{name} {fmt(before[key])} → <b>{fmt(last[key])}</b>")
        if words:
            parts.append(f"<p>Since the night before: {', '.join(words)}.</p>")
    if lay.trend_png.is_file():
        parts.append(figure(data.run.image_src(lay.trend_png), "Accuracy and macro F1, the share of evidence "
                            "that moved and that sits on the masks, failed sanity checks and shortcut flags, night "
                            "by night", cls="wide"))
    shown = t.assign(date=pd.to_datetime(t["date"]).dt.strftime("%Y-%m-%d %H:%M"),
                     model_digest=t["model_digest"].astype(str).str[:8],
                     sanity=t["sanity"].astype(str).str.replace(",", ", "),
                     shortcut_classes=t["shortcut_classes"].astype(str).str.replace(",", ", "))
    parts.append(table(shown.iloc[::-1], columns=["date", "run", "model_digest", "accuracy", "macro_f1",
                                                  "drift_share", "sanity", "evidence_share", "shortcut_classes",
                                                  "seconds", "reruns"],
                       headers={"date": "date (UTC)", "model_digest": "model", "macro_f1": "macro F1",
                                "drift_share": "evidence moved", "evidence_share": "heat on masks",
                                "shortcut_classes": "shortcut classes"}))
    return "".join(parts)


def _timings(rj: dict) -> str:
    """Bars of run.json's ``timings`` ({step: seconds}) and its ``total_seconds``; says which is absent."""
    raw = rj.get("timings")
    steps = [(str(k), float(v)) for k, v in raw.items() if isinstance(v, (int, float))] if isinstance(raw, dict) else []
    total = rj.get("total_seconds")
    parts = ["<h3>Timings of each step</h3>",
             "<p class=\"note\">Of the run that built this report. A later run that changes nothing (every step "
             "cached) leaves the report as it is; its own timings are in <code>run.json</code>.</p>"]
    if not steps:
        parts.append("<p class=\"missing\">run.json records no step timings (<code>timings</code>).</p>")
    else:
        longest = max(s for _, s in steps) or 1.0
        bars = "".join(f"<div class=\"bar-row\"><span class=\"bar-label\">{esc(name)}</span>"
                       f"<span class=\"bar\"><span style=\"width:{100 * s / longest:.1f}%\"></span></span>"
                       f"<span class=\"bar-value\">{s:,.1f} s</span></div>" for name, s in steps)
        parts.append(f"<div class=\"bars\">{bars}</div>")
    if isinstance(total, (int, float)):
        parts.append(f"<p class=\"note\">{float(total):,.1f} s in all (<code>total_seconds</code>).</p>")
    else:
        parts.append("<p class=\"note\">run.json records no total time (<code>total_seconds</code>).</p>")
    return "".join(parts)


def _card_part(card: dict, versions_shown: bool) -> str:
    classes = card.get("classes") or []
    summary = [("arch", card.get("arch")), ("image_size (h, w)", card.get("image_size")),
               ("preprocessing", card.get("scaling") or card.get("preprocessing")),
               ("classes", f"{len(classes)}: " + ", ".join(map(str, classes))),
               ("seed", card.get("seed")), ("dataset fingerprint", card.get("fingerprint"))]
    parts = ["<h3>Model card (<code>model.json</code>)</h3>" + kv([(k, v) for k, v in summary if v is not None])]
    if card.get("config"):
        parts.append("<h4>Training configuration</h4>" + kv(flatten(applicable_options(card["config"]))))
    recorded = {k: v for k, v in (card.get("metrics") or {}).items() if k not in TIMING_KEYS}
    if recorded:
        parts.append("<h4>Metrics recorded with the model</h4>" + kv(flatten(recorded)))
    if card.get("versions") and not versions_shown:
        parts.append("<h4>Versions</h4>" + kv(flatten(card["versions"])))
    return "".join(parts)


def section_run(data: ReportData, opts: ReportOptions) -> str:
    parts = []
    rj, card = data.run_json, data.card
    if rj is None:
        parts.append(missing("Pipeline record (config, versions, timings)", data.run.rel(data.layout.run_record)))
    else:
        top = [(k, v) for k, v in rj.items() if not isinstance(v, (dict, list)) and k != "total_seconds"]
        if top:
            parts.append("<h3>Run</h3>" + kv(top))
        parts.append(_timings(rj))
        if isinstance(rj.get("config"), dict):
            parts.append("<h3>Pipeline configuration</h3>" + kv(flatten(_pipeline_config(rj["config"]))))
        if isinstance(rj.get("versions"), dict):
            parts.append("<h3>Versions</h3>" + kv(flatten(rj["versions"])))
        for k, v in rj.items():
            if isinstance(v, (dict, list)) and k not in ("config", "versions", "timings"):
                parts.append(details(esc(k), kv(flatten(v) if isinstance(v, dict) else [(k, v)])))
    if card is None:
        parts.append(missing("Model card", data.run.rel(data.layout.card)))
    else:
        parts.append(_card_part(card, versions_shown=bool(rj and rj.get("versions"))))
    return "".join(parts)
