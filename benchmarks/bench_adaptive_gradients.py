"""Adaptive Integrated Gradients and SmoothGrad: map error against a high-budget reference versus model passes.

On the demo CNN of ``bench_gradcam`` (trained here in about half a minute of CPU), for ``--images`` demo images
each explained for its predicted class:

- Integrated Gradients (black reference): the reference is a 256-point Gauss-Legendre rule (it agrees with a
  512-point trapezoid rule within 0.2-0.6 % here). Fixed budgets of the trapezoid rule (50 points is Xplique's
  default: ``linspace(0, 1, steps)`` and the trapezoid rule, the same math as ``nodes: riemann, tolerance: 0``) and
  of Gauss-Legendre, against the adaptive rounds at several tolerances.
- SmoothGrad (noise 0.2 of the value range, Xplique's default 0.2 on [0, 1] images): the reference is 8,000 iid
  copies (``--reference-samples``); iid at 50 copies is Xplique's default (``nb_samples=50``), against Latin
  hypercube, antithetic and Sobol draws at fixed budgets and the adaptive rounds at several tolerances.

Error = ``||map - reference map||_2 / ||reference map||_2`` of the final heatmaps (what fruitlens draws: (N, H, W)
in [0, 1]), averaged over images (mean and worst); passes = model passes per image as the method reports them
(gradient rows; Integrated Gradients adds its forward pass at the reference). Xplique itself is not run here:
its settings are run through fruitlens' own estimators (the peer benchmark measures Xplique).

Run: ``python -m benchmarks.bench_adaptive_gradients`` (writes ``benchmarks/results/adaptive_gradients.json``).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks._common import write_result  # noqa: E402
from benchmarks.bench_gradcam import demo_arrays, demo_model  # noqa: E402
from fruitlens.explain.gradients import IntegratedGradients, SmoothGrad  # noqa: E402


def map_error(maps: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(N,) relative L2 distance of each map to its reference."""
    diff = np.linalg.norm((maps - reference).reshape(len(maps), -1), axis=1)
    return diff / np.maximum(np.linalg.norm(reference.reshape(len(maps), -1), axis=1), 1e-12)


def row(name: str, explainer, x, targets, reference) -> dict:
    t = time.perf_counter()
    res = explainer.explain(x, targets)
    seconds = time.perf_counter() - t
    err = map_error(res.heatmaps, reference)
    out = {"setting": name, "passes_mean": float(res.passes.mean()), "passes_max": int(res.passes.max()),
           "error_mean": float(err.mean()), "error_max": float(err.max()),
           "convergence_mean": float(res.convergence.mean()), "seconds_per_image": seconds / len(x)}
    print(f"{name:44s} passes {out['passes_mean']:6.1f} (max {out['passes_max']:4d})  error {out['error_mean']:.4f} "
          f"(max {out['error_max']:.4f})  statistic {out['convergence_mean']:.4f}  {out['seconds_per_image']:.3f} "
          "s/image", flush=True)
    return out


def part_ig(model, x, targets) -> dict:
    ref = IntegratedGradients(model, steps=256, nodes="gauss-legendre", tolerance=0).explain(x, targets).heatmaps
    check = IntegratedGradients(model, steps=512, nodes="riemann", tolerance=0).explain(x, targets).heatmaps
    fixed = lambda k, nodes: IntegratedGradients(model, steps=k, nodes=nodes, tolerance=0)  # noqa: E731
    rows = [row("trapezoid 50 (Xplique's default)", fixed(50, "riemann"), x, targets, ref)]
    for k in (17, 33):
        rows.append(row(f"trapezoid {k}", fixed(k, "riemann"), x, targets, ref))
    for k in (16, 32):
        rows.append(row(f"gauss-legendre {k}", fixed(k, "gauss-legendre"), x, targets, ref))
    for k in (17, 33):
        rows.append(row(f"completeness-weighted {k}" + (" (the default)" if k == 33 else ""),
                        fixed(k, "completeness"), x, targets, ref))
    for tol in (0.1, 0.05, 0.02):
        rows.append(row(f"adaptive gauss-legendre, tolerance {tol}",
                        IntegratedGradients(model, steps=64, tolerance=tol, nodes="gauss-legendre"), x, targets, ref))
    for tol in (0.1, 0.05, 0.02, 0.01):
        rows.append(row(f"adaptive trapezoid, tolerance {tol}",
                        IntegratedGradients(model, steps=65, tolerance=tol, nodes="riemann"), x, targets, ref))
    return {"reference": "gauss-legendre 256", "reference_vs_trapezoid_512": float(map_error(check, ref).mean()),
            "rows": rows}


def part_smoothgrad(model, x, targets, reference_samples: int) -> dict:
    noise = 0.2
    ref = SmoothGrad(model, samples=reference_samples, noise=noise, sampling="iid", round_size=256, seed=99, tolerance=0
                     ).explain(x, targets).heatmaps
    fixed = lambda k, sampling: SmoothGrad(model, samples=k, noise=noise, sampling=sampling,  # noqa: E731
                                           round_size=k, tolerance=0)
    rows = [row("iid 50 (Xplique's default)", fixed(50, "iid"), x, targets, ref)]
    for sampling in ("iid", "antithetic", "sobol", "latin"):
        rows.append(row(f"{sampling} 16", fixed(16, sampling), x, targets, ref))
    for seed in (0, 1):  # two Latin hypercubes of 8: the default's first two rounds
        rows.append(row(f"latin 2 rounds of 8, seed {seed}", SmoothGrad(
            model, samples=16, noise=noise, sampling="latin", round_size=8, tolerance=0, seed=seed), x, targets, ref))
    for sampling, tolerances in (("latin", (0.15, 0.12, 0.1)), ("antithetic", (0.15, 0.12, 0.1)), ("sobol", (0.2,))):
        for tol in tolerances:
            rows.append(row(f"adaptive {sampling}, tolerance {tol}", SmoothGrad(
                model, samples=64, noise=noise, tolerance=tol, round_size=8, sampling=sampling), x, targets, ref))
    return {"reference": f"iid {reference_samples}, noise {noise}", "rows": rows}


def trained_demo(train_per_class: int, epochs: int, images: int):
    """(model, x, targets, labels, training images): the demo CNN trained here and ``images`` test images with
    the classes it predicts for them."""
    x_train, _, y_train = demo_arrays(train_per_class, 0)
    x_test, _, y_test = demo_arrays(max(1, -(-images // 6)), 1)
    model = demo_model()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0, shuffle=True)
    x = x_test[:images]
    targets = np.asarray(model.predict_on_batch(x)).argmax(1).astype(np.int32)
    return model, x, targets, y_test[:images], x_train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-per-class", type=int, default=80)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--reference-samples", type=int, default=8000)
    args = parser.parse_args()
    model, x, targets, y_test, x_train = trained_demo(args.train_per_class, args.epochs, args.images)
    result = {"demo_model": {"train_images": len(x_train), "epochs": args.epochs, "images": len(x),
                             "test_accuracy": float((targets == y_test[:len(x)]).mean())},
              "load_before": os.getloadavg()}
    print(result["demo_model"], flush=True)
    result["integrated_gradients"] = part_ig(model, x, targets)
    result["smoothgrad"] = part_smoothgrad(model, x, targets, args.reference_samples)
    result["load_after"] = os.getloadavg()
    write_result("adaptive_gradients", result)


if __name__ == "__main__":
    main()
