"""Adaptive RISE and coarse-to-fine occlusion: map error against a high-budget reference versus model passes.

On the demo CNN (benchmarks.bench_gradcam: 64 x 64 demo images, trained here), per method:

- RISE (black fill, the paper's): the reference is 8,000 masks (its own seed, tolerance 0). Fixed budgets and
  adaptive runs (``tolerance`` > 0, ``masks`` the most) against it, and Xplique's Rise at its defaults
  (nb_samples=4000, grid_size=7, preservation_probability=0.5, mask_value=0, batch_size=32) **estimated** by
  its own algorithm inlined below (the lines of xplique/attributions/rise.py, commit 0c90fa4: unseeded masks,
  one random crop offset per batch of 32, sum(f M) / (sum M + 1e-4)); h-speed's bench_peers runs the real one.
- occlusion: the reference is the full-resolution grid (window 3, stride 1); Xplique's default (patch_size 3,
  patch_stride 3, occlusion_value 0) is our fixed grid at window 3 stride 3 black fill (non-overlapping
  windows: Xplique's sum and our mean coincide); coarse to fine at several settings.

Error: mean absolute difference of the [0, 1] maps (min-max for RISE, as the library scales them) and the
mean Spearman correlation, per image against the reference. Passes: masked model calls per image.
``python -m benchmarks.bench_adaptive_perturbation [--images 8] [--only rise|occlusion]``;
results/adaptive_perturbation[_rise|_occlusion].json. Numbers: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import time

import keras
import numpy as np
import tensorflow as tf
from scipy.stats import spearmanr

from benchmarks._common import write_result
from benchmarks.bench_gradcam import demo_arrays, demo_model
from fruitlens.explain.base import scale_per_image
from fruitlens.explain.perturbation import RISE, Occlusion


def xplique_rise(model, x, targets, nb_samples=4000, grid=7, p=0.5, mask_value=0.0, batch_size=32):
    """Xplique's Rise.explain (rise.py at 0c90fa4) on softmax probabilities, inlined: (N, H, W) raw maps."""
    h, w = x.shape[1:3]
    maps = []
    for img, t in zip(x, targets, strict=True):
        binary = tf.random.uniform((nb_samples, grid, grid, 1), 0, 1) < p
        num, den = np.zeros((h, w, 1)), np.zeros((h, w, 1))
        for s in range(0, nb_samples, batch_size):
            bm = tf.cast(binary[s:s + batch_size], tf.float32)
            up = tf.image.resize(bm, (int(h * (1.0 + 1.0 / grid)), int(w * (1.0 + 1.0 / grid))))
            masks = tf.image.random_crop(up, (bm.shape[0], h, w, 1))  # one offset for the whole batch
            pred = tf.nn.softmax(model(masks * img[None] + (1 - masks) * mask_value, training=False))
            num += np.sum(pred.numpy()[:, t][:, None, None, None] * masks.numpy(), 0)
            den += np.sum(masks.numpy(), 0)
        maps.append((num / (den + 1e-4))[..., 0])
    return np.array(maps, np.float32)


def errors(maps, ref):
    mae = float(np.abs(maps - ref).mean())
    rho = float(np.nanmean([spearmanr(a.ravel(), b.ravel())[0] if np.ptp(a) and np.ptp(b) else np.nan
                            for a, b in zip(maps, ref, strict=True)]))  # a constant map has no ranks
    return mae, rho


def run(label, fn, ref, rows):
    t = time.perf_counter()
    maps, passes, conv = fn()
    sec = time.perf_counter() - t
    mae, rho = errors(maps, ref)
    row = {"run": label, "passes_mean": float(np.mean(passes)), "passes_min": int(np.min(passes)),
           "passes_max": int(np.max(passes)), "mae": mae, "spearman": rho, "seconds": sec,
           "convergence_mean": None if conv is None else float(np.mean(conv))}
    rows.append(row)
    print(f"{label:44s} passes {row['passes_mean']:7.1f} ({row['passes_min']}-{row['passes_max']})  "
          f"mae {mae:.4f}  spearman {rho:.3f}  {sec:6.1f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--train-per-class", type=int, default=80)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--only", choices=["rise", "occlusion"], default=None)
    args = parser.parse_args()
    load_before = os.getloadavg()
    x_train, _, y_train = demo_arrays(args.train_per_class, 0)
    x_test, _, y_test = demo_arrays(max(1, args.images // 3 + 1), 1)
    model = demo_model()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=32, verbose=0, shuffle=True)
    accuracy = float(model.evaluate(x_test, y_test, verbose=0)[1])
    x = x_test[:args.images]
    targets = model.predict(x, verbose=0).argmax(axis=1)
    print(f"demo model: test accuracy {accuracy:.3f}; {len(x)} images {x.shape[1:3]}", flush=True)

    def ours(explainer):
        res = explainer.explain(x, targets)
        return res.heatmaps, res.passes, res.convergence

    rise_rows: list[dict] = []
    occ_rows: list[dict] = []
    if args.only != "occlusion":
        run_rise(model, x, targets, ours, rise_rows)
    if args.only != "rise":
        run_occlusion(model, x, targets, ours, occ_rows)
    write_result("adaptive_perturbation" + (f"_{args.only}" if args.only else ""), {
        "images": len(x), "size": list(x.shape[1:3]), "accuracy": accuracy, "load_before": load_before,
        "load_after": os.getloadavg(), "rise": rise_rows, "occlusion": occ_rows})


def run_rise(model, x, targets, ours, rise_rows):
    rise = dict(cells=7, keep=0.5, fill="black")
    ref = RISE(model, masks=8000, round_size=1000, seed=12345, **rise).explain(x, targets).heatmaps
    tf.random.set_seed(0)
    run("Xplique Rise defaults (4000 masks; estimated)",
        lambda: (scale_per_image(xplique_rise(model, x, targets), minmax=True), np.full(len(x), 4000), None),
        ref, rise_rows)
    for m in (500, 1333, 4000):
        run(f"fruitlens RISE fixed {m}", lambda m=m: ours(RISE(model, masks=m, round_size=min(m, 1000), **rise)),
            ref, rise_rows)
    for tol in (0.06, 0.045, 0.035):
        run(f"fruitlens RISE adaptive tol {tol} (max 4000)",
            lambda tol=tol: ours(RISE(model, masks=4000, round_size=250, tolerance=tol, **rise)), ref, rise_rows)


def run_occlusion(model, x, targets, ours, occ_rows):
    oref = Occlusion(model, window=3, stride=1, fill="black").explain(x, targets).heatmaps
    run("Xplique Occlusion defaults (3 / 3; ours fixed)",
        lambda: ours(Occlusion(model, window=3, stride=3, fill="black")), oref, occ_rows)
    for stride, coarse, thr in ((1, 4, 0.1), (1, 4, 0.2), (2, 3, 0.1), (3, 2, 0.1), (3, 3, 0.1), (3, 3, 0.2)):
        run(f"fruitlens occlusion 3/{stride} coarse {coarse} thr {thr}",
            lambda s=stride, c=coarse, t=thr: ours(Occlusion(model, window=3, stride=s, fill="black", coarse=c,
                                                             threshold=t)), oref, occ_rows)


if __name__ == "__main__":
    main()
