"""The amortised explainer (FastSHAP) against the exact method on its grid and LIME at fruitlens' defaults.

For each dataset, one classifier trained here, then:

1. Training cost: seconds to train the classifier and, separately, the amortised explainer (FastSHAP objective,
   ``AmortisedOptions`` defaults unless given: 8x8 grid, 16 masks per image, 10 epochs) on the training images.
2. Speed: seconds per image of the amortised explainer (``explain``: 1 explainer pass + 2 classifier passes),
   of the exact reference (occlusion on the same 8x8 grid: 65 classifier passes per image, the audit's
   ``grid_occlusion``) and of LIME at fruitlens' defaults (``LimeOptions()``: adaptive, up to 1000 samples), each
   after one warm-up call, on the same test images.
3. Agreement on the audit images (the issue's rule): the exact method is KernelSHAP on the same grid and fill
   (``fruitlens.explain.kernel_shap``); its own seed-to-seed Spearman rank correlation at fruitlens' default
   budget (``DEFAULT_BUDGET`` coalitions, seeds 0 and 1, same images) against the amortised explainer's rank
   correlation with KernelSHAP at a high reference budget (``--reference-budget``, seed 2); top-5 overlap with
   the reference; deletion AUC (20 steps, mean baseline) of the amortised, KernelSHAP (default budget) and
   occlusion maps (lower is more faithful). Occlusion on the grid is also timed and compared, for reference.

Datasets: the demo (generated in memory, 64x64, 6 classes), a subset of Fruits-360
(``../shared/datasets/fruits360``, ``--fruits-per-class`` training images per class at ``--fruits-size``;
a count above the folder's takes every image), and ``mobilenet``: the demo at ``--mobilenet-size`` px
(1,000 test images) on a Keras MobileNetV2 (alpha 0.35, GAP, dense softmax; batch-norm momentum 0.9) trained
from scratch, every layer (no ImageNet weights are reachable here; fruitlens' ``transfer:mobilenet_v2`` freezes
its backbone, which untrained is a constant function: that model stayed at chance, 0.167, and so did the
from-scratch one with Keras' batch-norm momentum 0.999 after 8 epochs).

Run: ``python -m benchmarks.bench_amortised`` (writes ``benchmarks/results/amortised.json``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks._common import FRUITS360, write_result  # noqa: E402
from fruitlens.batch.amortised_audit import grid_occlusion, rank_correlation, top_k_overlap  # noqa: E402
from fruitlens.explain.amortised import AmortisedExplainer  # noqa: E402
from fruitlens.explain.amortised_training import TRAINING_FIELDS, sample_rows, train_explainer  # noqa: E402
from fruitlens.explain.base import scale_per_image  # noqa: E402
from fruitlens.explain.faithfulness import deletion_insertion  # noqa: E402
from fruitlens.explain.kernel_shap import DEFAULT_BUDGET, grid_kernel_shap  # noqa: E402
from fruitlens.explain.patches import patch_index  # noqa: E402
from fruitlens.lime_options import LimeOptions  # noqa: E402
from fruitlens.method_options import AmortisedOptions  # noqa: E402
from fruitlens.registry import METHODS  # noqa: E402

SHARED_FRUITS = Path("/work/shared/datasets/fruits360")  # where a worktree's ../shared does not reach


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def patch_deletion(model, images: np.ndarray, targets: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """(N,) deletion AUCs (20 steps, mean baseline) of (N, grid^2) patch maps drawn on their grid."""
    index = patch_index(tuple(images.shape[1:3]), int(round(np.sqrt(maps.shape[1]))))
    curves = deletion_insertion(model, images, scale_per_image(maps[:, index]), targets, steps=20, baseline="mean")
    return np.asarray(curves.deletion_auc, np.float64)


def paired(diff: np.ndarray) -> tuple[float, float | None]:
    """Mean and standard error of per-image differences (the same images under two maps: noise against a gap)."""
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else None


def bench(name: str, model, x_train, y_train, x_test, y_test, epochs: int, options: AmortisedOptions, audit: int,
          lime_images: int, reference_budget: int, sample: bool = False) -> dict:
    """One dataset's figures; ``sample``: the explainer trains on ``options.train_images`` of the training images
    (the seeded sample a nightly run takes), else on all of them."""
    out: dict = {"dataset": name, "train_images": len(x_train), "test_images": len(x_test),
                 "image_size": list(x_train.shape[1:3]), "load_before": uptime()}
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    _, out["classifier_train_seconds"] = timed(lambda: model.fit(x_train, y_train, epochs=epochs, batch_size=32,
                                                                 verbose=0))
    picked = x_train[sample_rows(len(x_train), options)] if sample else x_train  # as a nightly run samples
    out["explainer_train_images"] = len(picked)
    trained, out["explainer_train_seconds"] = timed(lambda: train_explainer(model, picked, options, None))
    out["explainer_loss_by_epoch"] = [round(v, 5) for v in trained.card.history]
    explainer = AmortisedExplainer(model, options, trained)
    explainer.explain(x_test[:8])  # warm-up
    res, secs = timed(lambda: explainer.explain(x_test))
    out["amortised_seconds_per_image"] = secs / len(x_test)
    out["amortised_seconds_all_test"] = secs
    sample = np.sort(np.random.default_rng(0).choice(len(x_test), min(audit, len(x_test)), replace=False))
    xs, ts = x_test[sample], res.targets[sample]
    grid, fill = options.grid, options.fill
    grid_occlusion(model, xs[:2], ts[:2], grid, fill)  # warm-up
    exact, secs = timed(lambda: grid_occlusion(model, xs, ts, grid, fill))
    out["exact_seconds_per_image"] = secs / len(xs)
    lime = METHODS["lime"].build(model, LimeOptions())
    lime.explain(x_test[:1])  # warm-up
    _, secs = timed(lambda: lime.explain(xs[:lime_images]))
    out["lime_default_seconds_per_image"] = secs / min(lime_images, len(xs))
    phi, _, _ = explainer.attributions(xs)
    amort = phi[np.arange(len(xs)), :, ts]
    kernel, secs = timed(lambda: grid_kernel_shap(model, xs, ts, grid, fill, DEFAULT_BUDGET, seed=0))
    out["kernelshap_budget"] = DEFAULT_BUDGET
    out["kernelshap_seconds_per_image"] = secs / len(xs)
    kernel_1 = grid_kernel_shap(model, xs, ts, grid, fill, DEFAULT_BUDGET, seed=1)
    reference = grid_kernel_shap(model, xs, ts, grid, fill, reference_budget, seed=2)
    out["reference_budget"] = reference_budget
    out["audit_images"] = len(xs)
    for key, a, b in (("kernelshap_seed_to_seed", kernel, kernel_1), ("amortised_vs_reference", amort, reference),
                      ("kernelshap_vs_reference", kernel, reference), ("amortised_vs_occlusion", amort, exact),
                      ("occlusion_vs_reference", exact, reference)):
        rho = rank_correlation(a, b)
        out[f"rank_correlation_{key}"] = float(np.nanmean(rho))
        out[f"rank_correlation_{key}_min"] = float(np.nanmin(rho))
    out["top5_overlap_amortised_vs_reference"] = float(top_k_overlap(amort, reference, 5).mean())
    out["top5_overlap_kernelshap_seed_to_seed"] = float(top_k_overlap(kernel, kernel_1, 5).mean())
    per_image = {}
    for key, values in (("amortised", amort), ("kernelshap", kernel), ("occlusion", exact)):
        per_image[key] = patch_deletion(model, xs, ts, values)
        out[f"deletion_auc_{key}"] = float(per_image[key].mean())
    out["deletion_auc_paired_difference"], out["deletion_auc_paired_se"] = \
        paired(per_image["amortised"] - per_image["kernelshap"])
    out["classifier_test_accuracy"] = float((res.targets == y_test).mean())
    out["explainer_over_classifier_training"] = out["explainer_train_seconds"] / out["classifier_train_seconds"]
    out["speedup_vs_occlusion"] = out["exact_seconds_per_image"] / out["amortised_seconds_per_image"]
    out["speedup_vs_kernelshap"] = out["kernelshap_seconds_per_image"] / out["amortised_seconds_per_image"]
    out["speedup_vs_lime_default"] = out["lime_default_seconds_per_image"] / out["amortised_seconds_per_image"]
    out["load_after"] = uptime()
    print(name, {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-train-per-class", type=int, default=100)
    parser.add_argument("--demo-test-per-class", type=int, default=30)
    parser.add_argument("--fruits-per-class", type=int, default=30, help="Fruits-360 training images per class")
    parser.add_argument("--fruits-test-per-class", type=int, default=10)
    parser.add_argument("--fruits-size", type=int, default=48)
    parser.add_argument("--fruits-arch", default="convnet", help="the Fruits-360 classifier: convnet (bench_lime's) "
                        "or a fruitlens architecture (seed_cnn, ...)")
    parser.add_argument("--fruits-epochs", type=int, default=3, help="the Fruits-360 classifier's epochs")
    parser.add_argument("--epochs", type=int, default=AmortisedOptions.epochs, help="explainer epochs (at most)")
    parser.add_argument("--masks", type=int, default=AmortisedOptions.masks, help="explainer masks per image")
    parser.add_argument("--width", type=int, default=AmortisedOptions.width, help="explainer width")
    parser.add_argument("--features", default=None, help="a classifier layer as the explainer's input (default: "
                        "the image)")
    parser.add_argument("--reference-budget", type=int, default=4096, help="KernelSHAP coalitions per image of the "
                        "reference")
    parser.add_argument("--train-images", type=int, default=0, help="Fruits-360: train the explainer on this many "
                        "training images, sampled as a nightly run samples them (0: all)")
    parser.add_argument("--tag", default="", help="suffix of the result file")
    parser.add_argument("--audit", type=int, default=40, help="audit images (exact method)")
    parser.add_argument("--lime-images", type=int, default=10)
    parser.add_argument("--parts", default="demo,fruits", help="demo, fruits, mobilenet (comma-separated)")
    parser.add_argument("--mobilenet-size", type=int, default=96, help="the MobileNetV2 part's image side")
    parser.add_argument("--mobilenet-test", type=int, default=1000, help="the MobileNetV2 part's test images")
    parser.add_argument("--mobilenet-epochs", type=int, default=12, help="the MobileNetV2's training epochs")
    parser.add_argument("--fruits", type=Path, default=FRUITS360 if FRUITS360.is_dir() else SHARED_FRUITS,
                        help="the Fruits-360 root (Training/, Test/)")
    args = parser.parse_args()
    options = AmortisedOptions(epochs=args.epochs, masks=args.masks, width=args.width, features=args.features,
                               train_images=args.train_images or AmortisedOptions.train_images)
    result = {"options": {f: getattr(options, f) for f in TRAINING_FIELDS if hasattr(options, f)}, "runs": []}
    if "demo" in args.parts:
        from benchmarks.bench_gradcam import demo_arrays, demo_model

        x_train, _, y_train = demo_arrays(args.demo_train_per_class, 0)
        x_test, _, y_test = demo_arrays(args.demo_test_per_class, 1)
        result["runs"].append(bench("demo", demo_model(), x_train, y_train, x_test, y_test, 5, options, args.audit,
                                    args.lime_images, args.reference_budget))
    if "fruits" in args.parts:
        from benchmarks.bench_lime import convnet, load_split

        size = args.fruits_size
        x_train, y_train, classes, _ = load_split(args.fruits, "Training", size, args.fruits_per_class)
        x_test, y_test, _, _ = load_split(args.fruits, "Test", size, args.fruits_test_per_class)
        if args.fruits_arch == "convnet":
            classifier = convnet(size, len(classes))
        else:  # one of fruitlens' own architectures, as `fruitlens train --arch` builds it
            from fruitlens.models import build_model

            classifier = build_model(args.fruits_arch, len(classes), size, seed=0)
        run = bench(f"fruits360 ({len(classes)} classes, {len(x_train)} training images, {args.fruits_arch} "
                    f"{args.fruits_epochs} epochs)", classifier, x_train, y_train, x_test, y_test, args.fruits_epochs,
                    options, args.audit, args.lime_images, args.reference_budget, sample=args.train_images > 0)
        result["runs"].append(run)
    if "mobilenet" in args.parts:
        import tensorflow as tf

        from benchmarks.bench_gradcam import demo_arrays

        size = args.mobilenet_size
        resize = lambda x: tf.image.resize(x, (size, size)).numpy()  # noqa: E731
        x_train, _, y_train = demo_arrays(args.demo_train_per_class, 0)
        x_test, _, y_test = demo_arrays(-(-args.mobilenet_test // 6), 1)
        keras.utils.set_random_seed(0)
        inp = keras.Input((size, size, 3))
        backbone = keras.applications.MobileNetV2(input_shape=(size, size, 3), alpha=0.35, include_top=False,
                                                  weights=None)
        for layer in backbone.layers:  # Keras' 0.999 leaves the moving statistics at their start after a few
            if isinstance(layer, keras.layers.BatchNormalization):  # hundred steps: a constant model (chance)
                layer.momentum = 0.9
        features = keras.layers.GlobalAveragePooling2D()(backbone(keras.layers.Rescaling(2.0, offset=-1.0)(inp)))
        model = keras.Model(inp, keras.layers.Dense(6, activation="softmax")(features))
        result["runs"].append(bench(f"demo, MobileNetV2 (alpha 0.35, from scratch) at {size} px", model,
                                    resize(x_train), y_train, resize(x_test[:args.mobilenet_test]),
                                    y_test[:args.mobilenet_test], args.mobilenet_epochs, options, args.audit,
                                    args.lime_images, args.reference_budget))
    write_result(("amortised" if args.parts == "demo,fruits" else "amortised_" + args.parts.replace(",", "_"))
                 + (f"_{args.tag}" if args.tag else ""), result)


if __name__ == "__main__":
    main()
