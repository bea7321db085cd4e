"""Commands about data: index, demo-data, superpixels, augment-preview, report."""

from __future__ import annotations

import sys
from pathlib import Path

from fruitlens.cli.common import DEFAULT_DEMO_DIR, CommandError, _csv, _image_size, add_renamed


def _add_index(sub) -> None:
    p = sub.add_parser("index", help="index a folder of labelled images into images.parquet and classes.json")
    layouts = "dataset root: <class>/*, {Training,Test}/<class>/* or {train,validation,test}/<class>/*"
    p.add_argument("data_positional", type=Path, nargs="?", default=None, metavar="DATA_DIR",
                   help=f"{layouts} (or --data)")
    p.add_argument("--data", type=Path, default=None, metavar="DATA_DIR", help=f"{layouts} (or DATA_DIR)")
    p.add_argument("--out", type=Path, required=True, help="output folder for images.parquet, classes.json, index.json")
    p.add_argument("--classes", help="comma-separated class names to keep (default: all)")
    p.add_argument("--seed", type=int, default=42, help="seed of the holdout split for the single-folder layout")
    p.add_argument("--val-fraction", type=float, default=0.15, help="holdout share for val (single-folder layout)")
    p.add_argument("--test-fraction", type=float, default=0.15, help="holdout share for test (single-folder layout)")
    p.add_argument("--verify", action="store_true", help="decode every image in full (slower, catches more)")
    p.add_argument("--workers", type=int, default=None, help="processes used to check files (default: all cores)")
    p.add_argument("--follow-external-links", action="store_true",
                   help="read files that symlinks lead to outside DATA_DIR (default: reported as outside_root)")
    p.set_defaults(out_may_be_in_data=True)  # its tables are no images: DATA/index is fine


def _cmd_index(args) -> int:
    from fruitlens.dataset import format_summary, index_or_load

    for name, value in (("--val-fraction", args.val_fraction), ("--test-fraction", args.test_fraction)):
        if not 0.0 <= value < 1.0:
            raise CommandError(f"{name} {value}: expected a fraction in [0, 1)")
    index = index_or_load(args.data, args.out, classes=_csv(args.classes), seed=args.seed,
                          val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                          verify=args.verify, workers=args.workers,
                          follow_external_links=args.follow_external_links)
    print(format_summary(index))
    print(f"wrote {args.out}/images.parquet ({len(index.table)} rows), classes.json ({len(index.classes)} classes)")
    return 0


def _add_demo_data(sub) -> None:
    p = sub.add_parser("demo-data", help="write the generated demo dataset (Training/Test layout, with masks)")
    p.add_argument("out_dir", type=Path, nargs="?", default=Path(DEFAULT_DEMO_DIR), metavar="DIR",
                   help="folder to write (Training/ and Test/ with a folder per class, masks/)")
    p.add_argument("--train-per-class", type=int, default=200, metavar="N", help="training images per class")
    p.add_argument("--test-per-class", type=int, default=50, metavar="N", help="test images per class")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated images (same seed, same images)")


def _cmd_demo_data(args) -> int:
    from fruitlens.synthetic import CLASSES, write_demo_dataset

    if args.train_per_class < 1 or args.test_per_class < 1:
        raise CommandError("--train-per-class and --test-per-class: expected at least 1")
    write_demo_dataset(args.out_dir, n_train=args.train_per_class, n_test=args.test_per_class, seed=args.seed)
    n = len(CLASSES) * (args.train_per_class + args.test_per_class)
    print(f"wrote {n} demo images in {len(CLASSES)} classes ({', '.join(CLASSES)}) to {args.out_dir}")
    return 0


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="(re)build DIR/report.html from a run's or an explain folder's tables and files")
    p.add_argument("run_dir", type=Path, metavar="DIR", help="a run folder (from `fruitlens run`, `demo` or `train`), "
                   "or an explain folder (from `fruitlens explain --out`): a page of your photos' explanations")
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
    from fruitlens.layout import RunLayout
    from fruitlens.report.photos import build_photos_report, is_explain_folder

    if is_explain_folder(args.run_dir) and not RunLayout(args.run_dir).explain.root.is_dir():
        path = build_photos_report(args.run_dir, embed=not args.no_embed)
    else:
        path = build_report(args.run_dir, samples_per_class=args.samples_per_class, top_mistakes=args.top_mistakes,
                            embed=not args.no_embed)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB); open it in a browser")
    return 0


