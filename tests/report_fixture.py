"""A complete, realistic run folder fabricated without training: for testing the report.

``make_run(run_dir, data_dir)`` writes the demo dataset (with two bad files; ``n_classes`` above the demo's six
adds copies of its classes under new names, for reports of many classes) into ``data_dir``, indexes it
into ``run_dir/index`` with the real indexer, and writes every other file of the run folder layout with
the real table schemas (``fruitlens.tables``) and real PNGs (``fruitlens.plots``): model card, history and
curves, predictions with a known confusion pattern, metrics, confusion, LIME and Grad-CAM tables and
pictures (drawn from the demo images' evidence masks), side-by-side pictures, activation and filter grids,
a nightly comparison and run.json. Deterministic in ``seed``.

The confusions are fixed so tests can check the report's words: see ``CONFUSIONS``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fruitlens import plots, tables
from fruitlens.card import ModelCard, library_versions, write_card
from fruitlens.dataset import index_or_load
from fruitlens.explain.evidence import write_shortcut
from fruitlens.images import read_rgb
from fruitlens.layout import ExplainLayout, picture_stem
from fruitlens.nights import Night, record_night, write_trend
from fruitlens.synthetic import CLASSES, write_demo_dataset

# (true class, predicted class, number of test images) the fabricated model gets wrong
CONFUSIONS: tuple[tuple[str, str, int], ...] = (
    ("red_dot", "purple_triangle", 3),
    ("blue_dot", "cyan_ring", 2),
    ("black_cross", "purple_triangle", 1),
)
N_TRAIN, N_TEST = 8, 6
IMAGE_SIZE = (20, 20)
EPOCHS = 6
LAYERS = ("conv2d", "conv2d_1")
TIMINGS = {"index": 0.8, "train": 12.5, "evaluate": 1.1, "explain": 30.2, "visualize": 2.4}


def class_names(n_classes: int) -> tuple[str, ...]:
    """The demo classes, then copies named ``<demo class>_variant_<k>``, ``n_classes`` in all (sorted)."""
    if n_classes < len(CLASSES):
        raise ValueError(f"n_classes={n_classes}: expected at least the {len(CLASSES)} demo classes")
    extra = [f"{CLASSES[k % len(CLASSES)]}_variant_{k:02d}" for k in range(n_classes - len(CLASSES))]
    return tuple(sorted((*CLASSES, *extra)))


def _copy_classes(data: Path, names: Iterable[str]) -> None:
    """Each extra class gets the images (and masks) of the demo class its name starts with."""
    for name in names:
        base = name.split("_variant_")[0]
        for split in ("Training", "Test"):
            shutil.copytree(data / split / base, data / split / name)


def _blob(shape: tuple[int, int], cy: float, cx: float, sigma: float) -> np.ndarray:
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma ** 2)).astype(np.float32)


def make_run(run_dir: str | Path, data_dir: str | Path, *, seed: int = 0,
             explain: str | Callable[[pd.DataFrame], Iterable[str]] = "all", n_classes: int = len(CLASSES)) -> Path:
    """Fabricate a complete run folder in ``run_dir`` over a small demo dataset written to ``data_dir``.

    Args:
        run_dir: the run folder to write (created).
        data_dir: where the demo dataset goes (created).
        seed: every random choice (probabilities, LIME weights, histories) follows it.
        explain: which test images get explanations: "all"; "few", the last 2 images per class (never a
            mistake) plus the mistakes of the first confused pair; or a function of the predictions table
            returning image ids (e.g. ``fruitlens.selection.images_to_explain``).
        n_classes: classes of the dataset and the model (see ``class_names``).

    Returns:
        ``run_dir`` as a Path.
    """
    rng = np.random.default_rng(seed)
    run, data = Path(run_dir), Path(data_dir)
    run.mkdir(parents=True, exist_ok=True)
    classes = class_names(n_classes)
    write_demo_dataset(data, n_train=N_TRAIN, n_test=N_TEST, seed=seed)
    _copy_classes(data, [c for c in classes if c not in CLASSES])
    (data / "Training" / "red_dot" / "empty.jpg").write_bytes(b"")
    (data / "Test" / "blue_dot" / "notes.jpg").write_bytes(b"this is not a JPEG")
    index = index_or_load(data, run / "index")

    # --- model card, history, curves
    best = EPOCHS - 2  # what training writes into the card (fruitlens.training.train_model)
    write_card(run, ModelCard(classes=classes, image_size=IMAGE_SIZE, arch="seed_cnn", fingerprint=index.fingerprint,
                              seed=seed, metrics={"best_epoch": best, "epochs": EPOCHS, "train_loss": 0.2,
                                                  "train_accuracy": 0.95, "val_loss": 0.25, "val_accuracy": 0.93,
                                                  "seconds_per_epoch": 2.0},
                              config={"arch": "seed_cnn", "image_size": 20, "epochs": EPOCHS, "batch_size": 32,
                                      "seed": seed, "learning_rate": 1e-3, "weights": "imagenet", "mode": "frozen",
                                      "alpha": 1.0, "augment": False, "augment_options": {}},
                              versions=library_versions()))
    epochs = np.arange(1, EPOCHS + 1)
    loss = 1.8 * np.exp(-epochs / 2.0) + 0.05 + rng.uniform(0, 0.02, EPOCHS)
    history = pd.DataFrame({"epoch": epochs.astype(np.int32), "loss": loss, "accuracy": 1 - loss / 2.2,
                            "val_loss": loss * 1.15, "val_accuracy": 1 - loss * 1.15 / 2.2,
                            "learning_rate": np.full(EPOCHS, 1e-3), "seconds": rng.uniform(1.5, 2.5, EPOCHS)})
    tables.write_table(history, run / "history.parquet", "history")
    plots.save_figure(plots.history_figure(history), run / "curves.png")

    # --- predictions with the known confusions
    test = index.paths("test").sort_values("path", ignore_index=True)
    pred_label = test["label"].to_numpy().copy()
    for true, other, n in CONFUSIONS:
        idx = np.flatnonzero(test["label"].to_numpy() == true)[:n]
        pred_label[idx] = other
    correct = pred_label == test["label"].to_numpy()
    prob = np.where(correct, rng.uniform(0.7, 0.999, len(test)), rng.uniform(0.5, 0.95, len(test))).astype(np.float32)
    topk_labels, topk_probs = [], []
    for p_label, p in zip(pred_label, prob, strict=True):
        others = [c for c in classes if c != p_label]
        second = others[int(rng.integers(len(others)))]
        topk_labels.append([p_label, second])
        topk_probs.append([float(p), float((1 - p) * 0.8)])
    predictions = pd.DataFrame({"image_id": test["image_id"], "path": test["path"], "label": test["label"],
                                "pred_label": pred_label, "pred_prob": prob, "topk_labels": topk_labels,
                                "topk_probs": topk_probs, "correct": correct})
    eval_dir = run / "eval"
    tables.write_table(predictions, eval_dir / "predictions.parquet", "predictions")
    conf = pd.crosstab(predictions["label"], predictions["pred_label"]).reindex(
        index=list(classes), columns=list(classes), fill_value=0)
    long = conf.stack().rename("count").reset_index()
    tables.write_table(long, eval_dir / "confusion.parquet")
    tables.write_json(eval_dir / "metrics.json", {"accuracy": float(correct.mean()), "num_images": len(predictions),
                                                  "split": "test", "loss": 0.31})
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(conf.to_numpy(), cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    plots.save_figure(fig, eval_dir / "confusion.png")
    wrong = predictions[~predictions["correct"]]
    photos = {row.image_id: read_rgb(Path(row.abs_path)) for row in test.itertuples()}
    plots.save_figure(plots.titled_grid([photos[i] for i in wrong["image_id"]],
                                        [f"{t} -> {p}" for t, p in zip(wrong["label"], wrong["pred_label"],
                                                                        strict=True)]), eval_dir / "mistakes.png")

    # --- explanations: LIME and Grad-CAM tables and pictures from the evidence masks
    if callable(explain):
        chosen = test[test["image_id"].isin(set(explain(predictions)))]
    elif explain == "all":
        chosen = test
    else:
        first = CONFUSIONS[0]
        keep = set(test.groupby("label").tail(2)["image_id"]) | set(
            predictions[(predictions["label"] == first[0]) & (predictions["pred_label"] == first[1])]["image_id"])
        chosen = test[test["image_id"].isin(keep)]
    ex = run / "explain"
    lime_rows, cam_rows = [], []
    by_id = predictions.set_index("image_id")
    for row in chosen.itertuples():
        p = by_id.loc[row.image_id]
        photo = photos[row.image_id]
        mask = np.asarray(Image.open(index.root / row.mask_path).convert("L"), dtype=np.float32) / 255.0
        ys, xs = np.nonzero(mask > 0.5)
        cy, cx = (ys.mean(), xs.mean()) if len(ys) else (50.0, 50.0)
        wrong_pred = not bool(p["correct"])
        if wrong_pred:  # a mistake looks partly beside the evidence
            cy, cx = (cy + 25) % 100, (cx + 20) % 100
        heat = _blob(mask.shape, cy, cx, 12.0)
        n_sp = 12
        weights = rng.normal(0, 0.05, n_sp)
        weights[0] = 0.4
        score = float(rng.uniform(0.35, 0.85))
        evidence = rng.uniform(0, 0.3, n_sp)
        evidence[0] = 0.0 if wrong_pred else 1.0  # the strongest superpixel is on the sticker when right
        source = str(index.root / row.path)
        stem = picture_stem(source, row.image_id)  # named as the batch engine names them
        outline = ExplainLayout(ex).picture("lime", stem, "outline")
        for sp in range(n_sp):
            lime_rows.append({"image_id": row.image_id, "path": source, "label": p["pred_label"],
                              "label_prob": float(p["pred_prob"]),
                              "superpixel": sp, "weight": float(weights[sp]), "intercept": 0.2, "score": score,
                              "local_pred": float(p["pred_prob"]) - 0.05, "num_samples": 300, "segmenter": "slic",
                              "max_samples": 1000, "stability": 0.08, "converged": True,
                              "true_label": row.label, "evidence": float(evidence[sp]),
                              "picture_path": outline.relative_to(ex).as_posix()})
        lime_pic = plots.overlay(photo, np.where(heat > 0.5, 1.0, 0.0), palette="Greens", alpha=0.5)
        plots.save_png(lime_pic, outline)
        plots.save_png(photo, ExplainLayout(ex).picture("lime", stem, "boundaries"))
        small = np.asarray(Image.fromarray(heat).resize(IMAGE_SIZE[::-1], Image.Resampling.BILINEAR))
        small = small / max(float(small.max()), 1e-6)
        cam_pic = plots.overlay(photo, small, palette="jet", alpha=0.45)
        heat_rel, over_rel = f"gradcam/{stem}_heatmap.png", f"gradcam/{stem}_overlay.png"
        plots.save_png(small, ex / heat_rel)
        plots.save_png(cam_pic, ex / over_rel)
        plots.save_png(plots.image_grid(np.stack([photo, lime_pic, cam_pic]), ncols=3),
                       ExplainLayout(ex).side_by_side(stem))
        py, px = np.unravel_index(int(np.argmax(small)), small.shape)
        cam_rows.append({"image_id": row.image_id, "path": source, "label": p["pred_label"], "layer": LAYERS[-1],
                         "heatmap_path": heat_rel, "overlay_path": over_rel, "peak_y": int(py), "peak_x": int(px),
                         "deletion_auc": float(rng.uniform(0.05, 0.3)), "insertion_auc": float(rng.uniform(0.6, 0.95)),
                         "true_label": row.label, "target_prob": float(p["pred_prob"]), "variant": "gradcam",
                         "pointing_hit": not wrong_pred})
    tables.write_table(pd.DataFrame(lime_rows), ex / "lime.parquet", "lime")
    cams = pd.DataFrame(cam_rows).astype({"peak_y": np.int32, "peak_x": np.int32})
    tables.write_table(cams, ex / "gradcam.parquet", "gradcam")
    tables.write_table(pd.DataFrame({"image_id": pd.Series([], dtype=str), "path": pd.Series([], dtype=str),
                                     "error": pd.Series([], dtype=str)}), ex / "failed.parquet")
    from fruitlens.batch.ranking import write_faithfulness

    write_faithfulness(ex)  # as the engine does after the methods ran

    # --- activation and filter grids
    for i, layer in enumerate(LAYERS):
        channels = 8 * (i + 1)
        acts = rng.uniform(0, 1, (channels, 18 - 4 * i, 18 - 4 * i)).astype(np.float32)
        grid = plots.colorize(plots.image_grid(acts, ncols=8))
        plots.save_png(grid, run / "visualize" / "activations" / f"{layer}.png")
        pats = rng.uniform(0, 1, (channels, 16, 16, 3)).astype(np.float32)
        plots.save_png(plots.image_grid(pats, ncols=8), run / "visualize" / "filters" / f"{layer}.png")

    # --- the randomisation test (fruitlens sanity --out RUN/sanity): Grad-CAM changes, an edge detector does not
    steps = [("", "none"), ("predictions", "dense"), ("conv2", "conv"), ("conv1", "conv")]
    sanity_rows = [{"method": m, "step": k, "layer": layer, "layer_kind": kind, "image_id": str(i), "path": None,
                    "label": "x", "spearman": 1.0 if k == 0 or m == "edges" else float(rng.uniform(-0.2, 0.3)),
                    "ssim": 1.0 if k == 0 or m == "edges" else 0.1, "top_k_overlap": None, "seed": 0,
                    "options": "default options" if m != "edges" else "an extra explainer"}
                   for m in ("gradcam", "edges") for k, (layer, kind) in enumerate(steps) for i in range(3)]
    tables.write_table(pd.DataFrame(sanity_rows), run / "sanity" / "sanity.parquet", "sanity")

    # --- per-class evidence: the right predictions point at the sticker more often than the mistakes
    # and the shortcut alert: class y's heat sits on the border
    evidence = pd.DataFrame({"label": ["x", "x", "y"], "group": ["correct", "mistake", "correct"],
                             "images": [10, 2, 12], "with_mask": [10, 2, 12],
                             "pointing_game": [0.8, 0.0, 0.7], "evidence_share": [0.4, 0.1, 0.35],
                             "border_share": [0.3, 0.4, 0.8], "border_area": [0.36] * 3,
                             "background_share": [0.1, 0.2, 0.1], "background_area": [0.3] * 3})
    tables.write_table(evidence, run / "evidence" / "class_evidence.parquet")
    write_shortcut(run / "evidence", evidence)

    # --- the trend across two nights of a models home beside the run (fruitlens.nights)
    import datetime as dt

    for day, (digest, accuracy) in enumerate((("0" * 64, 0.7), ("1" * 64, 0.8)), start=20):
        table = record_night(run.parent / "models", Night(
            run_dir=str(run.resolve()), model_digest=digest, accuracy=accuracy, macro_f1=accuracy - 0.02,
            seconds=120.0, promoted=True, drift_share=0.6 if day > 20 else None, sanity={"gradcam": True},
            evidence_share=0.35, shortcut_classes=("y",), date=dt.datetime(2026, 11, day, 2, tzinfo=dt.UTC)))
    write_trend(run, table)

    # --- the nightly's explanation drift: two of three probe images moved
    tables.write_table(pd.DataFrame({
        "image_id": ["p0", "p1", "p2"], "path": ["a.jpg", "b.jpg", "c.jpg"], "label": ["x", "x", "y"],
        "old_pred": ["x", "x", "y"], "new_pred": ["x", "y", "y"], "prediction_changed": [False, True, False],
        "heatmap_rank": [0.9, 0.1, 0.3], "top_superpixel_agreement": [1.0, 0.2, 0.4],
        "old_evidence_share": [0.5, 0.6, None], "new_evidence_share": [0.5, 0.1, None],
        "evidence_share_change": [0.0, -0.5, None], "moved": [False, True, True]}), run / "drift" / "drift.parquet")

    # --- nightly comparison and the pipeline record
    acc = float(correct.mean())
    tables.write_table(pd.DataFrame({"metric": ["accuracy", "macro_f1", "n"], "new": [acc, acc - 0.01, len(test)],
                                     "current": [acc - 0.04, acc - 0.05, len(test)], "delta": [0.04, 0.04, 0.0],
                                     "promoted": [True, True, True]}), run / "comparison.parquet")
    tables.write_json(run / "run.json", {
        "flow": "train_and_explain_flow", "flow_run_id": "0a1b2c3d-demo", "started": "2026-11-22T17:00:00Z",
        "finished": "2026-11-22T17:02:10Z", "data_dir": str(data),
        "config": {"train": {"arch": "seed_cnn", "epochs": EPOCHS, "image_size": 20},
                   "explain": {"methods": ["lime", "gradcam"], "limit": None, "chunk_size": 32}},
        "versions": library_versions(),
        "timings": TIMINGS, "total_seconds": round(sum(TIMINGS.values()), 3),
    })
    return run
