"""`fruitlens sanity`: the model parameter randomisation test of the explanations (fruitlens.explain.sanity)."""

from __future__ import annotations

from pathlib import Path

from fruitlens.cli.common import (
    CommandError,
    Progress,
    _csv,
    add_model_arguments,
    add_read_as_argument,
    build_options,
    count,
    load_model,
)


def _add_sanity(sub) -> None:
    p = sub.add_parser("sanity", help="check that explanations depend on the model (cascading randomisation test)")
    p.add_argument("--data", type=Path, nargs="+", required=True,
                   help="a dataset root, a folder of photos, or image files")
    p.add_argument("--out", type=Path, required=True, help="folder for sanity.parquet, sanity.png, verdicts.json "
                   "(RUN/sanity puts them in a run's report)")
    p.add_argument("--split", default="test", help="split of a dataset root (default: test)")
    add_read_as_argument(p)
    p.add_argument("--limit", type=int, default=8, help="images to explain at every step (default 8)")
    p.add_argument("--method", "--methods", dest="method", default="gradcam,gradcam++,lime",
                   help="one method or a comma-separated list: any of explain's, and the Grad-CAM variants "
                        "gradcam++, cam (default gradcam,gradcam++,lime)")
    p.add_argument("--config", type=Path, help="a pipeline config file: the methods run with its explain_options "
                   "(default: the pipeline's defaults, as a `fruitlens run` without one)")
    p.add_argument("--layer", help="Grad-CAM's conv layer (default: the last conv layer)")
    p.add_argument("--num-samples", type=int, default=None,
                   help="LIME's perturbed samples per image, at most when adaptive (default: as in the options)")
    p.add_argument("--seed", type=int, default=0, help="seed of the re-initialisation and of LIME's samples")
    add_model_arguments(p)


def _cmd_sanity(args) -> int:
    from dataclasses import replace

    from fruitlens.batch.engine import read_first
    from fruitlens.batch.rows import rows_from_inputs
    from fruitlens.batch.sanity import sanity_segments
    from fruitlens.config import load_config
    from fruitlens.explain import sanity
    from fruitlens.registry import method_names

    methods = _csv(args.method) or []
    bad = [m for m in methods if m not in method_names()]
    if bad or not methods:
        raise CommandError(f"--method {args.method}: expected any of {', '.join(method_names())}")
    if args.limit < 1:
        raise CommandError(f"--limit {args.limit}: expected at least 1")
    if args.out.exists() and not args.out.is_dir():
        raise CommandError(f"--out {args.out}: is a file; expected a folder")
    options = load_config(args.config).explain_options
    if args.num_samples is not None:
        values = {**options.lime.overridable(), "num_samples": args.num_samples}  # the default floor follows
        lime = build_options(type(options.lime), values, {"num_samples": "--num-samples"})
        options = replace(options, lime=lime)
    rows = rows_from_inputs(args.data, split=args.split, read_as=args.read_as)
    model, card, _ = load_model(args)
    images, rows, failed = read_first(rows, args.limit, card.image_size, card.fit)
    if not len(rows):
        raise CommandError(f"--data: none of the {len(failed)} images could be read")
    with Progress(0, "sanity", unit="steps (the model re-initialised layer by layer)") as bar:
        segments = sanity_segments(images, rows, card, options.lime) if "lime" in methods else None
        result = sanity.run_sanity(model, images, methods=methods, options=options, layer=args.layer, seed=args.seed,
                                   lime_segments=segments, progress=bar.advance_to)
    found = sanity.write_sanity(result, images, rows, args.out, class_names=card.classes, seed=args.seed)
    for v in found.to_dict("records"):
        print(f"{sanity.method_title(v['method'])}: {'passes' if v['passed'] else 'FAILS'} ({v['reason']}; "
              f"ran with: {v['options']})")
    print(f"{count(len(rows), 'image')}, {count(len(result.layers) - 1, 'layer')} re-initialised; wrote {args.out}")
    return 0


COMMANDS = {"sanity": (_add_sanity, _cmd_sanity)}