MAX_PREVIEW_COUNT = 200  # augment-preview: samples in one grid (40 rows of 5)
SUPERPIXELS_MAX_SIDE = 1024  # superpixels: the working resolution of a larger photo (--max-side)


def _add_augment_preview(sub) -> None:
    p = sub.add_parser("augment-preview", help="write a grid of augmented training samples (what the model sees)")
    p.add_argument("--data", type=Path, required=True, help="dataset root, or one image file")
    p.add_argument("--out", type=Path, required=True, help="folder for augment_preview.png")
    p.add_argument("-n", "--count", type=int, default=20,
                   help=f"augmented samples (default 20, at most {MAX_PREVIEW_COUNT})")
    p.add_argument("--image-size", default="100", metavar="PX",
                   help="longest side in pixels (the first image's aspect kept), or HxW")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled images and the augmentation")


def _cmd_augment_preview(args) -> int:
    from fruitlens.config import MAX_IMAGE_SIDE
    from fruitlens.images import read_rgb
    from fruitlens.inputs import augment_preview
    from fruitlens.plots import image_grid, save_png

    if not 1 <= args.count <= MAX_PREVIEW_COUNT:
        raise CommandError(f"--count {args.count}: expected 1 to {MAX_PREVIEW_COUNT}")
    size = _image_size(args.image_size)
    if max((size,) if isinstance(size, int) else size) > MAX_IMAGE_SIDE:
        raise CommandError(f"--image-size {args.image_size}: expected at most {MAX_IMAGE_SIDE} pixels per side")
    if args.data.is_file():
        paths = [args.data]
    else:
        from fruitlens.dataset import index_dataset

        rows = index_dataset(args.data, seed=args.seed).paths("train")
        if len(rows) == 0:
            raise CommandError(f"--data {args.data}: no usable training image")
        paths = list(rows.sample(n=min(len(rows), args.count), random_state=args.seed)["abs_path"])
    if isinstance(size, int):  # the longest side; the first image's aspect (a 3:2 photo stays 3:2)
        from fruitlens.images import open_image, upright_size

        try:
            with open_image(paths[0]) as first:
                w, h = upright_size(first)
        except OSError as exc:  # an unreadable file: one line (a bad one is a ValueError, main's one line)
            raise CommandError(str(exc)) from exc
        size = (max(1, round(size * h / max(w, h))), max(1, round(size * w / max(w, h))))
    images = [read_rgb(p, size) for p in paths]
    import numpy as np

    samples = augment_preview(np.stack(images), args.count, seed=args.seed)
    path = save_png(image_grid(samples, ncols=5), args.out / "augment_preview.png")
    print(f"wrote {path} ({args.count} augmented samples of {len(paths)} image(s))")
    return 0


_SEGMENTER_FLAGS = {"n_superpixels": int, "compactness": float, "kernel_size": float, "max_dist": float,
                    "ratio": float, "sigma": float, "max_num_iter": int, "scale": float, "min_size": int}


