"""The amortised explainer's training options against deletion and agreement, on one fixed Fruits-360 classifier.

``bench_amortised`` trains a new classifier in every run, so two option sets compared across runs differ by the
classifier too. Here one classifier (fruitlens' ``seed_cnn``, 10 epochs on every Training image at 20x20, seeded
by ``--classifier-seed``) is trained once, and every variant's explainer (trained on the run's 6,000-image sample,
as a nightly samples it) is measured on the same audit images (``--audit`` seeded test images) against the same
KernelSHAP maps: 512 coalitions, seeds 0 and 1 (the audit's exact method and its seed-to-seed bar) and the
reference at 4,096 (seed 2). Per variant: training seconds and epochs, rank correlation and top-5 overlap with
the reference, deletion AUC (20 steps, mean baseline; lower is better) and its per-image difference from
KernelSHAP at 512 on the same images, with the standard error of that difference.

Run: ``python -m benchmarks.bench_amortised_options default: wide:width=32,epochs=20`` (a variant is
``name:field=value,...`` of ``AmortisedOptions`` fields; ``ensemble=K`` averages K explainers with seeds
seed..seed+K-1); writes ``benchmarks/results/amortised_options_<classifier-seed>.json``.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks._common import FRUITS360, write_result  # noqa: E402
from benchmarks.bench_amortised import SHARED_FRUITS, paired, patch_deletion, uptime  # noqa: E402
from benchmarks.bench_lime import load_split  # noqa: E402
from fruitlens.batch.amortised_audit import rank_correlation, top_k_overlap  # noqa: E402
from fruitlens.explain.amortised import AmortisedExplainer  # noqa: E402
from fruitlens.explain.amortised_training import sample_rows, train_explainer  # noqa: E402
from fruitlens.explain.kernel_shap import DEFAULT_BUDGET, grid_kernel_shap  # noqa: E402
from fruitlens.method_options import AmortisedOptions  # noqa: E402
from fruitlens.models import build_model  # noqa: E402

SIZE = 20


def parse_variant(spec: str) -> tuple[str, dict]:
    """``name:field=value,...`` -> (name, {field: value}); values parsed as int, float, None or kept as text."""
    name, _, fields = spec.partition(":")
    out: dict = {}
    for part in filter(None, fields.split(",")):
        key, value = part.split("=", 1)
        for cast in (int, float):
            try:
                out[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            out[key] = None if value == "None" else value
    return name, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", help="name:field=value,... (AmortisedOptions fields, ensemble=K)")
    parser.add_argument("--classifier-seed", type=int, default=0)
    parser.add_argument("--audit", type=int, default=400, help="audit images (seeded sample of the test split)")
    parser.add_argument("--fruits", default=FRUITS360 if FRUITS360.is_dir() else SHARED_FRUITS)
    args = parser.parse_args()

    x_train, y_train, classes, _ = load_split(args.fruits, "Training", SIZE, None)
    x_test, y_test, _, _ = load_split(args.fruits, "Test", SIZE, None)
    keras.utils.set_random_seed(args.classifier_seed)
    model = build_model("seed_cnn", len(classes), SIZE, seed=args.classifier_seed)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    began = time.perf_counter()
    model.fit(x_train, y_train, epochs=10, batch_size=32, verbose=0)
    out: dict = {"classifier": f"seed_cnn, 10 epochs, {len(x_train)} Fruits-360 training images at {SIZE}x{SIZE}, "
                               f"seed {args.classifier_seed}",
                 "classifier_train_seconds": time.perf_counter() - began,
                 "classifier_test_accuracy": float((model.predict(x_test, verbose=0).argmax(1) == y_test).mean()),
                 "load_before": uptime()}
    audit = np.sort(np.random.default_rng(0).choice(len(x_test), min(args.audit, len(x_test)), replace=False))
    xs = x_test[audit]
    ts = model.predict(xs, verbose=0).argmax(1)
    grid = AmortisedOptions.grid
    kernel = [grid_kernel_shap(model, xs, ts, grid, "mean", DEFAULT_BUDGET, seed=s) for s in (0, 1)]
    reference = grid_kernel_shap(model, xs, ts, grid, "mean", 4096, seed=2)
    exact_deletion = patch_deletion(model, xs, ts, kernel[0])
    out.update({"audit_images": len(xs), "kernelshap_budget": DEFAULT_BUDGET, "reference_budget": 4096,
                "rank_correlation_kernelshap_seed_to_seed": float(np.nanmean(rank_correlation(*kernel))),
                "rank_correlation_kernelshap_vs_reference": float(np.nanmean(rank_correlation(kernel[0], reference))),
                "deletion_auc_kernelshap": float(exact_deletion.mean()),
                "deletion_auc_reference": float(patch_deletion(model, xs, ts, reference).mean()), "variants": []})
    print({k: v for k, v in out.items() if k != "variants"}, flush=True)
    for spec in args.variants:
        name, fields = parse_variant(spec)
        ensemble = int(fields.pop("ensemble", 1))
        options = replace(AmortisedOptions(), **fields)
        picked = x_train[sample_rows(len(x_train), options)]
        maps, seconds, epochs = [], 0.0, []
        for k in range(ensemble):
            began = time.perf_counter()
            trained = train_explainer(model, picked, replace(options, seed=options.seed + k), None)
            seconds += time.perf_counter() - began
            epochs.append(len(trained.card.history))
            phi, _, _ = AmortisedExplainer(model, options, trained).attributions(xs)
            maps.append(phi[np.arange(len(xs)), :, ts])
        amortised = np.mean(maps, axis=0)
        diff = patch_deletion(model, xs, ts, amortised) - exact_deletion
        mean_diff, se = paired(diff)
        row = {"variant": name, "options": fields, "ensemble": ensemble, "train_seconds": seconds,
               "train_over_classifier": seconds / out["classifier_train_seconds"], "epochs_trained": epochs,
               "rank_correlation_vs_reference": float(np.nanmean(rank_correlation(amortised, reference))),
               "top5_overlap_vs_reference": float(top_k_overlap(amortised, reference, 5).mean()),
               "deletion_auc": float(exact_deletion.mean()) + mean_diff,
               "deletion_vs_kernelshap": mean_diff / float(exact_deletion.mean()),
               "deletion_paired_difference": mean_diff, "deletion_paired_se": se}
        out["variants"].append(row)
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    out["load_after"] = uptime()
    write_result(f"amortised_options_{args.classifier_seed}", out)


if __name__ == "__main__":
    main()
