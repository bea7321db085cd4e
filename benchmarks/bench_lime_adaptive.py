"""Adaptive LIME vs fixed-1000 vs the `lime` package (0.2.0.1), side by side in one run.

For each model of ``benchmarks.bench_lime.CONFIGS`` (trained briefly in the run, stated in the result), on the
same Fruits-360 test images and the same superpixels (SLIC, 50), mean-colour fill (``hide_color=None``), top
label:

- the reference `LimeImageExplainer.explain_instance` at 1000 samples, seeds 1 and 2 (batch_size 1000, its
  fastest setting);
- fruitlens fixed 1000 samples (``adaptive=False``), all images in one call;
- fruitlens adaptive (rounds of 200, up to 1000) at several tolerances, all images in one call;
- fruitlens at a third of the rows (333, independent and balanced rows) and the balanced design
  (``design="balanced"``) at 400 and 1000 rows and adaptive in rounds of 128;
- the logistic control variate (``control_variate=True``) at 128-333 rows and adaptive (the batch default:
  balanced, control variate, rounds of 128, tolerance 0.05).

Reported: seconds per image, model rows per image (mean and distribution), and agreement with the reference at
seed 1: Spearman of the top label's weights and top-5 overlap (shared superpixels among the 5 largest |weight|),
beside the reference's own seed-1-vs-seed-2 agreement. Rows per image are also counted on ``--rows-images``
more images (no reference needed).

``--parts demo``: the demo dataset and its small convnet: top supporting superpixel on the sticker, fixed-1000
(lime's procedure) vs the batch default vs adaptive with independent rows, same model and images.
``--parts cli``: `fruitlens explain` LIME + Grad-CAM with the default PNGs on ``--cli-images`` Fruits-360 test
images, the defaults vs lime's fixed procedure (each also with ``--plots none``; ``--cli-variants``), each in a
subprocess with its wall time, CPU time and peak memory, on a 20x20 model trained in the run: fruitlens' own
``seed_cnn`` (``--cli-model seed_cnn``, the default, the issue's model) or the heavier seed_cnn-like stand-in of
the other parts (``seed_cnn_like``, results under ``cli``); the 5,195-image time extrapolated from the rate
(``--cli-images 5195``: all of it).

Run: ``python -m benchmarks.bench_lime_adaptive [--parts speed,demo,cli]`` from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks._common import FRUITS360, RESULTS, ROOT, write_result  # noqa: E402
from benchmarks.bench_lime import CONFIGS, load_split, reference_weights, seed_cnn_like, spearman, timed  # noqa: E402

TOLERANCES = (0.03, 0.05, 0.1)
#: fixed counts beside fixed-1000 (all with independent rows and the plain Ridge unless named): a third of 1000
#: is the issue's row budget; "cv" is the logistic control variate
FIXED_COUNTS = {"random_333": dict(num_samples=333), "balanced_333": dict(num_samples=333, design="balanced"),
                "balanced_400": dict(num_samples=400, design="balanced"),
                "balanced_1000": dict(num_samples=1000, design="balanced"),
                "random_cv_333": dict(num_samples=333, control_variate=True),
                **{f"balanced_cv_{n}": dict(num_samples=n, design="balanced", control_variate=True)
                   for n in (128, 256, 333)}}
#: adaptive runs: independent rows in rounds of 200; the balanced design in rounds of one Hadamard block pair
#: (128 rows for up to 63 superpixels), without and with the control variate; "default" is the batch default
ADAPTIVE = {**{f"adaptive_tol{t:g}": dict(round_size=200, tolerance=t) for t in TOLERANCES},
            **{f"balanced_adaptive_tol{t:g}": dict(round_size=128, tolerance=t, design="balanced")
               for t in (0.05, 0.08)},
            **{f"balanced_cv_adaptive_tol{t:g}": dict(round_size=128, tolerance=t, design="balanced",
                                                      control_variate=True) for t in (0.03, 0.05, 0.08)},
            "default": dict(round_size=128, tolerance=0.05, min_samples=256, design="balanced", control_variate=True)}


def top5_overlap(a: np.ndarray, b: np.ndarray) -> float:
    ta = set(np.argsort(-np.abs(a), kind="stable")[:5].tolist())
    tb = set(np.argsort(-np.abs(b), kind="stable")[:5].tolist())
    return len(ta & tb) / 5


def _mean_se(values) -> tuple[float, float]:
    """Mean and its standard error (NaN for fewer than two values)."""
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")


def _dist(values) -> dict:
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "min": float(v.min()), "p25": float(np.percentile(v, 25)),
            "median": float(np.median(v)), "p75": float(np.percentile(v, 75)), "max": float(v.max()),
            "share_at_max": float((v >= v.max()).mean()) if len(v) else 0.0}


def part_speed(config: str, n_agree: int, n_rows: int, per_class: int | None) -> dict:
    import lime.lime_image as lime_image

    from fruitlens.explain.lime import explain_lime
    from fruitlens.explain.segmentation import make_segmenter
    from fruitlens.lime_options import LimeOptions

    lime_image.tqdm = lambda rows: rows
    build, size, cfg_per_class, epochs = CONFIGS[config]
    per_class = cfg_per_class if per_class is None else (per_class if cfg_per_class is None
                                                         else min(per_class, cfg_per_class))
    train_x, train_y, classes, _ = load_split(FRUITS360, "Training", size, per_class)
    test_x, test_y, _, _ = load_split(FRUITS360, "Test", size, 4, seed=1)
    model = build(size, len(classes))
    _, train_s = timed(model.fit, train_x, train_y, epochs=epochs, batch_size=32, verbose=0, shuffle=True)
    del train_x
    accuracy = float((model.predict(test_x, verbose=0).argmax(1) == test_y).mean())
    print(f"[{config}] trained {epochs} epochs in {train_s:.0f} s; test accuracy {accuracy:.3f}", flush=True)
    order = np.random.default_rng(2).permutation(len(test_x))
    images = test_x[order[:max(n_agree, n_rows)]]
    segments = make_segmenter("slic", n_superpixels=50).segment(images)
    n_sp = segments.reshape(len(segments), -1).max(1) + 1
    common = dict(top_labels=1, hide_color=None, num_samples=1000)

    def reference(i: int, seed: int):
        explainer = lime_image.LimeImageExplainer(random_state=seed)
        return explainer.explain_instance(images[i].astype(np.float64), lambda b: model.predict(b, verbose=0),
                                          batch_size=1000, segmentation_fn=lambda _: segments[i], random_seed=0,
                                          **common)

    ours = {k: v for k, v in common.items() if v is not None}  # hide_color None: "mean", LimeOptions' default

    def options(**kw) -> LimeOptions:
        """fruitlens' options for a run: the reference procedure with ``kw`` changed (adaptive runs: no floor on
        the rows unless ``kw`` sets one)."""
        return LimeOptions.reference(**{**ours, **({"min_samples": 0} if kw.get("adaptive") else {}), **kw})

    explain_lime(model, images[:2], options(), segments=segments[:2])  # warm up
    reference(0, 0)
    ref1, ref2, t_ref = [], [], []
    for i in range(n_agree):
        e1, t1 = timed(reference, i, 1)
        ref1.append(e1)
        ref2.append(reference(i, 2))
        t_ref.append(t1)
    a = slice(0, n_agree)
    fixed, t_fixed = timed(explain_lime, model, images[a], options(), segments=segments[a], seed=0)
    runs = {"fixed_1000": (fixed, t_fixed)}
    for name, kw in FIXED_COUNTS.items():
        runs[name] = timed(explain_lime, model, images[a], options(**kw), segments=segments[a], seed=0)
    for name, kw in ADAPTIVE.items():
        runs[name] = timed(explain_lime, model, images[a], options(adaptive=True, **kw), segments=segments[a],
                           seed=0)

    def scores(exps) -> dict[int, tuple[float, float]]:
        """(Spearman, top-5 overlap) with the reference at seed 1, by image (images explained for its label)."""
        out = {}
        for i in range(n_agree):
            label = int(ref1[i].top_labels[0])
            if exps is None:
                w = reference_weights(ref2[i], label, n_sp[i])
            else:
                w = exps[i].weights[exps[i].labels[0]] if exps[i].labels[0] == label else None
            if w is not None:
                w_ref = reference_weights(ref1[i], label, n_sp[i])
                out[i] = (spearman(w, w_ref), top5_overlap(w, w_ref))
        return out

    seed2 = scores(None)

    def agreement(exps) -> dict:
        """Mean agreement with its standard error over images; beside the reference's seed 2, the paired
        difference on the images both explained (what tells a real gap from the noise of a few images)."""
        own = scores(exps)
        result = {"images": len(own)}
        for j, measure in enumerate(("spearman", "top5_overlap")):
            result[measure], result[f"{measure}_se"] = _mean_se([v[j] for v in own.values()])
            if exps is not None:
                shared = own.keys() & seed2.keys()
                result[f"{measure}_minus_seed2"], result[f"{measure}_minus_seed2_se"] = _mean_se(
                    [own[i][j] - seed2[i][j] for i in shared])
        return result

    result = {"model": {"config": config, "input": f"{size}x{size}", "test_accuracy": accuracy,
                        "trained": f"{epochs} epochs on {len(train_y)} Fruits-360 training images"},
              "images": n_agree, "mean_superpixels": float(n_sp[:n_agree].mean()),
              "reference_seed1_vs_seed2": agreement(None),
              "reference_s_per_image": float(np.mean(t_ref))}
    for name, (exps, t) in runs.items():
        rows = [e.num_samples for e in exps]
        result[name] = {"s_per_image": t / n_agree, "rows_per_image": _dist(rows),
                        "vs_reference_seed1": agreement(exps),
                        "stability": _dist([e.stability for e in exps])}
    # rows per image on more images (no reference)
    if n_rows > n_agree:
        for name, kw in ADAPTIVE.items():
            exps, t = timed(explain_lime, model, images[:n_rows], options(adaptive=True, **kw),
                            segments=segments[:n_rows], seed=0)
            result[name]["rows_per_image_more"] = {"images": n_rows, **_dist(
                [e.num_samples for e in exps]), "s_per_image": t / n_rows}
    for name in ("reference_seed1_vs_seed2", *runs):
        r = result[name] if name.startswith("reference") else result[name]["vs_reference_seed1"]
        rows = "" if name.startswith("reference") else \
            f" rows {result[name]['rows_per_image']['mean']:.0f} s/img {result[name]['s_per_image']:.3f}"
        print(f"[{config}] {name}: spearman {r['spearman']:.3f} ({r['spearman_se']:.3f}) "
              f"top5 {r['top5_overlap']:.2f} ({r['top5_overlap_se']:.2f}){rows}", flush=True)
    return result


def part_demo(n_train: int, n_test: int) -> dict:
    """Top supporting superpixel on the sticker: fixed-1000 vs adaptive, the same model and images."""
    from benchmarks.bench_lime import convnet
    from fruitlens import tables
    from fruitlens.batch.engine import explain_images
    from fruitlens.batch.rows import rows_from_inputs
    from fruitlens.card import ModelCard, write_card
    from fruitlens.config import ExplainOptions
    from fruitlens.lime_options import LimeOptions
    from fruitlens.runs import load_run, model_digest, predict_batches
    from fruitlens.synthetic import write_demo_dataset

    size = 64
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench_lime_adaptive_demo_") as tmp:
        data = write_demo_dataset(Path(tmp) / "demo", n_train=n_train, n_test=n_test)
        train_x, train_y, classes, _ = load_split(data, "Training", size, None)
        test_x, test_y, _, _ = load_split(data, "Test", size, None)
        model = convnet(size, len(classes))
        model.fit(train_x, train_y, epochs=6, batch_size=32, verbose=0)
        out["model_accuracy"] = float((predict_batches(model, test_x).argmax(1) == test_y).mean())
        run = Path(tmp) / "run"
        run.mkdir()
        model.save(run / "model.keras")
        write_card(run, ModelCard(classes=tuple(classes), image_size=(size, size), arch="convnet"))
        rows = rows_from_inputs([data], split="test")
        saved, card = load_run(run)
        reference = dict(adaptive=False, design="random", control_variate=False)  # lime's own procedure
        for name, lime in (("fixed_1000", LimeOptions(num_samples=1000, plots="none", **reference)),
                           ("default", LimeOptions(num_samples=1000, plots="none")),
                           *((f"adaptive_tol{t:g}", LimeOptions(num_samples=1000, plots="none", tolerance=t,
                                                                round_size=200, design="random",
                                                                control_variate=False))
                             for t in TOLERANCES)):
            ex = Path(tmp) / name
            _, seconds = timed(explain_images, saved, card, model_digest(run), rows, ex, ["lime"],
                               ExplainOptions(lime=lime), chunk_size=32)
            table = tables.read_table(ex / "lime.parquet")
            top = table[table["rank"] == 0]
            best = top.loc[top.groupby("image_id")["weight"].idxmax()]
            out[name] = {"images": len(best), "top_superpixel_on_sticker": float((best["evidence"] > 0).mean()),
                         "rows_per_image": _dist(best["num_samples"]), "seconds": seconds}
            out["chance"] = float(top.groupby("image_id")["evidence"].apply(lambda e: (e > 0).mean()).mean())
            print(f"demo {name}: on sticker {out[name]['top_superpixel_on_sticker']:.1%}, rows "
                  f"{out[name]['rows_per_image']['mean']:.0f}, {seconds:.1f} s", flush=True)
    out["settings"] = f"{size}x{size} convnet, 6 epochs on {n_train} per class; slic 50; up to 1000 samples"
    return out


CLI_VARIANTS = ("default", "fixed", "default_plots_none", "fixed_plots_none")


def _cli_model(run: Path, arch: str, per_class: int | None) -> str:
    """Train the 20x20 model of the cli part into ``run``; what it is, in words."""
    from fruitlens.card import ModelCard, write_card

    if arch == "seed_cnn":  # the issue's model: fruitlens' own seed_cnn, trained as a user trains it
        cmd = [sys.executable, "-m", "fruitlens", "train", "--data", str(FRUITS360), "--out", str(run), "--arch",
               "seed_cnn", "--image-size", "20", "--epochs", "3"]
        subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        return "20x20 seed_cnn (fruitlens train --arch seed_cnn --image-size 20 --epochs 3, all training images)"
    run.mkdir()
    train_x, train_y, classes, _ = load_split(FRUITS360, "Training", 20, per_class)
    model = seed_cnn_like(20, len(classes))
    model.fit(train_x, train_y, epochs=3, batch_size=32, verbose=0)
    model.save(run / "model.keras")
    write_card(run, ModelCard(classes=tuple(classes), image_size=(20, 20), arch="seed_cnn-like"))
    return f"20x20 seed_cnn-like (32/64 filters at full resolution), 3 epochs on {len(train_y)} images"


def part_cli(n_images: int, per_class: int | None, arch: str = "seed_cnn",
             variants: tuple[str, ...] = CLI_VARIANTS) -> dict:
    """`fruitlens explain` LIME + Grad-CAM, default PNGs, adaptive vs fixed, on the first test images."""
    tmp = Path(tempfile.mkdtemp(prefix="bench_lime_adaptive_cli_"))
    run = tmp / "run"
    result: dict = {"images": n_images, "model": _cli_model(run, arch, per_class)}
    reference = ["--no-adaptive", "--design", "random", "--no-control-variate"]  # lime's own procedure
    flags_of = {"default": [], "fixed": reference, "default_plots_none": ["--plots", "none"],
                "fixed_plots_none": [*reference, "--plots", "none"]}
    for name in variants:
        flags = flags_of[name]
        out = tmp / name
        cmd = [sys.executable, "-m", "fruitlens", "explain", "--model", str(run), "--data", str(FRUITS360),
               "--out", str(out), "--limit", str(n_images), *flags]
        start = time.perf_counter()
        with open(tmp / f"{name}.log", "w+") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                    env={**os.environ, "PYTHONPATH": str(ROOT)})
            _, status, usage = os.wait4(proc.pid, 0)  # its CPU time and peak memory (its picture process's too)
            wall = time.perf_counter() - start
            if os.waitstatus_to_exitcode(status):
                log.seek(0)
                raise RuntimeError(log.read()[-2000:])
        import pandas as pd

        lime = pd.read_parquet(out / "lime.parquet", columns=["image_id", "num_samples"]).drop_duplicates("image_id")
        result[name] = {"seconds": wall, "s_per_image": wall / n_images, "projected_5195_s": wall / n_images * 5195,
                        "user_s": usage.ru_utime, "sys_s": usage.ru_stime, "cpu_percent": 100 * (
                            usage.ru_utime + usage.ru_stime) / wall, "peak_rss_mib": usage.ru_maxrss / 1024,
                        "rows_per_image": _dist(lime["num_samples"]), "flags": flags,
                        "pngs": len(list(out.rglob("*.png")))}
        print(f"cli {name}: {wall:.1f} s for {n_images} images -> {wall / n_images * 5195 / 60:.1f} min for 5,195; "
              f"rows {lime['num_samples'].mean():.0f}; CPU {result[name]['cpu_percent']:.0f} %, peak RSS "
              f"{result[name]['peak_rss_mib']:.0f} MiB", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="speed,demo,cli")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--agree-images", type=int, default=12)
    parser.add_argument("--rows-images", type=int, default=64)
    parser.add_argument("--train-per-class", type=int, default=None,
                        help="training images per class (default: as bench_lime.CONFIGS)")
    parser.add_argument("--cli-images", type=int, default=500)
    parser.add_argument("--cli-model", choices=("seed_cnn", "seed_cnn_like"), default="seed_cnn",
                        help="the cli part's model: fruitlens' seed_cnn (the issue's) or the heavier stand-in")
    parser.add_argument("--cli-variants", default=",".join(CLI_VARIANTS))
    parser.add_argument("--tag", default="", help="suffix of the result keys, to keep an earlier run's figures")
    args = parser.parse_args()
    result: dict = {}
    path = RESULTS / "lime_adaptive.json"

    def save(name: str, value: dict) -> None:
        if not result and path.is_file():
            result.update({k: v for k, v in json.loads(path.read_text()).items() if k != "machine"})
        result[name] = {**value, "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                        "load_average_after": os.getloadavg()}
        write_result("lime_adaptive", result)

    parts = args.parts.split(",")
    if "speed" in parts:
        for config in args.configs.split(","):
            save(config + args.tag, part_speed(config, args.agree_images, args.rows_images, args.train_per_class))
    if "demo" in parts:
        save("demo", part_demo(100, 25))
    if "cli" in parts:
        key = "cli" if args.cli_model == "seed_cnn_like" else f"cli_{args.cli_model}"
        save(key, part_cli(args.cli_images, args.train_per_class, args.cli_model,
                           tuple(args.cli_variants.split(","))))


if __name__ == "__main__":
    main()
