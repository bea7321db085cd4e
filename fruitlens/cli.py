"""The `fruitlens` command.

Each subcommand has a ``_add_<name>`` (its arguments) and a ``_cmd_<name>`` (what it runs). Handlers
import what they need lazily, so ``fruitlens --help`` and ``fruitlens index`` start fast without
TensorFlow. Bad input ends in one line on stderr, ``fruitlens <cmd>: error: <reason>``, and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

DEFAULT_DEMO_DIR = Path("data/demo")
DEFAULT_DEMO_OUT = Path("artifacts/demo")


class CommandError(Exception):
    """A one-line reason a command cannot run (bad path, bad value)."""


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


# ------------------------------------------------------------------------------------ index


def _add_index(sub) -> None:
    p = sub.add_parser("index", help="index a folder of labelled images into images.parquet and classes.json")
    p.add_argument("data_dir", type=Path, help="dataset root: <class>/*, {Training,Test}/<class>/* or "
                   "{train,validation,test}/<class>/*")
    p.add_argument("--out", type=Path, required=True, help="output folder for images.parquet, classes.json, index.json")
    p.add_argument("--classes", help="comma-separated class names to keep (default: all)")
    p.add_argument("--seed", type=int, default=42, help="seed of the holdout split for the single-folder layout")
    p.add_argument("--val-fraction", type=float, default=0.15, help="holdout share for val (single-folder layout)")
    p.add_argument("--test-fraction", type=float, default=0.15, help="holdout share for test (single-folder layout)")
    p.add_argument("--verify", action="store_true", help="decode every image in full (slower, catches more)")
    p.add_argument("--workers", type=int, default=None, help="processes used to check files (default: all cores)")


def _cmd_index(args) -> int:
    from fruitlens.dataset import format_summary, index_or_load

    for name, value in (("--val-fraction", args.val_fraction), ("--test-fraction", args.test_fraction)):
        if not 0.0 <= value < 1.0:
            raise CommandError(f"{name} {value}: expected a fraction in [0, 1)")
    index = index_or_load(args.data_dir, args.out, classes=_csv(args.classes), seed=args.seed,
                          val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                          verify=args.verify, workers=args.workers)
    print(format_summary(index))
    print(f"wrote {args.out}/images.parquet ({len(index.table)} rows), classes.json ({len(index.classes)} classes)")
    return 0


# ------------------------------------------------------------------------------------ demo data


def _add_demo_data(sub) -> None:
    p = sub.add_parser("demo-data", help="write the generated demo dataset (Training/Test layout, with masks)")
    p.add_argument("out_dir", type=Path, nargs="?", default=DEFAULT_DEMO_DIR)
    p.add_argument("--train-per-class", type=int, default=200)
    p.add_argument("--test-per-class", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)


def _cmd_demo_data(args) -> int:
    from fruitlens.synthetic import CLASSES, write_demo_dataset

    if args.train_per_class < 1 or args.test_per_class < 1:
        raise CommandError("--train-per-class and --test-per-class: expected at least 1")
    write_demo_dataset(args.out_dir, n_train=args.train_per_class, n_test=args.test_per_class, seed=args.seed)
    n = len(CLASSES) * (args.train_per_class + args.test_per_class)
    print(f"wrote {n} demo images in {len(CLASSES)} classes ({', '.join(CLASSES)}) to {args.out_dir}")
    return 0


# ------------------------------------------------------------------------------------ report


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="(re)build RUN_DIR/report.html from the run's tables and files")
    p.add_argument("run_dir", type=Path, help="a run folder (from `fruitlens run`, `demo` or `train`)")
    p.add_argument("--samples-per-class", type=int, default=2, help="explained images shown per class")
    p.add_argument("--top-mistakes", type=int, default=12, help="confident mistakes shown as photos")
    p.add_argument("--no-embed", action="store_true",
                   help="reference the run's PNGs relatively instead of embedding them (smaller file)")


def _cmd_report(args) -> int:
    from fruitlens.report import build_report

    if args.run_dir.exists() and not args.run_dir.is_dir():
        raise CommandError(f"{args.run_dir}: is a file; expected a run folder")
    for name, value in (("--samples-per-class", args.samples_per_class), ("--top-mistakes", args.top_mistakes)):
        if value < 1:
            raise CommandError(f"{name} {value}: expected at least 1")
    path = build_report(args.run_dir, samples_per_class=args.samples_per_class, top_mistakes=args.top_mistakes,
                        embed=not args.no_embed)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB); open it in a browser")
    return 0


# ------------------------------------------------------------------------------------ not yet built


def _not_yet(name: str, issue: str) -> Callable[[argparse.Namespace], int]:
    def run(args) -> int:
        raise CommandError(f"`fruitlens {name}` is not built yet ({issue})")
    return run


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a classifier with checkpoints; writes model.keras, model.json, history")
    p.add_argument("--data", type=Path, required=True, help="dataset root")
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument("--arch", default="seed_cnn", help="seed_cnn, fruit_net, small_convnet, lenet or "
                   "transfer:<vgg16|resnet50|mobilenet_v2|xception|inception_v3|efficientnet_b0>")
    p.add_argument("--backbones", default=None, help="comma-separated backbones whose features are concatenated "
                   "(same as --arch transfer:a,b,c)")
    p.add_argument("--weights", default="imagenet", help="transfer backbones: imagenet, none, or a .weights.h5 "
                   "file saved from the same backbone (one per backbone, comma-separated)")
    p.add_argument("--mode", default="frozen", help="transfer: bottleneck (cached features, head only), "
                   "frozen (backbone frozen) or finetune (last block unfrozen, SGD lr 1e-4 momentum 0.9)")
    p.add_argument("--alpha", type=float, default=1.0, help="mobilenet_v2 width multiplier")
    p.add_argument("--image-size", default="20", help="side in pixels, or HxW")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=None, help="default: the architecture's own")
    p.add_argument("--classes", help="comma-separated class names to train on (default: all)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--augment", action="store_true", help="random rotation 40, shift 0.2, shear 0.2, zoom 0.2, "
                   "horizontal flip (nearest fill) on training batches")
    p.add_argument("--early-stopping", type=int, default=0, metavar="PATIENCE",
                   help="stop after PATIENCE epochs without validation improvement (0: off)")
    p.add_argument("--class-weights", default="none", help="none or balanced (for imbalanced classes)")
    p.add_argument("--tensorboard", action="store_true", help="write TensorBoard logs to RUN_DIR/logs")
    p.add_argument("--val-fraction", type=float, default=0.15, help="validation share carved from train "
                   "when the data has no validation split")
    p.add_argument("--monitor", default="val_accuracy", help="val_accuracy or val_loss: picks the best epoch")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")


def _image_size(text: str) -> int | tuple[int, int]:
    try:
        parts = [int(v) for v in str(text).lower().replace("x", ",").split(",")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise CommandError(f"--image-size {text}: expected a positive side like 20, or HxW like 32x48")
    return parts[0] if len(parts) == 1 else (parts[0], parts[1])


def _train_config(args):
    from fruitlens.training import TrainConfig

    arch = args.arch
    if args.backbones:
        arch = "transfer:" + ",".join(_csv(args.backbones))
    values = {"arch": arch, "image_size": _image_size(args.image_size), "epochs": args.epochs,
              "batch_size": args.batch_size, "classes": tuple(_csv(args.classes)) if args.classes else None,
              "seed": args.seed, "weights": args.weights, "mode": args.mode, "alpha": args.alpha,
              "learning_rate": args.learning_rate, "augment": args.augment, "early_stopping": args.early_stopping,
              "class_weights": args.class_weights, "tensorboard": args.tensorboard,
              "val_fraction": args.val_fraction, "monitor": args.monitor}
    try:
        return TrainConfig(**values)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc


def _cmd_train(args) -> int:
    from fruitlens.training import train_model

    config = _train_config(args)
    try:
        result = train_model(args.data, args.out, config, resume=args.resume, verbose=1)
    except ValueError as exc:  # bad weights file, no ImageNet weights offline, changed config on resume, ...
        raise CommandError(str(exc).splitlines()[0]) from exc
    m = result["metrics"]
    start = f"resumed after epoch {result['resumed_from']}, " if result["resumed_from"] else ""
    print(f"trained {config.arch} on {result['counts']['train']} images ({len(result['classes'])} classes): "
          f"{start}{result['epochs']} epochs, best epoch {result['best_epoch']} "
          f"val_accuracy {m.get('val_accuracy', float('nan')):.4f}; {result['seconds']:.1f}s")
    print(f"wrote {result['model_path']}, model.json, history.parquet, curves.png, checkpoints/")
    return 0


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="predict a split and write predictions.parquet, metrics.json, confusion")
    p.add_argument("--model", type=Path, required=True, help="run folder with model.keras and model.json")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--top-k", type=int, default=5, help="labels kept per image in predictions.parquet")


def _cmd_evaluate(args) -> int:
    from fruitlens.inference import evaluate_run

    if args.top_k < 1:
        raise CommandError(f"--top-k {args.top_k}: expected at least 1")
    try:
        metrics = evaluate_run(args.model, args.data, args.out, split=args.split, top_k_count=args.top_k)
    except ValueError as exc:
        raise CommandError(str(exc).splitlines()[0]) from exc
    print(f"{args.split}: accuracy {metrics['accuracy']:.4f} on {metrics['num_images']} images; macro F1 "
          f"{metrics['macro']['f1-score']:.4f}; {metrics['unreadable']} unreadable, "
          f"{metrics['unknown_label']} with a label the model does not know")
    print(f"wrote {args.out}/predictions.parquet, metrics.json, confusion.parquet, confusion.png, mistakes.png")
    return 0


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="predict image files and write annotated copies")
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--top-k", type=int, default=5)


def _cmd_predict(args) -> int:
    from fruitlens.inference import predict_files

    if args.top_k < 1:
        raise CommandError(f"--top-k {args.top_k}: expected at least 1")
    table = predict_files(args.model, args.files, args.out, top_k_count=args.top_k)
    for row in table.itertuples():
        if row.error:
            print(f"error: {row.error}")  # the reason starts with the path
        else:
            print(f"{row.path}: {row.pred_label} ({row.pred_prob:.3f})")
    n_bad = int(table["error"].astype(bool).sum())
    print(f"wrote {args.out}/predictions.parquet and {len(table) - n_bad} annotated copies in {args.out}/annotated"
          + (f"; {n_bad} unreadable" if n_bad else ""))
    return 0


def _add_augment_preview(sub) -> None:
    p = sub.add_parser("augment-preview", help="write a grid of augmented training samples (what the model sees)")
    p.add_argument("--data", type=Path, required=True, help="dataset root, or one image file")
    p.add_argument("--out", type=Path, required=True, help="folder for augment_preview.png")
    p.add_argument("-n", "--count", type=int, default=20, help="augmented samples (default 20)")
    p.add_argument("--image-size", default="100", help="side in pixels, or HxW")
    p.add_argument("--seed", type=int, default=0)


def _cmd_augment_preview(args) -> int:
    from fruitlens.images import read_rgb
    from fruitlens.inputs import augment_preview
    from fruitlens.plots import image_grid, save_png

    if args.count < 1:
        raise CommandError(f"--count {args.count}: expected at least 1")
    size = _image_size(args.image_size)
    size = (size, size) if isinstance(size, int) else size
    if args.data.is_file():
        paths = [args.data]
    else:
        from fruitlens.dataset import index_dataset

        rows = index_dataset(args.data, seed=args.seed).paths("train")
        if len(rows) == 0:
            raise CommandError(f"--data {args.data}: no usable training image")
        paths = list(rows.sample(n=min(len(rows), args.count), random_state=args.seed)["abs_path"])
    try:
        images = [read_rgb(p, size) for p in paths]
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    import numpy as np

    samples = augment_preview(np.stack(images), args.count, seed=args.seed)
    path = save_png(image_grid(samples, ncols=5), args.out / "augment_preview.png")
    print(f"wrote {path} ({args.count} augmented samples of {len(paths)} image(s))")
    return 0


def _add_explain(sub) -> None:
    p = sub.add_parser("explain", help="explain predictions with LIME and/or Grad-CAM (tables and PNGs)")
    p.add_argument("--model", type=Path, required=True, help="run folder with model.keras and model.json")
    p.add_argument("--data", type=Path, nargs="+", required=True, help="a dataset root, or image files")
    p.add_argument("--method", default="lime,gradcam", help="comma-separated: lime, gradcam")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--limit", type=int, default=None, help="explain at most N images")
    p.add_argument("--split", default="test", help="split of a dataset root to explain (default: test)")
    p.add_argument("--chunk-size", type=int, default=32, help="images per chunk (memory, resume granularity)")
    p.add_argument("--seed", type=int, default=0)
    lime = p.add_argument_group("LIME")
    lime.add_argument("--num-samples", type=int, default=1000, help="perturbed samples per image (default 1000)")
    lime.add_argument("--segmenter", default="slic", help="superpixels: slic (default), quickshift, felzenszwalb")
    lime.add_argument("--n-superpixels", type=int, default=None, help="slic: number of superpixels (default 50)")
    lime.add_argument("--compactness", type=float, default=None, help="slic: compactness, R's weight (default 20)")
    lime.add_argument("--segmenter-param", action="append", default=[], metavar="NAME=VALUE",
                      help="any other segmenter parameter, e.g. kernel_size=2 (repeatable)")
    lime.add_argument("--hide-color", default="mean",
                      help="fill of hidden superpixels: mean (default), white, black, gray, a number or R,G,B "
                      "in [0, 1]")
    lime.add_argument("--top-labels", type=int, default=1, help="explain the N most probable classes (default 1)")
    lime.add_argument("--num-features", type=int, default=None, help="superpixels per explanation (default all)")
    lime.add_argument("--feature-selection", default="auto",
                      help="auto (default), highest_weights, forward_selection, none")
    lime.add_argument("--batch-size", type=int, default=None, help="perturbed images per model call")
    lime.add_argument("--threshold", type=float, default=0.0, help="PNGs: draw superpixels with |weight| above it")
    lime.add_argument("--plots", default="all", help="PNGs: all (default), explanation (no density), none")
    g = p.add_argument_group("Grad-CAM")
    g.add_argument("--layer", default=None, help="conv layer name or path (backbone/block5_conv3); "
                   "default: the last conv layer")
    g.add_argument("--gradcam-variant", default="gradcam", choices=("gradcam", "gradcam++", "cam"),
                   help="heatmap method (cam: models ending in global average pooling + dense)")
    g.add_argument("--palette", default="viridis", help="matplotlib colormap of heatmaps (viridis, jet, magma ...)")
    g.add_argument("--alpha", type=float, default=0.4, help="heatmap weight when blended over the photo, 0..1")
    g.add_argument("--faithfulness-steps", type=int, default=20,
                   help="steps of the deletion/insertion curves (deletion_auc, insertion_auc) of Grad-CAM and LIME")


def _lime_options(args) -> dict:
    """The LIME options of `fruitlens explain`, checked (a bad value names the flag and the valid ones)."""
    from fruitlens.explain.lime import FEATURE_SELECTIONS, HIDE_COLORS, PLOTS
    from fruitlens.explain.segmentation import make_segmenter

    for flag, value, low in (("--num-samples", args.num_samples, 2), ("--top-labels", args.top_labels, 1),
                             ("--num-features", args.num_features, 1), ("--batch-size", args.batch_size, 1)):
        if value is not None and value < low:
            raise CommandError(f"{flag} {value}: expected at least {low}")
    if args.feature_selection not in FEATURE_SELECTIONS:
        raise CommandError(f"--feature-selection {args.feature_selection}: expected one of "
                           f"{', '.join(FEATURE_SELECTIONS)}")
    if args.plots not in PLOTS:
        raise CommandError(f"--plots {args.plots}: expected one of {', '.join(PLOTS)}")
    hide = args.hide_color
    if hide not in HIDE_COLORS:
        try:
            values = [float(v) for v in hide.split(",")]
        except ValueError:
            values = []
        if len(values) not in (1, 3) or not all(0.0 <= v <= 1.0 for v in values):
            raise CommandError(f"--hide-color {hide}: expected {', '.join(HIDE_COLORS)}, a number or R,G,B in [0, 1]")
        hide = values[0] if len(values) == 1 else tuple(values)
    params = _segmenter_params(args)
    try:
        make_segmenter(args.segmenter, **params)
    except ValueError as exc:
        raise CommandError(f"--segmenter {args.segmenter}: {exc}") from exc
    return {"seed": args.seed, "num_samples": args.num_samples, "segmenter": args.segmenter,
            "segmenter_params": params, "hide_color": None if hide == "mean" else hide,
            "top_labels": args.top_labels, "num_features": args.num_features,
            "feature_selection": args.feature_selection, "batch_size": args.batch_size,
            "threshold": args.threshold, "plots": args.plots, "faithfulness_steps": args.faithfulness_steps}


def _segmenter_params(args) -> dict:
    params = {}
    for item in args.segmenter_param:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise CommandError(f"--segmenter-param {item}: expected NAME=VALUE")
        try:
            params[name.strip()] = float(value)
        except ValueError as exc:
            raise CommandError(f"--segmenter-param {item}: expected a number after '='") from exc
    for name in ("n_superpixels", "compactness"):
        if getattr(args, name, None) is not None:
            params[name] = getattr(args, name)
    return params


def _gradcam_options(args) -> dict:
    import matplotlib

    if args.palette not in matplotlib.colormaps:
        raise CommandError(f"--palette {args.palette}: expected a matplotlib colormap such as viridis, jet, magma")
    if not 0.0 <= args.alpha <= 1.0:
        raise CommandError(f"--alpha {args.alpha}: expected a blend weight in [0, 1]")
    if args.faithfulness_steps < 1:
        raise CommandError(f"--faithfulness-steps {args.faithfulness_steps}: expected at least 1")
    return {"layer": args.layer, "variant": args.gradcam_variant, "palette": args.palette, "alpha": args.alpha,
            "steps": args.faithfulness_steps, "seed": args.seed}


def _explain_options(args) -> dict[str, dict]:
    """Per-method options from the command line (each method adds its own flags above)."""
    return {"lime": _lime_options(args), "gradcam": _gradcam_options(args)}


def _cmd_explain(args) -> int:
    from tqdm import tqdm

    from fruitlens.explain.runner import explain_images, parse_methods, select_images

    try:
        methods = parse_methods(args.method)
    except ValueError as exc:
        raise CommandError(f"--method {args.method}: {exc}") from exc
    if args.limit is not None and args.limit < 1:
        raise CommandError(f"--limit {args.limit}: expected at least 1")
    rows = select_images(args.data, split=args.split, limit=args.limit)
    options = _explain_options(args)
    with tqdm(total=len(rows), unit="img", desc="explain", disable=None) as bar:
        totals = explain_images(args.model, rows, args.out, methods, chunk_size=args.chunk_size,
                                options={m: options.get(m, {}) for m in methods}, progress=bar.update)
    done = ", ".join(f"{m}: {totals[m]} rows" for m in methods)
    print(f"explained {len(rows) - totals['skipped'] - totals['failed']} images ({done}); "
          f"{totals['skipped']} already done, {totals['failed']} unreadable; wrote {args.out}")
    return 0


# ------------------------------------------------------------------------------------ superpixels

_SEGMENTER_FLAGS = {"n_superpixels": int, "compactness": float, "kernel_size": float, "max_dist": float,
                    "ratio": float, "sigma": float, "max_num_iter": int, "scale": float, "min_size": int}


def _add_superpixels(sub) -> None:
    p = sub.add_parser("superpixels", help="draw superpixel boundaries to tune the segmenter before a LIME run")
    p.add_argument("images", nargs="+", type=Path, help="image files")
    p.add_argument("--out", type=Path, required=True, help="folder for <name>_superpixels.png")
    p.add_argument("--method", default="slic", help="slic (default), quickshift (lime's parameters), felzenszwalb")
    p.add_argument("--size", default=None, help="segment at HEIGHTxWIDTH (a model's input size), e.g. 20x20; "
                   "default: the image's own size")
    p.add_argument("--seed", type=int, default=0)
    group = p.add_argument_group("segmenter parameters (each method takes some; others are an error)")
    for name, kind in _SEGMENTER_FLAGS.items():
        group.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None)


def _cmd_superpixels(args) -> int:
    import numpy as np

    from fruitlens import plots
    from fruitlens.explain.segmentation import make_segmenter
    from fruitlens.images import read_rgb

    params = {name: getattr(args, name) for name in _SEGMENTER_FLAGS if getattr(args, name) is not None}
    try:
        segmenter = make_segmenter(args.method, **params)
    except ValueError as exc:
        raise CommandError(f"--method {args.method}: {exc}") from exc
    size = None
    if args.size:
        try:
            parts = [int(v) for v in args.size.lower().split("x")]
        except ValueError:
            parts = []
        if len(parts) not in (1, 2) or min(parts, default=0) < 1:
            raise CommandError(f"--size {args.size}: expected HEIGHTxWIDTH or one side, e.g. 20x20")
        size = (parts[0], parts[-1])
    written, failed = 0, 0
    for path in args.images:
        try:
            image = read_rgb(path, size)
        except (ValueError, OSError) as exc:
            print(f"skipping {path}: {exc}", file=sys.stderr)
            failed += 1
            continue
        seg = segmenter.segment(image, seed=args.seed)
        factor = max(1, -(-200 // min(seg.shape)))
        drawn = plots.lime_boundaries(plots.upscale_nearest(image, factor), plots.upscale_nearest(seg, factor))
        out = plots.save_png(drawn, args.out / f"{Path(path).stem}_superpixels.png")
        print(f"{path}: {int(np.max(seg)) + 1} superpixels -> {out}")
        written += 1
    print(f"{segmenter.name}: wrote {written} images to {args.out}" + (f", {failed} unreadable" if failed else ""))
    if not written:
        raise CommandError(f"none of the {failed} images could be read")
    return 0


def _add_visualize(sub) -> None:
    p = sub.add_parser("visualize", help="activation grids and filter patterns for one image")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--image", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--channels", type=int, default=40, help="activation maps per layer (8 per row)")
    p.add_argument("--filters", type=int, default=40, help="filter patterns per layer")
    p.add_argument("--steps", type=int, default=30, help="gradient ascent steps per filter pattern")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--palette", default="viridis", help="matplotlib colormap of the activation maps")


def _cmd_visualize(args) -> int:
    import matplotlib

    from fruitlens.explain.activations import visualize_run

    if not args.image.is_file():
        raise CommandError(f"--image {args.image}: no such file; expected an image file")
    for name in ("channels", "filters"):
        if getattr(args, name) < 1:
            raise CommandError(f"--{name} {getattr(args, name)}: expected at least 1")
    if args.steps < 0:
        raise CommandError(f"--steps {args.steps}: expected at least 0")
    if args.palette not in matplotlib.colormaps:
        raise CommandError(f"--palette {args.palette}: expected a matplotlib colormap such as viridis, jet, magma")
    try:
        paths = visualize_run(args.model, args.image, args.out, channels=args.channels, filters=args.filters,
                              steps=args.steps, seed=args.seed, palette=args.palette)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    layers = sum(1 for p in paths if p.parent.name == "activations")
    print(f"wrote activation and filter grids of {layers} conv layers to {args.out} (activations/, filters/)")
    return 0


def _add_pipeline_options(p) -> None:
    p.add_argument("--config", type=Path, default=None, help="pipeline config (YAML or JSON; PipelineConfig fields)")
    p.add_argument("--task-runner", choices=("thread", "dask"), default=None,
                   help="where explanation chunks run: a thread pool (default) or Dask (prefect-dask)")
    p.add_argument("--dask-address", default=None, help="Dask scheduler address (default: start a local cluster)")
    p.add_argument("--models-home", type=Path, default=None,
                   help="where the current model lives (default: <out>/../models)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="task cache and results (default: $FRUITLENS_CACHE or $FRUITLENS_HOME/cache)")


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="the whole pipeline as one Prefect flow run")
    p.add_argument("--data", type=Path, required=True, help="dataset root")
    p.add_argument("--out", type=Path, required=True, help="run folder")
    _add_pipeline_options(p)


def _pipeline_config(args, base=None):
    from fruitlens.config import PipelineConfig, load_config

    try:
        cfg = load_config(args.config) if args.config is not None else (base or PipelineConfig())
        changes = {k: v for k, v in (("task_runner", args.task_runner), ("dask_address", args.dask_address))
                   if v is not None}
        return cfg.replace(**changes) if changes else cfg
    except ValueError as exc:
        raise CommandError(str(exc)) from exc


def _run_pipeline(args, data: Path, out: Path, cfg) -> int:
    """Run nightly_flow once (index, train, evaluate, explain, visualize, compare, report) and summarise."""
    import time

    from flows.nightly import nightly_flow
    from flows.settings import pipeline_settings

    if not data.is_dir():
        raise CommandError(f"--data {data}: no such folder; expected a dataset root")
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        print("note: PREFECT_API_URL is not set, so the runs go to a temporary Prefect server; start one with "
              "`prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api to watch them in the UI")
    start = time.perf_counter()
    with pipeline_settings(args.cache_dir):
        summary = nightly_flow(str(data), str(out), cfg.to_dict(),
                               str(args.models_home) if args.models_home else None)
    seconds = time.perf_counter() - start
    steps = ", ".join(f"{k} {v:.1f}s" for k, v in summary["timings"].items())
    m = summary["metrics"]
    print(f"pipeline finished in {seconds:.1f}s ({steps})")
    print(f"test accuracy {m['accuracy']:.4f}, macro F1 {m['macro_f1']:.4f} on {m['n']} images; "
          f"{'promoted to current' if summary['promoted'] else 'kept the current model'}")
    print(f"wrote {out} (run.json" + (", report.html)" if summary.get("report") else ")"))
    return 0


def _cmd_run(args) -> int:
    return _run_pipeline(args, args.data, args.out, _pipeline_config(args))


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="generate the demo dataset and run the whole pipeline on it")
    p.add_argument("--out", type=Path, default=DEFAULT_DEMO_OUT)
    p.add_argument("--data", type=Path, default=DEFAULT_DEMO_DIR, help="where the demo dataset is written")
    p.add_argument("--train-per-class", type=int, default=200, help="demo images per class (training)")
    p.add_argument("--test-per-class", type=int, default=50, help="demo images per class (test)")
    _add_pipeline_options(p)


def _cmd_demo(args) -> int:
    """Generate the demo data (if absent) and run the whole pipeline on it, report included."""
    from fruitlens.synthetic import write_demo_dataset

    if not (args.data / "Training").is_dir():
        write_demo_dataset(args.data, n_train=args.train_per_class, n_test=args.test_per_class)
        print(f"wrote demo dataset to {args.data}")
    return _run_pipeline(args, args.data, args.out, _pipeline_config(args))


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="serve the nightly deployment (cron schedule) to a Prefect server")
    p.add_argument("--data", type=Path, default=DEFAULT_DEMO_DIR, help="dataset root the nightly run reads")
    p.add_argument("--out", type=Path, default=Path("artifacts/nightly"), help="run folder the nightly run writes")
    p.add_argument("--cron", default="0 2 * * *", help='cron schedule (default "0 2 * * *": 02:00 every night)')
    p.add_argument("--timezone", default=None, help="time zone of the schedule (default: UTC)")
    p.add_argument("--name", default="nightly", help="deployment name")
    _add_pipeline_options(p)


def _cmd_serve(args) -> int:
    """Register the nightly deployment with its schedule and run its flow runs as they come (blocks)."""
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.schedules import Cron

    from flows.nightly import nightly_flow
    from flows.settings import pipeline_settings

    try:
        CronSchedule(cron=args.cron, timezone=args.timezone or "UTC")  # validates the expression and zone
        schedule = Cron(args.cron, timezone=args.timezone or "UTC")
    except ValueError as exc:
        raise CommandError(f"--cron {args.cron!r} --timezone {args.timezone}: expected a cron expression like "
                           "'0 2 * * *' and an IANA time zone") from exc
    cfg = _pipeline_config(args)
    params = {"data_dir": str(args.data.resolve()), "out_dir": str(args.out.resolve()), "config": cfg.to_dict(),
              "models_home": str(args.models_home.resolve()) if args.models_home else None}
    print(f"serving nightly_flow as deployment nightly/{args.name} on cron {args.cron!r}: "
          f"{params['data_dir']} -> {params['out_dir']}")
    with pipeline_settings(args.cache_dir):  # served runs inherit the cache location through the environment
        nightly_flow.serve(name=args.name, schedules=[schedule], parameters=params,
                           description="Nightly retraining: index, train, evaluate, explain, compare, report",
                           tags=["fruitlens", "nightly"])
    return 0


def _add_cache(sub) -> None:
    p = sub.add_parser("cache", help="show or clear the pipeline's task cache")
    p.add_argument("action", choices=("path", "clear"), help="path: print where it is; clear: delete it")
    p.add_argument("--cache-dir", type=Path, default=None, help="default: $FRUITLENS_CACHE or $FRUITLENS_HOME/cache")


def _cmd_cache(args) -> int:
    import shutil

    from fruitlens.config import cache_dir

    path = args.cache_dir or cache_dir()
    if args.action == "path":
        print(path)
        return 0
    if path.exists():
        shutil.rmtree(path)
        print(f"cleared the task cache {path}")
    else:
        print(f"no task cache at {path}")
    return 0


COMMANDS: dict[str, tuple[Callable, Callable]] = {
    "index": (_add_index, _cmd_index),
    "train": (_add_train, _cmd_train),
    "evaluate": (_add_evaluate, _cmd_evaluate),
    "predict": (_add_predict, _cmd_predict),
    "augment-preview": (_add_augment_preview, _cmd_augment_preview),
    "explain": (_add_explain, _cmd_explain),
    "superpixels": (_add_superpixels, _cmd_superpixels),
    "visualize": (_add_visualize, _cmd_visualize),
    "run": (_add_run, _cmd_run),
    "demo-data": (_add_demo_data, _cmd_demo_data),
    "report": (_add_report, _cmd_report),
    "demo": (_add_demo, _cmd_demo),
    "serve": (_add_serve, _cmd_serve),
    "cache": (_add_cache, _cmd_cache),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fruitlens", description="Train image classifiers and explain them.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add, _ in COMMANDS.values():
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # no telemetry from the temporary Prefect server: these machines have no network (one error line per run)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from fruitlens.dataset import DatasetError
    from fruitlens.runs import RunError

    try:
        return COMMANDS[args.command][1](args)
    except (CommandError, DatasetError, RunError) as exc:
        print(f"fruitlens {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fruitlens {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
