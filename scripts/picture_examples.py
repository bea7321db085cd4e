"""Write the example explanation pictures of docs/pictures/ (LIME, heatmap, side by side on chelsea).

The "model" is a hand-made scorer on a 32 x 32 input (how much contrast the cat's eye region has), so the
pictures need no training and no weights; LIME is fruitlens's own, and the heatmap is the scorer's
occlusion sensitivity on a 7 x 7 grid standing in for a Grad-CAM layer map. The captions say so.

    python scripts/picture_examples.py [--out docs/pictures]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

from fruitlens import plots
from fruitlens.explain.lime import explain_lime
from fruitlens.lime_options import LimeOptions

SIZE = (32, 32)
EYES = (slice(8, 16), slice(8, 30))  # rows, columns of the 32 x 32 input where the eyes are
CLASSES = ("tabby", "other")


def scorer(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) in [0, 1] -> (N, 2) probabilities: "tabby" rises with the contrast around the eyes."""
    region = images[:, EYES[0], EYES[1]]
    score = 12.0 * region.std(axis=(1, 2, 3)) - 3.0 * images.mean(axis=(1, 2, 3))
    p = 1.0 / (1.0 + np.exp(-(score - 0.1) * 3.0))
    return np.stack([p, 1.0 - p], axis=1).astype(np.float32)


def occlusion(image: np.ndarray, cells: int = 7) -> np.ndarray:
    """(cells, cells) drop of the tabby score when each cell is grayed out, scaled to [0, 1]."""
    h, w = image.shape[:2]
    batch = np.repeat(image[None], cells * cells, axis=0)
    for k in range(cells * cells):
        r, c = divmod(k, cells)
        batch[k, r * h // cells:(r + 1) * h // cells, c * w // cells:(c + 1) * w // cells] = 0.5
    drop = np.maximum(scorer(image[None])[0, 0] - scorer(batch)[:, 0], 0.0).reshape(cells, cells)
    return drop / drop.max() if drop.max() > 0 else drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/pictures"))
    args = parser.parse_args()
    photo = data.chelsea()  # 300 x 451
    x = np.asarray(Image.fromarray(photo).resize((SIZE[1], SIZE[0]), Image.Resampling.BILINEAR), np.float32) / 255
    prob = float(scorer(x[None])[0, 0])
    lime = explain_lime(scorer, x[None], LimeOptions.reference(num_samples=1000, hide_color="gray"),
                        labels=[0], seed=0)[0]
    start = time.perf_counter()
    lime_pic = plots.lime_on_photo(photo, lime.segments, lime.weights[0])
    cap = plots.Caption("chelsea.png", "tabby", "tabby", prob, "LIME",
                        f"slic {lime.num_superpixels} superpixels, 1000 samples, hand-made scorer",
                        legend="green supports tabby, red against tabby")
    plots.save_png(plots.add_caption(lime_pic, cap, legend=plots.lime_legend("tabby")), args.out / "lime.png", cap)
    heat_pic = plots.heat_on_photo(photo, occlusion(x), palette="jet")
    cap = plots.Caption("chelsea.png", "tabby", "tabby", prob, "heatmap",
                        "occlusion 7x7 standing in for a Grad-CAM layer map, hand-made scorer")
    plots.save_png(plots.add_caption(heat_pic, cap, scale="jet", scale_labels=("no evidence", "strong evidence")),
                   args.out / "gradcam.png", cap)
    both = plots.side_by_side([("photo", photo), ("heatmap (occlusion 7x7)", heat_pic), ("LIME, top 5", lime_pic)])
    cap = plots.Caption("chelsea.png", "tabby", "tabby", prob, "heatmap and LIME", "hand-made scorer")
    both = plots.add_caption(both, cap, legend=plots.lime_legend("tabby"), scale="jet",
                             scale_labels=("heatmap low", "high"))
    plots.save_png(both, args.out / "side_by_side.png", cap)
    print(f"wrote 3 pictures to {args.out} in {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
