"""`fruitlens explain`: LIME, Grad-CAM and the other heatmap methods over a dataset, a folder of photos or files.

Every option is a field of the method's options dataclass in ``fruitlens.config`` (``LimeOptions``,
``CamOptions``, ``SmoothGradOptions``, ...): flags left out keep the dataclass's default, and the dataclass
validates what is given (one owner for each default and each check). Fields without a flag of their own are
set with ``--set METHOD.FIELD=VALUE``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from fruitlens.cli.common import (
    CommandError,
    Progress,
    add_model_arguments,
    add_read_as_argument,
    add_renamed,
    build_options,
    count,
    load_model,
)


def _add_explain(sub) -> None:
    from fruitlens.config import CHUNK_SIZE, PipelineConfig
    from fruitlens.method_options import CamOptions
    from fruitlens.registry import METHODS

    p = sub.add_parser("explain", help="explain predictions with LIME, Grad-CAM and other methods (tables, PNGs)")
    p.add_argument("--data", type=Path, nargs="+", required=True,
                   help="a dataset root, a folder of photos (searched recursively), or image files")
    p.add_argument("--method", "--methods", dest="method", default=",".join(PipelineConfig().methods),
                   help=f"one method or a comma-separated list: {', '.join(METHODS)} "
                   f"(default: {','.join(PipelineConfig().methods)})")
    p.add_argument("--set", action="append", default=[], metavar="METHOD.FIELD=VALUE", dest="settings",
                   help="any option of a method, e.g. smoothgrad.samples=50, rise.masks=1000, "
                        "integrated_gradients.reference=blur (repeatable; values read as YAML)")
    p.add_argument("--out", type=Path, required=True, help="folder for the tables and PNGs (reruns resume there)")
    p.add_argument("--limit", type=int, default=None, help="explain at most N images (default: all)")
    p.add_argument("--split", default="test", help="split of a dataset root to explain (default: test)")
    add_read_as_argument(p)
    p.add_argument("--unlabelled", action="store_true", help="the same as --read-as photos")
    p.add_argument("--chunk-size", type=int, default=CHUNK_SIZE,
                   help=f"images per chunk: memory and resume granularity (default {CHUNK_SIZE})")
    p.add_argument("--seed", type=int, default=None, help="seed of LIME's samples and of ties in faithfulness")
    p.add_argument("--faithfulness-steps", type=int, default=None,
                   help="steps of the deletion/insertion curves of both methods (0: off; default 20)")
    lime = p.add_argument_group("LIME (defaults: fruitlens.config.LimeOptions)")
    lime.add_argument("--num-samples", type=int, help="perturbed samples per image: the most when adaptive, "
                      "exactly this many with --no-adaptive (default 1000)")
    lime.add_argument("--adaptive", action=argparse.BooleanOptionalAction, default=None,
                      help="sample in rounds and stop each image when its weights are stable, at most "
                      "--num-samples (default); --no-adaptive: exactly --num-samples")
    lime.add_argument("--round-size", type=int, help="adaptive: samples per image per round (default 128)")
    lime.add_argument("--tolerance", type=float, help="adaptive: stop when max SE(weight) / max |weight| is at "
                      "most this (default 0.05)")
    lime.add_argument("--min-samples", type=int, help="adaptive: no image stops before this many samples, at "
                      "most --num-samples (default 256, or --num-samples when smaller)")
    lime.add_argument("--design", help="how the perturbed samples are drawn: balanced (default; Hadamard blocks: "
                      "less noise in the weights at the same count) or random (as the lime package)")
    lime.add_argument("--control-variate", action=argparse.BooleanOptionalAction, default=None,
                      help="fit the weights with a logistic surrogate as control variate: less noise, same "
                      "estimand (default); --no-control-variate: the plain weighted Ridge")
    lime.add_argument("--segmenter", help="superpixels: slic (default), quickshift, felzenszwalb")
    lime.add_argument("--n-superpixels", type=int, default=None, help="slic: number of superpixels (default 50)")
    lime.add_argument("--compactness", type=float, default=None, help="slic: compactness (default 20)")
    lime.add_argument("--segmenter-param", action="append", default=[], metavar="NAME=VALUE",
                      help="any other segmenter parameter, e.g. kernel_size=2 (repeatable)")
    lime.add_argument("--hide-color", help="fill of hidden superpixels: mean (default), white, black, gray, a "
                      "number or R,G,B in [0, 1]")
    lime.add_argument("--top-labels", type=int, help="explain the N most probable classes (default 1)")
    lime.add_argument("--num-features", type=int, help="superpixels per explanation (default all)")
    lime.add_argument("--feature-selection", help="auto (default), highest_weights, forward_selection, none")
    p.add_argument("--model-batch", type=int, dest="model_batch", metavar="N",
                   help="images per model call in every method (LIME's perturbed images, the others' samples or "
                   "masks): memory against speed (default: LIME about 16 MiB of pixels per call, the others 256; "
                   "one method: --set METHOD.batch_size=N)")
    add_renamed(p, "--batch-size", "--model-batch (images per model call; train's --batch-size is the training "
                "batch)")
    lime.add_argument("--threshold", type=float, help="PNGs: draw superpixels with |weight| above it")
    lime.add_argument("--plots", help="LIME PNGs: all, explanation (outline only), none, or kinds "
                      "outline,boundaries,density (default outline,boundaries)")
    cam = p.add_argument_group("Grad-CAM (defaults: fruitlens.config.CamOptions)")
    cam.add_argument("--layer", help="conv layer name or path (backbone/block5_conv3) of Grad-CAM, Layer-CAM and "
                     "Score-CAM; default: the last conv layer")
    cam.add_argument("--gradcam-variant", help="gradcam (default), gradcam++, or cam (global average pooling + dense)")
    cam.add_argument("--palette", help="matplotlib colormap of heatmaps (default jet)")
    cam.add_argument("--opacity", type=float,
                     help=f"the most opaque the heat overlay gets, 0..1 (default {CamOptions().alpha})")
    add_renamed(p, "--alpha", "--opacity (the heat overlay's opacity; train's width multiplier is "
                "--width-multiplier)")
    amortised = p.add_argument_group("Amortised SHAP (defaults: fruitlens.config.AmortisedOptions)")
    amortised.add_argument("--explainer", help="folder of a trained amortised explainer (--method amortised); "
                           "default: one is trained first on the images to explain (--out/amortised-explainer/)")
    add_model_arguments(p)


#: option fields whose flag is not ``--field-with-dashes`` (the ``--set`` key stays the field's name)
RENAMED_FIELDS = {"alpha": "--opacity", "batch_size": "--model-batch"}


def _given(args, names: dict[str, str]) -> dict[str, Any]:
    """{field: value} of the flags the user gave (``names`` maps field -> argparse dest)."""
    return {field: getattr(args, dest) for field, dest in names.items() if getattr(args, dest) is not None}


def _hide_color(text: str) -> str | float | tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        return text  # a name: LimeOptions checks it
    if len(values) not in (1, 3):
        raise CommandError(f"--hide-color {text}: expected a name, a number or R,G,B in [0, 1]")
    return values[0] if len(values) == 1 else values


def _segmenter_params(args) -> dict[str, float]:
    params: dict[str, float] = {}
    for item in args.segmenter_param:
        name, sep, value = item.partition("=")
        try:
            params[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise CommandError(f"--segmenter-param {item}: expected NAME=VALUE with a number")
    for name in ("n_superpixels", "compactness"):
        if getattr(args, name) is not None:
            params[name] = getattr(args, name)
    return params


def explain_options(args):
    """The typed options of every method from the flags and ``--set`` (each checked by its dataclass; a bad
    value names the flag or the ``--set`` key the user typed)."""
    from fruitlens.config import ExplainOptions
    from fruitlens.registry import METHODS

    shared = _given(args, {"seed": "seed", "faithfulness_steps": "faithfulness_steps", "batch_size": "model_batch"})
    lime = shared | _given(args, {k: k for k in ("num_samples", "segmenter", "top_labels", "num_features",
                                                 "feature_selection", "threshold", "plots",
                                                 "adaptive", "round_size", "tolerance", "min_samples", "design",
                                                 "control_variate")})
    if args.hide_color is not None:
        lime["hide_color"] = _hide_color(args.hide_color)
    params = _segmenter_params(args)
    if params:
        lime["segmenter_params"] = params
    cam = shared | _given(args, {"layer": "layer", "variant": "gradcam_variant", "palette": "palette",
                                 "alpha": "opacity", "explainer": "explainer"})
    settings = _settings(args.settings)
    unknown = sorted(set(settings) - set(METHODS))
    if unknown:
        raise CommandError(f"--set {unknown[0]}.…: unknown method; expected one of {', '.join(METHODS)}")
    built = {}
    for name, spec in METHODS.items():
        names = {g.name for g in fields(spec.options)}
        flagged = lime if name == "lime" else {k: v for k, v in cam.items() if k in names}
        typed = {k: f"{name}.{k}" for k in settings.get(name, {})}  # what --set named (flags: as_typed's own)
        typed = {**{k: v for k, v in RENAMED_FIELDS.items() if k not in typed}, **typed}
        built[name] = build_options(spec.options, flagged | settings.get(name, {}), typed)
    return ExplainOptions(**built)


def _settings(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["rise.masks=1000", ...]`` -> {"rise": {"masks": 1000}} (values read as YAML: numbers, null, lists)."""
    import yaml

    from fruitlens.errors import short
    from fruitlens.typed import check_value_count

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, name = key.strip().partition(".")
        if not sep or not dot or not method or not name:
            raise CommandError(f"--set {item}: expected METHOD.FIELD=VALUE, e.g. rise.masks=1000")
        try:
            loaded = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise CommandError(f"--set {short(item)}: the value is not YAML ({type(exc).__name__})") from exc
        parsed = check_value_count(loaded, f"--set {key.strip()}")  # an alias bomb: main's one line
        out.setdefault(method, {})[name] = parsed
    return out