def _add_superpixels(sub) -> None:
    from fruitlens.explain.segmentation import WORKING_SIDE

    p = sub.add_parser("superpixels", help="draw the superpixels LIME will use (same segmenter, parameters and "
                       f"working size: the photo with its longest side at most {WORKING_SIDE} px) to tune them")
    p.add_argument("data_positional", nargs="*", type=Path, metavar="IMAGE", help="image files (or --data)")
    p.add_argument("--data", nargs="+", type=Path, default=None, metavar="IMAGE", help="image files (or IMAGE)")
    p.set_defaults(data_metavar="IMAGE")
    p.add_argument("--out", type=Path, required=True, help="folder for <name>_superpixels.png")
    p.add_argument("--segmenter", default="slic",
                   help="the superpixel method, as explain's --segmenter: slic, quickshift (lime's parameters), "
                   "felzenszwalb")
    add_renamed(p, "--method", "--segmenter (the superpixel method; --method names explanation methods)")
    p.add_argument("--image-size", "--size", dest="size", default=None, metavar="PX",
                   help="the model's input size, a side or HxW (e.g. 32x32): draw the superpixels LIME perturbs at "
                   "that size (slivers merged) on the photo (default: every superpixel)")
    p.add_argument("--fit", choices=("resize", "crop"), default="resize",
                   help="with --image-size: how the model sees a photo of another aspect")
    p.add_argument("--max-side", type=int, default=SUPERPIXELS_MAX_SIDE,
                   help=f"a larger photo is read at this many pixels on its long side (default "
                   f"{SUPERPIXELS_MAX_SIDE}; memory follows it, not the file)")
    p.add_argument("--seed", type=int, default=0, help="seed of quickshift (the others are deterministic)")
    group = p.add_argument_group("segmenter parameters (each segmenter takes some; others are an error; "
                                 "default: the segmenter's own, as LIME uses it)")
    from fruitlens.segmenter_params import DEFAULTS

    for name, kind in _SEGMENTER_FLAGS.items():
        users = ", ".join(f"{seg} {params[name]:g}" for seg, params in DEFAULTS.items() if name in params)
        group.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None,
                           help=f"{name} of the segmenter (default: {users})")


def _cmd_superpixels(args) -> int:
    import numpy as np

    from fruitlens import plots
    from fruitlens.explain.segmentation import make_segmenter, photo_segments, working_photo
    from fruitlens.images import read_rgb

    params = {name: getattr(args, name) for name in _SEGMENTER_FLAGS if getattr(args, name) is not None}
    segmenter = make_segmenter(args.segmenter, **params)
    size = None
    if args.size:
        try:
            parts = [int(v) for v in args.size.lower().split("x")]
        except ValueError:
            parts = []
        if len(parts) not in (1, 2) or min(parts, default=0) < 1:
            raise CommandError(f"--image-size {args.size}: expected HEIGHTxWIDTH or one side, e.g. 20x20")
        size = (parts[0], parts[-1])
    from fruitlens.config import MAX_IMAGE_SIDE

    if size is not None and max(size) > MAX_IMAGE_SIDE:
        raise CommandError(f"--image-size {args.size}: expected at most {MAX_IMAGE_SIDE} pixels per side")
    if not 16 <= args.max_side <= MAX_IMAGE_SIDE:
        raise CommandError(f"--max-side {args.max_side}: expected 16 to {MAX_IMAGE_SIDE}")
    written, failed = 0, 0
    for path in args.data:
        try:
            photo = read_rgb(path, max_side=args.max_side)  # bounded: never the full 8000x8000 in float32
        except (ValueError, OSError) as exc:
            print(f"skipping {path}: {exc}", file=sys.stderr)
            failed += 1
            continue
        # exactly what LIME segments: the photo at its working size (longest side <= WORKING_SIDE)
        image = working_photo(photo)
        if size is None:
            seg = segmenter.segment(image, seed=args.seed)
        else:
            segs = photo_segments(photo, size, segmenter, fit=args.fit, seed=args.seed)
            seg = np.full(image.shape[:2], -1, np.int32)
            from fruitlens.modelio import fit_photo

            y0, x0, y1, x1 = fit_photo(image, size, args.fit)[1]
            seg[y0:y1, x0:x1] = segs.fine
        factor = max(1, min(-(-200 // min(seg.shape)), 2048 // max(seg.shape)))  # enlarged, to 2048 at most
        drawn = plots.lime_boundaries(plots.upscale_nearest(image, factor), plots.upscale_nearest(seg, factor))
        out = plots.save_png(drawn, args.out / f"{Path(path).stem}_superpixels.png")
        print(f"{path}: {len(np.unique(seg[seg >= 0]))} superpixels at {image.shape[1]}x{image.shape[0]} -> {out}")
        written += 1
    print(f"{segmenter.name}: wrote {written} images to {args.out}" + (f", {failed} unreadable" if failed else ""))
    if not written:
        raise CommandError(f"none of the {failed} images could be read")
    return 0



COMMANDS = {
    "index": (_add_index, _cmd_index),
    "demo-data": (_add_demo_data, _cmd_demo_data),
    "superpixels": (_add_superpixels, _cmd_superpixels),
    "augment-preview": (_add_augment_preview, _cmd_augment_preview),
    "report": (_add_report, _cmd_report),
}
