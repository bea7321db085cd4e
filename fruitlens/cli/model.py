"""Commands about models: train, evaluate, predict, visualize."""

from __future__ import annotations

import sys
from pathlib import Path

from fruitlens.cli.common import (
    CommandError,
    Progress,
    _csv,
    _image_size,
    add_model_arguments,
    add_read_as_argument,
    add_renamed,
    build_options,
    check_data_folder,
    model_source,
)


def _add_train(sub) -> None:
    from fruitlens.config import PipelineConfig

    d = PipelineConfig().train  # the pipeline's training defaults: `train` and `run` train the same model
    size = d.image_size if isinstance(d.image_size, int) else "x".join(map(str, d.image_size))
    p = sub.add_parser("train", help="train a classifier with checkpoints; writes model.keras, model.json, history",
                       description="Train a classifier. The defaults are the pipeline's (`fruitlens run`): "
                       f"{d.arch}, {size} px, {d.epochs} epochs; the Fruits-360 tutorial's model is "
                       "--arch seed_cnn --image-size 20 --epochs 10.")
    p.add_argument("--data", type=Path, required=True, help="dataset root")
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument("--arch", default=d.arch, help="seed_cnn, fruit_net, small_convnet, lenet, photo_resnet or "
                   "transfer:<vgg16|resnet50|mobilenet_v2|xception|inception_v3|efficientnet_b0>")
    p.add_argument("--backbones", default=None, help="comma-separated backbones whose features are concatenated "
                   "(same as --arch transfer:a,b,c)")
    p.add_argument("--weights", default=d.weights, help="transfer backbones: imagenet, none, or a .weights.h5 "
                   "file saved from the same backbone (one per backbone, comma-separated)")
    p.add_argument("--mode", default=d.mode, help="transfer: bottleneck (cached features, head only), "
                   "frozen (backbone frozen) or finetune (last block unfrozen, SGD lr 1e-4 momentum 0.9)")
    p.add_argument("--width-multiplier", type=float, default=d.alpha, dest="width_multiplier",
                   help="transfer:mobilenet_v2: the width multiplier (Keras' alpha: 0.35, 0.5, 0.75, 1.0, 1.3, 1.4)")
    add_renamed(p, "--alpha", "--width-multiplier (mobilenet_v2's width; explain's overlay opacity is --opacity)")
    p.add_argument("--image-size", default=str(size), metavar="PX", help="side in pixels, or HxW")
    p.add_argument("--epochs", type=int, default=d.epochs, help="training epochs")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="training batch size (images per step)")
    p.add_argument("--learning-rate", type=float, default=d.learning_rate, help="default: the architecture's own")
    p.add_argument("--classes", help="comma-separated class names to train on (default: all)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the weights, the shuffling and the split")
    p.add_argument("--augment", action="store_true", default=d.augment,
                   help="random rotation 40, shift 0.2, shear 0.2, zoom 0.2, horizontal flip (nearest fill) on "
                   "training batches")
    p.add_argument("--early-stopping", type=int, default=d.early_stopping, metavar="PATIENCE",
                   help="stop after PATIENCE epochs without validation improvement (0: off)")
    p.add_argument("--class-weights", default=d.class_weights, help="none or balanced (for imbalanced classes)")
    p.add_argument("--tensorboard", action="store_true", default=d.tensorboard,
                   help="write TensorBoard logs to RUN_DIR/logs")
    p.add_argument("--val-split", "--val-fraction", dest="val_fraction", type=float, default=d.val_fraction,
                   help="validation share carved from train when the data has no validation split, 0 <= v < 1 "
                   "(0: no holdout, train on every training image and keep the last epoch)")
    p.add_argument("--optimizer", default=d.optimizer,
                   help="default (the architecture's), adam, adamw, rmsprop, sgd")
    p.add_argument("--schedule", default=d.schedule, help="learning rate: default (the architecture's), constant, "
                   "cosine, warmup_cosine")
    p.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs,
                   help="warm-up of warmup_cosine (at most half the run)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW's decoupled weight decay")
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing, help="0 <= v < 1 (default: 0.1 for "
                   "photo_resnet, else 0)")
    p.add_argument("--augment-policy", default=d.augment_policy, help="with --augment: classic (the tutorials' "
                   "rotations/shifts/shear/zoom/flip) or photo (random resized crop, flip, colour jitter); default: "
                   "photo for photo_resnet, else classic")
    p.add_argument("--crop-scale", type=float, default=d.crop_scale,
                   help="photo policy: smallest crop, share of the area")
    p.add_argument("--jitter", type=float, default=d.jitter, help="photo policy: colour jitter strength (0: off)")
    p.add_argument("--mixup", type=float, default=d.mixup, help="mixup Beta alpha (0: off)")
    p.add_argument("--cutmix", type=float, default=d.cutmix, help="cutmix Beta alpha (0: off)")
    p.add_argument("--keep", default=d.keep, help="best (the best epoch by --monitor) or last (the last epoch: "
                   "a fixed-epoch model)")
    p.add_argument("--refit", action="store_true", default=d.refit, help="after the run, train a fresh model on "
                   "the training and validation images together for the kept epoch's number of epochs and save "
                   "that (about 1.5x the training time; the card's config.trained says what was trained)")
    p.add_argument("--monitor", default=d.monitor, help="val_accuracy or val_loss: picks the best epoch")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")