def _cmd_explain(args) -> int:
    from fruitlens.batch.engine import explain_images
    from fruitlens.batch.rows import rows_from_inputs
    from fruitlens.config import parse_methods
    from fruitlens.modelio import check_layer_access, write_source_card

    methods = parse_methods(args.method)
    for flag, value in (("--limit", args.limit), ("--chunk-size", args.chunk_size)):
        if value is not None and value < 1:
            raise CommandError(f"{flag} {value}: expected at least 1")
    options = explain_options(args)
    rows = rows_from_inputs(args.data, split=args.split, limit=args.limit, unlabelled=args.unlabelled,
                            read_as=args.read_as)
    model, card, digest = load_model(args)
    for method in (m for m in methods if hasattr(options.of(m), "layer")):
        from fruitlens.explain.keras_graph import find_layer

        check_layer_access(model, "gradcam")  # a model without visible layers or a bad layer: one line, no work
        find_layer(model, options.of(method).layer)
    if args.out.exists() and not args.out.is_dir():
        raise CommandError(f"--out {args.out}: is a file; expected a folder")
    if "amortised" in methods:
        options = _amortised_explainer(model, card, rows, options, args.out)
    with Progress(len(rows), "explained") as bar:
        totals = explain_images(model, card, digest, rows, args.out, methods, options, chunk_size=args.chunk_size,
                                progress=bar.update)
    try:  # a rerun needs no model flags: the card next to the outputs says them
        write_source_card(args.out, card)
    except ValueError as exc:
        print(f"note: {exc}", file=sys.stderr)
    if totals["failed"] == len(rows):  # not one image explained, now or before: not a success
        raise CommandError(f"none of the {len(rows)} images could be read (see {args.out}/failed.parquet); "
                           "nothing explained")
    done = ", ".join(f"{m}: {totals[m]} rows" for m in methods)
    print(f"explained {count(len(rows) - totals['skipped'] - totals['failed'], 'image')} ({done}); "
          f"{totals['skipped']} already done, {totals['failed']} unreadable; wrote {args.out}")
    return 0


