"""LIME's superpixels segmented at the model's input size (before) against at the photo's working size and
mapped to the input (now): seconds per image, and what it does to faithfulness and to agreement with Grad-CAM.

    PYTHONPATH=$PWD python benchmarks/bench_lime_photo.py [--epochs 3] [--demo-images 6]

A small CNN (fruit_net, 32x32) is trained on the generated demo data; LIME explains skimage's chelsea, coffee and
astronaut and a few demo test images both ways with the same options and seeds. Faithfulness: deletion AUC (lower
is better) and insertion AUC (higher is better) of the top label; agreement: Spearman correlation between LIME's
per-pixel weight and Grad-CAM's heatmap at the input size. Results: benchmarks/results/lime_photo.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import write_result  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--demo-images", type=int, default=6)
    ap.add_argument("--num-samples", type=int, default=1000)
    args = ap.parse_args()

    from scipy.stats import spearmanr
    from skimage import data as skdata

    from fruitlens.batch.methods import _lime_faithfulness
    from fruitlens.config import TrainConfig
    from fruitlens.explain.gradcam import gradcam
    from fruitlens.explain.lime import explain_lime
    from fruitlens.explain.segmentation import WORKING_SIDE, make_segmenter, photo_segments
    from fruitlens.images import list_images, read_rgb
    from fruitlens.lime_options import LimeOptions
    from fruitlens.modelio import ModelSource, fit_photo
    from fruitlens.synthetic import write_demo_dataset
    from fruitlens.training import train_model

    tmp = Path(tempfile.mkdtemp(prefix="bench_lime_photo_"))
    write_demo_dataset(tmp / "demo", n_train=60, n_test=4, seed=0)
    t0 = time.perf_counter()
    train_model(tmp / "demo", tmp / "run", TrainConfig(arch="fruit_net", image_size=32, epochs=args.epochs))
    train_s = time.perf_counter() - t0
    model, card = ModelSource(spec=str(tmp / "run")).load()
    photos = {}
    for name in ("chelsea", "coffee", "astronaut"):
        photos[name] = getattr(skdata, name)().astype(np.float32) / 255.0
    for path in list_images(tmp / "demo" / "Test")[: args.demo_images]:
        photos[f"demo/{path.parent.name}/{path.name}"] = read_rgb(path)

    options = LimeOptions(num_samples=args.num_samples, seed=0)
    segmenter = make_segmenter(options.segmenter, **options.segmenter_params)
    rows = []
    for name, photo in photos.items():
        x = fit_photo(photo, card.image_size, card.fit)[0][None]
        heat = gradcam(model, x)[0]
        for mode in ("input", "photo"):
            t = time.perf_counter()
            if mode == "input":
                seg = segmenter.segment(x[0], 0)
            else:
                seg = photo_segments(photo, card.image_size, segmenter, fit=card.fit, seed=0).coarse
            seg_s = time.perf_counter() - t
            res = explain_lime(model, x, LimeOptions.reference(num_samples=options.num_samples,
                                                                   hide_color=options.hide_color),
                               segments=seg[None], seed=0)
            total_s = time.perf_counter() - t
            faith = _lime_faithfulness(model, x, res, options, [name])[0]
            top = res[0].labels[0]
            pixel_weight = res[0].weights[top][res[0].segments]
            rho = float(spearmanr(pixel_weight.ravel(), heat.ravel()).statistic)
            rows.append({"image": name, "photo": f"{photo.shape[1]}x{photo.shape[0]}", "mode": mode,
                         "superpixels": int(res[0].num_superpixels), "segment_s": round(seg_s, 4),
                         "lime_s": round(total_s, 3), "deletion_auc": round(float(faith[0]), 4),
                         "insertion_auc": round(float(faith[1]), 4), "agreement_gradcam": round(rho, 3)})
            print(rows[-1], flush=True)

    def mean(mode, key, which):
        vals = [r[key] for r in rows if r["mode"] == mode and which(r["image"])]
        return round(float(np.nanmean(vals)), 4)

    groups = {"photos": lambda n: not n.startswith("demo/"), "demo": lambda n: n.startswith("demo/")}
    summary = {g: {m: {k: mean(m, k, f) for k in ("superpixels", "segment_s", "lime_s", "deletion_auc",
                                                  "insertion_auc", "agreement_gradcam")}
                   for m in ("input", "photo")} for g, f in groups.items()}
    print(summary)
    write_result("lime_photo", {"working_side": WORKING_SIDE, "model": "fruit_net 32x32, demo data",
                                "train_seconds": round(train_s, 1), "num_samples": args.num_samples,
                                "load": os.getloadavg(), "rows": rows, "summary": summary})


if __name__ == "__main__":
    main()
