"""Why fruitlens' occlusion at Xplique's defaults sat far from its own stride-1 map (1.57) where Xplique's did not.

On the model and images of ``bench_peers`` (the demo CNN trained the same way, 6 test images): occlusion with a
3 px window at stride 3 and at stride 1 (the reference), black and gray fill. Per image: the target's
probability, the signed drops' range and share of positive pixels, and the error (``bench_peers.rel_l2``)
of the stride-3 map against the stride-1 map twice: on the signed drops (what Xplique returns) and on the
heatmaps fruitlens draws (positive part, divided by the maximum).

Run: ``python -m benchmarks.bench_occlusion_sign`` (writes ``benchmarks/results/occlusion_sign.json``).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from benchmarks._common import machine, write_result  # noqa: E402
from benchmarks.bench_peers import rel_l2, train  # noqa: E402
from fruitlens.explain.perturbation import Occlusion  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--train-per-class", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=4)
    model, x, targets = train(parser.parse_args())
    probs = np.asarray(model.predict_on_batch(x))[np.arange(len(x)), targets]
    rows = []
    for fill in ("black", "gray"):
        fine, ref = (Occlusion(model, window=3, stride=s, fill=fill) for s in (3, 1))
        signed, signed_ref = fine.attribute(x, targets).raw, ref.attribute(x, targets).raw
        heat, heat_ref = fine.explain(x, targets).heatmaps, ref.explain(x, targets).heatmaps
        for i in range(len(x)):
            one = slice(i, i + 1)
            rows.append({"fill": fill, "image": i, "target_probability": round(float(probs[i]), 4),
                         "drop_min": float(signed_ref[i].min()), "drop_max": float(signed_ref[i].max()),
                         "positive_share": round(float((signed_ref[i] > 0).mean()), 3),
                         "error_signed": round(rel_l2(signed[one], signed_ref[one]), 3),
                         "error_heatmap": round(rel_l2(heat[one], heat_ref[one]), 3)})
            print(rows[-1], flush=True)
    for fill in ("black", "gray"):
        got = [r for r in rows if r["fill"] == fill]
        print(fill, "mean error signed", np.mean([r["error_signed"] for r in got]).round(3),
              "heatmap", np.mean([r["error_heatmap"] for r in got]).round(3), flush=True)
    write_result("occlusion_sign", {"machine": machine(), "rows": rows})


if __name__ == "__main__":
    main()