def _amortised_explainer(model, card, rows, options, out: Path):
    """``options`` with a trained amortised explainer: ``--explainer``'s (checked against the model), or one
    trained first on (a seeded sample of) the images to explain, one progress line per epoch."""
    from dataclasses import replace

    from fruitlens.batch.engine import read_chunk
    from fruitlens.explain.amortised import AmortisedExplainer
    from fruitlens.explain.amortised_training import explainer_for, sample_rows

    opts = options.amortised
    if opts.explainer is not None:
        try:
            AmortisedExplainer.from_options(model, opts)
        except (OSError, ValueError) as exc:
            raise CommandError(f"--explainer {opts.explainer}: {exc}") from exc
        return options
    picked = rows.iloc[sample_rows(len(rows), opts)].reset_index(drop=True)
    images, _, _ = read_chunk(picked, card.image_size, getattr(card, "fit", "resize"))
    if not len(images):
        raise CommandError("--method amortised: none of the images could be read to train the explainer")
    print(f"training the amortised explainer on {len(images)} images ({opts.epochs} epochs; "
          "--explainer PATH uses a trained one)", file=sys.stderr)
    trained = explainer_for(model, images, opts, out / "amortised-explainer",
                            report=lambda line: print(line, file=sys.stderr))
    return replace(options, amortised=trained)


COMMANDS = {"explain": (_add_explain, _cmd_explain)}