def _train_config(args):
    from fruitlens.config import TrainConfig  # no TensorFlow: a bad flag is one line in a fraction of a second

    arch = args.arch
    if args.backbones:
        arch = "transfer:" + ",".join(_csv(args.backbones))
    values = {"arch": arch, "image_size": _image_size(args.image_size), "epochs": args.epochs,
              "batch_size": args.batch_size, "classes": _csv(args.classes),
              "seed": args.seed, "weights": args.weights, "mode": args.mode, "alpha": args.width_multiplier,
              "learning_rate": args.learning_rate, "augment": args.augment, "early_stopping": args.early_stopping,
              "class_weights": args.class_weights, "tensorboard": args.tensorboard,
              "val_fraction": args.val_fraction, "monitor": args.monitor, "keep": args.keep, "refit": args.refit,
              **{k: getattr(args, k) for k in ("optimizer", "schedule", "warmup_epochs", "weight_decay",
                                               "label_smoothing", "augment_policy", "crop_scale", "jitter",
                                               "mixup", "cutmix")}}
    return build_options(TrainConfig, values, {"early_stopping": "--early-stopping", "val_fraction": "--val-split",
                                               "alpha": "--width-multiplier"})


def _cmd_train(args) -> int:
    from fruitlens.locks import folder_lock

    check_data_folder(args.data)  # paths and flags before TensorFlow is imported (seconds)
    config = _train_config(args)
    from fruitlens.training import train_model

    # a progress bar on a terminal; one line per epoch in a log or pipe (a bar there is one endless line)
    verbose = 1 if sys.stdout.isatty() else 2
    with folder_lock(args.out):  # a second train into the same folder is refused, not the last writer wins
        result = train_model(args.data, args.out, config, resume=args.resume, verbose=verbose)
    m, v = result.metrics, result.validation
    start = f"resumed after epoch {result.resumed_from}, " if result.resumed_from else ""
    kept = (f"best epoch {result.best_epoch} val_accuracy {m['val_accuracy']:.4f}"
            if v["keep"] == "best" and "val_accuracy" in m else
            f"kept the last epoch ({result.best_epoch})" + (f", val_accuracy {m['val_accuracy']:.4f}"
                                                            if "val_accuracy" in m else ""))
    print(f"trained {config.arch} on {result.counts['train']} images ({len(result.classes)} classes), "
          f"{v['held_out']} held out for validation: {start}{result.epochs} epochs, {kept}; "
          f"{result.seconds:.1f}s")
    if result.trained["refit"]:
        print(f"refit on all {result.trained['images']} images (train + validation) for {result.trained['epochs']} "
              f"epochs: that model is saved")
    elif config.refit:
        print("refit: nothing to do, no validation images were held out (every image was trained on)")
    print(f"wrote {result.model_path}, model.json, history.parquet, curves.png, checkpoints/")
    return 0


def _check_tta(tta: str) -> None:
    """--tta of evaluate and predict, checked before any model or folder is read (the modes: recipes.TTA_MODES)."""
    from fruitlens.recipes import TTA_MODES  # numpy only: no TensorFlow for a bad flag

    if tta not in TTA_MODES:
        raise CommandError(f"--tta {tta!r}: expected {' or '.join(TTA_MODES)}")


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="predict a split and write predictions.parquet, metrics.json, confusion")
    p.add_argument("--data", type=Path, required=True, help="dataset root (its labelled images are evaluated)")
    p.add_argument("--split", default="test", help="split of the dataset to evaluate (train, validation, test), or "
                   "all: every image (a model that was not trained on this folder)")
    p.add_argument("--out", type=Path, required=True,
                   help="folder for predictions.parquet, metrics.json, the confusion and mistakes PNGs")
    p.add_argument("--top-k", type=int, default=5, help="labels kept per image in predictions.parquet")
    p.add_argument("--tta", default="none", help="test-time augmentation: none or flip (the mean of each image's "
                   "and its mirror's probabilities)")
    add_model_arguments(p)


def _cmd_evaluate(args) -> int:
    from fruitlens.locks import folder_lock

    if args.top_k < 1:
        raise CommandError(f"--top-k {args.top_k}: expected at least 1")
    _check_tta(args.tta)
    check_data_folder(args.data)
    if not Path(args.model).exists() and not str(args.model).startswith("imagenet:"):
        raise CommandError(f"--model {args.model}: no such file or folder; expected a run folder or a model file")
    source = model_source(args)
    from fruitlens.inference import evaluate_run

    with folder_lock(args.out):
        metrics = evaluate_run(source, args.data, args.out, split=args.split, top_k_count=args.top_k, tta=args.tta)
    print(f"{args.split}: accuracy {metrics['accuracy']:.4f} on {metrics['num_images']} images; macro F1 "
          f"{metrics['macro']['f1-score']:.4f}; {metrics['unreadable']} unreadable, "
          f"{metrics['unknown_label']} with a label the model does not know")
    print(f"wrote {args.out}/predictions.parquet, metrics.json, confusion.parquet, confusion.png, mistakes.png")
    return 0


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="predict image files or folders of photos; write annotated copies")
    what = ("image files and folders (a dataset folder: its images of every split, labelled; photos: every image "
            "under it)")
    p.add_argument("data_positional", nargs="*", type=Path, metavar="FILES", help=f"{what} (or --data)")
    p.add_argument("--data", nargs="+", type=Path, default=None, metavar="FILES", help=f"{what} (or FILES)")
    p.add_argument("--out", type=Path, required=True, help="folder for predictions.parquet and the annotated copies")
    p.add_argument("--top-k", type=int, default=5, help="labels kept per image in predictions.parquet")
    p.add_argument("--tta", default="none", help="test-time augmentation: none or flip (the mean of each image's "
                   "and its mirror's probabilities), as evaluate --tta")
    add_read_as_argument(p)
    add_model_arguments(p)


def _cmd_predict(args) -> int:
    from fruitlens.batch.rows import FOLDER_RULE, files_and_labels
    from fruitlens.inference import predict_files

    if args.top_k < 1:
        raise CommandError(f"--top-k {args.top_k}: expected at least 1")
    _check_tta(args.tta)
    source = model_source(args)  # a bad flag: one line before any folder is read or written
    files, labels = files_and_labels(args.data, args.read_as)
    if not files:
        raise CommandError(f"{' '.join(map(str, args.data))}: no image files found (rule: {FOLDER_RULE})")
    from fruitlens.locks import folder_lock

    with folder_lock(args.out), Progress(0, "annotated") as bar:
        table = predict_files(source, files, args.out, top_k_count=args.top_k, labels=labels,
                              progress=bar.advance_to, tta=args.tta)
    for row in table.itertuples():
        if row.error:
            print(f"error: {row.error}")  # the reason starts with the path
        else:
            print(f"{row.path}: {row.pred_label} ({row.pred_prob:.3f})")
    n_bad = int(table["error"].astype(bool).sum())
    print(f"wrote {args.out}/predictions.parquet and {len(table) - n_bad} annotated copies in {args.out}/annotated"
          + (f"; {n_bad} unreadable" if n_bad else ""))
    return 0


def _add_visualize(sub) -> None:
    p = sub.add_parser("visualize", help="activation grids and filter patterns for one image")
    add_model_arguments(p)
    p.add_argument("--image", type=Path, required=True, help="the image file to visualise")
    p.add_argument("--out", type=Path, required=True, help="folder for the activation grids and filter patterns")
    p.add_argument("--channels", type=int, default=40, help="activation maps per layer (8 per row)")
    p.add_argument("--filters", type=int, default=40, help="filter patterns per layer")
    p.add_argument("--steps", type=int, default=30, help="gradient ascent steps per filter pattern")
    p.add_argument("--seed", type=int, default=0, help="seed of the filter patterns' starting noise")
    p.add_argument("--palette", default="viridis", help="matplotlib colormap of the activation maps")
    p.add_argument("--layers", default=None, help="comma-separated conv layer names or paths (backbone/block_16_"
                   "project) to draw, or 'all'; default: every conv layer of a small model, 8 spread from the "
                   "first to the last on a bigger one (a MobileNetV2 has 52: 'all' takes minutes)")


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
    layers = "all" if args.layers == "all" else _csv(args.layers)
    try:
        with Progress(0, "visualized", unit="steps (activations, then each layer's filters)") as bar:
            paths = visualize_run(model_source(args), args.image, args.out, channels=args.channels,
                                  filters=args.filters, steps=args.steps, seed=args.seed, palette=args.palette,
                                  layers=layers, progress=bar.advance_to)
    except ValueError as exc:
        flag = f"--layers {args.layers}: " if layers and "layer" in str(exc) else ""
        raise CommandError(f"{flag}{str(exc).splitlines()[0]}") from exc
    layers = sum(1 for p in paths if p.parent.name == "activations")
    print(f"wrote activation and filter grids of {layers} conv layers to {args.out} (activations/, filters/)")
    return 0



COMMANDS = {
    "train": (_add_train, _cmd_train),
    "evaluate": (_add_evaluate, _cmd_evaluate),
    "predict": (_add_predict, _cmd_predict),
    "visualize": (_add_visualize, _cmd_visualize),
}
